"""The run's first ONNX graph, reused for the networks adapted after it.

adapt-and-export writes one adapted network per image, all of one architecture: only the weights
differ. Capturing the graph (``torch.export``, its decompositions, constant folding) is nearly all of an
export's time; ONNX Runtime's verification is the rest (2-core AMD EPYC, second export in a process,
64² example: DnCNN 2.75 s, RIDNet 5.5 s, MIRNet about 80 s; ``benchmarks/results/onnx_reuse*.md``).

:class:`GraphReuse` keeps the last graph that passed verification with its weight map
(:mod:`exporters.weight_map`). A later network whose structure and export options match is written as
that graph with its own values in the initializers, then checked and verified with ONNX Runtime against
PyTorch as a fresh export is, on a smaller centre crop of the example (at most 64², which checks every
weight) and not again at the second size (that checks the graph's dynamic sizes, which were verified with
the template). What the initializers do not hold must match the template's: tensors the graph
folded in (no initializer carries them) and buffers outside the state dict. A network that differs in
any of this is captured afresh, and so is one whose reused graph fails verification.

With a :class:`~exporters.onnx_graph_cache.GraphCache` (``--format onnx``'s default), the template is also
kept on disk, and a run's first network takes an earlier run's graph from there before it is captured.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

from rfr_deploy.files import source_digest
from rfr_deploy.models.hub import tensors_sha256

from .onnx_graph_cache import GraphCache, GraphTemplate
from .weight_map import WeightMap, map_weights


class GraphReuse:
    """Holds the verified graphs of a run for later exports of the same architecture (a folder of gray and
    colour images has two), and with a ``cache``, keeps them for later runs and looks there before a
    capture."""

    KEPT = 4
    """Templates held at most (the least recently used goes first)."""

    def __init__(self, cache: GraphCache | None = None) -> None:
        self.cache = cache
        self._templates: dict[str, GraphTemplate] = {}  # by signature, least recently used first
        self._last: str | None = None

    def fill(self, model, options: tuple) -> tuple[Any, str, str] | None:
        """(the template graph holding ``model``'s weights, the template's exporter, where the template came
        from: ``reused`` from this run or ``cached`` by an earlier one), or None when no template matches
        ``model`` and the export ``options``."""
        state = model.state_dict()
        key = signature(model, state, options)
        template, source = self._templates.pop(key, None), "reused"
        if template is None:
            template, source = (self.cache.load(key) if self.cache is not None else None), "cached"
            if template is None:
                return None
        self._hold(template)
        if _fixed_digest(model, state, template.weights) != template.fixed:
            return None
        return _with_weights(template.proto, template.weights.arrays(state)), template.exporter, source

    def keep(self, model, options: tuple, proto, exporter: str) -> None:
        """Remember ``proto``, a verified export of ``model`` with ``options``, as a template (and in the
        cache)."""
        state = model.state_dict()
        weights = map_weights(state, proto)
        template = GraphTemplate(
            signature=signature(model, state, options),
            proto=proto,
            weights=weights,
            fixed=_fixed_digest(model, state, weights),
            exporter=exporter,
        )
        self._hold(template)
        if self.cache is not None:
            self.cache.store(template)

    def forget(self) -> None:
        """Drop the template last filled or kept (its graph failed verification), from the cache too."""
        if self._last is not None and self._templates.pop(self._last, None) and self.cache is not None:
            self.cache.remove(self._last)
        self._last = None

    def _hold(self, template: GraphTemplate) -> None:
        self._templates.pop(template.signature, None)
        self._templates[template.signature] = template  # the most recently used last
        while len(self._templates) > self.KEPT:
            del self._templates[next(iter(self._templates))]
        self._last = template.signature


def signature(model, state, options: tuple) -> str:
    """What the graph depends on besides the weights' values: the module tree with its settings and the
    source of its module classes and of the exported wrapper, the names, shapes and dtypes of its ``state``
    dict, and the export ``options``."""
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n{options!r}".encode())
    digest.update(_graph_code_digest(model).encode())
    for key, tensor in state.items():
        digest.update(f"\n{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return digest.hexdigest()


def _graph_code_digest(model) -> str:
    """Digest of the code a captured graph comes from: the files defining ``model``'s module classes
    (torch's own excepted: its version keys the cache) and this package's wrapper and exporter."""
    classes = {type(m) for m in model.modules() if not type(m).__module__.startswith("torch.")}
    files = {inspect.getsourcefile(c) for c in classes} - {None}
    here = Path(__file__).parent
    return source_digest([*files, here / "exportable.py", here / "onnx_export.py"])


def _fixed_digest(model, state, weights: WeightMap) -> str:
    """One digest of the state entries no initializer holds and of the buffers outside the state dict."""
    fixed = {k: v for k, v in state.items() if k not in weights.names}
    fixed.update({k: v for k, v in model.named_buffers() if k not in state})
    return tensors_sha256(fixed)


def _with_weights(template, arrays):
    """A copy of the ``template`` proto whose named initializers hold ``arrays``."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(template)
    for initializer in proto.graph.initializer:
        array = arrays.get(initializer.name)
        if array is not None:
            initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))
    return proto
