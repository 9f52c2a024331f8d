"""Every registered architecture exports to ONNX with dynamic sizes and matches PyTorch in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.registry import create_model, get_entry, list_models

pytest.importorskip("onnx", reason="the onnx package is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript (torch.export-based ONNX export) is not installed")

from exporters.onnx_export import export_onnx, onnx_metadata  # noqa: E402


@pytest.mark.parametrize("name", list_models())
def test_export_matches_pytorch_at_another_size(name, tmp_path):
    torch.manual_seed(0)
    entry = get_entry(name)
    model = create_model(name, weights=None, channels=3, **entry.test_kwargs).eval()
    # Random weights near the identity would hide errors: perturb every parameter.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
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
