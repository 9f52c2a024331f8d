"""ONNX export: every zoo model, dynamic sizes (odd ones included), fp16, metadata, verification."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exporters.errors import ExportError, ExportVerificationError
from exporters.onnx_export import DEFAULT_TOLERANCE, export_onnx, onnx_metadata
from exporters.weight_map import map_weights
from rfr_deploy.models.factory import create_model, get_entry, list_models

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SMALL_KWARGS = {
    "dncnn": {"depth": 3, "features": 8},
    "fdncnn": {"depth": 3, "features": 8},
    "ffdnet": {"depth": 3, "features": 8},
}
"""Small settings of the DnCNN family; other zoo models bring their own (``ModelEntry.test_kwargs``)."""


def tiny_model(name: str, channels: int = 3):
    torch.manual_seed(0)
    kwargs = SMALL_KWARGS.get(name, getattr(get_entry(name), "test_kwargs", {}))
    model = create_model(name, weights=None, channels=channels, **kwargs).eval()
    with torch.no_grad():  # non-zero biases, like trained weights
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def sigma_for(model):
    return 0.1 if model.meta.noise_map else None


def run_onnx(path, x: np.ndarray, sigma: float | None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"noisy": x}
    if sigma is not None:
        feeds["sigma"] = np.full((x.shape[0],), sigma, np.float32)
    return session.run(["denoised"], feeds)[0]


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_exports_with_dynamic_sizes_and_named_weights(tmp_path, name):
    model = tiny_model(name)
    sigma = sigma_for(model)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, example=torch.rand(1, 3, 24, 32), sigma=sigma)
    assert report.max_abs_error is not None and report.max_abs_error <= DEFAULT_TOLERANCE["fp32"]
    assert len(report.verified_shapes) == 2 and report.verified_shapes[1][0] == 2
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == (["noisy", "sigma"] if model.meta.noise_map else ["noisy"])
    assert [o.name for o in graph.output] == ["denoised"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3], f"batch/height/width must be symbolic, got {dims}"
    # Another batch and odd sizes (padding for pad_multiple > 1) run and match PyTorch.
    x = np.random.default_rng(1).random((2, 3, 19, 27), dtype=np.float32)
    got = run_onnx(path, x, sigma)
    with torch.no_grad():
        want = model(torch.from_numpy(x), sigma).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Every parameter is an initializer under its PyTorch name (refit by name), and the weight map says so.
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for key, value in model.state_dict().items():
        assert key in initializers, f"{key} was renamed or folded away"
        np.testing.assert_array_equal(initializers[key], value.numpy())
    weight_map = map_weights(model.state_dict(), path)
    assert weight_map.names == {k: k for k, v in model.state_dict().items() if v.is_floating_point()}
    assert not weight_map.ambiguous and not weight_map.absent


def test_zero_biases_survive_the_export(tmp_path):
    """A random-init DnCNN has all-zero biases; an optimiser that drops them would make them unrefittable."""
    model = create_model("dncnn", weights=None, channels=1, depth=3, features=8)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example=torch.rand(1, 1, 16, 16))
    names = {i.name for i in onnx.load(str(path)).graph.initializer}
    assert {k for k in model.state_dict()} <= names


def test_fp16_export_keeps_float32_io_and_stays_close(tmp_path):
    model = tiny_model("dncnn")
    path = tmp_path / "m16.onnx"
    report = export_onnx(model, path, example=torch.rand(1, 3, 24, 24), precision="fp16")
    assert report.precision == "fp16" and 0 < report.max_abs_error <= DEFAULT_TOLERANCE["fp16"]
    proto = onnx.load(str(path))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == float32
    assert proto.graph.output[0].type.tensor_type.elem_type == float32
    assert {i.data_type for i in proto.graph.initializer if len(i.dims) == 4} == {float16}


def test_metadata_describes_the_model_and_its_input(tmp_path):
    model = tiny_model("ffdnet")
    meta = onnx_metadata(model, noise={"kind": "gaussian", "sigma": 25}, sigma=25 / 255)
    path = tmp_path / "m.onnx"
    report = export_onnx(
        model, path, example=torch.rand(1, 3, 16, 16), sigma=25 / 255, metadata=meta, opset=18
    )
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["model.name"] == "ffdnet"
    assert json.loads(props["model.arch_kwargs"]) == {"depth": 3, "features": 8}
    assert json.loads(props["noise"]) == {"kind": "gaussian", "sigma": 25}
    assert float(props["sigma"]) == pytest.approx(25 / 255)
    assert props["input.layout"] == "NCHW" and props["input.range"] == "[0, 1]"
    assert props["model.pad_multiple"] == str(get_entry("ffdnet").pad_multiple)
    assert props["precision"] == "fp32" and props["opset"] == "18" and props["rfr_deploy.version"]
    assert report.metadata["exporter"] == props["exporter"] == "dynamo"


def test_failed_verification_raises_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import exporters.onnx_check as onnx_check

    real = onnx_check.reference_output
    monkeypatch.setattr(
        onnx_check, "reference_output", lambda model, inputs, **kw: real(model, inputs, **kw) + 0.1
    )
    model = tiny_model("dncnn")
    with pytest.raises(ExportVerificationError) as info:
        export_onnx(model, tmp_path / "m.onnx", example=torch.rand(1, 3, 16, 16))
    assert "\n" not in str(info.value) and "differs from PyTorch" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_noise_map_models_need_sigma(tmp_path):
    with pytest.raises(ExportError, match="noise level"):
        export_onnx(tiny_model("ffdnet"), tmp_path / "m.onnx", example=torch.rand(1, 3, 16, 16))
    assert not (tmp_path / "m.onnx").exists()


def test_static_export_has_fixed_sizes(tmp_path):
    path = tmp_path / "m.onnx"
    report = export_onnx(tiny_model("dncnn"), path, example=torch.rand(1, 3, 20, 24), dynamic=False)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 20, 24] and len(report.verified_shapes) == 1


def test_static_export_takes_the_examples_size_even_above_the_verification_crop(tmp_path):
    path = tmp_path / "m.onnx"
    example = torch.rand(1, 1, 200, 210)  # larger than VERIFY_SIZE (192): once frozen to the crop
    report = export_onnx(tiny_model("dncnn", channels=1), path, example=example, dynamic=False)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 200, 210] and report.verified_shapes == ((1, 1, 200, 210),)


@pytest.mark.parametrize("opset", [7, 16, 24])
def test_opsets_outside_17_to_23_are_refused_as_the_message_says(tmp_path, opset):
    with pytest.raises(ExportError, match="not supported; use 17 to 23"):
        export_onnx(tiny_model("dncnn"), tmp_path / "m.onnx", example=torch.rand(1, 3, 16, 16), opset=opset)


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])
def test_the_file_has_the_opset_asked_for(tmp_path, name, capfd):
    """torch.export writes 18 and converts down; FFDNet's reflection Pad has no converter to 17, and the
    graph used to stay at 18 while its metadata said 17."""
    model = tiny_model(name)
    report = export_onnx(
        model, tmp_path / "m.onnx", example=torch.rand(1, 3, 16, 16), sigma=sigma_for(model), opset=17
    )
    imported = {o.domain or "ai.onnx": o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import}
    assert imported["ai.onnx"] == 17 and report.metadata["opset"] == "17" and report.max_abs_error < 1e-4
    assert capfd.readouterr().err == ""  # the converter's warning and traceback are not shown


def test_an_onnxscript_without_should_fold_is_refused_rather_than_falling_back(tmp_path, monkeypatch):
    import exporters.onnx_export as onnx_export

    installed = onnx_export.installed_version
    monkeypatch.setattr(
        onnx_export, "installed_version", lambda name: "0.4.2" if name == "onnxscript" else installed(name)
    )
    with pytest.raises(ExportError, match=r"onnxscript 0.4.2 is too old .* needs onnxscript >= 0.5"):
        export_onnx(tiny_model("dncnn"), tmp_path / "m.onnx", example=torch.rand(1, 3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_package_floors_match_what_the_exporters_need():
    import re
    from pathlib import Path

    from exporters.onnx_export import ONNXSCRIPT_MIN

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    floors = {}
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            match = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
            if match:
                floors.setdefault(match[1], set()).add((extra, tuple(int(v) for v in match[2].split("."))))
    assert all(v[:2] >= ONNXSCRIPT_MIN for _, v in floors["onnxscript"]), floors["onnxscript"]
    # CreateConfig(strip_plan=) came in 0.49.7; before 0.50.3 CreateConfig read ILayer.precision_is_set on
    # every layer unguarded, and TensorRT 11's bindings no longer have it
    assert all(v >= (0, 50, 3) for _, v in floors["polygraphy"]), floors["polygraphy"]


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])
def test_the_ensemble_graph_computes_the_x8_self_ensemble(tmp_path, name, rng):
    from rfr_deploy.inference import denoise

    model = tiny_model(name)
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, example=torch.rand(1, 3, 20, 26), sigma=sigma_for(model), ensemble=True)
    assert report.metadata["ensemble"] == "x8" and report.max_abs_error < 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(rng.random((2, 3, 17, 11), dtype=np.float32))  # unseen, odd, non-square, batch of 2
    feeds = {"noisy": x.numpy()}
    sigma = None
    if model.meta.noise_map:
        sigma = torch.tensor([0.05, 0.2])
        feeds["sigma"] = sigma.numpy()
    got = session.run(["denoised"], feeds)[0]
    ensemble = denoise(model, x, sigma=sigma, ensemble=True).numpy()
    single = denoise(model, x, sigma=sigma).numpy()
    assert np.abs(got - ensemble).max() < 1e-5
    assert np.abs(got - single).max() > 1e-3  # the eight passes are really in the graph
