"""Where one update's time goes: PyTorch's profiler over a few updates of each runner mode.

Same update as the bench (random full-size network, one generated RGB image, batch 1, σ = 25, a
random dihedral transform per update), built by the same ``make_runner``; the table lists, per mode,
the operators with the most self time, in ms per update and as a share of the profiled total.

    python benchmarks/profile_update.py --model dncnn --size 256 --modes bf16,bf16-unfused --threads 2
"""

from __future__ import annotations

import argparse
import time

from common import environment, report, update_context, use_threads
from torch.profiler import ProfilerActivity, profile

from rfr_deploy.adaptation.runners import make_runner


def profile_mode(model_name: str, mode: str, size: int, updates: int, top: int) -> dict:
    """Warm-up, then ``updates`` timed updates without and ``updates`` with the profiler."""
    runner = make_runner(update_context(model_name, size), mode)
    for k in range(2):
        runner.step(0, k, None)
    start = time.perf_counter()
    for k in range(updates):
        runner.step(0, k % 8, None)
    plain_ms = 1e3 * (time.perf_counter() - start) / updates
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(updates):
            runner.step(0, k % 8, None)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "op": e.key,
            "ms_per_update": round(e.self_cpu_time_total / 1e3 / updates, 2),
            "share": round(e.self_cpu_time_total / total_us, 4),
            "calls_per_update": e.count // updates,
        }
        for e in events[:top]
    ]
    return {
        "mode": mode,
        "runner": runner.name,
        "ms_per_update": round(plain_ms, 2),
        "profiled_ms_per_update": round(total_us / 1e3 / updates, 2),
        "top": rows,
    }


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        f"# Where the update's time goes: {a['model']} at {a['size']}², CPU, {a['threads']} threads",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}.",
        f"- {a['updates']} updates timed without the profiler, then {a['updates']} profiled; self time per "
        "operator, in ms per update and as a share of all profiled self time.",
        "",
    ]
    for m in data["modes"]:
        lines += [
            f"## {m['mode']} ({m['runner']}): {m['ms_per_update']} ms/update "
            f"({m['profiled_ms_per_update']} ms profiled)",
            "",
            "| operator | ms/update | share | calls/update |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['op']} | {r['ms_per_update']} | {100 * r['share']:.1f} % | {r['calls_per_update']} |"
            for r in m["top"]
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dncnn")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--modes", default="bf16,bf16-unfused", help="comma-separated runner modes")
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--top", type=int, default=8, help="operators listed per mode")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    use_threads(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    data = {
        "args": vars(args),
        "environment": environment(),
        "modes": [profile_mode(args.model, m, args.size, args.updates, args.top) for m in modes],
    }
    report(args.name or f"profile_update_{args.model}{args.size}", data, to_markdown(data))


if __name__ == "__main__":
    main()
