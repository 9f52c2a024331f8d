"""Small networks for the exporters' tests, and their PyTorch output to compare runtimes with."""

from __future__ import annotations

import numpy as np
import torch

from rfr_deploy.models.factory import create_model


def perturbed_model(name: str = "dncnn", channels: int = 3, depth: int = 3, seed: int = 0):
    """``name`` with 8 features and ``depth`` layers, its random weights nudged so that no bias is zero
    (an exporter that dropped one would go unseen otherwise); in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, weights=None, channels=channels, depth=depth, features=8).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def torch_output(model, pixels: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """``model`` on an ``H×W×C`` float image, as ``H×W×C``."""
    with torch.no_grad():
        out = model(torch.from_numpy(pixels).permute(2, 0, 1)[None], sigma)
    return out[0].permute(1, 2, 0).numpy()
