"""Named official weights, one flag away: ``--weights kair:dncnn_color_blind``.

The official DnCNN, FDnCNN and FFDNet releases, as KAIR (MIT) publishes them on its GitHub release
v1.0, are downloaded once with PyTorch's own helper (:func:`torch.hub.download_url_to_file`) into
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, see :func:`torch.hub.get_dir`), in the style of
torchvision and timm. Every file is checked against a pinned hash of its *tensors* (names, dtypes,
shapes and bytes; :func:`tensors_sha256`), so a re-serialised copy of the same weights verifies as
well as the original. Each name is tied to the metadata the packaged weights carry (architecture,
channels, σ range, residual or direct output), so a loaded model knows what it was trained for.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from rfr_deploy.errors import WeightsError, first_line
from rfr_deploy.files import atomic_write
from rfr_deploy.models.registry import WeightsMeta
from rfr_deploy.models.weights import read_state_dict
from rfr_deploy.units import sigma_from_grey

KAIR_RELEASE = "https://github.com/cszn/KAIR/releases/download/v1.0"


@dataclass(frozen=True)
class NamedWeights:
    """Downloadable weights: where they come from, their pinned tensor hash, and what they are."""

    name: str
    """``source:file stem``, e.g. ``kair:dncnn_color_blind``."""
    url: str
    tensors_sha256: str
    """:func:`tensors_sha256` of the state dict the file holds."""
    meta: WeightsMeta
    description: str
    license: str = "MIT (cszn/KAIR)"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: a hash of the weights
    themselves, the same for any file (pickle or safetensors, any key order) that holds them."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_KAIR_RELEASES = (
    # file stem, architecture, channels, σ range, depth, width, tensor pin (computed from ../shared/weights)
    (
        "dncnn_15",
        "dncnn",
        1,
        (15, 15),
        17,
        64,
        "5d2af2432e901abc329e5ffe929b6d54991f6349cc1e67061b28e67c02d9de7d",
    ),
    (
        "dncnn_25",
        "dncnn",
        1,
        (25, 25),
        17,
        64,
        "70c35dd0718a1b78a3b1138e15ec9664a73150f3cc58d0b8310671c69eb5a26a",
    ),
    (
        "dncnn_50",
        "dncnn",
        1,
        (50, 50),
        17,
        64,
        "83e50539d68d413cae473b550819acb188b0d06a65e43f51e0841b464b47763d",
    ),
    (
        "dncnn_gray_blind",
        "dncnn",
        1,
        (0, 55),
        20,
        64,
        "018097ed98231f27547f44a5f5f055a1c8ce215556066a8f08aa324fb80afbb2",
    ),
    (
        "dncnn_color_blind",
        "dncnn",
        3,
        (0, 55),
        20,
        64,
        "c32f198117c3e25dfddff2eeb433b58111efecf75e6c4cf2a77093df1eefd1e0",
    ),
    (
        "fdncnn_gray",
        "fdncnn",
        1,
        (0, 75),
        20,
        64,
        "f057594a0564941074887d7009f0aeb86ff12e4a8be782f0be740b0747d784fc",
    ),
    (
        "fdncnn_color",
        "fdncnn",
        3,
        (0, 75),
        20,
        64,
        "2f7c264c2487cff4630d16e973e94b7cf6bdfe62f7e6994021c455711628e483",
    ),
    (
        "ffdnet_gray",
        "ffdnet",
        1,
        (0, 75),
        15,
        64,
        "616af9589c2a94578ea8d68c7c66592eaec47f9c8564ad69dd44c0d80869a4b9",
    ),
    (
        "ffdnet_color",
        "ffdnet",
        3,
        (0, 75),
        12,
        96,
        "ac5d0cf40d289d57baa0c56d92f9cd6b42d5b36aa4c1edb4efd380eab99db258",
    ),
)


def _kair(stem, arch, channels, sigma, depth, features, pin) -> NamedWeights:
    direct = arch in ("fdncnn", "ffdnet")  # σ-map input, clean-image output
    meta = WeightsMeta(
        arch=arch,
        channels=channels,
        arch_kwargs={"depth": depth, "features": features},
        sigma_range=(sigma_from_grey(sigma[0]), sigma_from_grey(sigma[1])),
        output="direct" if direct else "residual",
        noise_map=direct,
        source=f"KAIR release v1.0: {stem}.pth",
    )
    kind = f"σ = {sigma[0]}" if sigma[0] == sigma[1] else f"σ {sigma[0]}-{sigma[1]}"
    description = f"{arch} {'gray' if channels == 1 else 'color'}, {depth} layers, {kind}"
    return NamedWeights(f"kair:{stem}", f"{KAIR_RELEASE}/{stem}.pth", pin, meta, description)


NAMED_WEIGHTS: dict[str, NamedWeights] = {w.name: w for w in (_kair(*row) for row in _KAIR_RELEASES)}
"""Every named release, by name (``rfr-deploy models`` lists them)."""


def is_named(weights: str | os.PathLike | None) -> bool:
    """Whether ``weights`` is a name like ``kair:dncnn_25`` rather than a path."""
    return isinstance(weights, str) and weights.split(":", 1)[0] in {n.split(":")[0] for n in NAMED_WEIGHTS}


def named_weights(name: str) -> NamedWeights:
    if name not in NAMED_WEIGHTS:
        raise WeightsError(f"unknown named weights '{name}'; available: {', '.join(sorted(NAMED_WEIGHTS))}")
    return NAMED_WEIGHTS[name]


def checkpoint_folder() -> Path:
    """torch's hub cache of checkpoints (``$TORCH_HOME/hub/checkpoints``), where named weights are downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(entry: NamedWeights) -> Path:
    """Where the file of ``entry`` lives once downloaded (or may be placed by hand)."""
    return checkpoint_folder() / entry.filename


def fetch(entry: NamedWeights, progress: bool = False) -> Path:
    """The verified local file of ``entry``, downloaded into the hub cache on first use.

    A download goes to a temporary name and is renamed into place only once its tensors match the
    pinned hash, so the cache never holds an unverified file and a concurrent download's file is never
    removed. A cached file that does not verify (a wrong file placed by hand, a damaged copy) is replaced
    by a fresh download.
    """
    path = cache_path(entry)
    by_hand = f"download {entry.url} and place it at {path}"
    damaged = None
    if path.is_file():
        try:
            return _verified(entry, path, f"the cached file {path}")
        except WeightsError as exc:
            damaged = first_line(exc).split(";")[0] + "; "
    try:
        with atomic_write(path) as tmp:
            try:
                torch.hub.download_url_to_file(entry.url, str(tmp), progress=progress)
            except Exception as exc:  # offline, HTTP errors, a full disk
                raise WeightsError(
                    f"{damaged or ''}cannot download {entry.name} ({_reason(exc)}); {by_hand}"
                ) from None
            _verified(entry, tmp, f"the file downloaded from {entry.url}")
    except OSError as exc:  # the cache folder cannot be written
        raise WeightsError(
            f"cannot store {entry.name} in {path.parent} ({_reason(exc)}); {by_hand}"
        ) from None
    return path


def _verified(entry: NamedWeights, file: Path, what: str) -> Path:
    """``file`` when its tensors are those of ``entry``; else the one-line error naming ``what`` and the cure."""
    try:
        state = read_state_dict(file)
    except WeightsError as exc:
        state, reason = None, first_line(exc).removeprefix(f"{file}: ")
    if state is not None:
        got = tensors_sha256(state)
        if got == entry.tensors_sha256:
            return file
        reason = f"tensor hash {got[:12]}…, pinned {entry.tensors_sha256[:12]}…"
    raise WeightsError(
        f"{what} does not hold the weights {entry.name} ({reason}); download {entry.url} and place it at "
        f"{cache_path(entry)}"
    )


def _reason(exc: BaseException) -> str:
    """Why a download failed: the reason of a URL error or the message of an OS error, else ``exc``'s own."""
    return first_line(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
