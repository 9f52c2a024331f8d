"""Seconds of an ONNX export in a new process: the graph captured, or taken from the graph cache that an
earlier process filled (``exporters.onnx_graph_cache``; what a second ``adapt-and-export --format onnx``
run of an architecture does).

Per network, two new Python processes export a network of that architecture with different random
weights, one after the other, sharing an empty cache folder: the first captures the graph and keeps it,
the second fills the cached graph with its weights. Each process reports the export's own seconds; the
parent also times each process whole (start-up and imports included). Every export is verified with ONNX
Runtime as usual; the largest error of each is listed, with the cache entry's size next to the file's.

    python benchmarks/onnx_graph_cache.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, report
from onnx_reuse import export_parser

from exporters.onnx_export import REUSED_VERIFY_SIZE

RUNS = ("first process (captured)", "second process (cached)")


def export_once(args: argparse.Namespace) -> None:
    """The child: one export of ``args.worker`` with the cache at ``args.cache``; prints a JSON line."""
    import torch

    from exporters.onnx_export import export_onnx
    from exporters.onnx_graph_cache import GraphCache
    from exporters.onnx_reuse import GraphReuse
    from rfr_deploy.heap import keep_freed_memory
    from rfr_deploy.models.factory import create_model

    torch.set_num_threads(args.threads or torch.get_num_threads())
    keep_freed_memory()
    example = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(args.seed)
    model = create_model(args.worker, weights=None, channels=3).eval()
    sigma = 25 / 255 if model.meta.noise_map else None
    started = time.perf_counter()
    reuse = GraphReuse(GraphCache(Path(args.cache)))
    made = export_onnx(model, args.out, example=example, sigma=sigma, reuse=reuse)
    seconds = time.perf_counter() - started
    print(
        json.dumps({"seconds": round(seconds, 2), "graph": made.graph, "max_abs_error": made.max_abs_error})
    )


def time_model(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Both processes' rows for network ``name``, and the sizes of its file and its cache entry."""
    cache, rows = tmp / f"cache_{name}", {}
    for seed, label in enumerate(RUNS):
        out = tmp / f"{name}_{seed}.onnx"
        command = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--cache", str(cache)]
        command += ["--out", str(out), "--size", str(args.size)]
        command += ["--threads", str(args.threads)] if args.threads else []
        started = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        process = time.perf_counter() - started
        rows[label] = {
            **json.loads(done.stdout.strip().splitlines()[-1]),
            "process_seconds": round(process, 2),
        }
    entry = sum(p.stat().st_size for p in cache.iterdir())
    first, second = (rows[label]["seconds"] for label in RUNS)
    return {
        "model": name,
        "size": args.size,
        "exports": rows,
        "speed_up": round(first / second, 1),
        "file_bytes": (tmp / f"{name}_1.onnx").stat().st_size,
        "entry_bytes": entry,
    }


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        "# ONNX export in a new process: graph captured against the graph cache of an earlier run",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}.",
        "- `exporters.onnx_export.export_onnx` with `GraphReuse(GraphCache(folder))`, dynamic sizes, fp32, "
        f"full-size networks with random weights, example {a['size']}² (RGB); two new processes per network "
        "share an empty cache folder. Each export verified with ONNX Runtime: the captured graph on the example "
        "and at a second, odd size (batch 2), the cached one on a centre crop of at most "
        f"{a.get('reused_verify_size', a['size'])}².",
        "- Export s: the export call alone; process s: the whole process, start-up and imports included. "
        "Speed-up: the first export's time over the second's. Entry: the cache's files for the network "
        "(its graph without the weights, and a JSON record).",
        "",
        "| network | "
        + " | ".join(f"{label}: export s / process s" for label in RUNS)
        + " | speed-up | largest error | ONNX file MB | cache entry kB |",
        "|---|" + "---:|" * (len(RUNS) + 4),
    ]
    for r in data["models"]:
        runs = [r["exports"][label] for label in RUNS]
        error = max(x["max_abs_error"] for x in runs)
        lines.append(
            f"| {r['model']} | "
            + " | ".join(f"{x['seconds']} / {x['process_seconds']}" for x in runs)
            + f" | {r['speed_up']}× | {error:.1e} | {r['file_bytes'] / 1e6:.1f} | {r['entry_bytes'] / 1e3:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = export_parser(__doc__, "onnx_graph_cache_cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        export_once(args)
        return
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.models.split(",")):
            models.append(time_model(name, args, Path(tmp)))
            print(models[-1], flush=True)
    settings = {k: v for k, v in vars(args).items() if k in ("models", "size", "threads", "name")}
    settings["reused_verify_size"] = min(args.size, REUSED_VERIFY_SIZE)
    data = {"args": settings, "environment": environment(), "models": models}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
