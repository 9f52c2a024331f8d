"""DnCNN (Zhang et al., TIP 2017) and FDnCNN, in the layer layout of the official release.

``DnCNN-S`` (gray, 17 layers, one σ), ``DnCNN-B``/``CDnCNN-B`` (20 layers, blind σ ∈ [0, 55])
and FDnCNN (σ map as an extra input channel, direct output) share one body:
conv+ReLU, (depth−2)× conv+ReLU, conv. Batch norm of the original training is folded
into the convolutions, as in the released weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model


class DnCNNBody(nn.Module):
    """Plain stack of 3×3 convolutions with ReLU; ``layers`` is a ``nn.Sequential`` named ``model``."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 20, features: int = 64):
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be at least 2")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, out_channels, 3, padding=1))
        self.model = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Start near the identity map of the wrapper: a tiny last layer predicts ~no noise.
        nn.init.normal_(self.model[-1].weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DnCNN(DnCNNBody):
    """Predicts the noise; the :class:`~rfr_deploy.models.denoiser.Denoiser` wrapper subtracts it."""

    def __init__(self, channels: int = 1, depth: int = 20, features: int = 64):
        super().__init__(channels, channels, depth, features)


class FDnCNN(DnCNNBody):
    """DnCNN body fed with the image and a σ map (last channel); outputs the clean image."""

    def __init__(self, channels: int = 1, depth: int = 20, features: int = 64):
        super().__init__(channels + 1, channels, depth, features)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sigma_map = sigma.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.model(torch.cat([x, sigma_map], dim=1))


_LAYER_KEY = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def infer_dncnn_kwargs(state: StateDict, extra_inputs: int = 0) -> dict[str, int]:
    """Depth, width and channels of a DnCNN-shaped state dict (``model.{2i}.weight``)."""
    convs = sorted(int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k)) and m.group(2) == "weight")
    if not convs:
        raise KeyError("no 'model.<i>.weight' tensors")
    first, last = state[f"model.{convs[0]}.weight"], state[f"model.{convs[-1]}.weight"]
    return {
        "channels": int(last.shape[0]),
        "depth": len(convs),
        "features": int(first.shape[0]),
        "_in_channels": int(first.shape[1]) - extra_inputs,
    }


def _infer_fdncnn_kwargs(state: StateDict) -> dict[str, int]:
    return infer_dncnn_kwargs(state, extra_inputs=1)


def _renumber(state: StateDict) -> StateDict:
    """KAIR numbers conv layers ``model.0, model.2, ...`` exactly as our Sequential does; keep as is."""
    return dict(state)


register_model(
    ModelEntry(
        name="dncnn",
        build=DnCNN,
        output="residual",
        description="DnCNN / CDnCNN: 3x3 conv + ReLU stack predicting the noise (Zhang et al. 2017)",
        sigma_range=(0.0, 55 / 255),
        default_weights={1: "dncnn_gray_blind.safetensors", 3: "dncnn_color_blind.safetensors"},
        infer_kwargs=infer_dncnn_kwargs,
        convert_state_dict=_renumber,
        paper_params=556_000,  # "0.56M" for DnCNN-S (gray, 17 layers, 64 features, batch norm folded)
        paper_kwargs={"channels": 1, "depth": 17, "features": 64},
    )
)

register_model(
    ModelEntry(
        name="fdncnn",
        build=FDnCNN,
        output="direct",
        noise_map=True,
        description="FDnCNN: DnCNN body with a noise-level map input, direct output (KAIR)",
        sigma_range=(0.0, 75 / 255),
        infer_kwargs=_infer_fdncnn_kwargs,
        convert_state_dict=_renumber,
    )
)
