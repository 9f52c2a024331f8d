"""Image quality metrics: PSNR and SSIM as the denoising literature reports them.

Both take float images in [0, 1] (``H×W×C`` numpy arrays or tensors). SSIM is
scikit-image's implementation with the settings of Wang et al.'s MATLAB code
(Gaussian window σ = 1.5, population covariance, K1 = 0.01, K2 = 0.03), computed
per channel and averaged (on images under 11 pixels on a side, with a smaller uniform window).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _as_hwc(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        t = img.detach().to("cpu", torch.float64)
        if t.ndim == 4:
            t = t[0]
        return t.permute(1, 2, 0).numpy()
    a = np.asarray(img, dtype=np.float64)
    return a[:, :, None] if a.ndim == 2 else a


def psnr(estimate, reference, data_range: float = 1.0) -> float:
    a, b = _as_hwc(estimate), _as_hwc(reference)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window (σ = 1.5, truncated at 3.5 σ as scikit-image does)."""


def ssim(estimate, reference, data_range: float = 1.0) -> float:
    """SSIM; on images smaller than :data:`SSIM_WINDOW` on a side, with a uniform window of the largest odd
    side that fits (NaN below 3 pixels, where it has no meaning)."""
    from skimage.metrics import structural_similarity

    a, b = _as_hwc(estimate), _as_hwc(reference)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    side = min(a.shape[:2])
    if side < 3:
        return math.nan
    window = (
        {"gaussian_weights": True, "sigma": 1.5} if side >= SSIM_WINDOW else {"win_size": side - 1 + side % 2}
    )
    return float(
        structural_similarity(
            a, b, data_range=data_range, channel_axis=2, use_sample_covariance=False, **window
        )
    )
