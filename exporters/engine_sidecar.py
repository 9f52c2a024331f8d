"""The JSON sidecar of a TensorRT engine, and the shape range (optimisation profile) it was built for.

A serialized engine only runs on the TensorRT version and GPU that built it and
says little about itself. ``<name>.engine.json`` records what a loader must check
and what a C++ application needs to know: TensorRT version, GPU name and compute
capability, the profile's shape range, precision, I/O tensor names, dtypes and
layout, the sha256 of the engine, of its ONNX source and of the weights, whether
it is refittable, and the PyTorch → ONNX weight-name map used to refit it from a
state dict. :meth:`EngineSidecar.check_runtime` refuses an engine whose TensorRT
or GPU differs, with one line naming the difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfr_deploy.files import atomic_write, sha256_file

from .errors import EngineMismatchError, ProfileError
from .weight_map import WeightMap

SIDECAR_FORMAT = "rfr-deploy-engine/1"
Range = tuple[int, int, int]


@dataclass(frozen=True)
class EngineProfile:
    """Batch, height and width ranges (min, opt, max) of an engine's optimisation profile."""

    batch: Range
    height: Range
    width: Range

    def __post_init__(self) -> None:
        for name in ("batch", "height", "width"):
            lo, opt, hi = getattr(self, name)
            if not 1 <= lo <= opt <= hi:
                raise ProfileError(f"engine {name} range needs 1 <= min <= opt <= max, got {lo}/{opt}/{hi}")

    def contains(self, batch: int, height: int, width: int) -> bool:
        return all(
            r[0] <= v <= r[2] for r, v in ((self.batch, batch), (self.height, height), (self.width, width))
        )

    def check(self, batch: int, height: int, width: int) -> None:
        """Raise :class:`ProfileError` when a ``batch×height×width`` input lies outside the profile."""
        if not self.contains(batch, height, width):
            raise ProfileError(
                f"input {batch}×{height}×{width} (N×H×W) is outside the engine's profile {self.describe()}; "
                "build an engine for this size or run it in tiles"
            )

    def shapes(self, channels: int, noise_map: bool) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name → (min, opt, max) shapes, as TensorRT's ``IOptimizationProfile.set_shape`` takes them."""
        out = {
            "noisy": tuple((self.batch[i], channels, self.height[i], self.width[i]) for i in range(3)),
        }
        if noise_map:
            out["sigma"] = tuple((self.batch[i],) for i in range(3))
        return out

    def describe(self) -> str:
        b, h, w = self.batch, self.height, self.width
        return f"N {b[0]}-{b[2]}, H {h[0]}-{h[2]}, W {w[0]}-{w[2]} (optimised for {b[1]}×{h[1]}×{w[1]})"

    def to_json(self) -> dict[str, list[int]]:
        return {"batch": list(self.batch), "height": list(self.height), "width": list(self.width)}

    @classmethod
    def from_json(cls, data: dict) -> EngineProfile:
        return cls(**{k: tuple(int(v) for v in data[k]) for k in ("batch", "height", "width")})


def compute_profile(
    sizes: Sequence[tuple[int, int]],
    *,
    min_hw: tuple[int, int] | None = None,
    opt_hw: tuple[int, int] | None = None,
    max_hw: tuple[int, int] | None = None,
    batch: Range = (1, 1, 1),
    min_side: int = 32,
) -> EngineProfile:
    """The profile for images of ``sizes`` (H, W), with the user's bounds where given.

    Defaults: the maximum is the largest height and width among the images, the
    optimum the largest image, and the minimum ``min_side`` (or the smallest image
    when smaller) so that tiles and crops run too. Every image must fit the range:
    a user bound that excludes one raises :class:`ProfileError`.
    """
    if not sizes and (opt_hw is None or max_hw is None):
        raise ProfileError("give image sizes or both the opt and max height×width of the engine profile")
    heights = [int(h) for h, _ in sizes]
    widths = [int(w) for _, w in sizes]
    if max_hw is None:
        max_hw = (max(heights), max(widths))
    if opt_hw is None:
        opt_hw = max(sizes, key=lambda s: s[0] * s[1]) if sizes else max_hw
        opt_hw = (min(opt_hw[0], max_hw[0]), min(opt_hw[1], max_hw[1]))
    if min_hw is None:
        low_h = min([min_side, *heights]) if heights else min_side
        low_w = min([min_side, *widths]) if widths else min_side
        min_hw = (min(low_h, opt_hw[0]), min(low_w, opt_hw[1]))
    profile = EngineProfile(
        batch=tuple(int(v) for v in batch),
        height=(int(min_hw[0]), int(opt_hw[0]), int(max_hw[0])),
        width=(int(min_hw[1]), int(opt_hw[1]), int(max_hw[1])),
    )
    for h, w in sizes:
        profile.check(profile.batch[0], h, w)
    return profile


@dataclass(frozen=True)
class TensorSpec:
    name: str
    mode: str  # "input" | "output"
    dtype: str  # numpy name: float32, float16, ...
    shape: list[int]  # -1 for dynamic axes
    layout: str  # "NCHW" or "N"


@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT and GPU an engine is built for or about to run on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"


@dataclass
class EngineSidecar:
    runtime: RuntimeInfo
    precision: str
    profile: EngineProfile
    io: list[TensorSpec]
    refittable: bool
    engine_sha256: str
    onnx_sha256: str
    weights_sha256: str | None
    weight_map: WeightMap | None
    mode: str  # "built" | "refit"
    strip_plan: bool = False
    base_engine_sha256: str | None = None
    graph_sha256: str | None = None
    """The ONNX graph the engine computes, its weights' values left out (:func:`~exporters.engine_cache.
    graph_digest`): a refit from an ONNX file of another graph (the ×8 ensemble, another opset) is refused."""
    metadata: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    max_abs_error: float | None = None
    rfr_deploy_version: str = ""
    format: str = SIDECAR_FORMAT

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profile"] = self.profile.to_json()
        data["weight_map"] = self.weight_map.to_json() if self.weight_map else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineSidecar:
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"unknown sidecar format {data.get('format')!r}")
        data = dict(data)
        data["runtime"] = RuntimeInfo(**data["runtime"])
        data["profile"] = EngineProfile.from_json(data["profile"])
        data["io"] = [TensorSpec(**t) for t in data["io"]]
        data["weight_map"] = WeightMap.from_json(data["weight_map"]) if data.get("weight_map") else None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> EngineSidecar:
        path = Path(path)
        if not path.is_file():
            raise EngineMismatchError(
                f"{path}: engine sidecar not found (it is written next to every engine)"
            )
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineMismatchError(f"{path}: not a valid rfr-deploy engine sidecar ({exc})") from exc

    def check_runtime(self, current: RuntimeInfo) -> None:
        """Refuse to run on another TensorRT version or GPU than the engine was built with."""
        built = self.runtime
        if current.tensorrt_version != built.tensorrt_version:
            raise EngineMismatchError(
                f"engine was built with TensorRT {built.tensorrt_version}, this is TensorRT "
                f"{current.tensorrt_version}: rebuild it here"
            )
        if (current.gpu_name, current.compute_capability) != (built.gpu_name, built.compute_capability):
            raise EngineMismatchError(
                f"engine was built for {built.gpu_name} (compute capability {built.compute_capability}), "
                f"this GPU is {current.gpu_name} ({current.compute_capability}): rebuild it here"
            )

    def check_engine_file(self, engine_path: str | os.PathLike) -> None:
        """Refuse an engine file that is not the one this sidecar describes."""
        actual = sha256_file(engine_path)
        if actual != self.engine_sha256:
            raise EngineMismatchError(
                f"{engine_path}: the engine does not match its sidecar (sha256 differs)"
            )


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``photo_rfr.engine`` → ``photo_rfr.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")
