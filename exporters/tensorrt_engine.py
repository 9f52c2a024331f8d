"""TensorRT engines of adapted denoisers: build once (refittable), then refit per image.

Building an engine times kernels for every layer (tens of seconds for DnCNN);
refitting swaps the weights of an engine built once and takes a fraction of a
second. Per-image engines are therefore made by building one *base* engine with
the REFIT flag and refitting it with each adapted network::

    base = build_or_refit_engine(model, "a_rfr.onnx", "a_rfr.engine", example=noisy_a, precision="fp32")
    next = build_or_refit_engine(adapted_b, "b_rfr.onnx", "b_rfr.engine", base="a_rfr.engine", example=noisy_b)

Networks are parsed *strongly typed*: the precision is the ONNX graph's (fp32, or
the fp16/bf16 graphs of :func:`exporters.onnx_export.export_onnx`), which is how
TensorRT 11 works and what TensorRT 10 offers with ``STRONGLY_TYPED`` (the
FP16/BF16 builder flags are deprecated in 10.12 and removed in 11). Builds use
Polygraphy's loaders and a persistent timing cache; refits use TensorRT's
``Refitter`` with ``OnnxParserRefitter`` (weights from the new ONNX file) or with
the PyTorch state dict through the weight-name map of the sidecar. Every engine is
verified against PyTorch on the example before it is written, and is written
atomically together with its JSON sidecar.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rfr_deploy.caches import kind_folder
from rfr_deploy.files import atomic_write, sha256_file
from rfr_deploy.optional import import_optional
from rfr_deploy.version import __version__

from .engine_cache import graph_digest
from .engine_sidecar import (
    EngineProfile,
    EngineSidecar,
    RuntimeInfo,
    TensorSpec,
    compute_profile,
    sidecar_path,
)
from .errors import EngineMismatchError, ExportError, ExportVerificationError
from .tensorrt_refit import (
    check_weight_maps,
    finish_refit,
    refit_from_onnx,
    refit_from_state_dict,
    serialize_refitted,
)
from .tensorrt_runner import (
    TensorRTDenoiser,
    current_runtime,
    deserialize,
    import_tensorrt,
    require_cuda,
    tensorrt_logger,
)
from .weight_map import WeightMap, map_weights

ENGINE_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 8e-2}
"""Largest accepted |engine − PyTorch fp32|. fp32 engines are built with TF32 off (``CreateConfig(tf32=False)``,
Polygraphy's default, passed explicitly), so they compute in full float32 and only the kernels' summation
order differs from PyTorch's."""


@dataclass(frozen=True)
class EngineOptions:
    """Shape range, caching and refit settings of an engine (every field has a CLI-friendly type)."""

    min_hw: tuple[int, int] | None = None
    opt_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    """Height×width range of the optimisation profile; defaults from the example image (see compute_profile)."""
    batch: tuple[int, int, int] = (1, 1, 1)
    timing_cache: str | None = None
    """Timing cache file; default ``<cache folder>/tensorrt-timing/tensorrt-<version>-<gpu>-sm<cc>.timing``."""
    strip_plan: bool = False
    """Leave the refittable weights out of the built plan (smaller files; must be refitted before use). Refits
    of a stripped base are written with their weights (and stay refittable), so they run as they are."""
    refit_from: Literal["onnx", "state_dict"] = "onnx"
    workspace_mb: int | None = None
    verify: bool = True


@dataclass(frozen=True)
class EngineArtifact:
    path: Path
    sidecar: Path
    mode: str  # "built" | "refit"
    seconds: float
    max_abs_error: float | None
    info: EngineSidecar


@dataclass(frozen=True)
class _MadeEngine:
    """A built or refitted engine before it is verified and written, with what its sidecar records of it."""

    plan: bytes
    engine: Any
    profile: EngineProfile
    precision: str
    mode: str  # "built" | "refit"
    strip_plan: bool
    weight_map: WeightMap | None = None
    """None: mapped from the ONNX file when the engine is written."""
    base_sha: str | None = None
    metadata: dict[str, str] | None = None
    """The sidecar's description of the network; None: the ONNX file's metadata when it is written."""
    graph_sha256: str | None = None
    """The graph the engine computes; None: the ONNX file's when it is written."""


def check_engine_support() -> None:
    """Fail early, with one line, where engines cannot be made: no tensorrt, no polygraphy, or no GPU."""
    import_tensorrt()
    import_optional("polygraphy", "trt", "build TensorRT engines")
    require_cuda()


def build_or_refit_engine(
    model,
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    example: torch.Tensor,
    precision: str = "fp32",
    sigma: float | None = None,
    options: EngineOptions | None = None,
) -> EngineArtifact:
    """Build a refittable engine from ``onnx_path``, or refit ``base`` with ``model``'s weights."""
    check_engine_support()
    options = options or EngineOptions()
    if base is not None:
        return refit_engine(
            base, engine_path, model=model, onnx_path=onnx_path, example=example, sigma=sigma, options=options
        )
    h, w = example.shape[-2:]
    profile = compute_profile(
        [(int(h), int(w))],
        min_hw=options.min_hw,
        opt_hw=options.opt_hw,
        max_hw=options.max_hw,
        batch=options.batch,
    )
    return build_engine(
        onnx_path,
        engine_path,
        model=model,
        profile=profile,
        precision=precision,
        example=example,
        sigma=sigma,
        options=options,
    )


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    model,
    profile: EngineProfile,
    precision: str,
    example: torch.Tensor | None = None,
    sigma: float | None = None,
    options: EngineOptions | None = None,
) -> EngineArtifact:
    """Build a refittable, strongly typed engine over ``profile`` and write it with its sidecar."""
    from polygraphy.backend.trt import (
        CreateConfig,
        Profile,
        engine_bytes_from_network,
        network_from_onnx_path,
    )

    trt = import_tensorrt()
    options = options or EngineOptions()
    started = time.perf_counter()
    precision = _onnx_precision(onnx_path, precision)
    trt_profile = Profile()
    for name, (lo, opt, hi) in profile.shapes(model.meta.channels, model.meta.noise_map).items():
        trt_profile.add(name, min=lo, opt=opt, max=hi)
    cache = Path(options.timing_cache) if options.timing_cache else default_timing_cache(current_runtime())
    cache.parent.mkdir(parents=True, exist_ok=True)
    pools = {trt.MemoryPoolType.WORKSPACE: options.workspace_mb << 20} if options.workspace_mb else None
    with _polygraphy_errors("build the TensorRT engine"):
        network = network_from_onnx_path(str(onnx_path), strongly_typed=True)
        config = CreateConfig(
            profiles=[trt_profile],
            refittable=True,
            strip_plan=options.strip_plan,
            tf32=False,
            load_timing_cache=str(cache),
            memory_pool_limits=pools,
        )
        plan = bytes(engine_bytes_from_network(network, config=config, save_timing_cache=str(cache)))
    made = _MadeEngine(
        plan, deserialize(trt, plan), profile, precision, "built", strip_plan=options.strip_plan
    )
    error = None
    if options.verify and example is not None and not options.strip_plan:
        ensemble = _onnx_props(onnx_path).get("ensemble") == "x8"
        error = _verify(made, model, example, sigma, ensemble)
    return _write(engine_path, made, model, onnx_path, seconds=time.perf_counter() - started, error=error)


def refit_engine(
    base: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    model,
    onnx_path: str | os.PathLike | None = None,
    example: torch.Tensor | None = None,
    sigma: float | None = None,
    options: EngineOptions | None = None,
) -> EngineArtifact:
    """Refit the engine ``base`` with ``model``'s weights (from ``onnx_path`` or the state dict)."""
    trt = import_tensorrt()
    options = options or EngineOptions()
    started = time.perf_counter()
    base = Path(base)
    info = EngineSidecar.read(sidecar_path(base))
    info.check_runtime(current_runtime())
    info.check_engine_file(base)
    if not info.refittable:
        raise EngineMismatchError(f"{base}: engine was built without the REFIT flag and cannot be refitted")
    if example is not None:
        info.profile.check(int(example.shape[0]), int(example.shape[-2]), int(example.shape[-1]))
    source = options.refit_from if onnx_path is not None else "state_dict"
    weight_map = map_weights(model.state_dict(), onnx_path) if onnx_path is not None else info.weight_map
    check_weight_maps(info.weight_map, weight_map, base)
    graph = _graph_of(onnx_path, weight_map) if onnx_path is not None else info.graph_sha256
    if info.graph_sha256 is not None and graph != info.graph_sha256:
        raise EngineMismatchError(
            f"{base} was built from another graph than {onnx_path} (with or without the ×8 ensemble, or "
            "another opset): its weights fit, but refitted it would not compute this network; build an engine"
        )
    engine = deserialize(trt, base.read_bytes())
    refitter = trt.Refitter(engine, tensorrt_logger(trt))
    arrays = None  # the state dict's arrays stay alive until the refit has run
    if source == "onnx":
        refit_from_onnx(trt, refitter, onnx_path, base)
    else:
        arrays = refit_from_state_dict(trt, refitter, weight_map, model.state_dict(), base)
    finish_refit(refitter, base)
    del arrays
    plan = serialize_refitted(trt, engine, info.strip_plan)
    made = _MadeEngine(
        plan,
        engine,
        info.profile,
        info.precision,
        "refit",
        strip_plan=False,
        weight_map=weight_map,
        base_sha=info.engine_sha256,
        metadata=None if onnx_path is not None else _refitted_metadata(info.metadata, model),
        graph_sha256=graph,
    )
    error = None
    if options.verify and example is not None:
        props = _onnx_props(onnx_path) if onnx_path is not None else made.metadata
        ensemble = props.get("ensemble") == "x8"
        error = _verify(made, model, example, sigma, ensemble)
    return _write(engine_path, made, model, onnx_path, seconds=time.perf_counter() - started, error=error)


def _refitted_metadata(base: dict[str, str], model) -> dict[str, str]:
    """What a sidecar says of a network refitted from its state dict: the base engine's graph (σ, ensemble,
    architecture, noise), with ``model``'s own weights."""
    return {**base, "model.weights_sha256": model.weights_sha256 or "", "model.meta": model.meta.to_json()}


def _graph_of(onnx_path, weight_map: WeightMap | None) -> str | None:
    """The graph digest of the ONNX file at ``onnx_path`` (None without one), the values of the weights
    ``weight_map`` names left out, as the engine cache keys it."""
    if onnx_path is None or weight_map is None:
        return None
    return graph_digest(onnx_path, set(weight_map.names.values()))


def _onnx_props(onnx_path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load_model(str(onnx_path), load_external_data=False).metadata_props}


def _onnx_precision(onnx_path, requested: str) -> str:
    """Strongly typed engines compute in the ONNX graph's precision; refuse a different request."""
    actual = _onnx_props(onnx_path).get("precision", requested)
    if actual != requested:
        raise ExportError(
            f"{onnx_path} was exported in {actual}; export it in {requested} for a {requested} engine"
        )
    return actual


def default_timing_cache(runtime: RuntimeInfo) -> Path:
    """One timing cache per TensorRT version *and* GPU: timings of one GPU are wrong for another, and
    Polygraphy merges a loaded cache with ``ignore_mismatch=True`` instead of refusing it."""
    gpu = re.sub(r"[^A-Za-z0-9.]+", "-", runtime.gpu_name).strip("-") or "gpu"
    capability = runtime.compute_capability.replace(".", "")
    return kind_folder("tensorrt-timing") / f"tensorrt-{runtime.tensorrt_version}-{gpu}-sm{capability}.timing"


@torch.no_grad()
def _verify(made: _MadeEngine, model, example, sigma, ensemble: bool) -> float:
    """Largest |engine − PyTorch fp32| on the example (the ×8 self-ensemble for ensemble graphs); raises above
    :data:`ENGINE_TOLERANCE`."""
    import copy

    from rfr_deploy.inference import dihedral_mean

    device = torch.cuda.current_device()
    runner = TensorRTDenoiser.from_engine(made.engine, made.profile, model, device)
    x = example.to(runner.device, torch.float32).contiguous()
    here = next(model.parameters()).device == runner.device
    reference_model = (model if here else copy.deepcopy(model).to(runner.device)).eval()
    reference = (
        dihedral_mean(lambda t: reference_model(t, sigma), x) if ensemble else reference_model(x, sigma)
    )
    got = runner(x, sigma)
    error = float((got - reference).abs().max())
    tolerance = ENGINE_TOLERANCE.get(made.precision, ENGINE_TOLERANCE["fp32"])
    if not error <= tolerance:
        raise ExportVerificationError(
            f"TensorRT engine output differs from PyTorch by {error:.3g} (tolerance {tolerance:.3g}); not written"
        )
    return error


def _write(engine_path, made: _MadeEngine, model, onnx_path, *, seconds: float, error) -> EngineArtifact:
    import hashlib

    trt = import_tensorrt()
    engine_path = Path(engine_path)
    weight_map = made.weight_map
    if weight_map is None and onnx_path is not None:
        weight_map = map_weights(model.state_dict(), onnx_path)
    metadata = made.metadata if made.metadata is not None else _onnx_props(onnx_path)
    graph = made.graph_sha256 if made.graph_sha256 is not None else _graph_of(onnx_path, weight_map)
    engine = made.engine
    info = EngineSidecar(
        runtime=current_runtime(),
        precision=made.precision,
        profile=made.profile,
        io=[_tensor_spec(trt, engine, engine.get_tensor_name(i)) for i in range(engine.num_io_tensors)],
        refittable=bool(engine.refittable),
        engine_sha256=hashlib.sha256(made.plan).hexdigest(),
        onnx_sha256=sha256_file(onnx_path) if onnx_path is not None else "",
        weights_sha256=model.weights_sha256,
        weight_map=weight_map,
        mode=made.mode,
        strip_plan=made.strip_plan,
        base_engine_sha256=made.base_sha,
        graph_sha256=graph,
        metadata=metadata,
        seconds=round(seconds, 3),
        max_abs_error=error,
        rfr_deploy_version=__version__,
    )
    side = sidecar_path(engine_path)
    with atomic_write(engine_path) as engine_tmp, atomic_write(side) as side_tmp:
        engine_tmp.write_bytes(made.plan)
        info.write(side_tmp)
    return EngineArtifact(engine_path, side, made.mode, seconds, error, info)


def _tensor_spec(trt, engine, name: str) -> TensorSpec:
    import numpy as np

    shape = [int(d) for d in engine.get_tensor_shape(name)]
    mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
    dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
    return TensorSpec(
        name=name, mode=mode, dtype=dtype, shape=shape, layout="NCHW" if len(shape) == 4 else "N"
    )


@contextlib.contextmanager
def _polygraphy_errors(action: str):
    """Polygraphy logs to stdout and raises PolygraphyException: log to stderr, raise one line."""
    from polygraphy.exception import PolygraphyException

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except PolygraphyException as exc:
        text = " ".join(str(exc).split())
        raise ExportError(f"could not {action}: {text[:300]}") from exc
