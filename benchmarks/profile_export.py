"""Where one ONNX export's time goes: Python's profiler over ``export_onnx`` of one network, with the
number of ``torch.export`` calls it made.

The export profiled is the process's first (a capture, or with ``--cache`` a graph the cache holds), or
with ``--warm`` the second of a run (the first, unprofiled, leaves its graph for reuse). The table lists
the cumulative seconds of the export's stages under the profiler (which slows Python-heavy stages more
than native ones) and the seconds the profiled export took. Run it twice with one ``--cache`` folder to
profile an export whose graph comes from the cache in a new process:

    python benchmarks/profile_export.py --model mirnet --warm --threads 2 --name profile_export_mirnet_reuse
    python benchmarks/profile_export.py --model dncnn --cache /tmp/graphs --threads 2 --name profile_export_dncnn
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

STAGES = (  # (label, file suffix, function): the stages of a capture, a reuse and their verification
    ("import onnx", "onnx/__init__.py", "<module>"),
    ("torch.export.export", "torch/export/__init__.py", "export"),
    ("torch.onnx decompositions", "torch/export/exported_program.py", "run_decompositions"),
    ("fill the graph with the weights", "exporters/onnx_reuse.py", "fill"),
    ("write and check the file", "exporters/onnx_check.py", "_write_model"),
    ("verification", "exporters/onnx_check.py", "_verify_with_onnxruntime"),
    ("  PyTorch reference", "exporters/verification.py", "reference_output"),
    ("  ONNX Runtime session", "onnxruntime_inference_collection.py", "_create_inference_session"),
    ("  ONNX Runtime run", "onnxruntime_inference_collection.py", "run"),
)


def profile_export(args: argparse.Namespace) -> dict:
    """The stages' cumulative seconds and the ``torch.export`` calls of one profiled export."""
    import torch

    from exporters.onnx_export import export_onnx
    from exporters.onnx_graph_cache import GraphCache
    from exporters.onnx_reuse import GraphReuse
    from rfr_deploy.models.factory import create_model

    calls, export = [], torch.export.export

    def counted(*a, **k):
        started = time.perf_counter()
        try:
            return export(*a, **k)
        finally:
            calls.append(round(time.perf_counter() - started, 2))

    torch.export.export = counted
    reuse = GraphReuse(GraphCache(Path(args.cache)) if args.cache else None)
    example = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="rfr-profile-export-") as out:
        for seed in range(2 if args.warm else 1):
            torch.manual_seed(seed)
            model = create_model(args.model, weights=None, channels=3).eval()
            sigma = 25 / 255 if model.meta.noise_map else None
            profiler = cProfile.Profile() if seed == int(args.warm) else None
            started = time.perf_counter()
            with profiler or contextlib.nullcontext():
                target = Path(out) / f"{seed}.onnx"
                made = export_onnx(model, target, example=example, sigma=sigma, reuse=reuse)
            seconds = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    stages = {label: _cumulative(stats, suffix, name) for label, suffix, name in STAGES}
    return {"graph": made.graph, "seconds": round(seconds, 2), "export_calls": calls, "stages": stages}


def _cumulative(stats: dict, suffix: str, name: str) -> float:
    """Cumulative seconds of the profiled functions ``name`` in files ending in ``suffix``."""
    return round(
        sum(row[3] for (file, _, func), row in stats.items() if file.endswith(suffix) and func == name), 2
    )


def to_markdown(data: dict) -> str:
    a, r = data["args"], data["result"]
    lines = [
        f"# Where an ONNX export's time goes: {a['model']}, {r['graph']} graph",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}.",
        f"- `exporters.onnx_export.export_onnx`, dynamic sizes, fp32, full-size network with random weights, "
        f"example {a['size']}² (RGB); the process's {'second' if a['warm'] else 'first'} export"
        + (f", graph cache `{a['cache']}`" if a["cache"] else ", no graph cache")
        + ".",
        f"- Profiled export: {r['seconds']} s under cProfile. `torch.export.export` calls in the process, s "
        f"each (with the second export profiled, the first export's, unprofiled): {r['export_calls'] or 'none'}.",
        "",
        "| stage | cumulative s (profiled) |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {seconds} |" for label, seconds in r["stages"].items()]
    return "\n".join(lines)


def main() -> None:
    from common import environment, report, use_threads

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dncnn")
    parser.add_argument("--size", type=int, default=192, help="example side")
    parser.add_argument("--warm", action="store_true", help="profile the second export of a run (a reuse)")
    parser.add_argument("--cache", default=None, help="graph cache folder (default: none)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="profile_export")
    args = parser.parse_args()
    use_threads(args)
    data = {"args": vars(args), "environment": environment(), "result": profile_export(args)}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
