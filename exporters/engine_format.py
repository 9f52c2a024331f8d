"""``--format engine``: a TensorRT engine per adapted network, one build per run (:mod:`exporters.engine_plan`).

The engine is parsed from the group's ONNX export (the 'onnx' format runs first). The first network of
a run is built into a refittable engine whose profile covers every image of the run (or refits the one an
earlier run built and kept in the engine cache); later networks are refitted into it (or, with
``engine_from``, into a user's base engine). TensorRT, Polygraphy and a
GPU are checked before any input is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rfr_deploy.caches import cache_limit
from rfr_deploy.errors import ConfigError
from rfr_deploy.export_protocol import ExportedFile, Exporter, ExportRequest

from . import tensorrt_engine
from .engine_cache import EngineCache, default_engine_cache
from .engine_plan import EngineRun
from .errors import ExportError
from .onnx_format import Precision, precision_field
from .registry import register_exporter


@dataclass(frozen=True)
class EngineSettings:
    """Settings of the TensorRT export; every field is a CLI option."""

    precision: Precision = precision_field()
    """The ONNX graph's precision, which the strongly typed engine computes in."""
    engine_from: str | None = field(
        default=None,
        metadata={
            "help": "Refit this TensorRT engine with the adapted weights instead of building a new one.",
            "file": "existing",
            "selects_format": True,
        },
    )
    """A user's base engine (with its sidecar), refitted for every image instead of a build."""
    engine_min_size: str | None = field(
        default=None,
        metadata={"help": "Smallest HxW the TensorRT engine accepts (default: from the inputs)."},
    )
    """Smallest H×W (e.g. '64x64') the TensorRT engine's optimisation profile accepts; default from the inputs."""
    engine_max_size: str | None = field(
        default=None, metadata={"help": "Largest HxW the TensorRT engine accepts, e.g. 2048x2048."}
    )
    """Largest H×W the engine accepts (e.g. '2048x2048'), so one engine serves many image sizes."""
    timing_cache: str | None = field(
        default=None, metadata={"help": "TensorRT timing cache file.", "file": "any"}
    )
    """TensorRT timing cache file, reused across builds."""
    engine_cache: bool = field(
        default=True,
        metadata={"help": "Keep built engines in the cache folder for later runs (rfr-deploy cache list)."},
    )
    """Refit a base engine an earlier run built for the same graph, profile and GPU instead of building one
    (:mod:`exporters.engine_cache`); a run that builds keeps its base engine there."""

    def options(self) -> tensorrt_engine.EngineOptions:
        """The engine's shape range and timing cache (sizes checked: one line for a malformed one)."""
        return tensorrt_engine.EngineOptions(
            min_hw=parse_size(self.engine_min_size),
            max_hw=parse_size(self.engine_max_size),
            timing_cache=self.timing_cache,
        )


@register_exporter
class EngineExporter(Exporter):
    """Writes ``<stem>_rfr.engine`` and its sidecar ``<stem>_rfr.engine.json``."""

    format = "engine"
    summary = "TensorRT"
    settings_type = EngineSettings
    needs = ("onnx",)
    needs_sizes = True

    def __init__(self, settings: EngineSettings | None = None):
        self.settings = settings or EngineSettings()
        self.run: EngineRun | None = None

    def check(self) -> None:
        tensorrt_engine.check_engine_support()  # TensorRT, Polygraphy and a GPU: fail before any work is done

    def prepare(self, sizes: Sequence[tuple[int, int]]) -> None:
        """One engine for the whole run: its profile covers every input (checked now, before any adaptation)."""
        cache = EngineCache(default_engine_cache(), cache_limit()) if self.settings.engine_cache else None
        self.run = EngineRun(sizes, self.settings.options(), self.settings.engine_from, cache=cache)

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        if self.run is None:
            raise ExportError("the engine export was not prepared for this run's image sizes")
        if "onnx" not in request.written:
            raise ExportError("the engine is built from the ONNX export: export 'onnx' before 'engine'")
        engine = self.run.export(
            request.model,
            request.written["onnx"],
            request.target("engine"),
            example=request.example,
            precision=self.settings.precision,
            sigma=request.sigma,
        )
        base = {"base": str(self.run.refitted_from)} if engine.mode == "refit" else {}
        timing = {"seconds": round(engine.seconds, 3), "max_abs_error": engine.max_abs_error}
        return [
            ExportedFile("engine", engine.path, {"mode": engine.mode, **base, **timing}),
            ExportedFile("engine_sidecar", engine.sidecar),
        ]

    def moved(self, old_dir: Path, new_dir: Path) -> None:
        """A base engine built into ``old_dir`` now lives in ``new_dir``, or is gone if its group failed."""
        base = self.run.base if self.run is not None else None
        if base is None or Path(base).parent != Path(old_dir):
            return
        final = Path(new_dir) / Path(base).name
        self.run.base = final if final.is_file() else None


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'HEIGHTxWIDTH' (e.g. '1024x1024') as (H, W); None for no text."""
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"engine size must look like HEIGHTxWIDTH (e.g. 1024x1024), not {text!r}") from exc
    if h < 1 or w < 1:
        raise ConfigError(f"engine size must be positive, not {text!r}")
    return h, w
