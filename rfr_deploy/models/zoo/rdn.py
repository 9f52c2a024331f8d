"""RDN, the residual dense network (Zhang, Tian, Kong, Zhong & Fu, CVPR 2018 / TPAMI 2020), for denoising.

Shallow feature extraction (two 3×3 convolutions, ``F₋₁`` and ``F₀``), ``blocks`` (D)
residual dense blocks of ``layers`` (C) densely connected 3×3 conv+ReLU layers of
``growth`` (G) channels each, local feature fusion (1×1) and a local residual; global
feature fusion (1×1 over the concatenated block outputs, then 3×3), global residual
``+ F₋₁`` and a 3×3 reconstruction layer. The restoration variant has no upsampler
and learns the residual: ``clean = noisy + net(noisy)`` (a direct-output network
with its global skip inside).

The Restore-from-Restored paper adapts a light RDN (D = 10, C = 4, G = 16), which is
this entry's default; the original denoising RDN is D = 16, C = 8, G = 64.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.relu(self.conv(x))], dim=1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, features: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.Sequential(*(DenseLayer(features + i * growth, growth) for i in range(layers)))
        self.fusion = nn.Conv2d(features + layers * growth, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fusion(self.layers(x))


class RDN(nn.Module):
    def __init__(
        self, channels: int = 3, features: int = 64, growth: int = 16, blocks: int = 10, layers: int = 4
    ):
        super().__init__()
        if min(features, growth, blocks, layers) < 1:
            raise ValueError("features, growth, blocks and layers must be >= 1")
        self.sfe1 = nn.Conv2d(channels, features, 3, padding=1)
        self.sfe2 = nn.Conv2d(features, features, 3, padding=1)
        self.rdbs = nn.ModuleList(ResidualDenseBlock(features, growth, layers) for _ in range(blocks))
        self.gff = nn.Sequential(
            nn.Conv2d(blocks * features, features, 1), nn.Conv2d(features, features, 3, padding=1)
        )
        self.tail = nn.Conv2d(features, channels, 3, padding=1)
        # Start at the identity: the reconstruction layer adds (almost) nothing to the input.
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_1 = self.sfe1(x)
        h = self.sfe2(f_1)
        outs = []
        for block in self.rdbs:
            h = block(h)
            outs.append(h)
        h = self.gff(torch.cat(outs, dim=1)) + f_1
        return x + self.tail(h)


_BLOCK = re.compile(r"^rdbs\.(\d+)\.")
_LAYER = re.compile(r"^rdbs\.0\.layers\.(\d+)\.conv\.weight$")


def _infer(state: StateDict) -> dict[str, int]:
    first = state["sfe1.weight"]
    blocks = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    layers = len([k for k in state if _LAYER.match(k)])
    if not blocks or not layers:
        raise KeyError("no 'rdbs.<i>.layers.<j>' tensors")
    return {
        "channels": int(state["tail.weight"].shape[0]),
        "_in_channels": int(first.shape[1]),
        "features": int(first.shape[0]),
        "growth": int(state["rdbs.0.layers.0.conv.weight"].shape[0]),
        "blocks": blocks,
        "layers": layers,
    }


register_model(
    ModelEntry(
        name="rdn",
        build=RDN,
        output="direct",
        description="RDN: residual dense blocks with local/global feature fusion (Zhang et al. 2018); "
        "light D=10, C=4, G=16 as in Restore-from-Restored",
        infer_kwargs=_infer,
        default_weights={3: "rdn_color_blind.safetensors"},
        # RDN (D=16, C=8, G=64, G0=64) is cited with 22.0M parameters (super-resolution version; its
        # ×2 upsampler adds 0.15M, within the tolerance); the denoising version has 21.98M.
        paper_params=22_000_000,
        paper_kwargs={"channels": 3, "features": 64, "growth": 64, "blocks": 16, "layers": 8},
        test_kwargs={"features": 8, "growth": 4, "blocks": 2, "layers": 2},
    )
)
