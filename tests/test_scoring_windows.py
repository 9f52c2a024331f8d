"""Scoring large images on windows (rfr_deploy.adaptation.scoring_windows)."""

import dataclasses

import pytest
import torch
from sure_helpers import Blur, noisy_copy

import rfr_deploy.adaptation.sure as sure_module
from rfr_deploy.adaptation.coloured_sure import ColouredSureScorer
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.implied_level import implied_levels
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.scoring import make_scorer
from rfr_deploy.adaptation.scoring_windows import MARGIN, WINDOW, sample_for_scoring, window_origins
from rfr_deploy.adaptation.sure import clipping_correction, sure_terms
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.camera import CameraNoise, CameraResponses
from rfr_deploy.noise.gaussian import GaussianNoise


def test_windows_are_spread_over_the_image_inside_it_and_aligned():
    height, width = 1000, 1500
    origins = window_origins(height, width, 12 * WINDOW**2, torch.Generator().manual_seed(0), align=4)
    assert len(origins) == 12  # a 3 × 4 grid, like the image
    for top, left, size in origins:
        assert size == (WINDOW, WINDOW)
        assert 0 <= top <= height - WINDOW and 0 <= left <= width - WINDOW
        assert top % 4 == 0 and left % 4 == 0
    centres_y = sorted({(top + WINDOW // 2) * 3 // height for top, _, _ in origins})
    centres_x = sorted({(left + WINDOW // 2) * 4 // width for _, left, _ in origins})
    assert centres_y == [0, 1, 2] and centres_x == [0, 1, 2, 3]  # every row and column of the grid


def test_windows_of_a_narrow_image_keep_to_its_height():
    origins = window_origins(100, 5000, 4 * 100 * WINDOW, torch.Generator().manual_seed(1))
    assert len(origins) == 4 and all(size == (100, WINDOW) and top == 0 for top, _, size in origins)


def test_small_images_and_no_limit_are_scored_whole():
    small, large = torch.rand(1, 3, 40, 50), torch.rand(1, 3, 300, 400)
    sample = sample_for_scoring([small, large], [small, large], 0, seed=0)
    assert sample.regions == [None, None] and sample.images[1] is large
    sample = sample_for_scoring([small, large], [small, large], 300 * 400, seed=0)
    assert sample.regions == [None, None]
    sample = sample_for_scoring([small, large], [small, large], 2000, seed=0)
    assert sample.regions[0] is None and sample.regions[1] is not None and len(sample.images) == 2
    cut, region = sample.images[1], sample.regions[1]
    assert region.shape[-2:] == cut.shape[-2:] and int(region.sum()) == WINDOW * WINDOW
    assert max(cut.shape[-2:]) <= WINDOW + 2 * MARGIN
    again = sample_for_scoring([small, large], [small, large], 2000, seed=0)
    assert torch.equal(again.images[1], cut)
    assert not torch.equal(sample_for_scoring([large], [large], 2000, seed=1).images[0], cut)


def _placed(full: torch.Tensor, cut: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` (shaped like the cut ``cut`` of ``full``) at the cut's place in a zero tensor like ``full``."""
    top, left = divmod(cut.storage_offset() % (full.shape[-2] * full.shape[-1]), full.shape[-1])
    out = torch.zeros(full.shape, dtype=values.dtype)
    out[..., top : top + cut.shape[-2], left : left + cut.shape[-1]] = values
    return out


@pytest.mark.parametrize("arch", ["dncnn", "ffdnet"])
def test_a_window_scores_what_the_whole_image_scores_at_its_pixels(arch):
    torch.manual_seed(0)
    model = create_model(arch, weights=None, channels=3, depth=3, features=8).eval()
    noisy = noisy_copy(0.2 + 0.6 * torch.rand(1, 3, 301, 397), 0.1, seed=1).clamp(0, 1)
    sample = sample_for_scoring([noisy], [noisy], 3000, seed=2, align=model.entry.pad_multiple)
    assert len(sample.images) == 1
    cut, region = sample.images[0], sample.regions[0]
    probe = torch.randn(cut.shape, generator=torch.Generator().manual_seed(3))
    on_cut = sure_terms(model, cut, 0.1, [probe], sigmas=(0.1,), region=region)
    whole = sure_terms(
        model,
        noisy,
        0.1,
        [_placed(noisy, cut, probe)],
        sigmas=(0.1,),
        region=_placed(noisy, cut, region.expand_as(cut)),
    )
    assert on_cut.count == whole.count < int(region.sum()) * 3  # a few saturated values left out
    assert on_cut.residual == pytest.approx(whole.residual, rel=1e-5)
    assert on_cut.divergence == pytest.approx(whole.divergence, rel=1e-4)
    assert on_cut.boundary[0.1] == pytest.approx(whole.boundary[0.1], rel=1e-5)


def test_the_clipping_correction_sums_over_the_region_only():
    out = torch.tensor([[[[0.0, 0.5, 1.0, 0.02]]]])
    region = torch.tensor([[[[True, True, False, False]]]])
    assert clipping_correction(out, 0.1, region) == pytest.approx(clipping_correction(out[..., :2], 0.1))


def test_scorers_take_the_windows_of_a_large_image():
    clean = 0.3 + 0.4 * torch.rand(1, 3, 200, 300, generator=torch.Generator().manual_seed(0))
    noisy = noisy_copy(clean, 0.1, seed=1)
    scorer = make_scorer(GaussianNoise(0.1), [noisy], [clean], None, 0, pixels=WINDOW * 100)
    assert len(scorer.images) == 1 and scorer.regions[0] is not None
    assert scorer.images[0].shape[-2] == 200 and WINDOW < scorer.images[0].shape[-1] <= WINDOW + 2 * MARGIN
    assert make_scorer(GaussianNoise(0.1), [noisy], [clean], None, 0).regions == [None]
    aimed = CameraNoise(CameraResponses.parametric(), level=0.1, level_from_residual=True)
    coloured = make_scorer(aimed, [noisy], [clean], None, 0, pixels=WINDOW * 100)
    assert isinstance(coloured, ColouredSureScorer) and coloured.regions[0] is not None


def test_adapt_scores_a_large_image_on_its_windows_only(tiny_dncnn, monkeypatch):
    clean = 0.3 + 0.4 * torch.rand(1, 3, 96, 640, generator=torch.Generator().manual_seed(0))
    noisy = noisy_copy(clean, 0.1, seed=1)
    scored = []
    original = sure_module.sure_terms

    def spy(model, y, *args, **kwargs):
        scored.append((tuple(y.shape[-2:]), kwargs.get("region") is not None))
        return original(model, y, *args, **kwargs)

    monkeypatch.setattr(sure_module, "sure_terms", spy)
    config = AdaptConfig(steps=4, patch=32, checkpoint_every=2)
    windowed = adapt(tiny_dncnn(), noisy, GaussianNoise(0.1), dataclasses.replace(config, score_pixels=4000))
    assert scored and all(
        shape[0] == 96 and shape[1] <= WINDOW + 2 * MARGIN and masked for shape, masked in scored
    )
    scored.clear()
    whole = adapt(tiny_dncnn(), noisy, GaussianNoise(0.1), dataclasses.replace(config, score_pixels=0))
    assert scored and all(shape == (96, 640) and not masked for shape, masked in scored)
    assert windowed.losses == whole.losses  # the same updates; only what scores them differs
    assert set(windowed.sure_db) == set(whole.sure_db) and windowed.sure_db != whole.sure_db


def test_a_negative_pixel_count_is_refused():
    with pytest.raises(ValueError, match="score_pixels"):
        AdaptConfig(score_pixels=-1)


def test_the_level_a_network_implies_is_read_on_the_windows_of_a_large_image():
    clean = 0.3 + 0.4 * torch.rand(1, 1, 300, 900, generator=torch.Generator().manual_seed(0))
    noisy = noisy_copy(clean, 0.1, seed=1)
    (whole,) = implied_levels(Blur(1.0), [noisy], [0.1], seed=0)
    (windows,) = implied_levels(Blur(1.0), [noisy], [0.1], seed=0, pixels=WINDOW**2)
    assert windows != whole and windows == pytest.approx(whole, rel=0.01)
