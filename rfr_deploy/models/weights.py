"""Loading and saving weights in every format rfr-deploy understands.

* ``.safetensors`` written by rfr-deploy: tensors plus a ``rfr_deploy`` metadata
  entry (:class:`~rfr_deploy.models.registry.WeightsMeta` as JSON).
* ``.pth``/``.pt`` state dicts (KAIR layout for the DnCNN family), always read with
  ``torch.load(weights_only=True)``.
* MatConvNet ``.mat`` releases of DnCNN (MATLAB v7.3/HDF5 through h5py, older v5
  files through scipy: :mod:`rfr_deploy.models.matconvnet`).

Architecture keyword arguments are inferred from the tensors where the registry
entry knows how, and every mismatch is reported as one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from rfr_deploy.errors import ModelError, WeightsError, first_line
from rfr_deploy.files import atomic_write, sha256_file
from rfr_deploy.models.registry import ModelEntry, OutputKind, StateDict, WeightsMeta
from rfr_deploy.units import sigma_from_grey

FORMAT_TAG = "rfr-deploy/1"


class ChannelsError(WeightsError):
    """Weights that are fine but for images of another channel count than the input's."""


@dataclass
class LoadedWeights:
    net: nn.Module
    meta: WeightsMeta
    sha256: str


def packaged_weights_path(name: str) -> Path:
    path = Path(str(resources.files("rfr_deploy") / "data" / name))
    if not path.is_file():
        raise ModelError(f"packaged weights '{name}' are missing from this installation of rfr-deploy")
    return path


def load_weights(
    path: str | os.PathLike,
    entry: ModelEntry,
    channels: int | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    known: WeightsMeta | None = None,
) -> LoadedWeights:
    """``known``: the metadata of a plain state dict whose origin is known (named weights,
    :mod:`rfr_deploy.models.hub`), used instead of inferring it from the tensors and the file name."""
    path = Path(path)
    state, meta = read_any(path)
    if meta is not None and meta.arch != entry.name:
        raise WeightsError(f"{path}: these weights are for model '{meta.arch}', not '{entry.name}'")
    if meta is None:
        if entry.convert_state_dict is not None:
            state = entry.convert_state_dict(state)
        meta = known or _infer_meta(path, state, entry, arch_kwargs or {})
    else:
        _check_meta(path, meta, entry)
        if arch_kwargs:
            meta = dataclasses.replace(meta, arch_kwargs={**meta.arch_kwargs, **arch_kwargs})
    if channels is not None and channels != meta.channels:
        raise ChannelsError(
            f"{path}: weights are for {meta.channels}-channel images, but the input has {channels} channel(s)"
        )
    net = _build(path, entry, meta)
    _load_strict(net, state, path, entry.name)
    return LoadedWeights(net=net, meta=meta, sha256=sha256_file(path))


def read_any(path: Path) -> tuple[StateDict, WeightsMeta | None]:
    """The tensors of the file at ``path`` in whichever format its suffix names, and its rfr-deploy metadata."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: weights file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return _read_safetensors(path)
        if suffix in (".pth", ".pt", ".ckpt", ".bin"):
            return read_state_dict(path), None
        if suffix == ".mat":
            from rfr_deploy.models.matconvnet import read_matconvnet

            return read_matconvnet(path), None
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights ({first_line(exc)})") from exc
    raise WeightsError(f"{path}: unknown weights format '{suffix}' (use .safetensors, .pth or .mat)")


def _check_meta(path: Path, meta: WeightsMeta, entry: ModelEntry) -> None:
    """Metadata that contradicts the architecture: a noise-level input the network lacks, or the reverse;
    an output (noise or clean image) other than the network's."""
    if meta.output != entry.output:
        raise WeightsError(
            f"{path}: invalid metadata: output is {json.dumps(meta.output)}, but '{entry.name}' predicts "
            f"{'the noise' if entry.output == 'residual' else 'the clean image'} ({json.dumps(entry.output)})"
        )
    if meta.noise_map != entry.noise_map:
        takes = "takes" if entry.noise_map else "does not take"
        raise WeightsError(
            f"{path}: invalid metadata: noise_map is {json.dumps(meta.noise_map)}, "
            f"but '{entry.name}' {takes} a noise-level map"
        )


def _build(path: Path, entry: ModelEntry, meta: WeightsMeta) -> nn.Module:
    """The bare network of ``entry`` for ``meta``; settings the architecture refuses are a :class:`WeightsError`."""
    try:
        return entry.build(channels=meta.net_channels, **meta.arch_kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        settings = ", ".join(f"{k}={v!r}" for k, v in dict(meta.arch_kwargs).items()) or "its defaults"
        raise WeightsError(
            f"{path}: invalid architecture settings for '{entry.name}' ({settings}): {first_line(exc)}"
        ) from exc


def save_weights(
    path: str | os.PathLike,
    net: nn.Module,
    meta: WeightsMeta,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> str:
    """Write ``net``'s parameters and ``meta`` as safetensors (atomically); returns the file's sha256.

    ``dtype=torch.float16`` halves the file (packaged weights); loading casts back to float32.
    """
    from safetensors.torch import save

    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in net.state_dict().items()
    }
    metadata = {"format": FORMAT_TAG, "rfr_deploy": meta.to_json()}
    if extra:
        metadata["extra"] = json.dumps(extra, sort_keys=True, default=str)
    with atomic_write(path) as tmp:
        tmp.write_bytes(sorted_header(save(tensors, metadata=metadata)))
    return sha256_file(path)


def sorted_header(data: bytes) -> bytes:
    """safetensors bytes with the JSON header's keys sorted, so identical weights give identical files.

    The library writes the metadata entries in hash order, which changes from run to run; the tensor
    data and its offsets (relative to the end of the header) stay as they are.
    """
    (size,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(header)) + header + data[8 + size :]


def read_weights_meta(path: str | os.PathLike) -> tuple[WeightsMeta, dict[str, Any]]:
    """Metadata of a safetensors file written by rfr-deploy (and its free-form extra dict)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    if "rfr_deploy" not in metadata:
        raise WeightsError(f"{path}: not a weights file written by rfr-deploy (no metadata)")
    return _parse_meta(path, metadata["rfr_deploy"]), json.loads(metadata.get("extra", "{}"))


# --------------------------------------------------------------------------- readers


def _read_safetensors(path: Path) -> tuple[StateDict, WeightsMeta | None]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    meta = _parse_meta(path, metadata["rfr_deploy"]) if "rfr_deploy" in metadata else None
    return state, meta


def _parse_meta(path: str | os.PathLike, text: str) -> WeightsMeta:
    """The rfr-deploy metadata of a safetensors file, its fields of fixed values checked."""
    try:
        meta = WeightsMeta.from_json(text)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable rfr-deploy metadata ({first_line(exc)})") from exc
    checks = (
        ("output", meta.output, get_args(OutputKind)),
        ("noise_map", meta.noise_map, (True, False)),
    )
    for name, value, allowed in checks:
        if type(value) is not type(allowed[0]) or value not in allowed:
            choices = " or ".join(json.dumps(a) for a in allowed)
            raise WeightsError(f"{path}: invalid metadata: {name} is {json.dumps(value)}, not {choices}")
    if not isinstance(meta.noise, str) or not meta.noise:
        raise WeightsError(
            f"{path}: invalid metadata: noise is {json.dumps(meta.noise)}, not a noise model's name"
        )
    if type(meta.channels) is not int or meta.channels < 1 or not isinstance(meta.arch_kwargs, dict):
        raise WeightsError(
            f"{path}: invalid metadata: channels must be a positive whole number and arch_kwargs an object"
            f" (channels {json.dumps(meta.channels)}, arch_kwargs {json.dumps(meta.arch_kwargs)})"
        )
    return meta


_STATE_DICT_FORM = (
    "the file must hold a dict of parameter names to tensors, as torch.save(model.state_dict(), path) writes"
)


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """The tensors of a ``.pth``/``.pt`` state dict, read without unpickling anything but tensors."""
    if _is_torchscript(path):
        beside = Path(path).with_suffix(".safetensors")
        instead = (
            beside if beside.is_file() else "the .safetensors weights that adapt-and-export writes beside it"
        )
        raise WeightsError(
            f"{path}: a TorchScript export (a traced network, not weights) cannot be loaded as weights; "
            f"pass {instead} instead"
        )
    try:
        with warnings.catch_warnings():  # every problem is reported below, in one line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message advises weights_only=False, which would run whatever code the file holds.
        what = (
            "it holds Python objects besides tensors, which rfr-deploy never loads (they could run code)"
            if "unsupported global" in str(exc).lower()
            else "it cannot be read as a PyTorch file"
        )
        raise WeightsError(f"{path}: not a plain state dict: {what}; {_STATE_DICT_FORM}") from None
    for key in ("state_dict", "model_state_dict", "params_ema", "params", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a plain state dict; {_STATE_DICT_FORM}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip whose top folder holds ``constants.pkl``, as torch.load
    checks (``torch.serialization._is_torchscript_zip``) before handing such files to ``torch.jit.load``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.partition("/")[2] == "constants.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


# --------------------------------------------------------------------------- checks


_SIGMA_IN_NAME = re.compile(r"(?:^|[_=\-])(\d{1,2})(?:\.|$)")


def _infer_meta(path: Path, state: StateDict, entry: ModelEntry, arch_kwargs: dict[str, Any]) -> WeightsMeta:
    if entry.infer_kwargs is None:
        raise WeightsError(f"{path}: cannot infer the architecture of '{entry.name}' from a plain state dict")
    try:
        inferred = entry.infer_kwargs(state)
    except (KeyError, IndexError, ValueError) as exc:
        raise WeightsError(f"{path}: weights do not match the '{entry.name}' architecture ({exc})") from exc
    channels = int(inferred.pop("channels"))
    in_channels = inferred.pop("_in_channels", channels)
    if in_channels != channels:
        raise WeightsError(
            f"{path}: weights take {in_channels} input channels but produce {channels}; "
            f"they do not fit '{entry.name}'"
        )
    kwargs = {**inferred, **arch_kwargs}
    sigma_range = None  # the entry's
    match = _SIGMA_IN_NAME.search(path.stem)
    if match and "blind" not in path.stem and not entry.noise_map:
        s = sigma_from_grey(float(match.group(1)))
        sigma_range = (s, s)
    return entry.describe_weights(channels, kwargs, source=path.name, sigma_range=sigma_range)


def _load_strict(net: nn.Module, state: StateDict, path: Path, arch: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: weights do not match the '{arch}' architecture: {'; '.join(parts)}")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{path}: weights do not match the '{arch}' architecture: {key} has shape "
                f"{tuple(state[key].shape)} in the file but {tuple(tensor.shape)} in the network"
            )
        if state[key].is_floating_point() != tensor.is_floating_point():  # bool, int or complex weights
            raise WeightsError(
                f"{path}: weights do not match the '{arch}' architecture: {key} holds {state[key].dtype}, "
                f"not {tensor.dtype}"
            )
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise WeightsError(f"{path}: weights contain non-finite values in {key}")
    net.load_state_dict(state, strict=True)
