"""The SURE loss term: unbiased for the error against the clean image, in fp32 under autocast, and in the update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.camera import CameraNoise, CameraResponses
from rfr_deploy.noise.gaussian import GaussianNoise
from tests.runner_helpers import refuse_work

SIGMA = 25 / 255


class _Filter(nn.Module):
    """A learnable 3×3 filter with the zoo models' ``(x, sigma)`` call."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.reshape(1, 1, 3, 3).clone())

    def forward(self, x, sigma=None):
        return nn.functional.conv2d(x, self.weight, padding=1)


def _pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    clean = nn.functional.avg_pool2d(torch.rand(shape, generator=g), 5, 1, 2)
    return clean, clean + SIGMA * torch.randn(clean.shape, generator=g)


FILTERS = {
    "identity": torch.tensor([0, 0, 0, 0, 1.0, 0, 0, 0, 0]),
    "box": torch.full((9,), 1 / 9),
    "cross": torch.tensor([0, 0.15, 0, 0.15, 0.4, 0.15, 0, 0.15, 0]),
}


def test_the_term_estimates_the_error_against_the_clean_image():
    clean, noisy = _pair((64, 1, 64, 64), seed=1)
    term = SureLoss([noisy], level=SIGMA, weight=1.0)
    g = torch.Generator().manual_seed(2)
    true, estimated = [], []
    for weight in FILTERS.values():
        f = _Filter(weight)
        with torch.no_grad():
            true.append(float(((f(noisy) - clean) ** 2).mean()))
            estimated.append(float(term.loss(f, noisy, g)))
    assert estimated == pytest.approx(true, abs=0.02 * SIGMA**2)  # SURE's own noise: ~1 % of σ²
    assert sorted(range(3), key=true.__getitem__) == sorted(range(3), key=estimated.__getitem__)
    # the data term alone would rank the identity best (zero residual): SURE does not
    assert estimated[0] > min(estimated)


def test_its_gradient_points_where_the_supervised_gradient_points():
    clean, noisy = _pair((64, 1, 64, 64), seed=3)
    term = SureLoss([noisy], level=SIGMA, weight=1.0)
    grads = []
    for loss_of in (
        lambda f: ((f(noisy) - clean) ** 2).mean(),
        lambda f: term.loss(f, noisy, torch.Generator().manual_seed(4)),
    ):
        f = _Filter(FILTERS["cross"])
        loss_of(f).backward()
        grads.append(f.weight.grad.flatten())
    cosine = float(nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
    assert cosine > 0.9


def test_it_runs_in_fp32_inside_a_bf16_autocast_region():
    _, noisy = _pair((2, 1, 24, 24), seed=4)
    term = SureLoss([noisy], level=SIGMA, weight=2.0)
    f = _Filter(FILTERS["box"])
    plain = term.loss(f, noisy, torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = term.loss(f, noisy, torch.Generator().manual_seed(5))
    assert under.dtype == torch.float32
    assert float(under.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)


def test_adapt_adds_the_term_reproducibly(tiny_dncnn):
    clean, noisy = _pair((1, 3, 24, 24), seed=6)
    base = dict(steps=4, lr=1e-3, select="off", interpolation=1.0)
    plain = adapt(tiny_dncnn(3), noisy, GaussianNoise(SIGMA), AdaptConfig(**base))
    runs = [
        adapt(tiny_dncnn(3), noisy, GaussianNoise(SIGMA), AdaptConfig(sure_loss=1.0, **base)) for _ in "ab"
    ]
    assert runs[0].losses == runs[1].losses
    assert runs[0].losses[0] != plain.losses[0]
    p1, p2 = (torch.cat([p.flatten() for p in r.model.parameters()]) for r in (plain, runs[0]))
    assert not torch.equal(p1, p2)
    camera = CameraNoise(CameraResponses.parametric())  # the term does not describe it: refused up front
    with pytest.raises(ConfigError, match=r"sure_loss needs Gaussian noise of one level .*, not CameraNoise"):
        adapt(tiny_dncnn(3), noisy, camera, AdaptConfig(sure_loss=1.0, **base), stage=refuse_work)


def _no_stage(text, total):
    raise AssertionError(f"work started before the settings were checked: {text}")
