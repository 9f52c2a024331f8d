"""The run's first ONNX graph, reused for the networks adapted after it.

adapt-and-export writes one adapted network per image, all of one architecture: only the weights
differ. Capturing the graph (``torch.export``, its decompositions, constant folding) is nearly all of an
export's time; ONNX Runtime's verification is the rest (2-core AMD EPYC, second export in a process,
64² example: DnCNN 2.75 s, RIDNet 5.5 s, MIRNet about 80 s; ``benchmarks/results/onnx_reuse*.md``).

:class:`GraphReuse` keeps the last graph that passed verification with its weight map
(:mod:`exporters.weight_map`). A later network whose structure and export options match is written as
that graph with its own values in the initializers, then checked and verified with ONNX Runtime on the
example as a fresh export is (not again at the second size: that checks the graph's dynamic sizes, which
were verified with the template). What the initializers do not hold must match the template's: tensors the graph
folded in (no initializer carries them) and buffers outside the state dict. A network that differs in
any of this is captured afresh, and so is one whose reused graph fails verification.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from .weight_map import WeightMap, map_weights


@dataclass
class _Template:
    signature: str
    proto: Any
    """The verified ``onnx.ModelProto`` (its metadata is rewritten for every file)."""
    weights: WeightMap
    fixed: dict[str, torch.Tensor]
    """Tensors the initializers do not hold, as the graph has them baked in."""
    exporter: str


class GraphReuse:
    """Holds one verified graph for later exports of the same architecture (one run: one architecture)."""

    def __init__(self) -> None:
        self._template: _Template | None = None

    def fill(self, model, options: tuple) -> tuple[Any, str] | None:
        """(the template graph holding ``model``'s weights, the template's exporter), or None when no
        template matches ``model`` and the export ``options``."""
        template, state = self._template, model.state_dict()
        if template is None or template.signature != signature(model, state, options):
            return None
        fixed = _fixed_tensors(model, state, template.weights)
        if fixed.keys() != template.fixed.keys() or not all(
            torch.equal(fixed[k].cpu(), v) for k, v in template.fixed.items()
        ):
            return None
        return _with_weights(template.proto, template.weights.arrays(state)), template.exporter

    def keep(self, model, options: tuple, proto, exporter: str) -> None:
        """Remember ``proto``, a verified export of ``model`` with ``options``, as the template."""
        state = model.state_dict()
        weights = map_weights(state, proto)
        fixed = _fixed_tensors(model, state, weights)
        self._template = _Template(
            signature=signature(model, state, options),
            proto=proto,
            weights=weights,
            fixed={k: v.detach().cpu().clone() for k, v in fixed.items()},
            exporter=exporter,
        )

    def forget(self) -> None:
        self._template = None


def signature(model, state, options: tuple) -> str:
    """What the graph depends on besides the weights' values: the module tree with its settings, the
    names, shapes and dtypes of its ``state`` dict, and the export ``options``."""
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n{options!r}".encode())
    for key, tensor in state.items():
        digest.update(f"\n{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return digest.hexdigest()


def _fixed_tensors(model, state, weights: WeightMap) -> dict[str, torch.Tensor]:
    """The state entries no initializer holds, and the buffers outside the state dict."""
    fixed = {k: v.detach() for k, v in state.items() if k not in weights.names}
    fixed.update({k: v.detach() for k, v in model.named_buffers() if k not in state})
    return fixed


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
