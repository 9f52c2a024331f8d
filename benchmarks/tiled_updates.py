"""Whole-image updates that do not fit in memory: computed in tiles, against smaller patches.

Runs ``rfr-deploy adapt-and-export`` on pairs of a noisy image and its reference (central crops of
``--crop`` where given), in a fresh process per row, once per ``--layouts`` entry:

- ``whole``: every update one pass over the whole image (the memory check is switched off, so the
  machine must have the memory);
- ``tiles:N``: the same updates computed in N² tiles (margins included), as a machine whose memory fits
  an N² training step computes them since stop 53;
- ``patch:N``: updates on random N² patches, what such a machine trained on before (``--patch N``).

Reports the gain over the pre-trained network, the seconds of the updates, the peak memory, and what
the manifest says was used. Each job's other options come from ``--job`` (one string).

    python tiled_updates.py --pairs real/SIDD_samples --names NOISY_0,NOISY_1 --job "--model cbdnet \
        --noise camera" --layouts whole,tiles:256,patch:256 --name tiled_updates_sidd_cbdnet
    python tiled_updates.py job N ARGS...   # one adapt-and-export whose training steps fit N² pixels
    python tiled_updates.py step-memory NAME   # the probe's bytes per pixel against a measured step
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from common import environment, job_outcome, report, run_json_job

from rfr_deploy.images import read_image, write_image
from rfr_deploy.jobs.evaluate import center_crop
from rfr_deploy.shared import shared_path


def run_constrained(fits: int, argv: list[str]) -> None:
    """``rfr-deploy ARGV`` in this process, its training steps sized as if memory fitted ``fits``² pixels
    (0: as if it fitted any step)."""
    import rfr_deploy.adaptation.targets as targets
    from rfr_deploy.cli import main

    def side_that_fits(per_pixel, pixels, budget, multiple, smallest):
        return None if not fits or pixels <= fits * fits else fits

    targets.side_that_fits = side_that_fits
    main(argv, prog_name="rfr-deploy")


def run_job(noisy: Path, clean: Path, layout: str, args, out: Path) -> dict:
    """One adapt-and-export of ``layout`` in a fresh process: its manifest, with its peak memory."""
    kind, _, side = layout.partition(":")
    command = [sys.executable, __file__, "job", side if kind == "tiles" else "0"]
    command += ["adapt-and-export", str(noisy), "--reference", str(clean), "-o", str(out), "--json"]
    command += ["--threads", str(args.threads), *shlex.split(args.job)]
    command += ["--patch", side] if kind == "patch" else []
    print(" ".join(command[2:]), file=sys.stderr)
    return run_json_job(command)


def crop_pair(folder: Path, name: str, crop: int, into: Path) -> tuple[Path, Path]:
    """The noisy image ``name`` of a pair folder and its reference, cropped to the central ``crop``² (0:
    whole) and written to ``into`` (the noisy pixels as they are: no new noise)."""
    reference = name.replace("NOISY", "GT").replace("_noise", "_gt")  # SIDD_samples, Nam_CBDNet25
    paths = []
    for sub, stem in (("noisy", name), ("gt", reference)):
        source = next((folder / sub).glob(f"{stem}.*"))
        target = into / f"{sub}_{source.stem}.png"
        write_image(target, center_crop(read_image(source).pixels, crop or None))
        paths.append(target)
    return paths[0], paths[1]


def summarise(name: str, layout: str, manifest: dict) -> dict:
    timings, adaptation = manifest["timings"], manifest["adaptation"]
    return {
        "image": name,
        "layout": layout,
        "tile_used": adaptation.get("tile_used"),
        "steps": adaptation["steps"],
        "updates_s": adaptation["steps"] * timings["step_mean_s"],
        "adapt_s": timings["adapt_s"],
        **job_outcome(manifest),
    }


def render(rows: list[dict], args) -> str:
    lines = [
        f"# Whole-image updates in tiles: {args.pairs} {args.names}"
        + (f", central {args.crop}² crops" if args.crop else ""),
        "",
        f"`rfr-deploy adapt-and-export {args.job}` with `--reference`, {args.threads} thread(s), one fresh "
        "process per row. `whole`: one pass per update; `tiles:N`: the same updates computed in N² tiles; "
        "`patch:N`: `--patch N` (what a machine that fits N² trained on before stop 53).",
        "",
        "| image | layout | patch | tile | updates (s) | adapt (s) | peak memory (MB) | pre-trained (dB) "
        "| adapted (dB) | gain (dB) | α (by) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['layout']} | {r['patch_used'] or 'whole'} | {r['tile_used'] or '–'} "
            f"| {r['updates_s']:.1f} | {r['adapt_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['pretrained_psnr']:.4f} "
            f"| {r['adapted_psnr']:.4f} | {r['gain_db']:+.4f} | {r['interpolation']:g} ({r['selected_by']}) |"
        )
    lines += ["", "Mean gain by layout:"]
    for layout in args.layouts.split(","):
        gains = [r["gain_db"] for r in rows if r["layout"] == layout]
        if gains:
            lines.append(f"- `{layout}`: {sum(gains) / len(gains):+.4f} dB over {len(gains)} image(s)")
    return "\n".join(lines)


def step_peak(arch: str, side: int) -> dict:
    """In this process: the growth of its peak resident memory over one training step of the packaged
    colour ``arch`` on a ``side``² image, per pixel, and the probe's estimate."""
    import resource

    import torch

    from rfr_deploy.memory import bytes_per_pixel
    from rfr_deploy.models.factory import create_model

    model = create_model(arch, channels=3).train()
    probe = bytes_per_pixel(model, 3, training=True)
    clean = torch.rand(1, 3, side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = model(clean + 0.05 * torch.randn_like(clean), torch.full((1,), 0.05))
    torch.nn.functional.mse_loss(out, clean).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": arch,
        "side": side,
        "probe_bytes_per_pixel": probe,
        "measured_bytes_per_pixel": (after - before) / side**2,
    }


def step_memory(name: str, models: str = "dncnn,cbdnet,ridnet", side: str = "512") -> None:
    """The probe (:func:`rfr_deploy.memory.bytes_per_pixel`) that decides whether an update runs in tiles,
    against what one step measured, each network in a fresh process."""
    from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH

    rows = []
    for arch in models.split(","):
        command = [sys.executable, __file__, "step-peak", arch, side]
        rows.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    lines = [
        "# The memory of one training step, packaged colour networks",
        "",
        "The probe: `rfr_deploy.memory.bytes_per_pixel(..., training=True)`, each storage autograd saves counted "
        "once (since stop 53), times the factor for the gradients at the peak of backward. Measured: the growth "
        f"of a fresh process's peak resident memory over one step on a {side}² image (forward, MSE, backward; "
        "batch 1). A step that needs more than half the free memory (`TRAINING_MEMORY_FRACTION` = 0.5) runs in tiles.",
        "",
        f"| network | probe (bytes per pixel) | measured | probe / measured | probe for a {LARGE_IMAGE_PATCH}² step (GB) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['model']} | {r['probe_bytes_per_pixel']:,.0f} | {r['measured_bytes_per_pixel']:,.0f} "
            f"| {r['probe_bytes_per_pixel'] / r['measured_bytes_per_pixel']:.2f} "
            f"| {r['probe_bytes_per_pixel'] * LARGE_IMAGE_PATCH**2 / 1e9:.1f} |"
            for r in rows
        ),
    ]
    report(name, {"rows": rows, "environment": environment()}, "\n".join(lines))


def main() -> None:
    if sys.argv[1:2] == ["job"]:
        run_constrained(int(sys.argv[2]), sys.argv[3:])
        return
    if sys.argv[1:2] == ["step-peak"]:
        print(json.dumps(step_peak(sys.argv[2], int(sys.argv[3]))))
        return
    if sys.argv[1:2] == ["step-memory"]:
        step_memory(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pairs", default="real/SIDD_samples", help="folder under shared/data with noisy/, gt/"
    )
    parser.add_argument("--names", required=True, help="comma-separated noisy image stems")
    parser.add_argument("--crop", type=int, default=0)
    parser.add_argument("--job", default="", help="further adapt-and-export options, one string")
    parser.add_argument("--layouts", default="whole,tiles:256,patch:256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    folder = shared_path("data", *args.pairs.split("/"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            noisy, clean = crop_pair(folder, name, args.crop, Path(tmp))
            for layout in args.layouts.split(","):
                out = Path(tmp) / f"out_{name}_{layout.replace(':', '_')}"  # a fresh folder: no resume
                rows.append(summarise(name, layout, run_job(noisy, clean, layout, args, out)))
                markdown = render(rows, args)
                report(args.name, {"environment": environment(), "args": vars(args), "rows": rows}, markdown)


if __name__ == "__main__":
    main()
