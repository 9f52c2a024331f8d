"""``adapt-and-export --format onnx`` end to end: the written ONNX model reproduces the written output image,
for one image and for every image of a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.images import read_image, write_image
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def grey_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.clip(np.round(a * 255), 0, 255) - np.clip(np.round(b * 255), 0, 255)).max())


def run_onnx(session, pixels: np.ndarray) -> np.ndarray:
    return session.run(["denoised"], {"noisy": pixels.transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)


@pytest.mark.parametrize(
    "precision, ensemble", [("fp32", False), ("fp16", False), ("fp32", True), ("fp16", True)]
)
def test_exported_onnx_reproduces_the_adapted_output(tmp_path, smooth_image, rng, precision, ensemble):
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, model.net, model.meta)
    noisy = np.clip(smooth_image + 0.1 * rng.standard_normal(smooth_image.shape), 0, 1)
    source = write_image(tmp_path / "in" / "noisy.png", noisy)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "adapt-and-export",
            str(source),
            "--weights",
            str(weights),
            "--sigma",
            "25",
            "--steps",
            "2",
            "--format",
            "onnx",
            "--precision",
            precision,
            "--output-ensemble" if ensemble else "--no-output-ensemble",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)[0]
    adaptation = manifest["adaptation"]
    assert adaptation["select"] == "sure" and f"{adaptation['interpolation']:g}" in adaptation["sure_db"]
    roles = {f["role"]: f for f in manifest["files"]}
    assert roles["onnx"]["path"] == "noisy_rfr.onnx" and roles["onnx"]["max_abs_error"] < 1e-2
    session = ort.InferenceSession(str(out / "noisy_rfr.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert (
        meta["precision"] == precision
        and meta["model.weights_sha256"] == manifest["model"]["adapted_weights_sha256"]
        and meta["ensemble"] == ("x8" if ensemble else "none")
        and manifest["output_ensemble"] is ensemble
    )
    pixels = read_image(source).pixels
    written = read_image(out / "noisy_rfr.png").pixels
    levels = grey_levels(run_onnx(session, pixels), written)
    assert levels <= 1, f"ONNX output differs from the written image by {levels} grey levels"
    # Unseen images (random, tiny, odd-sized): the graph still computes what PyTorch writes with these weights.
    adapted = create_model("dncnn", weights=str(out / "noisy_rfr.safetensors"))
    for h, w in ((9, 14), (21, 7)):
        unseen = rng.random((h, w, 3), dtype=np.float32)
        want = to_pixels(denoise(adapted, to_tensor(unseen), ensemble=ensemble))
        assert grey_levels(run_onnx(session, unseen), want) <= 1


def test_a_folder_run_captures_one_graph_and_every_file_computes_its_own_output(
    tmp_path, smooth_image, rng, captures
):
    """Later images reuse the run's first graph (exporters.onnx_reuse) with their own weights and metadata."""
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, model.net, model.meta)
    for name in ("a", "b", "c"):
        noisy = np.clip(smooth_image + 0.1 * rng.standard_normal(smooth_image.shape), 0, 1)
        write_image(tmp_path / "in" / f"{name}.png", noisy)
    out = tmp_path / "out"
    job = ["adapt-and-export", str(tmp_path / "in"), "--weights", str(weights), "-o", str(out)]
    options = ["--sigma", "25", "--steps", "2", "--format", "onnx", "--json", "--quiet"]
    result = CliRunner().invoke(main, [*job, *options])
    assert result.exit_code == 0, result.output
    manifests = json.loads(result.stdout)
    onnx_records = [next(f for f in m["files"] if f["role"] == "onnx") for m in manifests]
    assert sorted(r["graph"] for r in onnx_records) == ["captured", "reused", "reused"] and len(captures) == 1
    for record, manifest in zip(onnx_records, manifests, strict=True):
        name = record["path"].removesuffix("_rfr.onnx")
        session = ort.InferenceSession(str(out / record["path"]), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        assert meta["model.weights_sha256"] == manifest["model"]["adapted_weights_sha256"]
        pixels = read_image(tmp_path / "in" / f"{name}.png").pixels
        assert grey_levels(run_onnx(session, pixels), read_image(out / f"{name}_rfr.png").pixels) <= 1
    assert len({r["path"] for r in onnx_records}) == 3


def test_a_later_run_takes_the_graph_from_the_graph_cache(
    image_file, weights_file, tmp_path, captures, own_cache_folder
):
    """A run keeps its verified graph in $XDG_CACHE_HOME; the next one fills it with its own weights
    (exporters.onnx_graph_cache); --no-graph-cache neither reads nor writes it."""
    job = [
        "adapt-and-export",
        str(image_file),
        "--weights",
        str(weights_file),
        "--sigma",
        "25",
        "--steps",
        "2",
    ]
    entries = own_cache_folder / "rfr-deploy" / "onnx-graphs"
    graphs, kept = [], []
    for run, options in enumerate((["--no-graph-cache"], [], [], ["--no-graph-cache"])):
        out = tmp_path / f"out{run}"
        result = CliRunner().invoke(
            main, [*job, "--format", "onnx", "--json", "--quiet", "-o", str(out), *options]
        )
        assert result.exit_code == 0, result.output
        (record,) = [f for f in json.loads(result.stdout)[0]["files"] if f["role"] == "onnx"]
        graphs.append(record["graph"])
        kept.append(len(list(entries.glob("*.json"))))
        session = ort.InferenceSession(str(out / record["path"]), providers=["CPUExecutionProvider"])
        pixels = read_image(image_file).pixels
        assert grey_levels(run_onnx(session, pixels), read_image(out / "noisy_rfr.png").pixels) <= 1
    assert graphs == ["captured", "captured", "cached", "captured"] and kept == [0, 1, 1, 1]
    assert len(captures) == 3
