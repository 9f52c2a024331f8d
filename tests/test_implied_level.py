"""The noise level a denoiser implies (Wiener identity) and how gray images with an estimated level are
scored: at the blind network's own level, at the level a noise-map network implies, over a known band,
or not at all (a fixed quarter step)."""

import pytest
import torch
from sure_helpers import Blur, gaussian_level, noisy_copy

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.scoring import make_scorer
from rfr_deploy.adaptation.sure import CANDIDATES, SureScorer, draw_probes
from rfr_deploy.inference import to_tensor
from rfr_deploy.noise.base import QuantizedNoise
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.level import estimate_noise_level


def test_the_level_a_wiener_like_denoiser_implies_is_the_noise_level():
    from rfr_deploy.adaptation.implied_level import implied_level

    sigma = 0.08
    flat = 0.5 + sigma * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    draws = draw_probes([flat], 0, 4)
    # a 3×3 box blur on a flat image: divergence 1/9 and residual σ²(1 − 1/9) per value
    assert implied_level(Blur(1.0), [flat], draws, sigma) == pytest.approx(sigma, rel=0.03)
    assert implied_level(Blur(0.0), [flat], draws, sigma) is None  # the identity: divergence 1
    dark = (0.02 + sigma * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert implied_level(Blur(1.0), [dark], draws, sigma) is None  # every value within 2σ of 0: clipped


class MapBlur(Blur):
    """A noise-map 'network': blurs more for a higher level it is given (w = σ / 0.08, at most 1)."""

    def forward(self, x, sigma=None):
        self.weight.data.fill_(min(sigma / 0.08, 1.0))
        return super().forward(x)


def test_a_noise_map_network_implies_a_level_for_the_level_it_is_given():
    from rfr_deploy.adaptation.implied_level import implied_level

    sigma = 0.08
    flat = 0.5 + sigma * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    draws = draw_probes([flat], 0, 4)
    # fully blurred at the true level: the box blur's level (test above); lightly blurred, less noise
    # is removed and the Wiener identity reads the level lower
    matched = implied_level(MapBlur(1.0), [flat], draws, sigma, model_sigma=sigma)
    assert matched == pytest.approx(sigma, rel=0.03)
    assert implied_level(MapBlur(1.0), [flat], draws, sigma, model_sigma=sigma / 4) < 0.9 * matched


def test_gray_images_with_an_estimated_level_are_scored_at_the_blind_network_s_own_level():
    from rfr_deploy.adaptation.implied_level import TOLERANCE, implied_level

    sigma = 0.08
    gray = 0.5 + sigma * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    estimated = GaussianNoise(0.09, estimated=True)  # the weak-texture estimate, 12 % high
    scorer = make_scorer(estimated, [gray], [gray], None, 0, pretrained=Blur(1.0))
    level = implied_level(Blur(1.0), [gray], scorer.draws, 0.09)
    assert type(scorer) is SureScorer and (scorer.low, scorer.high) == (
        level * (1 - TOLERANCE),
        level * (1 + TOLERANCE),
    )
    assert scorer.low < sigma < scorer.high
    assert make_scorer(estimated, [gray], [gray], None, 0) is None  # no network: the fixed quarter step


def test_a_noise_map_network_is_scored_at_the_level_it_implies_for_the_level_it_is_told():
    from rfr_deploy.adaptation.implied_level import TOLERANCE, implied_level

    sigma = 0.08
    gray = 0.5 + sigma * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    estimated = GaussianNoise(0.09, estimated=True)  # the map's level, 12 % high
    scorer = make_scorer(estimated, [gray], [gray], 0.09, 0, pretrained=MapBlur(1.0))
    level = implied_level(MapBlur(1.0), [gray], scorer.draws, 0.09, model_sigma=0.09)
    assert type(scorer) is SureScorer and scorer.model_sigma == 0.09
    assert (scorer.low, scorer.high) == (level * (1 - TOLERANCE), level * (1 + TOLERANCE))
    assert scorer.low < sigma < scorer.high


def test_a_level_with_a_known_tolerance_is_scored_over_that_band_alone():
    from rfr_deploy.noise.base import QuantizedNoise

    gray = 0.5 + 0.08 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    implied = GaussianNoise(0.08, tolerance=0.01)  # what a job aims gray images at
    assert implied.gaussian_level().estimated
    for noise in (implied, QuantizedNoise(implied)):
        scorer = make_scorer(noise, [gray], [gray], None, 0)  # no network: nothing is computed again
        assert type(scorer) is SureScorer
        assert (scorer.low, scorer.high) == pytest.approx((0.08 * 0.99, 0.08 * 1.01))


def test_adapt_scores_a_gray_image_with_an_estimated_level_at_the_pretrained_network_s_level(smooth_image):
    from rfr_deploy.models.factory import create_model

    model = create_model("dncnn", weights="default", channels=1)  # the packaged blind gray network
    gray = noisy_copy(to_tensor(smooth_image[:, :, :1]), 25 / 255, 4)
    result = adapt(model, gray, GaussianNoise(27 / 255, estimated=True), AdaptConfig(steps=2, lr=1e-3))
    assert result.selected_by == "sure" and set(result.sure_db) == set(CANDIDATES)


def test_gray_images_with_an_estimated_level_and_no_level_of_their_own_take_a_fixed_quarter_step(
    tiny_dncnn, pair
):
    from rfr_deploy.adaptation.config import ESTIMATED_GRAY_INTERPOLATION
    from rfr_deploy.adaptation.scoring import gray_with_estimated_level

    _, noisy, _ = pair
    gray = noisy.mean(dim=1, keepdim=True)
    estimated = GaussianNoise(20 / 255, estimated=True)
    assert gray_with_estimated_level(estimated, [gray])
    assert gray_with_estimated_level(QuantizedNoise(estimated), [gray])
    assert not gray_with_estimated_level(estimated, [noisy])  # colour keeps SURE over its range
    assert not gray_with_estimated_level(GaussianNoise(20 / 255), [gray])  # known σ keeps SURE
    assert gaussian_level(estimated, [gray]) is None
    assert gaussian_level(GaussianNoise(20 / 255), [gray]) is not None

    model = tiny_dncnn(1)  # random weights: its residual implies no level (divergence above 1)
    assert make_scorer(estimated, [gray], [gray], None, 0, pretrained=model) is None
    result = adapt(model, gray, estimated, AdaptConfig(steps=2, lr=1e-3))
    assert result.interpolation == ESTIMATED_GRAY_INTERPOLATION and not result.sure_db
    full = adapt(model, gray, estimated, AdaptConfig(steps=2, lr=1e-3, select="off", interpolation=1.0))
    for p0, p1, pq in zip(
        model.parameters(), full.model.parameters(), result.model.parameters(), strict=True
    ):
        assert torch.allclose(pq, p0 + ESTIMATED_GRAY_INTERPOLATION * (p1 - p0), atol=1e-6)
    explicit = adapt(model, gray, estimated, AdaptConfig(steps=2, lr=1e-3, interpolation=0.75))
    assert explicit.interpolation == 0.75
    colour = adapt(tiny_dncnn(3), noisy, estimated, AdaptConfig(steps=2, lr=1e-3))
    # colour images keep a selection: SURE where the estimators agree, GCV where they do not
    assert colour.selected_by == ("sure" if estimate_noise_level(noisy).precise else "gcv") and colour.sure_db
