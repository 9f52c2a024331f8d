"""What a noise model is, what it can tell about itself, and the unit of σ.

A noise model (:class:`NoiseModel`) is an ``nn.Module`` whose ``forward(x, generator)`` returns the noisy
batch and the per-sample noise level σ that a noise-map network should be told. All its randomness
comes from the explicit ``torch.Generator``: runs are reproducible, and the adaptation loop's CUDA
graphs replay it (see :mod:`rfr_deploy.adaptation.capture_checks`).

What the rest of the package needs to know about a model, it asks through
:meth:`NoiseModel.gaussian_level` (read with :func:`gaussian_level_of`), never through the model's
class: whether the noise is additive white Gaussian, at which level or range of levels, and whether
that level was estimated from the images. SURE, the terms on the noisy input and the default number of updates
depend on it. :class:`QuantizedNoise` wraps any model and answers for the model it wraps.

σ is in [0, 1] units everywhere in the package (deepinv's convention): 25 grey levels of an 8-bit
image is σ = 25/255. Only the command line, and the manifests, reports and files written for people,
speak grey levels; :mod:`rfr_deploy.units` converts at those edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from rfr_deploy.units import sigma_from_grey


def check_sigma(value: float, name: str = "sigma") -> float:
    """``value`` as a float, or ValueError when it is not a level in [0, 1] units."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    if value > 1:
        raise ValueError(
            f"{name} is in [0, 1] units, got {value:g}: 25 grey levels is 25/255 "
            f"(did you mean {value:g}/255 = {sigma_from_grey(value):.4g}?)"
        )
    return float(value)


@dataclass(frozen=True)
class GaussianLevel:
    """The level σ ([0, 1] units) of the additive white Gaussian noise a model draws."""

    low: float
    high: float
    random: bool = False
    """σ drawn per sample, uniformly in [low, high]; False: every sample gets one level (low == high)."""
    estimated: bool = False
    """That one level was estimated from the images rather than known (SURE allows for its error)."""
    tolerance: float | None = None
    """The relative error of an estimated level, where it is known to be small (the level a blind
    network implies: ±1 %, :mod:`rfr_deploy.adaptation.implied_level`); SURE then assumes only that
    band. None: the estimator's own range applies."""

    @property
    def sigma(self) -> float | None:
        """The one level every sample gets; None when it is drawn per sample."""
        return None if self.random else self.low


class NoiseModel(Protocol):
    """The interface of every noise model (implementations are ``nn.Module`` subclasses)."""

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(noisy, sigma)``: the noisy batch and the per-sample level (N values, [0, 1] units)."""
        ...

    def gaussian_level(self) -> GaussianLevel | None:
        """The level of the noise when it is additive white Gaussian; None for any other noise."""
        ...

    def aims_at_residual(self) -> bool:
        """Optional: True where the level was aimed at the pre-trained network's residual Y − f(Y), which
        then stands for the noise of the image (the camera model at an unknown level)."""
        ...


def gaussian_level_of(noise: nn.Module) -> GaussianLevel | None:
    """``noise.gaussian_level()``; None for a module that does not answer it (not known to be Gaussian)."""
    query = getattr(noise, "gaussian_level", None)
    return query() if callable(query) else None


def source_level_of(noise: nn.Module) -> GaussianLevel | None:
    """The level of the white Gaussian noise ``noise`` draws before it filters it (``noise.source_level()``,
    e.g. :class:`~rfr_deploy.noise.chroma.ChromaSubsampledNoise`), else :func:`gaussian_level_of`."""
    query = getattr(noise, "source_level", None)
    return query() if callable(query) else gaussian_level_of(noise)


def aims_at_residual(noise: nn.Module) -> bool:
    """``noise.aims_at_residual()``; False for a module that does not answer it."""
    query = getattr(noise, "aims_at_residual", None)
    return bool(query()) if callable(query) else False


class StoredNoise(nn.Module):
    """White noise of ``inner`` passed through what a file did to it (its chroma subsampled, its
    compression): no longer white, so SURE and the terms on the noisy input do not apply, but drawn at
    the level of ``inner``, which noise-map networks are told and the budget is chosen by."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def gaussian_level(self) -> GaussianLevel | None:
        """None: the noise is no longer white."""
        return None

    def source_level(self) -> GaussianLevel | None:
        """The level of the white noise before the file's processing (the wrapped model's)."""
        return gaussian_level_of(self.inner)

    def aims_at_residual(self) -> bool:
        """The wrapped model's."""
        return aims_at_residual(self.inner)

    def jpeg_quality(self) -> int | str | None:
        """The JPEG quality the noise is compressed at ('custom' for tables of no IJG quality); None
        where it is not compressed."""
        return None


def stored_as(noise: nn.Module) -> StoredNoise | None:
    """The :class:`StoredNoise` within ``noise`` (its ``factors``, its ``jpeg_quality()``), if any."""
    return next((m for m in noise.modules() if isinstance(m, StoredNoise)), None)


class QuantizedNoise(nn.Module):
    """Wraps a noise model so its output looks like an integer image file: clipped to [0, 1]
    and rounded to the ``bit_depth`` grid.

    Real noisy photos arrive clipped and quantized; adapting on unclipped noise teaches the
    network a distribution it never sees (dark and bright regions differ most).
    """

    def __init__(self, inner: nn.Module, bit_depth: int = 8):
        super().__init__()
        self.inner = inner
        self.levels = float(2**bit_depth - 1)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, sigma = self.inner(x, generator)
        work = noisy.float() if noisy.dtype == torch.float16 else noisy  # 65535 overflows float16
        return (torch.round(work.clamp(0.0, 1.0) * self.levels) / self.levels).to(noisy.dtype), sigma

    def gaussian_level(self) -> GaussianLevel | None:
        """The wrapped model's (clipping is allowed for where it matters: see :mod:`rfr_deploy.adaptation.sure`)."""
        return gaussian_level_of(self.inner)

    def source_level(self) -> GaussianLevel | None:
        """The wrapped model's."""
        return source_level_of(self.inner)

    def aims_at_residual(self) -> bool:
        """The wrapped model's."""
        return aims_at_residual(self.inner)

    def extra_repr(self) -> str:
        return f"levels={self.levels:g}"
