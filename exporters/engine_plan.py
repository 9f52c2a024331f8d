"""One TensorRT engine per run: build it once over a profile that covers every image, refit it for the rest.

Building an engine times kernels for every layer and costs more than the adaptation;
refitting new weights into it takes a fraction of that. For ``adapt-and-export DIR
--format engine`` (one adapted network per image) the first image's network is
therefore built into a refittable engine whose optimisation profile covers every image
of the run (or the sizes the user gives), and every later image's network is refitted
into that engine and written as its own engine. With ``engine_from`` a user's base
engine is refitted for every image instead; its profile must cover them all. Both are
checked when the run is planned, before any adaptation.

With an :class:`~exporters.engine_cache.EngineCache`, the first network refits a base engine an earlier run
built for the same graph, profile and GPU instead of building one, and a built base is kept there. Either
way the run's later networks refit its own first engine, never the cache entry, which another process may
trim or clear meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .engine_cache import EngineCache, engine_key
from .engine_sidecar import EngineProfile, EngineSidecar, compute_profile, sidecar_path
from .errors import EngineMismatchError, ExportError
from .weight_map import map_weights


class EngineRun:
    """Builds the first engine of a run and refits it for every further network (``export`` per network)."""

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        options,
        engine_from: str | Path | None = None,
        *,
        build: Callable | None = None,
        refit: Callable | None = None,
        cache: EngineCache | None = None,
        runtime: Callable | None = None,
    ):
        """``sizes``: (H, W) of every image of the run; ``options``: an :class:`EngineOptions`; ``build``,
        ``refit`` and ``runtime`` default to :func:`~exporters.tensorrt_engine.build_engine`,
        ``refit_engine`` and ``current_runtime``; ``cache``: base engines of earlier runs, or None."""
        self.options, self.cache, self._runtime = options, cache, runtime
        self.base: Path | None = Path(engine_from) if engine_from else None
        if self.base is not None:
            self.profile: EngineProfile = EngineSidecar.read(sidecar_path(self.base)).profile
            for h, w in sizes:
                self.profile.check(self.profile.batch[0], int(h), int(w))
        else:
            self.profile = compute_profile(
                [(int(h), int(w)) for h, w in sizes],
                min_hw=options.min_hw,
                opt_hw=options.opt_hw,
                max_hw=options.max_hw,
                batch=options.batch,
            )
        self._build, self._refit = build, refit
        self.refitted_from: Path | None = None
        """The engine the last network was refitted from (None after a build)."""

    def next_mode(self) -> str:
        """'built' for the first network of a run without a base engine, 'refit' for every other."""
        return "built" if self.base is None else "refit"

    def export(self, model, onnx_path, engine_path, *, example, precision: str, sigma=None):
        """Write ``engine_path`` for ``model`` (exported to ``onnx_path``): built, or refitted from the base
        (the run's, a user's or a cached one)."""
        if self.next_mode() == "refit":
            return self._refit_from(self.base, model, onnx_path, engine_path, example, sigma)
        key = self._cache_key(model, onnx_path, precision)
        cached = self.cache.find(key) if key is not None else None
        if cached is not None:
            try:
                artifact = self._refit_from(cached, model, onnx_path, engine_path, example, sigma)
                # The run's later networks refit its own first engine, as after a build: the cache entry
                # may be trimmed or cleared by another process while this run goes on.
                self.base = Path(artifact.path)
                return artifact
            except (EngineMismatchError, ExportError):  # not expected: build rather than fail the export
                self.cache.remove(key)
        build = self._build or _default("build_engine")
        self.refitted_from = None
        artifact = build(
            onnx_path,
            engine_path,
            model=model,
            profile=self.profile,
            precision=precision,
            example=example,
            sigma=sigma,
            options=self.options,
        )
        self.base = Path(artifact.path)
        if key is not None:
            self.cache.keep(key, self.base)
        return artifact

    def _refit_from(self, base, model, onnx_path, engine_path, example, sigma):
        refit = self._refit or _default("refit_engine")
        self.refitted_from = Path(base)
        return refit(
            base,
            engine_path,
            model=model,
            onnx_path=onnx_path,
            example=example,
            sigma=sigma,
            options=self.options,
        )

    def _cache_key(self, model, onnx_path, precision: str) -> str | None:
        """The cache entry of the base engine ``model``'s graph builds into; None without a cache."""
        if self.cache is None:
            return None
        parameters = set(map_weights(model.state_dict(), onnx_path).names.values())
        runtime = (self._runtime or _default("current_runtime"))()
        return engine_key(onnx_path, parameters, self.profile, precision, self.options, runtime)


def _default(name: str) -> Callable:
    from . import tensorrt_engine

    return getattr(tensorrt_engine, name)
