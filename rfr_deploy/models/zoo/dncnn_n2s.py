"""DnCNN for Noise2Self: the DnCNN body predicting the clean image (Batson & Royer, ICML 2019).

Noise2Self trains on masked pixels only (:mod:`rfr_deploy.jobs.noise2self`). A residual
network (``clean = noisy − net(noisy)``) trained that way learns corrections for the
interpolated, masked pixels and keeps the identity elsewhere, so applied to a whole
image it barely denoises. As in the Noise2Self code, this DnCNN outputs the clean
image directly, and applied to the whole image it denoises about as well as its
J-invariant reconstruction. Train it with
``rfr-deploy pretrain DATA --model dncnn_n2s --objective noise2self``; its weights are
marked ``noise: self-supervised``. The packaged gray weights were trained that way on BSD400
at σ = 25 (benchmarks/README.md, "Packaged weights: how they were trained, what they score").
"""

from __future__ import annotations

from rfr_deploy.models.registry import ModelEntry, register_model
from rfr_deploy.models.zoo.dncnn import DnCNNBody, infer_dncnn_kwargs


class DnCNNDirect(DnCNNBody):
    def __init__(self, channels: int = 1, depth: int = 17, features: int = 64):
        super().__init__(channels, channels, depth, features)


register_model(
    ModelEntry(
        name="dncnn_n2s",
        build=DnCNNDirect,
        output="direct",
        description="DnCNN predicting the clean image, for self-supervised Noise2Self training "
        "(Batson & Royer 2019)",
        default_noise="self-supervised",
        infer_kwargs=infer_dncnn_kwargs,
        default_weights={1: "dncnn_n2s_gray_s25.safetensors"},
        test_kwargs={"depth": 3, "features": 8},
    )
)
