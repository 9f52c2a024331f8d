"""Every registered architecture exports to ONNX with dynamic sizes and matches PyTorch in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.models.factory import create_model, get_entry, list_models

pytest.importorskip("onnx", reason="the onnx package is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript (torch.export-based ONNX export) is not installed")

from exporters.onnx_export import export_onnx, onnx_metadata  # noqa: E402
from exporters.onnx_format import OnnxExporter  # noqa: E402


def _perturbed(name: str):
    """A small random ``name``: random weights near the identity would hide errors, so every
    parameter is perturbed."""
    torch.manual_seed(0)
    model = create_model(name, weights=None, channels=3, **get_entry(name).test_kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", list_models())
def test_export_matches_pytorch_at_another_size(name, tmp_path):
    model = _perturbed(name)
    example = torch.rand(1, 3, 24, 28)
    sigma = 25 / 255 if model.meta.noise_map else None
    report = export_onnx(
        model, tmp_path / f"{name}.onnx", example=example, sigma=sigma, metadata=onnx_metadata(model)
    )
    assert report.max_abs_error is not None and report.max_abs_error < 1e-4

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 19, 22)  # another batch, odd height: the wrapper pads inside the graph
    feeds = {"noisy": x.numpy()}
    s = None
    if model.meta.noise_map:
        s = torch.tensor([0.05, 0.15])
        feeds["sigma"] = s.numpy()
    got = session.run(["denoised"], feeds)[0]
    with torch.no_grad():
        want = model(x, s).numpy()
    assert got.shape == want.shape == (2, 3, 19, 22)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want - x.numpy()).max() > 1e-3  # the network does something: the check is not vacuous


@pytest.mark.parametrize("name", list_models())
def test_adapt_and_export_runs_every_model_and_verifies_its_onnx(name, tmp_path, rng):
    from rfr_deploy.images import write_image
    from rfr_deploy.jobs.adapt_export import adapt_and_export
    from rfr_deploy.jobs.settings import JobSettings
    from rfr_deploy.models.weights import save_weights

    model = _perturbed(name)
    weights = tmp_path / f"{name}.safetensors"
    save_weights(weights, model.net, model.meta)
    image = write_image(tmp_path / "noisy.png", rng.random((20, 24, 3)).astype(np.float32))
    out = tmp_path / "out"
    settings = JobSettings(
        model=name, weights=str(weights), sigma=25 / 255, device="cpu", output_dir=str(out)
    )
    config = AdaptConfig(steps=2, warmup=0)
    (manifest,) = adapt_and_export([image], settings, config, exporters=[OnnxExporter()])
    assert manifest["model"]["name"] == name and len(manifest["losses"]) == 2
    onnx = next(f for f in manifest["files"] if f["role"] == "onnx")
    assert (out / onnx["path"]).is_file() and onnx["max_abs_error"] < 1e-4
    assert (out / "noisy_rfr.png").is_file()
