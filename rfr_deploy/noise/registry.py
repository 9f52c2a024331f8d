"""Noise models by name: what ``--noise`` offers and how each model is built from a job's choices.

A noise model registers itself from its own module::

    register_noise("gaussian", build_gaussian)

where the builder takes the job's :class:`NoiseSettings` and returns the model (a
:class:`~rfr_deploy.noise.base.NoiseModel`). :func:`rfr_deploy.noise.build.build_noise` looks the
name up; it imports the built-in models, so their names are registered wherever noise is built.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

UnknownSigma = Literal["estimate", "uniform"]
LevelSource = Literal["white", "residual"]
"""How an unknown level is estimated for a noise model: 'white', the white-noise estimator on the
noisy image (:func:`~rfr_deploy.noise.level.estimate_noise_level`); 'residual', the RMS of what the
pre-trained network removes from it (:func:`~rfr_deploy.noise.level.residual_level`), for noise the
white-noise estimator misreads because it is correlated (camera noise)."""


@dataclass(frozen=True)
class NoiseSettings:
    """What a job asks of its synthetic noise (the command line's --sigma, --unknown-sigma,
    --sigma-low/--sigma-high) and the levels estimated from its images; σ in [0, 1] units."""

    sigma: float | None = None
    """The known level; None when it is unknown."""
    unknown_sigma: UnknownSigma = "estimate"
    """Without ``sigma``: 'estimate' aims at the estimated level, 'uniform' draws random levels."""
    estimates: tuple[float, ...] = ()
    """The levels estimated from the images adapted to (none where nothing needed them)."""
    sigma_range: tuple[float, float] = (0.0, 50 / 255)
    """The range of the random levels of 'uniform'."""
    tolerance: float | None = None
    """The relative error of ``estimates`` where it is known to be small (levels a blind network
    implies, :attr:`~rfr_deploy.noise.base.GaussianLevel.tolerance`); None otherwise."""

    @property
    def level(self) -> float | None:
        """The known level, else the median estimate; None with neither."""
        if self.sigma is not None:
            return self.sigma
        return statistics.median(self.estimates) if self.estimates else None


NoiseBuilder = Callable[[NoiseSettings], nn.Module]
"""``builder(settings) -> noise model``."""

_BUILDERS: dict[str, NoiseBuilder] = {}
_LEVEL_SOURCES: dict[str, LevelSource] = {}

RESERVED = ("auto",)
"""Names that are choices of the command line, not models ('auto': what the weights were trained on)."""


def register_noise(name: str, builder: NoiseBuilder, level: LevelSource = "white") -> None:
    """Make ``name`` a noise model of ``--noise`` (and of :func:`~rfr_deploy.noise.build.build_noise`);
    ``level`` says how its unknown level is estimated (:data:`LevelSource`).

    Raises ValueError when the name is taken (or reserved): a second registration would silently
    replace the first model.
    """
    if name in _BUILDERS or name in RESERVED:
        raise ValueError(f"a noise model named {name!r} is already registered")
    if not callable(builder):
        raise ValueError(f"the builder of noise model {name!r} must be callable, got {builder!r}")
    if level not in ("white", "residual"):
        raise ValueError(
            f"the level source of noise model {name!r} must be 'white' or 'residual', not {level!r}"
        )
    _BUILDERS[name] = builder
    _LEVEL_SOURCES[name] = level


def level_source(name: str) -> LevelSource:
    """How the unknown level of the registered noise model ``name`` is estimated (:data:`LevelSource`)."""
    get_noise_builder(name)
    return _LEVEL_SOURCES[name]


def get_noise_builder(name: str) -> NoiseBuilder:
    """The builder registered as ``name``; ValueError naming the registered ones when there is none."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown noise model {name!r}; registered: {', '.join(_BUILDERS) or 'none'}")
    return _BUILDERS[name]


def list_noise_models() -> tuple[str, ...]:
    """The registered noise models, in the order they were registered."""
    return tuple(_BUILDERS)
