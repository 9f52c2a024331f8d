"""FFDNet (Zhang, Zuo & Zhang, TIP 2018): denoising at half resolution with a noise-level map.

The image is split into four sub-images (``PixelUnshuffle(2)``), concatenated with a
σ map, passed through a plain conv+ReLU stack and reassembled (``PixelShuffle(2)``).
The output is the clean image (direct). Odd sizes are padded by the wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

from rfr_deploy.models.registry import ModelEntry, StateDict, register_model
from rfr_deploy.models.zoo.dncnn import DnCNNBody, infer_dncnn_kwargs


class FFDNet(nn.Module):
    def __init__(self, channels: int = 1, depth: int | None = None, features: int | None = None):
        super().__init__()
        depth = depth or (15 if channels == 1 else 12)
        features = features or (64 if channels == 1 else 96)
        self.down = nn.PixelUnshuffle(2)
        self.body = DnCNNBody(4 * channels + 1, 4 * channels, depth, features)
        self.up = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        sigma_map = sigma.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.up(self.body(torch.cat([x, sigma_map], dim=1)))


def _from_kair(state: StateDict) -> StateDict:
    return {k if k.startswith("body.") else f"body.{k}": v for k, v in state.items()}


def _infer(state: StateDict) -> dict[str, int]:
    kw = infer_dncnn_kwargs({k.removeprefix("body."): v for k, v in state.items()})
    out_ch, in_ch = kw["channels"], kw["_in_channels"]
    if out_ch % 4 or (in_ch - 1) % 4 or out_ch == 0:
        raise ValueError(f"first/last layers have {in_ch}/{out_ch} channels, expected 4C+1/4C")
    return {
        "channels": out_ch // 4,
        "depth": kw["depth"],
        "features": kw["features"],
        "_in_channels": (in_ch - 1) // 4,
    }


register_model(
    ModelEntry(
        name="ffdnet",
        build=FFDNet,
        output="direct",
        noise_map=True,
        pad_multiple=2,
        description="FFDNet: half-resolution conv stack with a noise-level map, direct output (Zhang et al. 2018)",
        sigma_range=(0.0, 75 / 255),
        infer_kwargs=_infer,
        convert_state_dict=_from_kair,
        paper_params=490_000,  # "0.49M" for gray FFDNet: 15 layers, 64 features
        paper_kwargs={"channels": 1},
    )
)
