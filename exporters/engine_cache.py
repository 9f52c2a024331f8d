"""Refittable base engines kept across runs, so that a later run refits instead of building.

A run with ``--format engine`` builds one refittable engine for its first network and refits it for the
rest (:mod:`exporters.engine_plan`); the build times kernels for every layer and costs more than the
adaptation. :class:`EngineCache` keeps that base engine (with its sidecar) in
``<cache folder>/tensorrt-engines`` (:func:`default_engine_cache`), and a later run whose first
network has the same graph, precision, profile and build options, on the same TensorRT version and GPU,
refits the cached engine instead of building one. The refit is verified against PyTorch as every refit is;
a cached engine that cannot be refitted or fails verification is removed and the run builds.
A hit marks its entry used, and keeping one trims the cache folder, least recently used entry first
(:mod:`rfr_deploy.caches`).

An entry's key (:func:`engine_key`) covers the ONNX graph without its weights' values (nodes, inputs,
outputs, every initializer's name, type and shape, and the values of the initializers that hold no
parameter of the network: those are built into the engine), the precision, the profile, the build
options that shape the engine and the code that builds it, and the TensorRT version and GPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rfr_deploy.caches import kind_folder, mark_used, trim_cache
from rfr_deploy.files import atomic_write, source_digest
from rfr_deploy.version import __version__

from .engine_sidecar import sidecar_path
from .onnx_graph_cache import clear_values

FORMAT = 1
"""Version of the key's layout; a change makes every older entry a miss."""


def default_engine_cache() -> Path:
    """``tensorrt-engines`` in the cache folder (:func:`rfr_deploy.files.cache_folder`; default ``~/.cache/rfr-deploy``)."""
    return kind_folder("tensorrt-engines")


@dataclass(frozen=True)
class EngineCache:
    """A folder of refittable base engines with their sidecars, one per :func:`engine_key`."""

    folder: Path
    limit: int | None = None
    """Bytes the cache folder around ``folder`` may hold after a store (:func:`rfr_deploy.caches.trim_cache`;
    :func:`rfr_deploy.caches.cache_limit` for a run's); None: no limit."""

    def find(self, key: str) -> Path | None:
        """The cached engine of ``key`` (with its sidecar), or None."""
        engine = self.folder / f"{key}.engine"
        if not (engine.is_file() and sidecar_path(engine).is_file()):
            return None
        mark_used((engine, sidecar_path(engine)))
        return engine

    def keep(self, key: str, engine: Path) -> None:
        """Copy ``engine`` and its sidecar in as ``key`` (best effort: a cache that cannot be written only
        means the next run builds again)."""
        target = self.folder / f"{key}.engine"
        with contextlib.suppress(OSError):
            with atomic_write(target) as tmp:
                shutil.copyfile(engine, tmp)
            # The sidecar last: an entry is complete once its sidecar exists.
            with atomic_write(sidecar_path(target)) as tmp:
                shutil.copyfile(sidecar_path(engine), tmp)
            trim_cache(self.folder.parent, self.limit, keep=(target, sidecar_path(target)))

    def remove(self, key: str) -> None:
        """Drop the entry of ``key`` (it could not be refitted, or failed verification)."""
        engine = self.folder / f"{key}.engine"
        for path in (sidecar_path(engine), engine):
            with contextlib.suppress(OSError):
                path.unlink()


def engine_key(onnx_path, parameters: set[str], profile, precision: str, options, runtime) -> str:
    """The entry a base engine built from ``onnx_path`` is kept under: the graph without the values of
    the initializers named in ``parameters`` (the network's weights, which a refit replaces), the
    ``precision``, the ``profile``, the build ``options`` that shape the engine (an
    :class:`~exporters.tensorrt_engine.EngineOptions`) and the ``runtime`` (TensorRT version and GPU)."""
    described = {
        "format": FORMAT,
        "rfr-deploy": __version__,
        "graph": graph_digest(onnx_path, parameters),
        "precision": precision,
        "profile": profile.to_json(),
        "strip_plan": options.strip_plan,
        "workspace_mb": options.workspace_mb,
        "runtime": [runtime.tensorrt_version, runtime.gpu_name, runtime.compute_capability],
        "builder": source_digest([Path(__file__).with_name("tensorrt_engine.py")]),  # its build settings
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def graph_digest(onnx_path, parameters: set[str]) -> str:
    """SHA-256 of the graph at ``onnx_path`` with the initializers named in ``parameters`` reduced to their
    name, type and shape (metadata and documentation left out)."""
    import onnx

    graph = onnx.load_model(str(onnx_path), load_external_data=False).graph
    clear_values(graph, parameters)
    graph.doc_string = ""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()
