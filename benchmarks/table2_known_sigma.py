"""Table 2 of the paper: known σ ∈ {15, 25, 40}, M ∈ {0, 10, 20, 40}.

Color sets (CBSD68, Kodak24, McMaster) with CDnCNN-B, gray sets (Set12, BSD68) with DnCNN-B and
DnCNN-S, all official weights from ``shared/weights``; adaptation uses the CLI defaults.

    python benchmarks/table2_known_sigma.py                       # everything (hours on a CPU)
    python benchmarks/table2_known_sigma.py --datasets CBSD68 --sigmas 25 --limit 10
"""

from __future__ import annotations

import argparse

from common import parse_overrides
from paper_protocol import COLOR_SETS, GRAY_SETS, plan, run_table

from rfr_deploy.adaptation.config import AdaptConfig


def main(
    description: str = __doc__,
    sigma_modes: tuple[str, ...] = ("known",),
    name: str = "table2_known_sigma",
    title: str = "Table 2: known σ",
    networks: str | None = None,
) -> None:
    """Run the table. Scripts for other tables give their own ``description``, the σ modes they offer (a
    ``--sigma-mode`` option where there are several, the first the default), the results ``name`` and
    ``title`` (``{mode}`` is filled in) and their default ``networks``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if len(sigma_modes) > 1:
        parser.add_argument("--sigma-mode", choices=sigma_modes, default=sigma_modes[0])
    parser.add_argument("--datasets", default=",".join(COLOR_SETS + GRAY_SETS))
    parser.add_argument(
        "--networks", default=networks, help='e.g. CDnCNN-B,DnCNN-B,DnCNN-S,"RDN (ours)","DnCNN-N2S (ours)"'
    )
    parser.add_argument("--sigmas", default="15,25,40")
    parser.add_argument("--steps", default="0,10,20,40")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--crop", type=int, default=None, help="central crop side (default: whole images)")
    parser.add_argument(
        "--score-ensemble", action="store_true", help="also score the ×8 self-ensemble of every checkpoint"
    )
    parser.add_argument("--name", default=None, help="results file name under benchmarks/results")
    parser.add_argument(
        "--adapt",
        default="",
        help="AdaptConfig fields that differ from the CLI defaults, e.g. 'select=off,interpolation=0.25'",
    )
    args = parser.parse_args()
    sigma_mode = getattr(args, "sigma_mode", sigma_modes[0])
    cells = plan(
        [float(s) for s in args.sigmas.split(",")],
        args.datasets.split(","),
        args.networks.split(",") if args.networks else None,
    )
    steps = tuple(int(s) for s in args.steps.split(","))
    run_table(
        args.name or name.format(mode=sigma_mode),
        title.format(mode=sigma_mode),
        cells,
        sigma_mode,
        AdaptConfig(**parse_overrides(args.adapt)),
        steps,
        args.limit,
        args.crop,
        score_ensemble=args.score_ensemble,
    )


if __name__ == "__main__":
    main()
