"""TensorRT engines: everything that needs no TensorRT runs here; builds and refits need TensorRT and a GPU."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from exporters.engine_sidecar import (
    EngineProfile,
    EngineSidecar,
    RuntimeInfo,
    TensorSpec,
    compute_profile,
    sidecar_path,
)
from exporters.errors import EngineMismatchError, ProfileError
from exporters.tensorrt_refit import check_weight_maps
from exporters.weight_map import WeightMap, map_weights
from rfr_deploy.cli import main
from rfr_deploy.errors import MissingDependencyError
from rfr_deploy.images import write_image
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from exporters.onnx_export import export_onnx  # noqa: E402
from tests.model_helpers import perturbed_model  # noqa: E402

HERE = RuntimeInfo("10.8.0.43", "NVIDIA H100 80GB HBM3", "9.0")


def tiny(depth: int = 3, seed: int = 0, channels: int = 3):
    return perturbed_model("dncnn", channels, depth, seed)


# --------------------------------------------------------------------------- profiles


def test_profile_defaults_cover_the_image_and_smaller_tiles():
    profile = compute_profile([(300, 200)])
    assert profile == EngineProfile(batch=(1, 1, 1), height=(32, 300, 300), width=(32, 200, 200))
    assert (
        profile.contains(1, 64, 64) and not profile.contains(1, 301, 200) and not profile.contains(2, 64, 64)
    )


def test_profile_of_an_image_set_spans_all_sizes_and_optimises_for_the_largest():
    profile = compute_profile([(480, 320), (320, 480), (500, 500), (20, 640)])
    assert profile.height == (20, 500, 500) and profile.width == (32, 500, 640)


def test_user_ranges_override_and_must_contain_every_image():
    profile = compute_profile(
        [(256, 256)], min_hw=(64, 64), opt_hw=(512, 512), max_hw=(1024, 1024), batch=(1, 2, 4)
    )
    assert profile.height == (64, 512, 1024) and profile.batch == (1, 2, 4)
    shapes = profile.shapes(channels=3, noise_map=True)
    assert shapes["noisy"] == ((1, 3, 64, 64), (2, 3, 512, 512), (4, 3, 1024, 1024))
    assert shapes["sigma"] == ((1,), (2,), (4,))
    with pytest.raises(ProfileError, match="outside the engine's profile"):
        compute_profile([(2048, 256)], max_hw=(1024, 1024))
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        compute_profile([(256, 256)], min_hw=(300, 300))


# --------------------------------------------------------------------------- sidecar


def make_sidecar(tmp_path, runtime: RuntimeInfo = HERE):
    engine = tmp_path / "a_rfr.engine"
    engine.write_bytes(b"serialized plan")
    import hashlib

    model = tiny()
    onnx_path = tmp_path / "a.onnx"
    export_onnx(model, onnx_path, example=torch.rand(1, 3, 16, 16), verify=False)
    info = EngineSidecar(
        runtime=runtime,
        precision="fp32",
        profile=compute_profile([(16, 16)]),
        io=[
            TensorSpec("noisy", "input", "float32", [-1, 3, -1, -1], "NCHW"),
            TensorSpec("denoised", "output", "float32", [-1, 3, -1, -1], "NCHW"),
        ],
        refittable=True,
        engine_sha256=hashlib.sha256(b"serialized plan").hexdigest(),
        onnx_sha256="0" * 64,
        weights_sha256=None,
        weight_map=map_weights(model.state_dict(), onnx_path),
        mode="built",
    )
    info.write(sidecar_path(engine))
    return engine, info


def test_sidecar_round_trips_and_sits_next_to_the_engine(tmp_path):
    engine, info = make_sidecar(tmp_path)
    assert sidecar_path(engine).name == "a_rfr.engine.json"
    loaded = EngineSidecar.read(sidecar_path(engine))
    assert loaded.to_json() == info.to_json()
    data = json.loads(sidecar_path(engine).read_text())
    assert data["runtime"]["tensorrt_version"] == "10.8.0.43" and data["refittable"] is True
    assert data["weight_map"]["names"]["net.model.0.weight"] == "net.model.0.weight"
    loaded.check_runtime(HERE)
    loaded.check_engine_file(engine)


@pytest.mark.parametrize(
    "other, words",
    [
        (
            RuntimeInfo("10.9.0.34", HERE.gpu_name, HERE.compute_capability),
            ["TensorRT 10.8.0.43", "10.9.0.34"],
        ),
        (RuntimeInfo(HERE.tensorrt_version, "NVIDIA L4", "8.9"), ["NVIDIA H100", "NVIDIA L4"]),
    ],
)
def test_engines_from_another_tensorrt_or_gpu_are_refused_in_one_line(tmp_path, other, words):
    engine, _ = make_sidecar(tmp_path)
    with pytest.raises(EngineMismatchError) as info:
        EngineSidecar.read(sidecar_path(engine)).check_runtime(other)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words) and "rebuild" in message


def test_an_engine_that_is_not_the_sidecars_is_refused(tmp_path):
    engine, info = make_sidecar(tmp_path)
    engine.write_bytes(b"another plan")
    with pytest.raises(EngineMismatchError, match="does not match its sidecar"):
        info.check_engine_file(engine)


def test_missing_or_corrupt_sidecars_are_one_line_errors(tmp_path):
    with pytest.raises(EngineMismatchError, match="sidecar not found"):
        EngineSidecar.read(tmp_path / "nothing.engine.json")
    bad = tmp_path / "bad.engine.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EngineMismatchError, match="not a valid"):
        EngineSidecar.read(bad)


# --------------------------------------------------------------------------- weight-name map


def rename_initializers(path, prefix="onnx::Conv_"):
    """Give every initializer an anonymous name, as the TorchScript exporter does."""
    proto = onnx.load(str(path))
    renames = {i.name: f"{prefix}{n}" for n, i in enumerate(proto.graph.initializer)}
    for init in proto.graph.initializer:
        init.name = renames[init.name]
    for node in proto.graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    onnx.save(proto, str(path))
    return renames


def test_weight_map_follows_renamed_initializers_by_value(tmp_path):
    model = tiny()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example=torch.rand(1, 3, 16, 16), verify=False)
    renames = rename_initializers(path)
    weight_map = map_weights(model.state_dict(), path)
    assert weight_map.names == {k: renames[k] for k in model.state_dict()}
    arrays = weight_map.arrays(tiny(seed=5).state_dict())
    assert set(arrays) == set(renames.values())
    assert arrays[renames["net.model.0.weight"]].shape == (8, 3, 3, 3)


def test_weight_map_flags_parameters_it_cannot_tell_apart_or_find(tmp_path):
    model = create_model("dncnn", weights=None, channels=1, depth=3, features=8)  # all biases zero
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example=torch.rand(1, 1, 16, 16), verify=False)
    rename_initializers(path)
    state = dict(model.state_dict())
    state["extra.weight"] = torch.full((5,), 3.0)
    weight_map = map_weights(state, path)
    assert {"net.model.0.bias", "net.model.2.bias"} <= set(weight_map.ambiguous)  # equal (zero) values
    assert weight_map.absent == ["extra.weight"]
    assert "net.model.0.weight" in weight_map.names


def test_refit_arrays_take_the_engine_weights_dtype(tmp_path):
    model = tiny()
    path = tmp_path / "m16.onnx"
    export_onnx(model, path, example=torch.rand(1, 3, 16, 16), precision="fp16", verify=False)
    weight_map = map_weights(model.state_dict(), path)
    assert weight_map.names and set(weight_map.dtypes.values()) == {"float16"}
    arrays = weight_map.arrays(model.state_dict())
    assert all(a.dtype == np.float16 and a.flags.c_contiguous for a in arrays.values())
    roundtrip = WeightMap.from_json(json.loads(json.dumps(weight_map.to_json())))
    assert roundtrip == weight_map


def test_weights_of_another_architecture_do_not_fit_the_engine(tmp_path):
    maps = []
    for depth in (3, 3, 4):
        model = tiny(depth=depth)
        path = tmp_path / f"d{depth}_{len(maps)}.onnx"
        export_onnx(model, path, example=torch.rand(1, 3, 16, 16), verify=False)
        maps.append(map_weights(model.state_dict(), path))
    check_weight_maps(maps[0], maps[1], tmp_path / "base.engine")
    with pytest.raises(EngineMismatchError, match="do not fit the engine"):
        check_weight_maps(maps[0], maps[2], tmp_path / "base.engine")


# --------------------------------------------------------------------------- without TensorRT


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_engine_export_without_tensorrt_fails_in_one_line_and_writes_no_export(tmp_path, no_tensorrt, rng):
    model = tiny()
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, model.net, model.meta)
    image = write_image(tmp_path / "in" / "a.png", rng.random((24, 24, 3)).astype(np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "adapt-and-export",
            str(image),
            "--weights",
            str(weights),
            "--steps",
            "1",
            "--format",
            "engine",
            "-o",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "error: the optional package 'tensorrt' is needed to build and run TensorRT engines "
        "but is not installed (pip install 'rfr-deploy[trt]')"
    ]
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not any(name.endswith((".onnx", ".engine", ".engine.json")) for name in written), written
    assert not any(".part" in name for name in written)


def test_build_or_refit_without_tensorrt_raises_missing_dependency(tmp_path, no_tensorrt):
    from exporters.tensorrt_engine import build_or_refit_engine

    with pytest.raises(MissingDependencyError, match="tensorrt"):
        build_or_refit_engine(
            tiny(), tmp_path / "m.onnx", tmp_path / "m.engine", example=torch.rand(1, 3, 8, 8)
        )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- with TensorRT and a GPU


@pytest.fixture
def gpu_tensorrt():
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (NVIDIA's index; pip install 'rfr-deploy[trt]')"
    )
    pytest.importorskip("polygraphy")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU and none is visible")


def test_build_then_refit_from_onnx_and_from_the_state_dict(tmp_path, gpu_tensorrt):
    from exporters.tensorrt_engine import EngineOptions, build_or_refit_engine
    from exporters.tensorrt_runner import TensorRTDenoiser

    cache = str(tmp_path / "timing.cache")
    x = torch.rand(1, 3, 40, 48)
    first, second = tiny(seed=0), tiny(seed=1)
    for name, model in (("a", first), ("b", second)):
        export_onnx(model, tmp_path / f"{name}.onnx", example=x)
    built = build_or_refit_engine(
        first,
        tmp_path / "a.onnx",
        tmp_path / "a.engine",
        example=x,
        options=EngineOptions(timing_cache=cache),
    )
    assert built.mode == "built" and built.info.refittable and built.max_abs_error < 5e-3
    for source in ("onnx", "state_dict"):
        refit = build_or_refit_engine(
            second,
            tmp_path / "b.onnx",
            tmp_path / f"b_{source}.engine",
            base=built.path,
            example=x,
            options=EngineOptions(timing_cache=cache, refit_from=source),
        )
        assert refit.mode == "refit" and refit.info.base_engine_sha256 == built.info.engine_sha256
        runner = TensorRTDenoiser(refit.path)
        with torch.no_grad():
            want = second(x)
        got = runner(x.cuda()).cpu()
        assert (got - want).abs().max() < 5e-3
        assert (got - first(x).detach()).abs().max() > 1e-3  # the weights really changed
    other = tiny(depth=4)
    export_onnx(other, tmp_path / "c.onnx", example=x)
    with pytest.raises(EngineMismatchError):
        build_or_refit_engine(other, tmp_path / "c.onnx", tmp_path / "c.engine", base=built.path, example=x)


def test_an_image_too_small_to_reflect_is_edge_padded_as_pytorch_pads_it(tmp_path, gpu_tensorrt):
    """FFDNet pads to even sizes; a 1-pixel row cannot be reflected, so the runner edge-pads it first."""
    from exporters.tensorrt_engine import EngineOptions, build_or_refit_engine
    from exporters.tensorrt_runner import TensorRTDenoiser

    model = perturbed_model("ffdnet", 3, 4, 0)
    x = torch.rand(1, 3, 16, 16)
    export_onnx(model, tmp_path / "f.onnx", example=x, sigma=0.1)
    options = EngineOptions(min_hw=(1, 1), max_hw=(16, 16))
    built = build_or_refit_engine(
        model, tmp_path / "f.onnx", tmp_path / "f.engine", example=x, sigma=0.1, options=options
    )
    runner = TensorRTDenoiser(built.path)
    for h, w in ((1, 5), (3, 1), (2, 7)):
        row = torch.rand(1, 3, h, w)
        with torch.no_grad():
            want = model(row, 0.1)
        got = runner(row.cuda(), 0.1).cpu()
        assert got.shape == row.shape and (got - want).abs().max() < 5e-3
