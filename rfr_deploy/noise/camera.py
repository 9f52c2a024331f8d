"""CBDNet's in-camera noise model (Guo et al., CVPR 2019), vectorised in torch.

Realistic noise for photographs: per sample, a camera response function (CRF) is
drawn; the image is mapped back to irradiance by the inverse CRF, heteroscedastic
Gaussian noise is added there (signal-dependent σ_s ∈ [0, 0.16], independent σ_c ∈
[0, 0.06], drawn per channel as in CBDNet's ``AddNoiseMosai.m``), the result is
clipped, Bayer-mosaicked with a random pattern and demosaicked (with probability
0.8: CBDNet's random choice among four patterns and "no mosaic"), mapped through
the CRF again and, optionally, JPEG-compressed (:func:`rfr_deploy.noise.isp.jpeg_round_trip`,
an approximation of libjpeg; off by default).

The synthetic noise is ``pipeline(L + n) − pipeline(L)`` with ``L = CRF⁻¹(x)``, added
to ``x`` itself: the clean image is never altered by the round trip through the
camera (demosaicing or JPEG artefacts of the clean image are not noise).

Shot noise: ``shot_noise="cbdnet"`` (default) follows the released CBDNet code, whose
shot-noise std is ``σ_s·L``; ``"poisson"`` follows the paper's heteroscedastic
model, variance ``σ_s²·L`` (Poisson-like). Grey images are treated as a monochrome
sensor: one channel, no mosaic.

Camera responses (:class:`CameraResponses`): the 201 measured curves of the DoRF
database that CBDNet uses are loaded with :meth:`CameraResponses.from_mat` from a
folder holding ``201_CRF_data.mat`` (keys ``I``, ``B``) and, optionally,
``dorfCurvesInv.mat`` (``invI``, ``invB``). ``CameraNoise()`` uses the folder named by
the environment variable ``RFR_CRF_DATA`` when it is set, and otherwise a built-in
parametric family (offset gamma × contrast S-curves), so the package never needs
the data files.

Registered as the noise model ``"camera"`` (:func:`build_camera`).

All randomness comes from the explicit generator; the forward pass has no host
synchronisation (usable inside CUDA graphs) and no numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.base import GaussianLevel, check_sigma
from rfr_deploy.noise.isp import bayer_sites, demosaic, jpeg_round_trip, mosaic
from rfr_deploy.noise.registry import NoiseSettings, register_noise

ENV_VAR = "RFR_CRF_DATA"
CRF_FILE = "201_CRF_data.mat"
INVERSE_FILE = "dorfCurvesInv.mat"
ShotNoise = Literal["cbdnet", "poisson"]


class CameraResponses:
    """A family of camera response functions, tabulated on uniform grids of [0, 1].

    ``forward[k]`` samples curve ``k`` (irradiance → brightness) at ``linspace(0, 1, n)``;
    ``inverse[k]`` samples its inverse (brightness → irradiance). Curves must be
    non-decreasing from 0 to 1; the inverse is computed from ``forward`` when not given.
    """

    def __init__(self, forward: torch.Tensor | np.ndarray, inverse=None, source: str = ""):
        f = np.asarray(forward, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] < 2 or not np.isfinite(f).all():
            raise ConfigError(f"camera responses must be a finite K×n table (n >= 2), got shape {f.shape}")
        if (
            (np.diff(f, axis=1) < -1e-3).any()
            or np.abs(f[:, 0]).max() > 1e-3
            or np.abs(f[:, -1] - 1).max() > 1e-3
        ):
            raise ConfigError("camera responses must rise monotonically from 0 to 1")
        f = np.maximum.accumulate(np.clip(f, 0.0, 1.0), axis=1)
        self.forward = torch.from_numpy(f).float()
        self.inverse = torch.from_numpy(
            np.asarray(inverse, dtype=np.float64) if inverse is not None else _invert(f)
        ).float()
        if self.inverse.shape[0] != self.forward.shape[0]:
            raise ConfigError("forward and inverse tables hold different numbers of curves")
        self.source = source

    def __len__(self) -> int:
        return int(self.forward.shape[0])

    def __repr__(self) -> str:
        return f"CameraResponses({len(self)} curves, {self.source or 'custom'})"

    @classmethod
    def from_mat(cls, path: str | os.PathLike, inverse: Literal["exact", "published"] = "exact"):
        """The measured curves CBDNet uses: a folder with ``201_CRF_data.mat`` (or that file).

        ``inverse="exact"`` inverts the forward curves numerically (so ``CRF(CRF⁻¹(x)) = x``);
        ``"published"`` uses the nearest-bin inverses of ``dorfCurvesInv.mat``, as CBDNet does.
        """
        import scipy.io

        path = Path(path)
        file = path / CRF_FILE if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"{file}: camera response file not found (expected {CRF_FILE})")
        try:
            data = scipy.io.loadmat(str(file))
            irradiance, brightness = np.asarray(data["I"], np.float64), np.asarray(data["B"], np.float64)
        except Exception as exc:  # scipy raises several types for corrupt or foreign files
            raise ConfigError(f"{file}: not a CBDNet camera response file ({exc})") from exc
        grid = np.linspace(0.0, 1.0, brightness.shape[1])
        forward = np.stack([np.interp(grid, i, b) for i, b in zip(irradiance, brightness, strict=True)])
        inv = None
        if inverse == "published":
            inv_file = file.parent / INVERSE_FILE
            if not inv_file.is_file():
                raise ConfigError(f"{inv_file}: published inverse curves not found")
            data = scipy.io.loadmat(str(inv_file))
            inv_i, inv_b = np.asarray(data["invI"], np.float64), np.asarray(data["invB"], np.float64)
            inv = np.stack([np.interp(grid, b, i) for i, b in zip(inv_i, inv_b, strict=True)])
        return cls(forward, inv, source=f"{file.name} ({len(forward)} measured curves, {inverse} inverse)")

    @classmethod
    def parametric(cls, samples: int = 1024) -> CameraResponses:
        """Built-in family of 48 smooth responses: offset gamma ``((L+ε)^(1/γ) − ε^(1/γ))`` normalised,
        γ ∈ {1, 1.4, 1.8, 2.2, 2.6, 3, 3.6, 4.4}, toe ε ∈ {0.001, 0.01}, then a contrast S-curve
        ``y − c·sin(2πy)/2π``, c ∈ {0, 0.3, 0.6}.

        Chosen to span the measured curves: the 5th/50th/95th percentiles of the brightness of
        mid-grey (L = 0.5) are 0.50/0.76/0.87 here and 0.50/0.78/0.92 over the 201 DoRF curves,
        of L = 0.05 0.04/0.16/0.33 (DoRF 0.02/0.17/0.31), and of the slope at black 0.7/5.3/21
        (DoRF 0.2/5.0/18).
        """
        L = np.linspace(0.0, 1.0, samples)
        curves = []
        for gamma in (1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 3.6, 4.4):
            for eps in (0.001, 0.01):
                g = ((L + eps) ** (1 / gamma) - eps ** (1 / gamma)) / (
                    (1 + eps) ** (1 / gamma) - eps ** (1 / gamma)
                )
                for c in (0.0, 0.3, 0.6):
                    curves.append(g - c * np.sin(2 * np.pi * g) / (2 * np.pi))
        return cls(np.stack(curves), source="parametric (gamma × toe × contrast)")

    @classmethod
    def default(cls) -> CameraResponses:
        """The curves of ``$RFR_CRF_DATA`` when set, else the parametric family."""
        folder = os.environ.get(ENV_VAR)
        if folder:
            return cls.from_mat(Path(folder).expanduser())
        return cls.parametric()


def _invert(forward: np.ndarray) -> np.ndarray:
    n = forward.shape[1]
    grid = np.linspace(0.0, 1.0, n)
    ramp = np.arange(n) * 1e-9  # strictly increasing where a curve is flat
    return np.stack([np.interp(grid, f + ramp, grid) for f in forward])


def _lookup(table: torch.Tensor, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of curve ``index[i]`` of ``table`` (K×n, uniform grid) at ``x[i]``."""
    rows = table.to(x.dtype)[index]  # N×n
    n = rows.shape[1]
    pos = x.clamp(0, 1).reshape(x.shape[0], -1) * (n - 1)
    i0 = pos.floor().clamp(max=n - 2)
    frac = pos - i0
    i0 = i0.long()
    v0, v1 = rows.gather(1, i0), rows.gather(1, i0 + 1)
    return (v0 + frac * (v1 - v0)).reshape(x.shape)


class CameraParams(NamedTuple):
    """The camera of each sample: response curve, noise levels, Bayer pattern, JPEG quality."""

    curve: torch.Tensor  # N, index into the responses
    sigma_s: torch.Tensor  # N×C×1×1
    sigma_c: torch.Tensor  # N×C×1×1
    pattern: torch.Tensor  # N, index into rfr_deploy.noise.isp.BAYER_PATTERNS
    mosaic: torch.Tensor  # N×1×1×1 bool
    quality: torch.Tensor | None  # N, JPEG quality, or None without compression


class CameraSample(NamedTuple):
    noisy: torch.Tensor
    sigma: torch.Tensor
    """Per sample: RMS of the added noise (the equivalent Gaussian σ, [0, 1] units)."""
    sigma_map: torch.Tensor
    """Per pixel and channel: std of the synthetic noise at the output, from ±1σ of the raw noise
    through demosaicing, clipping and the response curve (JPEG ignored)."""


class _Developed(NamedTuple):
    """What the cameras make of the clean image, whatever their noise levels (computed once per draw)."""

    clean: torch.Tensor  # the input in the working dtype
    irradiance: torch.Tensor
    sites: torch.Tensor | None  # Bayer sites (colour images)
    linear: torch.Tensor  # irradiance through the mosaic and demosaicing
    out: torch.Tensor  # and through the response curve and JPEG


class CameraNoise(nn.Module):
    """Realistic camera noise; ``forward(x, generator) -> (noisy, sigma)`` (a :class:`~rfr_deploy.noise.base.NoiseModel`)."""

    def __init__(
        self,
        responses: CameraResponses | None = None,
        sigma_s: tuple[float, float] = (0.0, 0.16),
        sigma_c: tuple[float, float] = (0.0, 0.06),
        mosaic_probability: float = 0.8,
        shot_noise: ShotNoise = "cbdnet",
        jpeg_quality: tuple[float, float] | None = None,
        level: float | None = None,
        level_from_residual: bool = False,
    ):
        """``level``: RMS of the synthetic noise to aim at ([0, 1] units), e.g. the noise level estimated
        on the photograph being adapted to; each random camera's σ_s and σ_c are then scaled together so
        its noise reaches that level (response curve, mosaic and JPEG stay random). ``None`` keeps the
        random levels of CBDNet's training, which are far stronger than the noise of most photographs.
        ``level_from_residual``: that level is the RMS of the pre-trained network's residual
        (:meth:`aims_at_residual`)."""
        super().__init__()
        if level is not None and not check_sigma(level, "level") > 0:
            raise ValueError("level must be positive: camera noise of level 0 draws no noise")
        self.level = None if level is None else float(level)
        self.level_from_residual = bool(level_from_residual)
        for name, (lo, hi) in (("sigma_s", sigma_s), ("sigma_c", sigma_c)):
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if not 0 <= mosaic_probability <= 1:
            raise ValueError("mosaic_probability must lie in [0, 1]")
        if shot_noise not in ("cbdnet", "poisson"):
            raise ValueError(f"shot_noise must be 'cbdnet' or 'poisson', not {shot_noise!r}")
        if jpeg_quality is not None and not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must be a range within [1, 100], got {jpeg_quality}")
        self.responses = responses if responses is not None else CameraResponses.default()
        self.sigma_s = (float(sigma_s[0]), float(sigma_s[1]))
        self.sigma_c = (float(sigma_c[0]), float(sigma_c[1]))
        self.mosaic_probability = float(mosaic_probability)
        self.shot_noise = shot_noise
        self.jpeg_quality = None if jpeg_quality is None else (float(jpeg_quality[0]), float(jpeg_quality[1]))
        self.register_buffer("crf", self.responses.forward, persistent=False)
        self.register_buffer("icrf", self.responses.inverse, persistent=False)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params, developed = self._draw_developed(x, generator)
        noisy, sigma, _ = self.apply(x, params, generator, developed=developed)
        return noisy, sigma

    def gaussian_level(self) -> GaussianLevel | None:
        """None: signal-dependent noise, not white Gaussian (SURE and the terms on the noisy input do not apply)."""
        return None

    def std_range(self) -> tuple[float, float]:
        """The raw noise's std over the drawn levels, [0, 1] units: σ_c at black to √(σ_s² + σ_c²) at white."""
        return self.sigma_c[0], float(np.hypot(self.sigma_s[1], self.sigma_c[1]))

    def aims_at_residual(self) -> bool:
        """Whether the level was read from the pre-trained network's residual, which then stands for the
        noise (what the camera-noise guard, coloured SURE, assumes: :mod:`rfr_deploy.adaptation.coloured_sure`)."""
        return self.level is not None and self.level_from_residual

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> CameraSample:
        """Noisy batch, per-sample σ and the per-pixel noise std map (e.g. CBDNet's training target)."""
        params, developed = self._draw_developed(x, generator)
        return CameraSample(*self.apply(x, params, generator, with_map=True, developed=developed))

    def draw_at_level(self, x: torch.Tensor, generator: torch.Generator | None = None) -> CameraParams:
        """:meth:`draw`, then (with ``level``) σ_s, σ_c scaled so each camera's noise RMS on ``x`` is ``level``.

        The levels are first brought to about ``level`` in raw space (so the trial is not distorted by
        clipping), the RMS of one trial draw is measured, and σ_s, σ_c are rescaled by the ratio: noise
        scales linearly with them away from clipping and the response curve is smooth, so this lands within
        a few percent. No host synchronisation (usable inside CUDA graphs).
        """
        return self._draw_developed(x, generator)[0]

    def _draw_developed(
        self, x: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[CameraParams, _Developed | None]:
        """:meth:`draw_at_level`'s cameras, and their clean image where the trial developed it (the
        noise's scaling leaves it as it is)."""
        params = self.draw(x, generator)
        if self.level is None:
            return params, None
        developed = self._develop(x, params)
        raw = (params.sigma_s.square() + params.sigma_c.square()).mean(dim=1, keepdim=True).sqrt()
        params = _scaled(params, self.level / raw.clamp_min(1e-6))
        _, trial, _ = self.apply(x, params, generator, developed=developed)
        scale = (self.level / trial.to(raw.dtype).clamp_min(1e-6)).view(-1, 1, 1, 1)
        return _scaled(params, scale), developed

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> CameraParams:
        """A random camera per sample of ``x`` (only its shape, device and dtype are used)."""
        _check(x)
        n, c = x.shape[:2]
        dev, dtype = x.device, _work_dtype(x)

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(shape, device=dev, dtype=dtype, generator=generator)

        curve = torch.randint(len(self.responses), (n,), device=dev, generator=generator)
        sigma_s = uniform(*self.sigma_s, n, c).view(n, c, 1, 1)
        sigma_c = uniform(*self.sigma_c, n, c).view(n, c, 1, 1)
        pattern = torch.randint(4, (n,), device=dev, generator=generator)
        use_mosaic = uniform(0.0, 1.0, n).view(n, 1, 1, 1) < self.mosaic_probability
        quality = uniform(*self.jpeg_quality, n) if self.jpeg_quality else None
        return CameraParams(curve, sigma_s, sigma_c, pattern, use_mosaic, quality)

    def apply(
        self,
        x: torch.Tensor,
        params: CameraParams,
        generator: torch.Generator | None = None,
        with_map: bool = False,
        developed: _Developed | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Noisy ``x`` for the cameras ``params``: ``(noisy, sigma, sigma_map or None)``; ``developed``:
        what these cameras make of ``x`` without noise, where it is known."""
        _check(x)
        gauss = torch.randn(x.shape, device=x.device, dtype=_work_dtype(x), generator=generator)
        developed = developed if developed is not None else self._develop(x, params)
        clean, irradiance, sites = developed.clean, developed.irradiance, developed.sites
        if self.shot_noise == "cbdnet":
            shot = params.sigma_s * irradiance
        else:
            shot = params.sigma_s * irradiance.clamp_min(0).sqrt()
        std = (shot.square() + params.sigma_c.square()).sqrt()
        linear_noisy = _through_mosaic((irradiance + std * gauss).clamp(0, 1), params, sites)
        out_noisy = _lookup(self.crf, params.curve, linear_noisy)
        if params.quality is not None:
            out_noisy = jpeg_round_trip(out_noisy, params.quality)
        noise = out_noisy - developed.out
        sigma = noise.square().flatten(1).mean(dim=1).sqrt()
        sigma_map = self._sigma_map(developed, params, std).to(x.dtype) if with_map else None
        return (clean + noise).to(x.dtype), sigma.to(x.dtype), sigma_map

    def _develop(self, x: torch.Tensor, params: CameraParams) -> _Developed:
        clean = x.to(_work_dtype(x))
        irradiance = _lookup(self.icrf, params.curve, clean)
        sites = bayer_sites(params.pattern, clean.shape[2], clean.shape[3]) if clean.shape[1] == 3 else None
        linear = _through_mosaic(irradiance, params, sites)
        out = _lookup(self.crf, params.curve, linear)
        if params.quality is not None:
            out = jpeg_round_trip(out, params.quality)
        return _Developed(clean, irradiance, sites, linear, out)

    def _sigma_map(self, developed: _Developed, params: CameraParams, std: torch.Tensor) -> torch.Tensor:
        """The std of the noise at the output, from ±1σ of the raw noise through demosaicing, clipping and
        the response curve (JPEG ignored)."""
        linear_std = std
        if developed.sites is not None:
            variance = demosaic(mosaic(std.square(), developed.sites), developed.sites, variance=True)
            linear_std = torch.where(params.mosaic, variance.sqrt(), std)
        high = _lookup(self.crf, params.curve, developed.linear + linear_std)
        low = _lookup(self.crf, params.curve, developed.linear - linear_std)
        return 0.5 * (high - low)

    def extra_repr(self) -> str:
        jpeg = f", jpeg_quality={self.jpeg_quality}" if self.jpeg_quality else ""
        return (
            f"responses={self.responses!r}, sigma_s={self.sigma_s}, sigma_c={self.sigma_c}, "
            f"mosaic_probability={self.mosaic_probability:g}, shot_noise={self.shot_noise!r}{jpeg}"
            + (f", level={self.level:.4g}" if self.level is not None else "")
        )


def _through_mosaic(image: torch.Tensor, params: CameraParams, sites: torch.Tensor | None) -> torch.Tensor:
    """A colour ``image`` mosaicked on each camera's Bayer ``sites`` and demosaicked (where the camera
    has a mosaic); gray images as they are."""
    if sites is None:
        return image
    return torch.where(params.mosaic, demosaic(mosaic(image, sites), sites).clamp(0, 1), image)


def _scaled(params: CameraParams, factor: torch.Tensor) -> CameraParams:
    return params._replace(sigma_s=params.sigma_s * factor, sigma_c=params.sigma_c * factor)


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"camera noise needs an N×C×H×W batch with 1 or 3 channels, got {tuple(x.shape)}")


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def build_camera(settings: NoiseSettings) -> CameraNoise:
    """The camera model aimed at the known or estimated level (``unknown_sigma='estimate'``; estimated
    from the pre-trained network's residual, see :func:`~rfr_deploy.noise.level.residual_level`), or
    with the random levels of CBDNet's training (``'uniform'``, or no level to aim at)."""
    level = settings.level
    random_levels = settings.sigma is None and settings.unknown_sigma == "uniform"
    if random_levels or level is None:
        return CameraNoise()
    return CameraNoise(level=level, level_from_residual=settings.sigma is None)  # estimates: residual RMS


register_noise("camera", build_camera, level="residual")
