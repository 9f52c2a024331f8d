"""Building networks by name, in the style of timm/torchvision::

    from rfr_deploy import create_model, list_models
    list_models()                       # ['cbdnet', 'dncnn', ...]
    model = create_model("dncnn", channels=3)          # packaged default weights
    model = create_model("dncnn", weights="dncnn_25.pth")  # any supported file

Importing this module imports the zoo, which registers every architecture
(:mod:`rfr_deploy.models.registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rfr_deploy.errors import ModelError, WeightsError
from rfr_deploy.models import zoo  # noqa: F401  (registers every architecture)
from rfr_deploy.models.denoiser import Denoiser
from rfr_deploy.models.hub import fetch, is_named, named_weights
from rfr_deploy.models.registry import ModelEntry, registered, registered_names
from rfr_deploy.models.weights import load_weights, packaged_weights_path, read_any


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return registered_names()


def get_entry(name: str) -> ModelEntry:
    """The entry registered as ``name`` (any case); importing this module has loaded the zoo."""
    return registered(name)


def model_for_weights(model: str | None, weights: str | None, default: str = "dncnn") -> str:
    """The architecture to build: ``model`` when given; else the one named weights or a weights file's
    rfr-deploy metadata record; else, for a plain state dict or a MatConvNet release, ``default`` where
    it fits, or the first registered architecture it fits as a network for gray or RGB images, those
    whose names the file's name holds first (KAIR names its files after their architecture, and an
    FFDNet's tensors also fit a 12-channel FDnCNN); else ``default`` (whose error names why)."""
    if model is not None:
        return model
    if weights in (None, "default"):
        return default
    if is_named(weights):
        return named_weights(weights).meta.arch
    try:
        _, meta = read_any(Path(weights))
    except (WeightsError, OSError):
        return default  # loading it names the problem
    if meta is not None:
        return meta.arch
    stem = Path(weights).stem.lower()
    named = sorted(registered_names(), key=lambda name: (name not in stem, -len(name)))
    fits = (name for name in (default, *named) if _fits(weights, registered(name)))
    return next(fits, default)


def _fits(weights: str, entry: ModelEntry) -> bool:
    """Whether the file at ``weights`` loads into ``entry``'s network for gray or RGB images."""
    try:
        return load_weights(weights, entry).meta.channels in (1, 3)
    except WeightsError:
        return False


def create_model(
    name: str,
    weights: str | None = "default",
    channels: int | None = None,
    device: str | torch.device = "cpu",
    **arch_kwargs: Any,
):
    """Build a registered model, wrapped as a :class:`rfr_deploy.models.denoiser.Denoiser`.

    ``weights``: ``"default"`` for the weights shipped with the package (chosen by
    ``channels``), ``None`` for random initialisation, a name of official weights
    (``kair:dncnn_color_blind``, see :mod:`rfr_deploy.models.hub`; downloaded once), or a path to
    a weights file in any supported format (safetensors written by rfr-deploy, KAIR ``.pth``,
    MatConvNet ``.mat``). For files, the architecture is inferred from the weights
    where the entry knows how.
    """
    entry = get_entry(name)
    if weights == "default":
        if channels is None:
            channels = 3 if 3 in entry.default_weights else 1
        if channels not in entry.default_weights:
            raise ModelError(
                f"model '{entry.name}' ships no default weights for {channels}-channel images; give a weights file (--weights FILE)"
            )
        weights = str(packaged_weights_path(entry.default_weights[channels]))
    if weights is None:
        if channels is None:
            raise ModelError("channels must be given to build a model without weights")
        meta = entry.describe_weights(channels, arch_kwargs, source="random initialisation")
        net = entry.build(channels=channels, **arch_kwargs)
        return Denoiser(net, meta, entry, weights_sha256=None).to(device)
    known = None
    if is_named(weights):  # official weights by name, downloaded once into torch's hub cache
        named = named_weights(weights)
        if named.meta.arch != entry.name:
            raise ModelError(f"{named.name} are weights for model '{named.meta.arch}', not '{entry.name}'")
        weights, known = str(fetch(named)), named.meta
    loaded = load_weights(weights, entry, channels=channels, arch_kwargs=arch_kwargs, known=known)
    return Denoiser(loaded.net, loaded.meta, entry, weights_sha256=loaded.sha256).to(device)
