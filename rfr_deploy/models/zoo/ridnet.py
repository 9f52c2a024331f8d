"""RIDNet, real image denoising with feature attention (Anwar & Barnes, ICCV 2019).

Feature extraction (3×3 conv + ReLU, 64 features), four Enhancement Attention
Modules (EAM) in a chain, a 3×3 reconstruction layer and a global skip:
``clean = noisy + net(noisy − mean)``. One EAM is

* a merge-and-run unit: two branches of two dilated 3×3 conv+ReLU layers
  (dilations 1, 2 and 3, 4), concatenated, fused by a 3×3 conv+ReLU, plus a skip;
* a residual block (conv, ReLU, conv, skip, ReLU);
* an enhanced residual block (conv, ReLU, conv, ReLU, 1×1 conv, skip, ReLU);
* feature attention: global average pooling, 1×1 down (÷ ``reduction``) + ReLU,
  1×1 up + sigmoid, channel-wise scaling.

As in the official code, the input is shifted by the DIV2K RGB mean (a constant,
not a parameter; the official output shift is a constant that the last bias
absorbs). 1.49M parameters for colour images.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model

RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _conv(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)


class MergeAndRun(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        relu = nn.ReLU
        self.body1 = nn.Sequential(_conv(features, features), relu(), _conv(features, features, 3, 2), relu())
        self.body2 = nn.Sequential(
            _conv(features, features, 3, 3), relu(), _conv(features, features, 3, 4), relu()
        )
        self.body3 = nn.Sequential(_conv(2 * features, features), relu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body3(torch.cat([self.body1(x), self.body2(x)], dim=1))


class ResidualBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(_conv(features, features), nn.ReLU(), _conv(features, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class EnhancedResidualBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv(features, features),
            nn.ReLU(),
            _conv(features, features),
            nn.ReLU(),
            _conv(features, features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class FeatureAttention(nn.Module):
    """Channel attention from global average pooling (written as a mean so any size exports)."""

    def __init__(self, features: int, reduction: int):
        super().__init__()
        hidden = max(1, features // reduction)
        self.c1 = nn.Sequential(_conv(features, hidden, 1), nn.ReLU())
        self.c2 = nn.Sequential(_conv(hidden, features, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.c2(self.c1(x.mean(dim=(2, 3), keepdim=True)))


class EAM(nn.Module):
    """Enhancement attention module."""

    def __init__(self, features: int, reduction: int):
        super().__init__()
        self.r1 = MergeAndRun(features)
        self.r2 = ResidualBlock(features)
        self.r3 = EnhancedResidualBlock(features)
        self.ca = FeatureAttention(features, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.r3(self.r2(self.r1(x))))


class RIDNet(nn.Module):
    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 4, reduction: int = 16):
        super().__init__()
        if min(features, blocks, reduction) < 1:
            raise ValueError("features, blocks and reduction must be >= 1")
        mean = RGB_MEAN if channels == 3 else (sum(RGB_MEAN) / 3,) * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.head = nn.Sequential(_conv(channels, features), nn.ReLU())
        self.body = nn.Sequential(*(EAM(features, reduction) for _ in range(blocks)))
        self.tail = _conv(features, channels)
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(self.head(x - self.mean.to(x.dtype))))


_BLOCK = re.compile(r"^body\.(\d+)\.")


def _infer(state: StateDict) -> dict[str, int]:
    head = state["head.0.weight"]
    blocks = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    if not blocks:
        raise KeyError("no 'body.<i>' tensors")
    features = int(head.shape[0])
    hidden = int(state["body.0.ca.c1.0.weight"].shape[0])
    return {
        "channels": int(state["tail.weight"].shape[0]),
        "_in_channels": int(head.shape[1]),
        "features": features,
        "blocks": blocks,
        "reduction": max(1, features // hidden),
    }


register_model(
    ModelEntry(
        name="ridnet",
        build=RIDNet,
        output="direct",
        global_statistics=True,  # feature attention pools each block's features over the image
        description="RIDNet: enhancement attention modules with merge-and-run units and feature attention "
        "(Anwar & Barnes 2019)",
        default_noise="camera",
        default_weights={3: "ridnet_camera_color.safetensors"},
        infer_kwargs=_infer,
        paper_params=1_490_000,  # "1.49M" (RIDNet paper, colour model)
        paper_kwargs={"channels": 3},
        test_kwargs={"features": 16, "blocks": 1, "reduction": 4},
    )
)
