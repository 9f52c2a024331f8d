"""SURE with probes correlated between the channels like the noise chooses between a colour network and the
gray network run per channel (:mod:`rfr_deploy.adaptation.channel_choice`). Hand-built denoisers whose
errors are known: averaging the three channels removes white noise (to a third of its variance) and none
of the noise they share; blurring each channel alone removes either."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.adaptation.channel_choice import (
    CORRELATION_BIAS,
    SharedNoiseSure,
    channel_correlation,
    correlated_probes,
    per_channel_scores_better,
)
from rfr_deploy.adaptation.scoring import GcvScorer, make_scorer
from rfr_deploy.adaptation.sure import SureScorer
from rfr_deploy.noise.channels import chroma_share, implied_correlation
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise


class Handmade(nn.Module):
    """A denoiser with no weights of its own (one unused parameter: inference reads the device off it)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))


class ChannelMean(Handmade):
    def forward(self, x, sigma=None):
        return x.mean(dim=1, keepdim=True).expand_as(x)


class Identity(Handmade):
    def forward(self, x, sigma=None):
        return x


class EachChannelBlur(Handmade):
    def forward(self, x, sigma=None):
        return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)


class PartBlurred(Handmade):
    """(1 − a)·x + a·(5×5 box blur of each channel): on a flat image, error (1 − a)² + (2a − a²)/25 of σ²."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x, sigma=None):
        return (1 - self.a) * x + self.a * EachChannelBlur()(x)


def noisy_grey(shared: float, sigma: float = 20 / 255, seed: int = 0) -> torch.Tensor:
    """A flat grey 1×3×96×96 image with noise of ``sigma`` per channel, ``shared`` of its variance common
    to the three channels."""
    rng = np.random.default_rng(seed)
    own = rng.standard_normal((1, 3, 96, 96))
    common = rng.standard_normal((1, 1, 96, 96))
    noise = sigma * (np.sqrt(shared) * common + np.sqrt(1 - shared) * own)
    return torch.from_numpy(0.5 + noise).float()


def test_shared_noise_goes_per_channel_where_white_probes_would_keep_the_colour_network():
    y = noisy_grey(1.0)
    share, level = chroma_share(y)
    assert share < 0.1
    # the channel mean keeps all of the shared noise (error σ²), the blur most of it gone (σ²/25)
    assert per_channel_scores_better(ChannelMean(), EachChannelBlur(), y, level, share)
    # read as white noise, its residual of zero makes the channel mean look better than noise-free
    assert not per_channel_scores_better(ChannelMean(), EachChannelBlur(), y, level, share=1.0)


def test_white_noise_keeps_the_network_that_averages_the_channels():
    y = noisy_grey(0.0)
    share, level = chroma_share(y)
    assert 0.8 < share < 1.2
    assert not per_channel_scores_better(ChannelMean(), Identity(), y, level, share)
    assert per_channel_scores_better(Identity(), ChannelMean(), y, level, share)  # the other way round


def test_the_probes_are_correlated_between_the_channels_as_asked():
    y = torch.zeros(2, 3, 64, 64)
    (b,) = correlated_probes(y, 0.6, 1, torch.Generator().manual_seed(0))
    assert b.shape == y.shape
    assert b.pow(2).mean().item() == pytest.approx(1.0, abs=0.03)
    assert (b[:, 0] * b[:, 1]).mean().item() == pytest.approx(0.6, abs=0.03)


def test_the_correlation_a_share_implies_is_lowered_by_the_bias_and_kept_within_zero_and_one():
    assert channel_correlation(1.05) == 0.0 and channel_correlation(0.0) == pytest.approx(
        1 - CORRELATION_BIAS
    )
    assert channel_correlation(0.5) == pytest.approx(0.75 - CORRELATION_BIAS)
    # the synthetic noise is drawn at the correlation itself
    assert implied_correlation(1.05) == 0.0 and implied_correlation(0.0) == 1.0
    assert implied_correlation(0.5) == pytest.approx(0.75)


def test_the_gray_network_must_do_better_by_the_margin():
    y = noisy_grey(0.0)
    share, level = chroma_share(y)
    # identity: error σ²; a = 0.02: 0.962 σ² (0.17 dB better, under the margin); a = 0.2: 0.654 σ² (1.8 dB)
    assert not per_channel_scores_better(Identity(), PartBlurred(0.02), y, level, share)
    assert per_channel_scores_better(Identity(), PartBlurred(0.2), y, level, share)


def test_a_colour_network_on_noise_its_channels_share_is_scored_with_probes_correlated_alike():
    """The channel mean keeps all of the noise the channels share (error σ²): white probes count a third of
    its divergence and score it better than noise-free; the shared-noise scorer counts it as the corrected
    correlation implies (the bias takes a little off: 0.8 σ² here)."""
    sigma = 20 / 255
    y = noisy_grey(1.0, sigma)
    scorer = make_scorer(
        GaussianNoise(sigma, estimated=True), [y], [y], None, seed=0, pretrained=ChannelMean()
    )
    assert isinstance(scorer, SharedNoiseSure) and scorer.criterion == "shared-noise-sure"
    assert 0.85 * sigma < scorer.low < scorer.high < 1.05 * sigma  # each channel's level, estimated
    rho = channel_correlation(chroma_share(y)[0])  # 1 less the bias: a divergence of ρ + (1 − ρ)/3
    expected = sigma**2 * (2 * (rho + (1 - rho) / 3) - 1)  # residual 0 − σ² + 2σ²·divergence
    assert scorer.terms(ChannelMean()).mse(sigma) == pytest.approx(expected, rel=0.1)
    assert SureScorer([y], sigma, None, 0).terms(ChannelMean()).mse(sigma) < 0


def test_white_noise_and_networks_run_per_channel_keep_the_usual_scorer():
    sigma = 20 / 255
    white = make_scorer(
        GaussianNoise(sigma, estimated=True), [noisy_grey(0.0)], [noisy_grey(0.0)], None, seed=0
    )
    assert type(white) in (SureScorer, GcvScorer)
    assert SharedNoiseSure.create(noisy_grey(0.0), [noisy_grey(0.0)], None, 0, [None]) is None
    y = noisy_grey(1.0, sigma)
    known = make_scorer(GaussianNoise(sigma), [y], [y], None, seed=0, pretrained=ChannelMean())
    assert type(known) is SureScorer  # a given σ is scored as before
    gray = EachChannelBlur()
    gray.meta = SimpleNamespace(per_channel=True)  # a gray network run on each channel: its noise is white
    # random levels: the path an estimated level shares with colour networks (an estimated one goes to the
    # level the gray network implies before)
    on_each = make_scorer(UniformSigmaGaussianNoise(), [y], [y], None, seed=0, pretrained=gray)
    assert not isinstance(on_each, SharedNoiseSure)
