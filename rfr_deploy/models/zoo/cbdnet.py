"""CBDNet, convolutional blind denoising of real photographs (Guo, Yan, Zhang, Zuo & Zhang, CVPR 2019).

Two sub-networks:

* noise estimation: five 3×3 conv+ReLU layers of 32 features that map the noisy
  image to a per-pixel, per-channel noise level map σ̂ (non-negative);
* non-blind denoising: a U-Net of 16 conv layers on the image concatenated with
  σ̂ — 2 layers of 64 features, average pooling, 3 of 128, pooling, 6 of 256,
  transposed-conv upsampling with additive skips, 3 of 128, 2 of 64, a 1×1 output —
  with a global skip: ``clean = noisy + unet(noisy, σ̂)``.

Sizes must be multiples of 4 (two poolings); the Denoiser wrapper pads. 4.37M
parameters for colour images.

Training (``cbdnet_loss``, used by ``rfr-deploy pretrain`` through
``ModelEntry.train_loss``): reconstruction + 0.5 × asymmetric loss on σ̂ (α = 0.3:
under-estimation weighs 0.7, over-estimation 0.3, since a non-blind denoiser is
far more sensitive to under-estimated noise) + 0.05 × total variation of σ̂.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model


def _conv_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]


def _stack(cin: int, cout: int, n: int) -> nn.Sequential:
    layers = _conv_relu(cin, cout)
    for _ in range(n - 1):
        layers += _conv_relu(cout, cout)
    return nn.Sequential(*layers)


class NoiseEstimator(nn.Sequential):
    def __init__(self, channels: int, features: int = 32, depth: int = 5):
        if depth < 2:
            raise ValueError("the noise estimator needs at least 2 layers")
        layers = _conv_relu(channels, features)
        for _ in range(depth - 2):
            layers += _conv_relu(features, features)
        layers += _conv_relu(features, channels)  # ReLU: noise levels are non-negative
        super().__init__(*layers)


class UNet(nn.Module):
    def __init__(self, channels: int, features: int = 64):
        super().__init__()
        f = features
        self.inc = _stack(2 * channels, f, 2)
        self.down = nn.AvgPool2d(2)
        self.conv1 = _stack(f, 2 * f, 3)
        self.conv2 = _stack(2 * f, 4 * f, 6)
        self.up1 = nn.ConvTranspose2d(4 * f, 2 * f, 2, stride=2)
        self.conv3 = _stack(2 * f, 2 * f, 3)
        self.up2 = nn.ConvTranspose2d(2 * f, f, 2, stride=2)
        self.conv4 = _stack(f, f, 2)
        self.outc = nn.Conv2d(f, channels, 1)
        nn.init.normal_(self.outc.weight, std=1e-3)
        nn.init.zeros_(self.outc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.inc(x)
        s1 = self.conv1(self.down(s0))
        h = self.conv2(self.down(s1))
        h = self.conv3(self.up1(h) + s1)
        h = self.conv4(self.up2(h) + s0)
        return self.outc(h)


class CBDNet(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, estimator_features: int = 32):
        super().__init__()
        self.estimator = NoiseEstimator(channels, estimator_features)
        self.unet = UNet(channels, features)

    def estimate_noise(self, x: torch.Tensor) -> torch.Tensor:
        """σ̂: the per-pixel noise std the network estimates (``N×C×H×W``, [0, 1] units)."""
        return self.estimator(x)

    def denoise_with(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        """Non-blind denoising with a given (e.g. user-scaled) noise level map."""
        return x + self.unet(torch.cat([x, noise_map], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.denoise_with(x, self.estimate_noise(x))


def cbdnet_loss(
    model,
    noisy: torch.Tensor,
    clean: torch.Tensor,
    sigma_map: torch.Tensor,
    base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    asymmetric_weight: float = 0.5,
    alpha: float = 0.3,
    tv_weight: float = 0.05,
) -> torch.Tensor:
    """CBDNet's objective for a :class:`~rfr_deploy.models.denoiser.Denoiser` wrapping :class:`CBDNet`.

    ``sigma_map`` is the true noise std per pixel (``N×C×H×W`` or broadcastable).
    """
    estimate = model.net.estimate_noise(noisy)
    reconstruction = base_loss(model(noisy), clean)
    error = estimate - sigma_map.to(estimate.dtype)
    under = (error < 0).to(error.dtype)
    asymmetric = ((alpha - under).abs() * error.square()).mean()
    tv = (estimate[..., 1:, :] - estimate[..., :-1, :]).square().mean() + (
        estimate[..., :, 1:] - estimate[..., :, :-1]
    ).square().mean()
    return reconstruction + asymmetric_weight * asymmetric + tv_weight * tv


def _infer(state: StateDict) -> dict[str, int]:
    first = state["estimator.0.weight"]
    return {
        "channels": int(state["unet.outc.weight"].shape[0]),
        "_in_channels": int(first.shape[1]),
        "features": int(state["unet.inc.0.weight"].shape[0]),
        "estimator_features": int(first.shape[0]),
    }


register_model(
    ModelEntry(
        name="cbdnet",
        build=CBDNet,
        output="direct",
        pad_multiple=4,
        description="CBDNet: noise-estimation subnet + non-blind U-Net, trained with the in-camera noise "
        "model and an asymmetric loss (Guo et al. 2019)",
        default_noise="camera",
        default_weights={3: "cbdnet_camera_color.safetensors"},
        infer_kwargs=_infer,
        train_loss=cbdnet_loss,
        paper_params=4_365_000,  # 4.365M as tabulated for CBDNet in real-noise comparisons; colour model
        paper_kwargs={"channels": 3},
        test_kwargs={"features": 8, "estimator_features": 8},
    )
)
