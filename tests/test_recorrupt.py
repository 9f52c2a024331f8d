"""The terms on the noisy input (recorrupted pairs, SURE): their pairs, where they apply, how they enter the update."""

from __future__ import annotations

import math

import pytest
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.noisy_input import gaussian_input_level
from rfr_deploy.adaptation.recorrupt import RECORRUPTION_SCALE, Recorruption
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.adaptation.update import make_noisy_term
from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.base import QuantizedNoise
from rfr_deploy.noise.camera import CameraNoise, CameraResponses
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
from tests.runner_helpers import refuse_work

SIGMA = 25 / 255


def _clean(shape=(1, 1, 64, 64), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g), 5, 1, 2)


def _recorrupted(shape, seed):
    """A clean batch, and the (input, target, σ) pair recorrupted from a noisy version of it."""
    clean = _clean(shape)
    g = torch.Generator().manual_seed(seed)
    noisy = clean + SIGMA * torch.randn(clean.shape, generator=g)
    drawn = Recorruption([noisy], level=SIGMA, weight=1.0).draw(noisy, g)
    return clean, drawn["input"], drawn["target"], drawn["sigma"]


def test_pair_errors_are_uncorrelated_with_the_prescribed_levels():
    clean, inputs, target, sigma = _recorrupted((8, 1, 64, 64), seed=1)
    a = RECORRUPTION_SCALE
    e_in, e_out = (inputs - clean).flatten(), (target - clean).flatten()
    assert float(e_in.std()) == pytest.approx(SIGMA * math.sqrt(1 + a * a), rel=0.02)
    assert float(e_out.std()) == pytest.approx(SIGMA * math.sqrt(1 + 1 / (a * a)), rel=0.02)
    # the noise the input and the target share cancels: correlation ~0 (vs 1/sqrt(1+a²)·... if it did not)
    correlation = float((e_in * e_out).mean() / (e_in.std() * e_out.std()))
    assert abs(correlation) < 0.02
    assert sigma.shape == (8,) and torch.allclose(sigma, torch.full((8,), SIGMA * math.sqrt(1 + a * a)))


def test_recorrupted_loss_ranks_denoisers_as_the_clean_image_would():
    """E‖f(Ŷ) − Ȳ‖² = E‖f(Ŷ) − X‖² + a constant that does not depend on f (linear f here)."""
    clean, inputs, target, _ = _recorrupted((64, 1, 32, 32), seed=2)
    blur = lambda u: torch.nn.functional.avg_pool2d(u, 3, 1, 1, count_include_pad=False)  # noqa: E731
    denoisers = {"identity": lambda u: u, "blur": blur, "half": lambda u: 0.5 * u + 0.5 * blur(u)}
    gaps = []
    for f in denoisers.values():
        out = f(inputs)
        gaps.append(float(((out - target) ** 2).mean() - ((out - clean) ** 2).mean()))
    expected = SIGMA**2 * (1 + 1 / RECORRUPTION_SCALE**2)  # E‖Ȳ − X‖² per pixel
    for gap in gaps:
        assert gap == pytest.approx(expected, rel=0.03)
    # and the ranking of the denoisers by the recorrupted loss is their ranking against the clean image
    supervised = [float(((f(inputs) - clean) ** 2).mean()) for f in denoisers.values()]
    recorrupted = [float(((f(inputs) - target) ** 2).mean()) for f in denoisers.values()]
    assert sorted(range(3), key=supervised.__getitem__) == sorted(range(3), key=recorrupted.__getitem__)


def test_the_term_applies_to_gaussian_noise_of_one_level_only():
    images = [torch.rand(1, 3, 16, 16)]
    assert gaussian_input_level(GaussianNoise(25 / 255)) == pytest.approx(SIGMA)
    assert gaussian_input_level(GaussianNoise(20 / 255, estimated=True)) == pytest.approx(20 / 255)
    assert gaussian_input_level(QuantizedNoise(GaussianNoise(25 / 255))) == pytest.approx(SIGMA)
    assert gaussian_input_level(GaussianNoise(0)) is None
    assert gaussian_input_level(UniformSigmaGaussianNoise()) is None
    assert gaussian_input_level(CameraNoise(CameraResponses.parametric())) is None
    term = make_noisy_term(GaussianNoise(25 / 255), images, AdaptConfig(recorrupted=0.5))
    assert isinstance(term, Recorruption) and term.weight == 0.5 and term.images[0] is images[0]
    assert term.level == pytest.approx(SIGMA) and term.passes == 1
    sure = make_noisy_term(GaussianNoise(25 / 255), images, AdaptConfig(sure_loss=0.25))
    assert isinstance(sure, SureLoss) and sure.weight == 0.25 and sure.passes == 2
    assert make_noisy_term(GaussianNoise(25 / 255), images, AdaptConfig()) is None
    assert make_noisy_term(UniformSigmaGaussianNoise(), images, AdaptConfig()) is None
    camera = CameraNoise(CameraResponses.parametric())
    for noise, option in ((UniformSigmaGaussianNoise(), "recorrupted"), (camera, "sure_loss")):
        with pytest.raises(ConfigError, match=rf"{option} needs Gaussian noise of one level"):
            make_noisy_term(noise, images, AdaptConfig(**{option: 1.0}))


def test_adapt_adds_the_term_reproducibly(tiny_dncnn):
    clean = _clean((1, 3, 24, 24))
    noisy = clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    base = dict(steps=4, lr=1e-3, select="off", interpolation=1.0)
    plain = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(recorrupted=0.0, **base))
    with_term = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(recorrupted=1.0, **base))
    again = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(recorrupted=1.0, **base))
    # the first loss holds the recorrupted pair's error (target noise 2.24 σ) on top of the plain loss
    assert with_term.losses[0] > plain.losses[0] + SIGMA**2
    assert with_term.losses == again.losses
    p1, p2 = (torch.cat([p.flatten() for p in r.model.parameters()]) for r in (plain, with_term))
    assert not torch.equal(p1, p2)
    # camera noise: the term does not describe it, refused before any work
    camera = CameraNoise(CameraResponses.parametric())
    with pytest.raises(ConfigError, match="recorrupted needs Gaussian noise"):
        adapt(tiny_dncnn(3), noisy, camera, AdaptConfig(recorrupted=1.0, **base), stage=refuse_work)


def test_negative_or_non_finite_weights_are_rejected():
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="recorrupted"):
            AdaptConfig(recorrupted=bad)
        with pytest.raises(ValueError, match="sure_loss"):
            AdaptConfig(sure_loss=bad)
    with pytest.raises(ValueError, match="exclusive"):
        AdaptConfig(recorrupted=0.5, sure_loss=0.5)
