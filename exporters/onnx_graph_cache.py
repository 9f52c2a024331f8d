"""Verified ONNX graphs kept on disk, so that a later run of the same architecture skips the capture.

A capture (``torch.export``, its decompositions, constant folding) is most of an ONNX export's time, and
it costs a new process more than a warm one. :class:`~exporters.onnx_reuse.GraphReuse` keeps a run's
verified graph for its later images; :class:`GraphCache` keeps it for later runs, in
``<cache folder>/onnx-graphs`` (:func:`default_graph_cache`), next to the TensorRT timing
caches. The first export in a new process, captured → from the cache (2-core AMD EPYC, 192² example):
DnCNN 7.7 → 1.4 s, MIRNet 90 → 4.1 s (``benchmarks/results/onnx_graph_cache_cpu_zen2_crop64.md``).

One entry per graph signature (module tree, state-dict names, shapes and dtypes, export options, and the
contents of the source files the graph comes from) and versions of torch, onnx, onnxscript and
rfr-deploy: ``<key>.onnx``, the graph whose weight initializers are left empty (only the tensors the graph
folded in keep their values, so an entry is small), and ``<key>.json``, its weight map, a digest of the
tensors no initializer holds, its exporter and the graph file's SHA-256. An entry whose graph does not
match that digest is not used. A graph taken from the cache is filled with the network's weights and
verified like any reused graph; one that fails is removed. A cache that cannot be read or written costs a
capture, never an export. A hit marks its entry used, and a store trims the cache folder, least
recently used entry first (:mod:`rfr_deploy.caches`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfr_deploy.caches import kind_folder, mark_used, trim_cache
from rfr_deploy.files import atomic_write
from rfr_deploy.optional import installed_version
from rfr_deploy.version import __version__

from .weight_map import WeightMap

FORMAT = 2
"""Version of the entries' layout; a change makes every older entry a miss (2: one digest of the fixed
tensors instead of one per tensor)."""


@dataclass
class GraphTemplate:
    """A verified graph and what another network of its architecture needs to be written with it."""

    signature: str
    proto: Any
    """The verified ``onnx.ModelProto``; from the cache, its weight initializers are empty until filled."""
    weights: WeightMap
    fixed: str
    """Digest of the tensors the initializers do not hold, as the graph has them baked in
    (:func:`rfr_deploy.models.hub.tensors_sha256`)."""
    exporter: str


def default_graph_cache() -> Path:
    """``onnx-graphs`` in the cache folder (:func:`rfr_deploy.files.cache_folder`; default ``~/.cache/rfr-deploy``)."""
    return kind_folder("onnx-graphs")


@dataclass(frozen=True)
class GraphCache:
    """A folder of verified graphs, one per signature and software versions."""

    folder: Path
    limit: int | None = None
    """Bytes the cache folder around ``folder`` may hold after a store (:func:`rfr_deploy.caches.trim_cache`;
    :func:`rfr_deploy.caches.cache_limit` for a run's); None: no limit."""

    def load(self, signature: str) -> GraphTemplate | None:
        """The cached template of ``signature``, or None (absent, unreadable or not matching its digest)."""
        graph, record = self._paths(signature)
        try:
            entry = json.loads(record.read_text(encoding="utf-8"))
            data = graph.read_bytes()
            if entry["signature"] != signature or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None
            import onnx

            mark_used((graph, record))
            return GraphTemplate(
                signature=signature,
                proto=onnx.load_model_from_string(data),
                weights=WeightMap.from_json(entry["weights"]),
                fixed=str(entry["fixed"]),
                exporter=str(entry["exporter"]),
            )
        except Exception:  # a missing, partly written or foreign entry is a miss, never an error
            return None

    def store(self, template: GraphTemplate) -> None:
        """Keep ``template`` for later runs (best effort: a read-only or full disk only costs a capture)."""
        graph, record = self._paths(template.signature)
        data = _without_weights(template.proto, template.weights).SerializeToString()
        entry = {
            "format": FORMAT,
            "signature": template.signature,
            "exporter": template.exporter,
            "sha256": hashlib.sha256(data).hexdigest(),
            "weights": template.weights.to_json(),
            "fixed": template.fixed,
        }
        with contextlib.suppress(OSError):
            with atomic_write(graph) as tmp:
                tmp.write_bytes(data)
            with atomic_write(record) as tmp:  # written last: an entry is complete once its record exists
                tmp.write_text(json.dumps(entry), encoding="utf-8")
            trim_cache(self.folder.parent, self.limit, keep=(graph, record))

    def remove(self, signature: str) -> None:
        """Drop the entry of ``signature`` (its graph failed verification)."""
        for path in self._paths(signature):
            with contextlib.suppress(OSError):
                path.unlink()

    def _paths(self, signature: str) -> tuple[Path, Path]:
        key = _entry_key(signature)
        return self.folder / f"{key}.onnx", self.folder / f"{key}.json"


def _entry_key(signature: str) -> str:
    """The entry's name: the signature with the versions of everything that shapes the graph."""
    versions = {name: _version(name) for name in ("torch", "onnx", "onnxscript")}
    text = json.dumps({"format": FORMAT, "rfr-deploy": __version__, **versions, "signature": signature})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _version(package: str) -> str:
    return installed_version(package) or "absent"


def _without_weights(proto, weights: WeightMap):
    """A copy of ``proto`` whose initializers that hold weights keep their name, type and shape but no values."""
    import onnx

    stripped = onnx.ModelProto()
    stripped.CopyFrom(proto)
    clear_values(stripped.graph, set(weights.names.values()))
    return stripped


def clear_values(graph, names: set[str]) -> None:
    """Reduce the initializers of ``graph`` named in ``names`` to their name, type and shape (in place)."""
    import onnx

    for initializer in graph.initializer:
        if initializer.name in names:
            initializer.CopyFrom(
                onnx.TensorProto(
                    name=initializer.name, data_type=initializer.data_type, dims=initializer.dims
                )
            )
