"""The model registry: architectures by name, with the metadata that ties weights to them.

An architecture registers a :class:`ModelEntry` (:func:`register_model`, a duplicate name is an
error): how to build the network, whether it predicts the noise (``residual``) or the clean image
(``direct``), whether it takes a noise-level map, and which packaged weights are its defaults. Every
weights file is tied to a :class:`WeightsMeta` describing channels, σ range, output kind and input
range, so a loaded model always knows what it was trained for. The zoo (:mod:`rfr_deploy.models.zoo`)
registers the built-in architectures; :mod:`rfr_deploy.models.factory` builds them by name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from rfr_deploy.errors import ModelError
from rfr_deploy.units import grey_levels, sigma_from_grey

OutputKind = Literal["residual", "direct"]
NoiseKind = str
"""The noise weights were trained with: a registered noise model's name (``'gaussian'``, ``'camera'``, or one a
plug-in registers: :func:`~rfr_deploy.noise.registry.register_noise`), or ``'self-supervised'``."""


@dataclass(frozen=True)
class WeightsMeta:
    """What a set of weights was trained for. Serialised into every weights file we write."""

    arch: str
    channels: int
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sigma_range: tuple[float, float] = (0.0, 55 / 255)
    """Noise levels the weights were trained for, [0, 1] units (the files store grey levels): Gaussian σ, or
    for camera noise the range of the raw noise's std."""
    output: OutputKind = "residual"
    noise_map: bool = False
    input_range: tuple[float, float] = (0.0, 1.0)
    noise: NoiseKind = "gaussian"
    source: str = ""
    notes: str = ""
    per_channel: bool = False
    """A gray network run on each of the ``channels`` channels of an image alone
    (:func:`rfr_deploy.models.denoiser.each_channel`): for colour images whose noise is (nearly) the same in
    the three channels, which a colour network trained on noise drawn per channel leaves in place."""

    @property
    def net_channels(self) -> int:
        """The channels the bare network takes: 1 for a gray network run per channel, else :attr:`channels`."""
        return 1 if self.per_channel else self.channels

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.per_channel:  # files of networks that take their channels together read as before
            del data["per_channel"]
        data["arch_kwargs"] = dict(self.arch_kwargs)
        data["sigma_range"] = [grey_levels(v) for v in self.sigma_range]  # files speak grey levels
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightsMeta:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in ("sigma_range", "input_range"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        if "sigma_range" in data:
            data["sigma_range"] = tuple(sigma_from_grey(v) for v in data["sigma_range"])
        return cls(**data)


StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    build: Callable[..., nn.Module]
    """``build(channels=C, **arch_kwargs)`` returns the bare network."""
    output: OutputKind
    description: str
    noise_map: bool = False
    pad_multiple: int = 1
    global_statistics: bool = False
    """Whether the network pools over the whole image (channel attention): its tiles see their own
    statistics, close to but not a whole-image pass whatever their overlap."""
    default_noise: NoiseKind = "gaussian"
    sigma_range: tuple[float, float] = (0.0, 55 / 255)
    """Default noise levels of weights without metadata, [0, 1] units."""
    default_weights: Mapping[int, str] = field(default_factory=dict)
    """Channels → file name of packaged weights (``rfr_deploy/data``)."""
    infer_kwargs: Callable[[StateDict], dict[str, Any]] | None = None
    """Reads architecture keyword arguments (depth, width, channels) off a state dict."""
    convert_state_dict: Callable[[StateDict], StateDict] | None = None
    """Maps a foreign layout (e.g. KAIR's ``model.{i}``) onto this network's names."""
    paper_params: int | None = None
    """Parameter count published by the architecture's paper, for the zoo tests."""
    paper_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Architecture keyword arguments of the configuration whose count is published."""
    test_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Small architecture keyword arguments that keep unit tests fast (fewer blocks, fewer features)."""
    train_loss: Callable[..., torch.Tensor] | None = None
    """Pre-training objective replacing ``base_loss(model(noisy), clean)`` where the paper trains with
    more than a reconstruction loss: ``train_loss(model, noisy, clean, sigma_map, base_loss)``, where
    ``sigma_map`` is the true per-pixel noise std (``N×C×H×W``, [0, 1] units), e.g. CBDNet's asymmetric
    noise-estimation loss."""

    def describe_weights(
        self,
        channels: int,
        arch_kwargs: Mapping[str, Any],
        source: str,
        sigma_range: tuple[float, float] | None = None,
    ) -> WeightsMeta:
        """The metadata of weights for this architecture that carry none of their own: its output kind,
        noise map and default noise, and its σ range unless ``sigma_range`` ([0, 1] units) is given."""
        return WeightsMeta(
            arch=self.name,
            channels=channels,
            arch_kwargs=arch_kwargs,
            sigma_range=self.sigma_range if sigma_range is None else sigma_range,
            output=self.output,
            noise_map=self.noise_map,
            noise=self.default_noise,
            source=source,
        )


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an architecture to the registry. Raises :class:`ValueError` on duplicate names, and on names
    that are not lower case (they are looked up in any case, so 'DnCNN' would be a second 'dncnn')."""
    if entry.name != entry.name.lower() or not entry.name:
        raise ValueError(f"model names are lower case: register '{entry.name.lower()}', not '{entry.name}'")
    if entry.name in _REGISTRY:
        raise ValueError(f"model '{entry.name}' is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def registered(name: str) -> ModelEntry:
    """The entry registered under ``name`` (any case). The zoo registers itself on import:
    :mod:`rfr_deploy.models.factory` imports it before asking."""
    key = name.lower()
    if key not in _REGISTRY:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def registered_names() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_REGISTRY)
