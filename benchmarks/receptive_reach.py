"""How far each zoo network's output reaches into its input, three ways: measured by autograd, counted
off the layers (``Denoiser.reach``, the overlap of PyTorch tiles and the margin of training tiles), and
read off the exported ONNX graph (``OnnxDenoiser.receptive_field``, whose half is the overlap of
``rfr-deploy infer``'s tiles).

Measured: the gradient of the centre output pixel of a network with random weights (default
architecture) on a random ``--size``² input; the reach is the farthest input row or column with a
non-zero gradient from the centre. Networks that pool over the whole image reach the whole probe.

    python benchmarks/receptive_reach.py --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import environment, report, use_threads

from rfr_deploy.inference import tile_overlap
from rfr_deploy.models.factory import create_model, list_models


def measured_reach(model, side: int) -> int:
    """The farthest input pixel (rows or columns from the centre) the centre output pixel depends on."""
    probe = torch.rand(1, model.channels, side, side, requires_grad=True)
    model(probe, 0.1 if model.needs_sigma else None)[0, :, side // 2, side // 2].sum().backward()
    used = torch.nonzero(probe.grad[0].abs().sum(0))
    return int((used - side // 2).abs().max())


def graph_field(model) -> tuple[int, bool]:
    """(receptive field, exact tiles) that ``rfr-deploy infer`` reads off the exported graph."""
    from exporters.onnx_export import export_onnx, onnx_metadata
    from exporters.onnx_runtime import OnnxDenoiser

    sigma = 0.1 if model.needs_sigma else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.onnx"
        example = torch.rand(1, model.channels, 64, 64)
        export_onnx(
            model,
            path,
            example=example,
            sigma=sigma,
            verify=False,
            metadata=onnx_metadata(model, sigma=sigma),
        )
        runner = OnnxDenoiser(path)
        return runner.receptive_field, runner.exact_tiles


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=257, help="side of the probe (odd)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="receptive_reach")
    args = parser.parse_args()
    use_threads(args)
    rows = []
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, weights=None, channels=1 if name == "dncnn_n2s" else 3).eval()
        field, exact = graph_field(model)
        rows.append(
            {
                "model": name,
                "measured": measured_reach(model, args.size),
                "reach": model.reach,
                "tile_overlap": tile_overlap(model),
                "global_statistics": model.entry.global_statistics,
                "onnx_field": field,
                "onnx_overlap": -(-field // 2),
                "onnx_exact": exact,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        "# How far each network's output reaches into its input",
        "",
        f"- Command: `python benchmarks/receptive_reach.py --size {args.size} --threads {args.threads}`; "
        "random weights, default architectures (colour; Noise2Self DnCNN gray).",
        f"- {environment().get('device', '?')}, torch {torch.__version__}.",
        f"- measured: farthest input pixel with a non-zero gradient of the centre output pixel, on a {args.size}² "
        f"probe ({args.size // 2} = the whole probe); reach: counted off the layers (`Denoiser.reach`); "
        "tile overlap: PyTorch tiles' and training tiles' margin; ONNX: the field `rfr-deploy infer` reads off "
        "the graph, its overlap half of it.",
        "",
        "| model | measured | reach | tile overlap | whole-image statistics | ONNX field | ONNX overlap | ONNX exact |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['measured']} | {r['reach']} | {r['tile_overlap']} | "
            f"{'yes' if r['global_statistics'] else 'no'} | {r['onnx_field']} | {r['onnx_overlap']} | "
            f"{'yes' if r['onnx_exact'] else 'no'} |"
        )
    report(args.name, {"args": vars(args), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
