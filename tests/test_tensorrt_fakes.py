"""The TensorRT code paths, run against stand-ins for the ``tensorrt`` and ``polygraphy`` modules.

TensorRT cannot be installed here, so these tests check *our* logic around it (which
weights are set, how refitted plans are serialized, the logger, buffer binding, the
timing-cache key, the build configuration) with fakes that record what they are
asked. They do not show that TensorRT accepts any of it: the API names are checked
against TensorRT's own bindings in test_tensorrt_api.py, and real builds run only in
test_tensorrt_engine.py on a machine with TensorRT and a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch

from exporters import tensorrt_engine, tensorrt_runner
from exporters.engine_cache import graph_digest
from exporters.engine_sidecar import EngineSidecar, RuntimeInfo, TensorSpec, compute_profile, sidecar_path
from exporters.errors import EngineMismatchError
from exporters.tensorrt_refit import refit_from_state_dict, serialize_refitted, unsettable_parameters
from exporters.weight_map import WeightMap, map_weights

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
from exporters.onnx_export import export_onnx
from tests.model_helpers import perturbed_model


def fake_module(name: str) -> types.ModuleType:
    """An empty module that importlib can describe: torch's first ``torch._dynamo`` import (an ONNX
    export) asks ``find_spec`` about ``tensorrt``, which raises for a module without ``__spec__``."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    return module


HERE = RuntimeInfo("10.16.0.72", "NVIDIA H100 80GB HBM3", "9.0")


def tiny(seed: int = 0):
    return perturbed_model(seed=seed)


# --------------------------------------------------------------------------- stand-ins


class FakeSerializationConfig:
    def __init__(self, flags):
        self.flags = set(flags)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def set_flag(self, flag):
        self.flags.add(flag)


class FakeEngine:
    refittable = True
    num_io_tensors = 2

    def __init__(self, plan: bytes):
        self.plan = plan
        self.stripped = plan.startswith(b"stripped")
        self.serialized_with = None

    def get_tensor_name(self, i):
        return ("noisy", "denoised")[i]

    def get_tensor_shape(self, name):
        return [-1, 3, -1, -1]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "noisy" else "OUTPUT"

    def get_tensor_dtype(self, name):
        return "float32"

    def serialize(self):
        return b"stripped again" if self.stripped else b"refitted plan"

    def create_serialization_config(self):
        # TensorRT's default config of a weight-stripped engine excludes the weights.
        return FakeSerializationConfig({"EXCLUDE_WEIGHTS"} if self.stripped else set())

    def serialize_with_config(self, config):
        self.serialized_with = set(config.flags)
        return b"stripped again" if "EXCLUDE_WEIGHTS" in config.flags else b"plan with weights"


class FakeWeights:
    """``trt.Weights`` as TensorRT's bindings build it (pyFoundationalTypes.cpp): from a NumPy array of a
    type ``utils::type`` converts (anything else is a ValueError), or from a data type, address and count."""

    NUMPY = {"float32", "float16", "int64", "int32", "int8", "bool", "uint8"}
    ITEMSIZE = {"BF16": 2}

    def __init__(self, *args):
        if len(args) == 1:
            if args[0].dtype.name not in self.NUMPY:
                raise ValueError(f"Could not implicitly convert NumPy data type: {args[0].dtype}")
            self.dtype, self.values = args[0].dtype.name, np.array(args[0])
        else:
            dtype, address, count = args
            raw = (ctypes.c_uint8 * (count * self.ITEMSIZE[dtype])).from_address(address)
            self.dtype, self.values = dtype, np.frombuffer(bytes(raw), dtype=np.uint16)


class FakeRefitter:
    def __init__(self, engine, logger, refittable, accept=True):
        self.engine, self.logger = engine, logger
        self.refittable = refittable
        self.accept = accept
        self.set: dict[str, FakeWeights] = {}

    def get_all_weights(self):
        return list(self.refittable)

    def set_named_weights(self, name, weights):
        self.set[name] = weights
        return self.accept

    def get_missing_weights(self):
        return []

    def refit_cuda_engine(self):
        return True


def fake_tensorrt() -> types.ModuleType:
    trt = fake_module("tensorrt")
    trt.__version__ = HERE.tensorrt_version
    trt.loggers = []

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            trt.loggers.append(self)

    class Runtime:
        def __init__(self, logger):
            trt.runtime_logger = logger

        def deserialize_cuda_engine(self, plan):
            return FakeEngine(plan)

    trt.Logger, trt.Runtime = Logger, Runtime
    trt.Weights, trt.bfloat16 = FakeWeights, "BF16"
    trt.SerializationFlag = types.SimpleNamespace(
        EXCLUDE_WEIGHTS="EXCLUDE_WEIGHTS", INCLUDE_REFIT="INCLUDE_REFIT"
    )
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.nptype = lambda dtype: np.float32
    return trt


@pytest.fixture
def trt(monkeypatch):
    """A fake ``tensorrt`` module, this machine posing as HERE, and a fresh process-wide logger."""
    module = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setitem(sys.modules, "polygraphy", None)  # no Polygraphy logger to share
    monkeypatch.setattr(tensorrt_runner, "_LOGGER", None)
    monkeypatch.setattr(tensorrt_engine, "current_runtime", lambda device=None: HERE)
    return module


@pytest.fixture
def exported(tmp_path):
    model = tiny()
    path = tmp_path / "a.onnx"
    export_onnx(model, path, example=torch.rand(1, 3, 16, 16), verify=False)
    return model, path, map_weights(model.state_dict(), path)


# --------------------------------------------------------------------------- state-dict refits


def test_a_state_dict_refit_refuses_parameters_it_cannot_set_and_names_them(trt, exported, tmp_path):
    model, _, weight_map = exported
    names = set(weight_map.names.values())
    folded = WeightMap(**{**weight_map.to_json(), "absent": ["net.model.2.bias"]})
    with pytest.raises(
        EngineMismatchError, match=r"1 adapted parameter\(s\) cannot be set \(net.model.2.bias\)"
    ):
        refit_from_state_dict(trt, FakeRefitter(None, None, names), folded, model.state_dict(), tmp_path)
    hidden = names - {weight_map.names["net.model.0.weight"]}  # TensorRT does not expose it as refittable
    refitter = FakeRefitter(None, None, hidden)
    with pytest.raises(EngineMismatchError, match=r"cannot be set \(net.model.0.weight\)"):
        refit_from_state_dict(trt, refitter, weight_map, model.state_dict(), tmp_path)
    assert refitter.set == {}  # refused before any weight was touched
    assert unsettable_parameters(WeightMap({}, {}, {}, ambiguous=["b", "a"], absent=["c"]), set()) == [
        "a",
        "b",
        "c",
    ]


def test_a_state_dict_refit_sets_every_parameter_or_fails(trt, exported, tmp_path):
    _, _, weight_map = exported
    adapted = tiny(seed=7)
    refitter = FakeRefitter(None, None, set(weight_map.names.values()))
    refit_from_state_dict(trt, refitter, weight_map, adapted.state_dict(), tmp_path)
    assert set(refitter.set) == set(weight_map.names.values())
    for key, name in weight_map.names.items():
        np.testing.assert_array_equal(
            refitter.set[name].values.reshape(-1), adapted.state_dict()[key].numpy().reshape(-1)
        )
    rejecting = FakeRefitter(None, None, set(weight_map.names.values()), accept=False)
    with pytest.raises(EngineMismatchError, match="rejected the new weights"):
        refit_from_state_dict(trt, rejecting, weight_map, adapted.state_dict(), tmp_path)


def test_a_state_dict_refit_of_a_bf16_engine_gives_tensorrt_the_bits(trt, tmp_path):
    """NumPy has no bfloat16 that TensorRT's bindings convert: the refit passes raw bf16 bits by address."""
    path = tmp_path / "bf16.onnx"
    export_onnx(tiny(), path, example=torch.rand(1, 3, 16, 16), precision="bf16", opset=22, verify=False)
    weight_map = WeightMap.from_json(
        map_weights(tiny().state_dict(), path).to_json()
    )  # as a sidecar holds it
    assert set(weight_map.dtypes.values()) == {"bfloat16"}
    adapted = tiny(seed=7).state_dict()
    refitter = FakeRefitter(None, None, set(weight_map.names.values()))
    refit_from_state_dict(trt, refitter, weight_map, adapted, tmp_path)
    for key, name in weight_map.names.items():
        assert refitter.set[name].dtype == "BF16"
        bits = adapted[key].to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(refitter.set[name].values, bits.reshape(-1))


# --------------------------------------------------------------------------- refits of weight-stripped bases


def test_refitted_plans_keep_their_weights_and_refittability(trt):
    stripped = FakeEngine(b"stripped base")
    assert serialize_refitted(trt, stripped, base_stripped=True) == b"plan with weights"
    assert stripped.serialized_with == {"INCLUDE_REFIT"}
    assert serialize_refitted(trt, FakeEngine(b"full base"), base_stripped=False) == b"refitted plan"
    failing = FakeEngine(b"full base")
    failing.serialize = lambda: None
    with pytest.raises(EngineMismatchError, match="could not serialize"):
        serialize_refitted(trt, failing, base_stripped=False)


def write_base(tmp_path, weight_map: WeightMap, plan: bytes, strip_plan: bool, metadata=None, graph=None):
    base = tmp_path / "base.engine"
    base.write_bytes(plan)
    EngineSidecar(
        runtime=HERE,
        precision="fp32",
        profile=compute_profile([(16, 16)]),
        io=[TensorSpec("noisy", "input", "float32", [-1, 3, -1, -1], "NCHW")],
        refittable=True,
        engine_sha256=hashlib.sha256(plan).hexdigest(),
        onnx_sha256="",
        weights_sha256=None,
        weight_map=weight_map,
        mode="built",
        strip_plan=strip_plan,
        metadata=metadata or {},
        graph_sha256=graph,
    ).write(sidecar_path(base))
    return base


def test_a_refit_of_a_stripped_base_is_written_runnable(trt, exported, tmp_path):
    _, _, weight_map = exported
    refittable = set(weight_map.names.values())
    trt.Refitter = lambda engine, logger: FakeRefitter(engine, logger, refittable)
    base = write_base(tmp_path, weight_map, b"stripped base plan", strip_plan=True)
    options = tensorrt_engine.EngineOptions(refit_from="state_dict", verify=False)
    refit = tensorrt_engine.refit_engine(base, tmp_path / "b.engine", model=tiny(seed=3), options=options)
    assert refit.path.read_bytes() == b"plan with weights"
    written = EngineSidecar.read(refit.sidecar)
    assert written.strip_plan is False and written.mode == "refit"
    assert written.engine_sha256 == hashlib.sha256(b"plan with weights").hexdigest()
    assert written.base_engine_sha256 == hashlib.sha256(b"stripped base plan").hexdigest()


@pytest.fixture
def ensemble_onnx(exported, tmp_path):
    """The ×8-ensemble graph of ``exported``'s network (exported before the fake TensorRT is installed)."""
    path = tmp_path / "x8.onnx"
    export_onnx(exported[0], path, example=torch.rand(1, 3, 16, 16), verify=False, ensemble=True)
    return path


def test_a_refit_from_an_onnx_file_of_another_graph_is_refused(ensemble_onnx, exported, trt, tmp_path):
    """A single-pass engine takes the ×8 ensemble's weights (the same tensors), but would not compute it."""
    model, path, weight_map = exported
    trt.Refitter = lambda engine, logger: FakeRefitter(engine, logger, set(weight_map.names.values()))
    graph = graph_digest(path, set(weight_map.names.values()))
    base = write_base(tmp_path, weight_map, b"base plan", strip_plan=False, graph=graph)
    options = tensorrt_engine.EngineOptions(refit_from="state_dict", verify=False)
    with pytest.raises(EngineMismatchError, match="built from another graph"):
        tensorrt_engine.refit_engine(
            base, tmp_path / "b.engine", model=model, onnx_path=ensemble_onnx, options=options
        )
    refit = tensorrt_engine.refit_engine(
        base, tmp_path / "c.engine", model=model, onnx_path=path, options=options
    )
    assert EngineSidecar.read(refit.sidecar).graph_sha256 == graph  # and a later refit checks it again


def test_a_state_dict_refit_keeps_the_base_s_description_of_its_graph(trt, exported, tmp_path):
    """σ, the ensemble and the architecture come from the base's graph (the C++ sample reads its σ there, a
    later refit its ensemble); the weights are the refitted network's."""
    _, _, weight_map = exported
    trt.Refitter = lambda engine, logger: FakeRefitter(engine, logger, set(weight_map.names.values()))
    graph = {"ensemble": "x8", "sigma": "0.1", "model.name": "dncnn", "model.weights_sha256": "base"}
    base = write_base(tmp_path, weight_map, b"base plan", strip_plan=False, metadata=graph)
    options = tensorrt_engine.EngineOptions(refit_from="state_dict", verify=False)
    adapted = tiny(seed=3)
    first = tensorrt_engine.refit_engine(base, tmp_path / "b.engine", model=adapted, options=options)
    again = tensorrt_engine.refit_engine(first.path, tmp_path / "c.engine", model=adapted, options=options)
    for refit in (first, again):
        metadata = EngineSidecar.read(refit.sidecar).metadata
        assert metadata == {
            **graph,
            "model.weights_sha256": adapted.weights_sha256 or "",
            "model.meta": adapted.meta.to_json(),
        }


# --------------------------------------------------------------------------- one logger


def test_one_tensorrt_logger_serves_every_runtime_and_refitter(trt):
    first = tensorrt_runner.tensorrt_logger(trt)
    assert tensorrt_runner.tensorrt_logger(trt) is first and len(trt.loggers) == 1
    tensorrt_runner.deserialize(trt, b"plan")
    assert trt.runtime_logger is first and len(trt.loggers) == 1


def test_the_logger_is_polygraphys_where_polygraphy_is_installed(trt, monkeypatch):
    shared = object()
    util = fake_module("polygraphy.backend.trt.util")
    util.get_trt_logger = lambda: shared
    for name in ("polygraphy", "polygraphy.backend", "polygraphy.backend.trt"):
        monkeypatch.setitem(sys.modules, name, fake_module(name))
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt.util", util)
    assert tensorrt_runner.tensorrt_logger(trt) is shared and trt.loggers == []


# --------------------------------------------------------------------------- I/O binding


class FakeContext:
    def __init__(self, accept_shape=True, accept_address=True):
        self.accept_shape, self.accept_address = accept_shape, accept_address
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = shape
        return self.accept_shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return self.accept_address


def test_misaligned_buffers_are_copied_before_binding():
    storage = torch.arange(1 + 3 * 8 * 8, dtype=torch.float32)
    view = storage[1:].reshape(1, 3, 8, 8)  # contiguous, 4 bytes past an aligned allocation
    assert view.is_contiguous() and view.data_ptr() % tensorrt_runner.ALIGNMENT != 0
    context = FakeContext()
    bound = tensorrt_runner.bind_tensor(context, "noisy", view, (1, 3, 8, 8))
    assert bound.data_ptr() % tensorrt_runner.ALIGNMENT == 0 and torch.equal(bound, view)
    assert context.addresses["noisy"] == bound.data_ptr() and context.shapes["noisy"] == (1, 3, 8, 8)
    assert tensorrt_runner.aligned(bound) is bound  # aligned buffers are bound as they are


@pytest.mark.parametrize("refused", ["shape", "address"])
def test_refused_shapes_and_addresses_raise(refused):
    context = FakeContext(accept_shape=refused != "shape", accept_address=refused != "address")
    with pytest.raises(EngineMismatchError, match=f"refused the {refused}"):
        tensorrt_runner.bind_tensor(context, "noisy", torch.zeros(1, 3, 8, 8), (1, 3, 8, 8))


# --------------------------------------------------------------------------- builds


def test_timing_caches_are_kept_apart_per_tensorrt_version_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    h100 = tensorrt_engine.default_timing_cache(HERE)
    assert (
        h100
        == tmp_path
        / "rfr-deploy"
        / "tensorrt-timing"
        / "tensorrt-10.16.0.72-NVIDIA-H100-80GB-HBM3-sm90.timing"
    )
    others = [
        RuntimeInfo(HERE.tensorrt_version, "NVIDIA L4", "8.9"),
        RuntimeInfo(HERE.tensorrt_version, HERE.gpu_name, "9.1"),
        RuntimeInfo("10.15.1.29", HERE.gpu_name, HERE.compute_capability),
    ]
    assert len({h100, *(tensorrt_engine.default_timing_cache(r) for r in others)}) == 4


def fake_polygraphy(monkeypatch, calls: dict):
    loaders = fake_module("polygraphy.backend.trt")

    class Profile(dict):
        def add(self, name, min, opt, max):
            self[name] = (min, opt, max)

    loaders.Profile = Profile
    loaders.CreateConfig = lambda **kwargs: calls.setdefault("config", kwargs)
    loaders.network_from_onnx_path = lambda path, strongly_typed: calls.setdefault(
        "network", (path, strongly_typed)
    )
    loaders.engine_bytes_from_network = lambda network, config, save_timing_cache: b"built plan"
    exception = fake_module("polygraphy.exception")
    exception.PolygraphyException = type("PolygraphyException", (Exception,), {})
    for name, module in {
        "polygraphy": fake_module("polygraphy"),
        "polygraphy.backend": fake_module("polygraphy.backend"),
        "polygraphy.backend.trt": loaders,
        "polygraphy.exception": exception,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_builds_are_refittable_strongly_typed_full_fp32_with_a_per_gpu_cache(
    trt, exported, monkeypatch, tmp_path
):
    _, onnx_path, _ = exported
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: dict = {}
    fake_polygraphy(monkeypatch, calls)
    profile = compute_profile([(16, 16), (24, 20)])
    built = tensorrt_engine.build_engine(
        onnx_path,
        tmp_path / "a.engine",
        model=tiny(),
        profile=profile,
        precision="fp32",
        options=tensorrt_engine.EngineOptions(verify=False),
    )
    config = calls["config"]
    assert config["refittable"] is True and config["tf32"] is False and config["strip_plan"] is False
    assert config["profiles"][0]["noisy"] == ((1, 3, 16, 16), (1, 3, 24, 20), (1, 3, 24, 20))
    assert config["load_timing_cache"] == str(tensorrt_engine.default_timing_cache(HERE))
    assert calls["network"] == (str(onnx_path), True)
    assert built.mode == "built" and built.path.read_bytes() == b"built plan"
    assert EngineSidecar.read(built.sidecar).profile == profile


def test_a_noise_map_engine_defaults_to_the_level_stored_at_export(exported, tmp_path):
    """As ONNX Runtime's runner and the C++ sample do: the sidecar's sigma (σ/255)."""
    _, _, weight_map = exported
    runner = tensorrt_runner.TensorRTDenoiser.__new__(tensorrt_runner.TensorRTDenoiser)
    for metadata, level in (({"sigma": "0.1"}, 0.1), ({"sigma": ""}, None), ({}, None)):
        base = write_base(tmp_path, weight_map, b"plan", strip_plan=False, metadata=metadata)
        runner.sidecar = EngineSidecar.read(sidecar_path(base))
        assert runner.default_sigma == level
    runner.sidecar = None  # an engine wrapped before it is written (verification)
    assert runner.default_sigma is None
