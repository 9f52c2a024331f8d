"""The three passes of one convolution, timed apart: forward, input gradient, weight gradient.

What bounds the CPU update against the bench's forward convolution rate: the update's convolutions
run forward once and backward twice (input and weight gradients, the first layer's input gradient
excepted), so a slow backward kernel caps the whole update. Same layer as the bench's limits
(3×3, 64→64, batch 1, channels-last; :mod:`rfr_deploy.bench.limits`), each pass through
``aten.convolution_backward`` with one output asked for, median of ``--repeats`` timed batches. The same
calls on a ``--fixed-size``² image (4² by default: next to no arithmetic) give each call's fixed cost,
which weighs at the default job's 64² patches; there the update's own backward call (both gradients and
the bias's, as autograd asks) is timed too. ``--layouts channels-last,contiguous`` times both memory
formats (on an AVX2-only CPU the contiguous one is the faster).

    python benchmarks/conv_passes.py --size 256 --threads 2
"""

from __future__ import annotations

import argparse

import torch
from common import environment, report, use_threads

from rfr_deploy.bench.limits import conv_flops, median_seconds
from rfr_deploy.heap import keep_freed_memory

PASSES = ("forward", "input gradient", "weight gradient")
UPDATE_BACKWARD = "both gradients and the bias's"


LAYOUTS = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def time_passes(
    dtype: torch.dtype, size: int, repeats: int, cl: torch.memory_format = torch.channels_last
) -> dict[str, float]:
    """Seconds per call of each pass of a 3×3 64→64 convolution on a ``size``² image in ``dtype`` and memory
    layout ``cl``, and of the update's backward call (:data:`UPDATE_BACKWARD`)."""
    shape = (1, 64, size, size)
    x = torch.randn(shape).to(dtype).contiguous(memory_format=cl)
    grad = torch.randn(shape).to(dtype).contiguous(memory_format=cl)
    weight = (0.05 * torch.randn(64, 64, 3, 3)).to(dtype).contiguous(memory_format=cl)

    def backward(mask: list[bool]) -> object:
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
        )

    calls = {
        "forward": lambda: torch.nn.functional.conv2d(x, weight, None, 1, 1),
        "input gradient": lambda: backward([True, False, False]),
        "weight gradient": lambda: backward([False, True, False]),
        UPDATE_BACKWARD: lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, [64], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
        ),
    }
    device = torch.device("cpu")
    return {name: median_seconds(call, device, 10, repeats) for name, call in calls.items()}


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        f"# One convolution's three passes: 3×3 64→64 at {a['size']}², batch 1, CPU",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}; {a['threads']} threads.",
        f"- GFLOP/s per pass (each pass is 2·64·64·9·{a['size']}² FLOPs), median of {a['repeats']} batches of "
        "10 calls; freed memory kept. Layout: the tensors' memory format (contiguous: NCHW, which oneDNN "
        "reorders to its blocked format inside each call).",
        "",
        "| precision, layout | " + " | ".join(PASSES) + " | weight gradient / forward |",
        "|---|" + "---:|" * (len(PASSES) + 1),
    ]
    for precision, rates in data["rates"].items():
        cells = " | ".join(f"{rates[p]:g}" for p in PASSES)
        lines.append(f"| {precision} | {cells} | {rates['weight gradient'] / rates['forward']:.2f} |")
    fixed = a["fixed_size"]
    lines += [
        "",
        f"Fixed cost per call: µs per call on a {fixed}² image (64 channels), and as a share of the call at "
        f"{a['size']}²:",
        "",
        "| precision, layout | " + " | ".join((*PASSES, UPDATE_BACKWARD)) + " |",
        "|---|" + "---:|" * (len(PASSES) + 1),
    ]
    for precision, costs in data["fixed_us"].items():
        at_size = data["seconds"][precision]
        cells = " | ".join(f"{costs[p]:g} ({costs[p] / 1e4 / at_size[p]:.0f} %)" for p in costs)
        lines.append(f"| {precision} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fixed-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument(
        "--layouts", default="channels-last", help="comma-separated: channels-last, contiguous"
    )
    parser.add_argument("--name", default="conv_passes_cpu")
    args = parser.parse_args()
    use_threads(args)
    keep_freed_memory()
    cases = {
        f"{p}, {layout}" if "," in args.layouts else p: (PRECISIONS[p], LAYOUTS[layout])
        for p in args.precisions.split(",")
        for layout in args.layouts.split(",")
    }
    seconds = {name: time_passes(dtype, args.size, args.repeats, cl) for name, (dtype, cl) in cases.items()}
    rates = {
        name: {p: round(conv_flops(args.size) / per_call[p] / 1e9, 1) for p in PASSES}
        for name, per_call in seconds.items()
    }
    fixed_us = {
        name: {p: round(1e6 * t, 1) for p, t in time_passes(dtype, args.fixed_size, args.repeats, cl).items()}
        for name, (dtype, cl) in cases.items()
    }
    data = {
        "args": vars(args),
        "environment": environment(),
        "rates": rates,
        "seconds": seconds,
        "fixed_us": fixed_us,
    }
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
