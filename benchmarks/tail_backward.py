"""The CPU bf16 runner's three kinds of update, timed in interleaved rounds: a bf16 update, and an
update of the fp32 tail with its convolution + ReLU pairs' backward in fp32 or in bf16
(``AdaptConfig.tail_backward``). Full-size DnCNN with random weights, one generated image of the
given size per case (gray and colour), σ = 25, freed memory kept.

    python benchmarks/tail_backward.py --threads 2
"""

from __future__ import annotations

import argparse

from common import (
    add_case_arguments,
    environment,
    report,
    time_cases,
    time_updates,
    update_context,
    use_threads,
)

from rfr_deploy.adaptation.cpu_runners import Bf16Runner
from rfr_deploy.heap import keep_freed_memory

STEPS = 10**7
KINDS = {"bf16": ("bf16", 0), "tail, fp32 backward": ("fp32", STEPS), "tail, bf16 backward": ("bf16", STEPS)}
"""Update kind → (tail_backward, fp32_tail): a tail as long as the run makes every update a tail update."""


def make_runner(channels: int, size: int, tail_backward: str, fp32_tail: int) -> Bf16Runner:
    context = update_context(
        "dncnn", size, channels, steps=STEPS, fp32_tail=fp32_tail, tail_backward=tail_backward
    )
    return Bf16Runner(context)


def time_case(channels: int, size: int, rounds: int, updates: int) -> dict:
    """Median ms per update of each kind in :data:`KINDS`."""
    runners = {kind: make_runner(channels, size, *setting) for kind, setting in KINDS.items()}
    ms = time_updates(runners, rounds, updates)
    return {
        "channels": channels,
        "size": size,
        "ms": ms,
        "runners": {k: r.name for k, r in runners.items()},
    }


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        "# The CPU bf16 runner's updates: bf16, and the fp32 tail with an fp32 or a bf16 backward",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}; {a['threads']} threads.",
        f"- Full-size DnCNN, random weights, batch 1, σ = 25; median of {a['rounds']} rounds of {a['updates']} "
        "updates per kind, the kinds interleaved; freed memory kept.",
        "",
        "| channels | size | " + " | ".join(f"{k} ms" for k in KINDS) + " | tail: fp32 → bf16 backward |",
        "|---:|---:|" + "---:|" * (len(KINDS) + 1),
    ]
    for r in data["cases"]:
        ms = r["ms"]
        cells = " | ".join(f"{ms[k]}" for k in KINDS)
        speed_up = ms["tail, fp32 backward"] / ms["tail, bf16 backward"]
        lines.append(f"| {r['channels']} | {r['size']}² | {cells} | {speed_up:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_case_arguments(parser, rounds=5, name="tail_backward_cpu")
    args = parser.parse_args()
    use_threads(args)
    keep_freed_memory()
    cases = time_cases(args, time_case)
    data = {"args": vars(args), "environment": environment(), "cases": cases}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
