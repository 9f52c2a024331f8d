"""Two costs of a CPU adaptation outside the convolutions, timed in interleaved rounds: Adam's step in
PyTorch's default (``_foreach``) implementation against its fused CPU kernel, alone and inside the bf16
runner's update; and the memory probe a whole-image pass asks for (:func:`rfr_deploy.memory.bytes_per_pixel`)
measured afresh against looked up. Full-size DnCNN with random weights, one generated image of the given
size per case, σ = 25, freed memory kept.

    python benchmarks/job_parts.py --threads 2
"""

from __future__ import annotations

import argparse

from common import (
    add_case_arguments,
    environment,
    interleaved_ms,
    report,
    time_cases,
    time_updates,
    update_context,
    use_threads,
)

from rfr_deploy import memory
from rfr_deploy.adaptation.cpu_runners import Bf16Runner
from rfr_deploy.heap import keep_freed_memory
from rfr_deploy.models.factory import create_model

STEPS = 10**7


class DefaultAdamBf16Runner(Bf16Runner):
    """The bf16 runner with PyTorch's default Adam (the runner before fused Adam)."""

    def adam_options(self) -> dict[str, bool]:
        return {}


def make_runner(cls: type[Bf16Runner], channels: int, size: int) -> Bf16Runner:
    return cls(update_context("dncnn", size, channels, steps=STEPS))


def time_case(channels: int, size: int, rounds: int, updates: int) -> dict:
    """Median ms of an Adam step and of a bf16 update, with the default and the fused Adam."""
    runners = {
        "default": make_runner(DefaultAdamBf16Runner, channels, size),
        "fused": make_runner(Bf16Runner, channels, size),
    }
    steps = {f"step, {kind} Adam": lambda k, r=r: r.optimizer.step() for kind, r in runners.items()}
    updated = {f"update, {kind} Adam": r for kind, r in runners.items()}  # warm-up leaves the gradients
    ms = time_updates(updated, rounds, updates, extra=steps)
    return {
        "channels": channels,
        "size": size,
        "ms": ms,
        "fused": runners["fused"].optimizer.defaults["fused"],
    }


def time_probe(channels: int, rounds: int) -> dict:
    """Median ms of the inference memory probe, measured afresh and looked up."""
    model = create_model("dncnn", weights=None, channels=channels).eval()
    memory.bytes_per_pixel(model, channels, training=False)  # the first look-up measures
    calls = {
        "measured": lambda k: memory._measure(model, channels, training=False),
        "looked up": lambda k: memory.bytes_per_pixel(model, channels, training=False),
    }
    return {"channels": channels, "ms": interleaved_ms(calls, rounds, 10)}


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        "# Adam's step and the memory probe: what a CPU adaptation spends outside the convolutions",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}; {a['threads']} threads.",
        f"- Full-size DnCNN, random weights, batch 1, σ = 25; median of {a['rounds']} rounds of {a['updates']} "
        "calls per kind, the kinds interleaved; freed memory kept. The update is the bf16 runner's.",
        "",
        "| channels | size | Adam step: default | fused | bf16 update: default Adam | fused Adam | update speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["cases"]:
        ms = r["ms"]
        speed_up = ms["update, default Adam"] / ms["update, fused Adam"]
        lines.append(
            f"| {r['channels']} | {r['size']}² | {ms['step, default Adam']} | {ms['step, fused Adam']} | "
            f"{ms['update, default Adam']} | {ms['update, fused Adam']} | {speed_up:.3f}× |"
        )
    lines += ["", "| memory probe, channels | measured ms | looked up ms |", "|---:|---:|---:|"]
    for r in data["probes"]:
        lines.append(f"| {r['channels']} | {r['ms']['measured']} | {r['ms']['looked up']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_case_arguments(parser, rounds=7, name="cpu_job_parts")
    args = parser.parse_args()
    use_threads(args)
    keep_freed_memory()
    cases = time_cases(args, time_case)
    probes = [time_probe(channels, args.rounds) for channels in (1, 3)]
    data = {"args": vars(args), "environment": environment(), "cases": cases, "probes": probes}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
