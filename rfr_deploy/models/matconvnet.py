"""MatConvNet ``simplenn`` releases (the original DnCNN weights): MATLAB v5 files and v7.3 (HDF5) files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rfr_deploy.errors import WeightsError
from rfr_deploy.models.registry import StateDict


def read_matconvnet(path: str | os.PathLike) -> StateDict:
    """Convolution weights of a MatConvNet ``simplenn`` DnCNN release, in KAIR layout."""
    import h5py

    path = Path(path)
    if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5 behind a 512-byte header
        layers = _matconvnet_layers_hdf5(path)
    else:
        layers = _matconvnet_layers_v5(path)
    state: StateDict = {}
    index = 0
    for kind, weights in layers:
        if kind == "conv":
            w, b = weights
            state[f"model.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            state[f"model.{index}.bias"] = torch.from_numpy(
                np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
            )
        elif kind not in ("relu",):
            if kind in ("bnorm",):
                raise WeightsError(f"{path}: MatConvNet file has unfolded batch norm layers; fold them first")
            if index == len(layers) - 1 or kind in ("loss", "pdist"):
                continue
            raise WeightsError(f"{path}: unsupported MatConvNet layer type '{kind}'")
        index += 1
    if not state:
        raise WeightsError(f"{path}: no convolution layers found in MatConvNet file")
    return state


def _matconvnet_layers_hdf5(path: Path) -> list[tuple[str, tuple[np.ndarray, np.ndarray] | None]]:
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        if "net" not in f or "layers" not in f["net"]:
            raise WeightsError(f"{path}: not a MatConvNet network file (no net.layers)")
        refs = f["net/layers"][()].reshape(-1)
        for ref in refs:
            layer = f[ref]
            kind = "".join(chr(int(c)) for c in layer["type"][()].reshape(-1))
            if kind == "conv":
                wref, bref = layer["weights"][()].reshape(-1)[:2]
                # HDF5 shows MATLAB's column-major arrays with the axes reversed.
                w = np.asarray(f[wref][()]).T
                b = np.asarray(f[bref][()])
                out.append((kind, (_matlab_to_torch_conv(w), b)))
            else:
                out.append((kind, None))
    return out


def _matconvnet_layers_v5(path: Path) -> list[tuple[str, tuple[np.ndarray, np.ndarray] | None]]:
    import scipy.io

    # Not squeezed: that would drop a gray first layer's input axis (H×W×1×F), not only trailing ones.
    mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    if "net" not in mat:
        raise WeightsError(f"{path}: not a MatConvNet network file (no 'net')")
    out = []
    for cell in np.asarray(_only(mat["net"]).layers).reshape(-1):
        layer = _only(cell)
        kind = str(np.asarray(layer.type).reshape(-1)[0])
        if kind == "conv":
            w, b = np.asarray(layer.weights).reshape(-1)[:2]
            out.append((kind, (_matlab_to_torch_conv(np.asarray(w)), np.asarray(b))))
        else:
            out.append((kind, None))
    return out


def _only(value):
    """The one element of a MATLAB 1×1 struct or cell as scipy reads it unsqueezed (an object array)."""
    return np.asarray(value).reshape(-1)[0] if isinstance(value, np.ndarray) else value


def _matlab_to_torch_conv(w: np.ndarray) -> np.ndarray:
    """MatConvNet filters (H, W, in, out), trailing singleton axes dropped by MATLAB, to (out, in, H, W)."""
    w = w.reshape(w.shape + (1,) * (4 - w.ndim))
    return w.transpose(3, 2, 0, 1)
