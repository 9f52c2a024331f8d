"""Seconds per ONNX export of an adapted network: the graph captured from it, or the run's first graph
reused with its weights (``exporters.onnx_reuse``; what ``adapt-and-export --format onnx`` does for every
image after the first of a run).

Per network, in one process, three networks of that architecture with different random weights are
exported in turn with one ``GraphReuse``: the first is captured (the first export of the process, as in a
run), the second reuses its graph, the third is captured again without reuse (the warm capture time).
Every export is verified with ONNX Runtime as usual; the largest error of each is listed.

    python benchmarks/onnx_reuse.py --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import environment, report, use_threads

from exporters.onnx_export import REUSED_VERIFY_SIZE, export_onnx
from exporters.onnx_reuse import GraphReuse
from rfr_deploy.heap import keep_freed_memory
from rfr_deploy.models.factory import create_model

MODELS = "dncnn,ffdnet,cbdnet,ridnet,rdn,mirnet"
RUNS = (("first (captured)", True), ("later (reused)", True), ("later, no reuse (captured)", False))


def time_model(name: str, size: int, out_dir) -> dict:
    """Seconds, graph and largest error of each export of :data:`RUNS` for network ``name``."""
    reuse, example = GraphReuse(), torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = {}
    for seed, (label, reusing) in enumerate(RUNS):
        torch.manual_seed(seed)
        model = create_model(name, weights=None, channels=3).eval()
        sigma = 25 / 255 if model.meta.noise_map else None
        started = time.perf_counter()
        made = export_onnx(
            model,
            out_dir / f"{name}_{seed}.onnx",
            example=example,
            sigma=sigma,
            reuse=reuse if reusing else None,
        )
        seconds = time.perf_counter() - started
        rows[label] = {"seconds": round(seconds, 2), "graph": made.graph, "max_abs_error": made.max_abs_error}
    warm = rows[RUNS[2][0]]["seconds"]
    return {
        "model": name,
        "size": size,
        "exports": rows,
        "speed_up": round(warm / rows[RUNS[1][0]]["seconds"], 1),
    }


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        "# ONNX export of an adapted network: graph captured against the run's first graph reused",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}.",
        f"- `exporters.onnx_export.export_onnx`, dynamic sizes, fp32, full-size networks with random weights, "
        f"example {a['size']}² (RGB); every export verified with ONNX Runtime, a captured graph on the example "
        "and at a second, odd size (batch 2), a reused one on a centre crop of at most "
        f"{a.get('reused_verify_size', a['size'])}² (its sizes were verified with the first).",
        "- Seconds of one export each; the speed-up is the warm capture's time over the reuse's.",
        "",
        "| network | " + " | ".join(f"{label} s" for label, _ in RUNS) + " | speed-up | largest error |",
        "|---|" + "---:|" * (len(RUNS) + 2),
    ]
    for r in data["models"]:
        runs = [r["exports"][label] for label, _ in RUNS]
        error = max(x["max_abs_error"] for x in runs)
        lines.append(
            f"| {r['model']} | "
            + " | ".join(str(x["seconds"]) for x in runs)
            + f" | {r['speed_up']}× | {error:.1e} |"
        )
    return "\n".join(lines)


def export_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The options of the export benchmarks (this one and ``onnx_graph_cache.py``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help="comma-separated network names")
    parser.add_argument(
        "--size", type=int, default=192, help="example side (the verification crop's at most)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=name)
    return parser


def main() -> None:
    args = export_parser(__doc__, "onnx_reuse_cpu").parse_args()
    use_threads(args)
    keep_freed_memory()
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.models.split(",")):
            models.append(time_model(name, args.size, Path(tmp)))
            print(models[-1], flush=True)
    settings = {**vars(args), "reused_verify_size": min(args.size, REUSED_VERIFY_SIZE)}
    data = {"args": settings, "environment": environment(), "models": models}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
