"""Speed of one restore-from-restored update, eager vs. the fast paths, next to the paper's V100 figures.

Writes ``benchmarks/results/speed_<device>.md`` and ``.json`` (and ``.png`` where matplotlib is
installed) with the settings, versions, device, the per-model table and the paper's figures.

    python benchmarks/speed.py                         # auto device; the paper's DnCNN, RIDNet, MIRNet
    python benchmarks/speed.py --device cpu --all --size-for mirnet=32
    bash benchmarks/gpu_bench.sh                       # on a machine with a CUDA GPU

Paper (Lee et al., restore-from-restored): one fine-tuning update on a 256×256 image takes 0.035 s
(DnCNN), 0.073 s (RIDNet) and 0.666 s (MIRNet) on a Tesla V100. See ``rfr_deploy/bench/run.py`` for
what is timed and how.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rfr_deploy.bench.report import plot_report, write_report
from rfr_deploy.bench.run import run_bench
from rfr_deploy.bench.settings import DEFAULT_MODELS, BenchSettings
from rfr_deploy.cli.bench import run_adapt_and_export
from rfr_deploy.errors import ConfigError, MissingDependencyError, RfrError, first_line
from rfr_deploy.models.factory import list_models
from rfr_deploy.progress import Reporter

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    parser.add_argument("--all", action="store_true", help="also every other registered model")
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--size-for", action="append", default=[], metavar="MODEL=SIZE")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--budget", type=float, default=defaults.budget, help="seconds per model")
    parser.add_argument("--job-steps", type=int, default=defaults.job_steps)
    parser.add_argument("--no-job", action="store_true")
    parser.add_argument("--no-fit-budget", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CPU)")
    parser.add_argument(
        "--unfused", action="store_true", help="also time bf16 without the fused convolution + ReLU (CPU)"
    )
    parser.add_argument(
        "--no-keep-memory", action="store_true", help="let glibc unmap and trim freed memory (its defaults)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-limits", action="store_true", help="skip the conv-rate and FLOP measurements")
    parser.add_argument("--name", default=None, help="results file stem (default: speed_<device>)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    if args.all:
        models += [m for m in list_models() if m not in models]
    sizes = {}
    for text in args.size_for:
        name, sep, value = text.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"--size-for: expected MODEL=SIZE, got {text!r}")
        sizes[name.strip().lower()] = int(value)
    return BenchSettings(
        models=tuple(models),
        size=args.size,
        sizes=sizes,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        budget=args.budget,
        job=not args.no_job,
        job_steps=args.job_steps,
        fit_budget=not args.no_fit_budget,
        compile=args.compile,
        unfused=args.unfused,
        limits=not args.no_limits,
        keep_memory=not args.no_keep_memory,
        threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_bench(settings_from(args), Reporter(), run_job=run_adapt_and_export)
    except RfrError as exc:  # bad settings, an unknown model: one line, as the CLI says it
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    stem = args.out_dir / (args.name or f"speed_{report.environment['device_type']}")
    written = [write_report(report, stem.with_suffix(".md")), write_report(report, stem.with_suffix(".json"))]
    try:
        written.append(plot_report(report, stem.with_suffix(".png")))
    except MissingDependencyError as exc:
        print(f"no plot: {exc}", file=sys.stderr)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
