"""Which ONNX initializer holds which PyTorch parameter.

TensorRT refits an engine by *weight name*; for engines parsed from ONNX those are
the graph's initializer names. Refitting straight from a PyTorch state dict (no
ONNX round trip) therefore needs the PyTorch → ONNX name map. The exporter here
keeps parameter names, but other exporters rename (``onnx::Conv_123``), fold or
share initializers, so the map is computed from the exported graph:

1. an initializer with the parameter's own name and shape;
2. otherwise the initializer whose values equal the parameter's (after casting to the
   initializer's dtype; a reshape is allowed), if exactly one does;
3. otherwise the parameter is *ambiguous* (several initializers hold equal values,
   e.g. all-zero biases) or *absent* (folded into other constants).

The map is stored in the engine sidecar; refitting refuses when a parameter that
the engine needs is ambiguous or absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

BF16 = "bfloat16"
"""The dtype name of bf16 initializers (NumPy reads them through ``ml_dtypes``, which ONNX loads)."""


@dataclass(frozen=True)
class WeightMap:
    names: dict[str, str]
    """PyTorch state-dict key → ONNX initializer name."""
    dtypes: dict[str, str]
    """ONNX initializer name → numpy dtype name (the dtype refit weights must have)."""
    shapes: dict[str, list[int]]
    """ONNX initializer name → shape."""
    ambiguous: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "names": dict(self.names),
            "dtypes": dict(self.dtypes),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "ambiguous": list(self.ambiguous),
            "absent": list(self.absent),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> WeightMap:
        return cls(
            names=dict(data["names"]),
            dtypes=dict(data["dtypes"]),
            shapes={k: [int(d) for d in v] for k, v in data["shapes"].items()},
            ambiguous=list(data.get("ambiguous", [])),
            absent=list(data.get("absent", [])),
        )

    def arrays(self, state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """ONNX initializer name → contiguous array of ``state``'s values, in the initializer's dtype and shape.
        NumPy has no bfloat16: bf16 initializers (dtype ``bfloat16``) get their raw bits, as ``uint16``.

        Raises :class:`KeyError` naming a missing parameter and :class:`ValueError` on a shape mismatch
        or a dtype this map cannot produce.
        """
        out: dict[str, np.ndarray] = {}
        for key, onnx_name in self.names.items():
            if key not in state:
                raise KeyError(key)
            tensor, shape = state[key].detach().cpu(), tuple(self.shapes[onnx_name])
            if tensor.numel() != int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"{key} has shape {tuple(tensor.shape)}, the engine expects {shape}")
            dtype = self.dtypes[onnx_name]
            if dtype == BF16:
                array = tensor.to(torch.bfloat16).view(torch.uint16).numpy()
            else:
                try:
                    array = tensor.to(torch.float32).numpy().astype(np.dtype(dtype))
                except TypeError as exc:
                    raise ValueError(
                        f"{key}: the engine holds it as {dtype}, which NumPy does not know"
                    ) from exc
            out[onnx_name] = np.ascontiguousarray(array.reshape(shape))
        return out


def map_weights(state: Mapping[str, torch.Tensor], onnx_model) -> WeightMap:
    """Map ``state`` (e.g. ``denoiser.state_dict()``) onto the initializers of ``onnx_model`` (path or ModelProto)."""
    import onnx
    from onnx import numpy_helper

    if isinstance(onnx_model, (str, Path)):
        onnx_model = onnx.load_model(str(onnx_model))
    inits = {i.name: numpy_helper.to_array(i) for i in onnx_model.graph.initializer}
    dtypes = {name: a.dtype.name for name, a in inits.items()}
    shapes = {name: list(a.shape) for name, a in inits.items()}
    names: dict[str, str] = {}
    ambiguous: list[str] = []
    absent: list[str] = []
    by_size: dict[int, list[str]] = {}
    for name, a in inits.items():
        by_size.setdefault(int(a.size), []).append(name)
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        value = tensor.detach().to("cpu", torch.float32).numpy()
        own = inits.get(key)
        if own is not None and own.shape == value.shape:
            names[key] = key
            continue
        # Exporters may reshape parameters (PReLU slopes to C×1×1): compare the values, not the shapes.
        candidates = [
            name
            for name in by_size.get(int(value.size), [])
            if inits[name].dtype.kind == "f"
            and np.array_equal(inits[name].reshape(-1), value.reshape(-1).astype(inits[name].dtype))
        ]
        if len(candidates) == 1:
            names[key] = candidates[0]
        elif candidates:
            ambiguous.append(key)
        else:
            absent.append(key)
    used = {v: [k for k, w in names.items() if w == v] for v in set(names.values())}
    for keys in used.values():  # two parameters landing on one initializer cannot be refitted apart
        if len(keys) > 1:
            for k in keys:
                names.pop(k)
            ambiguous.extend(keys)
    kept = set(names.values())
    return WeightMap(
        names=names,
        dtypes={k: v for k, v in dtypes.items() if k in kept},
        shapes={k: v for k, v in shapes.items() if k in kept},
        ambiguous=sorted(ambiguous),
        absent=sorted(absent),
    )
