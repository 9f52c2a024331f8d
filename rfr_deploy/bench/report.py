"""What ``rfr-deploy bench`` found, and how it is shown: records, markdown, JSON, a bar chart."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfr_deploy.adaptation.cpu_runners import channels_last_updates_pay, cpu_precision
from rfr_deploy.bench.limits import Limits
from rfr_deploy.bench.settings import PAPER_SIZE, BenchSettings
from rfr_deploy.errors import ConfigError
from rfr_deploy.files import atomic_write
from rfr_deploy.optional import import_optional

PAPER_V100_SECONDS = {"dncnn": 0.035, "ridnet": 0.073, "mirnet": 0.666}
"""Seconds per fine-tuning update on a 256×256 image, Tesla V100 (Lee et al., restore-from-restored)."""
V100_FP32_TFLOPS = 15.7
"""Tesla V100 (SXM2) fp32 peak by NVIDIA's datasheet: a lead for the paper's fraction, not a measurement."""


def default_mode(device_type: str) -> str:
    """The bench mode of the runner ``adapt`` uses by default on this machine (``fast='auto'``)."""
    if device_type == "cuda":
        return "amp+graphs"
    if cpu_precision("auto") == "bf16":
        return "bf16"
    return "channels-last" if channels_last_updates_pay() else "fused-adam"


@dataclass
class ModeTiming:
    mode: str
    runner: str = ""
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    updates: int = 0
    """Timed updates actually done (over all repeats)."""
    repeats: int = 0
    first_update_ms: float | None = None
    """The first warm-up update (includes autotuning or compilation)."""
    setup_s: float = 0.0
    """Building the runner (CUDA-graph warm-up and capture included)."""
    error: str | None = None
    rounds_ms: list[float] = field(default_factory=list)
    """Per-update time of each round; rounds of different modes with the same index ran back to back."""


@dataclass
class ModelResult:
    model: str
    size: int = PAPER_SIZE
    params: int | None = None
    modes: list[ModeTiming] = field(default_factory=list)
    job_s: float | None = None
    job_note: str = ""
    note: str = ""
    flops_per_update: float | None = None
    """Forward + backward FLOPs of one update at ``size`` (FlopCounterMode)."""

    def timing(self, mode: str) -> ModeTiming | None:
        return next((m for m in self.modes if m.mode == mode and m.median_ms is not None), None)

    @property
    def fastest(self) -> ModeTiming | None:
        timed = [m for m in self.modes if m.median_ms is not None]
        return min(timed, key=lambda m: m.median_ms) if timed else None

    @property
    def paper_ms(self) -> float | None:
        seconds = PAPER_V100_SECONDS.get(self.model)
        return None if seconds is None else 1e3 * seconds

    @property
    def speedup_vs_paper(self) -> float | None:
        """Paper V100 time over our fastest time; only at the paper's image size."""
        best, paper = self.fastest, self.paper_ms
        if best is None or paper is None or self.size != PAPER_SIZE:
            return None
        return paper / best.median_ms

    def fast_over_eager(self, device_type: str) -> float | None:
        """Speed-up of the device's default fast path over the eager loop: the median of the ratios
        of rounds that ran back to back (robust to a machine load that changes during the run)."""
        return self.over_eager(default_mode(device_type))

    def over_eager(self, mode: str) -> float | None:
        """Speed-up of ``mode`` over the eager loop (median of back-to-back round ratios)."""
        eager, fast = self.timing("eager"), self.timing(mode)
        if eager is None or fast is None:
            return None
        pairs = list(zip(eager.rounds_ms, fast.rounds_ms, strict=False))
        if not pairs:
            return eager.median_ms / fast.median_ms
        return statistics.median(e / f for e, f in pairs)


@dataclass
class BenchReport:
    settings: BenchSettings
    environment: dict[str, Any]
    results: list[ModelResult]
    limits: list[Limits] = field(default_factory=list)
    """The device's measured rates at the start and at the end of the run, and at the size of each model
    timed at another size."""

    def best_limits(self, size: int | None = None) -> Limits | None:
        """The highest rate of each kind measured during the run at ``size``² (default: the bench's size),
        the denominators of the fractions of the models timed at that size."""
        size = self.settings.size if size is None else size
        measured = [lim for lim in self.limits if lim.size == size]
        if not measured:
            return None
        best = max(measured, key=lambda lim: lim.conv_fp32_gflops)
        rates = ("conv_low_gflops", "copy_gbps", "train_fp32_gflops", "train_low_gflops")
        highest = {name: [getattr(lim, name) for lim in measured if getattr(lim, name)] for name in rates}
        return dataclasses.replace(best, **{name: max(v) if v else None for name, v in highest.items()})

    def to_dict(self) -> dict[str, Any]:
        device_type = self.environment["device_type"]
        results = []
        for r in self.results:
            row = dataclasses.asdict(r)
            row.update(
                paper_v100_ms=r.paper_ms,
                speedup_vs_paper=_round(r.speedup_vs_paper),
                fast_over_eager=_round(r.fast_over_eager(device_type)),
                fastest_mode=r.fastest.mode if r.fastest else None,
                fast_mode=default_mode(device_type),
                against_limit=[dataclasses.asdict(row) for row in limit_rows(r, self.best_limits(r.size))],
            )
            results.append(row)
        return {
            "settings": dataclasses.asdict(self.settings),
            "environment": self.environment,
            "limits": [dataclasses.asdict(lim) for lim in self.limits],
            "paper": {
                "seconds_per_update_v100": PAPER_V100_SECONDS,
                "size": PAPER_SIZE,
                "v100_fp32_tflops_datasheet": V100_FP32_TFLOPS,
            },
            "results": results,
        }

    def to_markdown(self) -> str:
        return render_markdown(self)


def write_report(report: BenchReport, path: str | os.PathLike) -> Path:
    """JSON for a ``.json`` path, else markdown; written atomically."""
    path = Path(path)
    text = json.dumps(report.to_dict(), indent=2) if path.suffix.lower() == ".json" else report.to_markdown()
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def render_markdown(report: BenchReport) -> str:
    env, s = report.environment, report.settings
    device_type = env["device_type"]
    lines = [
        f"# rfr-deploy speed benchmark ({device_type})",
        "",
        f"- Device: {env['device']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
        f"{env['cpu_threads']} CPU threads ({env['cpu_count']} cores, load average {env['load_average']} "
        f"at the start), Python {env['python']}, {env['date']}"
        + (f"; freed CPU memory: {env['freed_memory']}" if "freed_memory" in env else ""),
        "- One update = noise draw, forward, loss, backward, Adam step on one RGB image (batch 1), "
        "random dihedral transform; default full-size network with random weights.",
        f"- Timing: {s.warmup} warm-up updates, then up to {s.repeats} repeats × {s.steps} updates per mode "
        f"({'CUDA events' if device_type == 'cuda' else 'perf_counter'}); per-update time = repeat time / "
        f"updates; median, min, max over repeats. Budget {s.budget:g} s per model.",
        f"- Paper: Lee et al., one fine-tuning update on a {PAPER_SIZE}×{PAPER_SIZE} image on a Tesla V100 "
        "(compared only at that size).",
        "",
        "## Per-update time",
        "",
        "| model | params | size | mode | runner | median ms | min ms | max ms | timed updates | "
        "first update ms | setup s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        for m in r.modes:
            if m.median_ms is None:
                lines.append(
                    f"| {r.model} | {r.params:,} | {r.size} | {m.mode} | {m.runner} | {m.error} | | | | | |"
                )
                continue
            mode = f"{m.mode} ({m.error} after {m.repeats} rounds)" if m.error else m.mode
            lines.append(
                f"| {r.model} | {r.params:,} | {r.size} | {mode} | {m.runner} | {m.median_ms:.2f} | "
                f"{m.min_ms:.2f} | {m.max_ms:.2f} | {m.updates} | {_fmt(m.first_update_ms)} | {m.setup_s:.2f} |"
            )
    fast = default_mode(device_type)
    lines += [
        "",
        "## Summary",
        "",
        f"| model | size | fastest mode | ms/update | paper V100 ms | speed-up vs paper | {fast} vs eager* | "
        "adapt-and-export | notes |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in report.results:
        best = r.fastest
        lines.append(
            f"| {r.model} | {r.size} | {best.mode if best else 'none timed'} | {_fmt(best and best.median_ms)} | "
            f"{_fmt(r.paper_ms)} | {_fmt(r.speedup_vs_paper, 'x')} | {_fmt(r.fast_over_eager(device_type), 'x')} | "
            f"{r.job_note or '-'} | {r.note or '-'} |"
        )
    lines += [
        "",
        f"\\* Median over rounds of eager time / {fast} time, each pair of rounds run back to back.",
    ]
    lines += render_limits(report)
    return "\n".join(lines) + "\n"


@dataclass
class LimitRow:
    """One mode of one model against the machine's measured limit."""

    mode: str
    ms: float
    gflops: float
    limit_gflops: float | None
    fraction: float | None
    over_eager: float | None
    train_limit_gflops: float | None = None
    """The convolution's forward + backward rate in the mode's precision (None: not measured)."""
    train_fraction: float | None = None


def limit_rows(result: ModelResult, limits: Limits | None) -> list[LimitRow]:
    """Achieved GFLOP/s and fraction of the measured convolution rate of every timed mode, and the
    paper's V100 figure at 256² (against the V100's datasheet fp32 peak)."""
    flops = result.flops_per_update
    if not flops:
        return []
    rows = []
    for m in result.modes:
        if m.median_ms is None:
            continue
        gflops = flops / (m.median_ms / 1e3) / 1e9
        limit = limits.rate_for(m.mode) if limits else None
        train = limits.train_rate_for(m.mode) if limits else None
        rows.append(
            LimitRow(
                m.mode,
                m.median_ms,
                round(gflops, 1),
                limit,
                round(gflops / limit, 3) if limit else None,
                _round(result.over_eager(m.mode)),
                train,
                round(gflops / train, 3) if train else None,
            )
        )
    if result.paper_ms and result.size == PAPER_SIZE:
        gflops = flops / (result.paper_ms / 1e3) / 1e9
        peak = V100_FP32_TFLOPS * 1e3
        rows.append(
            LimitRow("paper V100", result.paper_ms, round(gflops, 1), peak, round(gflops / peak, 3), None)
        )
    return rows


def render_limits(report: BenchReport) -> list[str]:
    """The "against the machine's limit" section (empty when no limits were measured)."""
    if not report.limits:
        return []
    measured = "; ".join(
        f"{lim.when or 'measured'} at {lim.size}²: fp32 {lim.conv_fp32_gflops:g}, "
        + (f"{lim.low_precision} {lim.conv_low_gflops:g}" if lim.conv_low_gflops else "no bf16 rate")
        + f" GFLOP/s (forward + backward: {_fmt(lim.train_fp32_gflops)}, {_fmt(lim.train_low_gflops)})"
        + (f", copy {lim.copy_gbps:g} GB/s" if lim.copy_gbps else "")
        for lim in report.limits
    )
    lines = [
        "",
        "## Against the machine's limit",
        "",
        f"- Measured in this run, 3×3 64→64 convolution (forward, batch 1; on a CPU each rate in the faster "
        f"of channels-last and the default layout): {measured}. "
        "Each model's fractions use the higher measurement of each rate at its own size; bf16 modes are compared with "
        "the bf16 rate, the others with fp32. The last two columns: the same layer's forward pass with "
        "its input and weight gradients, the rate an update made only of such layers could reach.",
        "- FLOPs per update: forward + backward of the network (torch.utils.flop_counter), at the size timed. "
        f"Paper row: the same FLOP count over the paper's time, against the V100's datasheet fp32 peak "
        f"({V100_FP32_TFLOPS:g} TFLOP/s, not measured).",
        "",
        "| model | size | GFLOP/update | mode | ms/update | GFLOP/s | limit GFLOP/s | fraction of limit | vs eager* "
        "| layer fwd+bwd GFLOP/s | fraction of it |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.results:
        for row in limit_rows(r, report.best_limits(r.size)):
            lines.append(
                f"| {r.model} | {r.size} | {r.flops_per_update / 1e9:.1f} | {row.mode} | {row.ms:.2f} | "
                f"{row.gflops:.1f} | {_fmt(row.limit_gflops)} | {_fmt(row.fraction and 100 * row.fraction, ' %')} | "
                f"{_fmt(row.over_eager, 'x')} | {_fmt(row.train_limit_gflops)} | "
                f"{_fmt(row.train_fraction and 100 * row.train_fraction, ' %')} |"
            )
    return lines


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def plot_report(report: BenchReport, path: str | os.PathLike) -> Path:
    """Bar chart of the median time per update (min-max error bars), paper V100 figures alongside."""
    matplotlib = import_optional("matplotlib", "plot", "plot benchmark results")
    matplotlib.use("Agg")
    plt = import_optional("matplotlib.pyplot", "plot", "plot benchmark results")
    rows = [r for r in report.results if r.modes]
    modes = list(dict.fromkeys(m.mode for r in rows for m in r.modes if m.median_ms is not None))
    if any(r.paper_ms and r.size == PAPER_SIZE for r in rows):
        modes.append("paper V100")
    if not modes:
        raise ConfigError("nothing to plot: no model was timed")
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(rows) + 2), 4.5))
    for j, mode in enumerate(modes):
        xs, ys, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            t = None if mode == "paper V100" else r.timing(mode)
            value = (
                t.median_ms if t else (r.paper_ms if mode == "paper V100" and r.size == PAPER_SIZE else None)
            )
            if value:
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                ys.append(value)
                lo.append(value - (t.min_ms if t else value))
                hi.append((t.max_ms if t else value) - value)
        hatch = "//" if mode == "paper V100" else None
        ax.bar(xs, ys, width, yerr=[lo, hi], label=mode, hatch=hatch, capsize=2)
    ax.set_xticks(range(len(rows)), [f"{r.model}\n{r.size}²" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per update (log)")
    ax.set_title(f"One restore-from-restored update: {report.environment['device']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
