import math

import numpy as np
import pytest
import torch
from sure_helpers import Blur, gaussian_level, noisy_copy
from torch import nn

from rfr_deploy.adaptation.checkpoints import CheckpointKeeper
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.scoring import GcvScorer, make_scorer
from rfr_deploy.adaptation.sure import (
    SureScorer,
    choose_interpolation,
    draw_probes,
    select_interpolation,
    sure_mse,
)
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.noise.base import QuantizedNoise
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
from rfr_deploy.noise.level import estimate_noise_level


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_sure_matches_the_true_error_of_a_linear_denoiser(pair, weight):
    clean, noisy, sigma = pair
    model = Blur(weight)
    true = float(((denoise(model, noisy) - clean) ** 2).mean())
    probes = [torch.randn(noisy.shape, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    estimate = sure_mse(model, noisy, sigma, probes=probes)
    # 32×40×3 pixels: the estimate's own noise is a few percent of σ²
    assert estimate == pytest.approx(true, abs=0.15 * sigma**2), (estimate, true)


def test_sure_ranks_denoisers_like_the_true_error(pair):
    clean, noisy, sigma = pair
    weights = [0.0, 0.3, 0.6, 0.9]
    true = [float(((denoise(Blur(w), noisy) - clean) ** 2).mean()) for w in weights]
    choice = select_interpolation(lambda a: Blur(a), [noisy], sigma, None, seed=0, candidates=weights)
    assert choice.interpolation == weights[true.index(min(true))]
    assert set(choice.estimates) == set(weights)
    assert all(math.isfinite(v) for v in choice.estimates.values())


def test_gaussian_level_known_estimated_and_camera(pair):
    _, noisy, sigma = pair
    assert gaussian_level(GaussianNoise(20 / 255), [noisy]) == pytest.approx((sigma, sigma))
    assert gaussian_level(QuantizedNoise(GaussianNoise(20 / 255)), [noisy]) == pytest.approx((sigma, sigma))
    # an estimated level is a range around the estimate, as wide as the estimators' agreement allows
    level = estimate_noise_level(noisy)
    low, high = gaussian_level(GaussianNoise(20 / 255, estimated=True), [noisy])
    assert low == pytest.approx(sigma * level.low / level.sigma)
    assert high == pytest.approx(sigma * level.high / level.sigma)
    assert low < sigma < high
    low, high = gaussian_level(UniformSigmaGaussianNoise(), [noisy])
    assert 0 < low < high

    class Other(nn.Module):
        pass

    assert gaussian_level(Other(), [noisy]) is None


def test_adapt_selects_an_interpolation_by_sure(tiny_dncnn, pair):
    _, noisy, _ = pair
    model = tiny_dncnn(3)
    result = adapt(model, noisy, GaussianNoise(20 / 255), AdaptConfig(steps=3, lr=1e-3))
    assert result.interpolation in result.sure_db
    assert result.sure_db[result.interpolation] == max(result.sure_db.values())
    # the returned network is the chosen point between the pre-trained and adapted weights
    off = adapt(
        model, noisy, GaussianNoise(20 / 255), AdaptConfig(steps=3, lr=1e-3, select="off", interpolation=1.0)
    )
    a = result.interpolation
    for p0, p1, p in zip(model.parameters(), off.model.parameters(), result.model.parameters(), strict=True):
        assert torch.allclose(p, p0 + a * (p1 - p0), atol=1e-6)


def test_select_off_keeps_the_fixed_interpolation(tiny_dncnn, pair):
    _, noisy, _ = pair
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(20 / 255), AdaptConfig(steps=2, lr=1e-3, select="off"))
    assert result.interpolation == 0.5 and result.sure_db == {}


def test_select_must_be_known():
    with pytest.raises(ValueError, match="select"):
        AdaptConfig(select="oracle")


def test_probes_are_not_the_noise_of_a_generator_with_the_same_seed(smooth_image):
    # evaluation seeds its noise with small integers: probes equal to that noise bias the divergence
    # term (a denoiser barely responds along its own noise), which once made SURE prefer the pre-trained net
    x = to_tensor(smooth_image)
    for seed in range(4):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        probe = draw_probes([x], seed, 1)[0][0]
        assert abs(float((noise * probe).mean())) < 0.05
    assert torch.equal(draw_probes([x], 3, 2)[0][1], draw_probes([x], 3, 2)[0][1])


def test_an_uncertain_level_keeps_the_pretrained_network_unless_every_level_in_range_agrees(pair):
    clean, noisy, sigma = pair
    # the improvement of the blur over the identity changes sign inside this wide range of σ
    gains = {}
    for s in (0.2 * sigma, sigma):
        choice = select_interpolation(lambda a: Blur(a), [noisy], s, None, seed=0, candidates=[0.0, 0.9])
        gains[s] = choice.interpolation
    assert gains == {0.2 * sigma: 0.0, sigma: 0.9}
    robust = select_interpolation(lambda a: Blur(a), [noisy], (0.2 * sigma, sigma), None, 0, [0.0, 0.9])
    assert robust.interpolation == 0.0
    assert (
        select_interpolation(
            lambda a: Blur(a), [noisy], (0.9 * sigma, sigma), None, 0, [0.0, 0.9]
        ).interpolation
        == 0.9
    )


def test_a_callback_at_the_last_step_and_the_result_share_one_selection(tiny_dncnn, pair, monkeypatch):
    import rfr_deploy.adaptation.blending as blending

    calls = []
    real = blending.choose_interpolation
    monkeypatch.setattr(blending, "choose_interpolation", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, noisy, _ = pair
    seen = []
    result = adapt(
        tiny_dncnn(3),
        noisy,
        GaussianNoise(20 / 255),
        AdaptConfig(steps=3, lr=1e-3),
        callback=lambda i: seen.append(i.model),
    )
    assert len(calls) == 3  # one per step read by the callback, none repeated for the result
    assert all(
        torch.equal(p, q) for p, q in zip(seen[-1].parameters(), result.model.parameters(), strict=True)
    )


def test_probe_count_grows_as_images_shrink():
    from rfr_deploy.adaptation.sure import probe_count

    assert probe_count([torch.zeros(1, 3, 256, 256)]) == 2
    assert probe_count([torch.zeros(1, 1, 256, 256)]) == 4
    assert probe_count([torch.zeros(1, 1, 128, 128)]) == 16
    assert probe_count([torch.zeros(1, 1, 8, 8)]) == 16
    assert probe_count([torch.zeros(1, 3, 1024, 1024)]) == 2


def test_sure_on_clipped_8bit_input_accounts_for_the_saturated_values():
    # a 96×96 image with dark and bright areas: about a tenth of the noisy 8-bit values clip to 0 or 255
    y, x = np.mgrid[0:96, 0:96].astype(np.float32)
    pixels = np.clip(0.5 + 0.6 * np.sin(x / 9.0) * np.cos(y / 13.0), 0.02, 0.98)[None, None]
    clean = torch.from_numpy(np.repeat(pixels, 3, axis=1))
    sigma = 25 / 255
    noise = sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    noisy = torch.round((clean + noise).clamp(0, 1) * 255) / 255
    assert 0.05 < float(((noisy == 0) | (noisy == 1)).float().mean()) < 0.2
    model = Blur(1.0)  # close to the clean image, as the boundary term's plug-in assumes
    true_db = -10 * math.log10(float(((denoise(model, noisy) - clean) ** 2).mean()))
    probes = draw_probes([noisy], 0, 4)[0]

    def estimate_db(clipping: bool) -> float:
        mse = sure_mse(model, noisy, sigma, probes=probes, clipping=clipping)
        return -10 * math.log10(mse) if mse > 0 else math.inf

    # measured: 30.30 dB with the clipping terms, 40.0 dB without, 29.54 dB true
    assert abs(estimate_db(True) - true_db) < 1.0
    assert estimate_db(False) - true_db > 5.0  # plain SURE subtracts σ² for values that carry no noise


def test_checkpoint_keeper_keeps_the_best_scoring_weights(smooth_image):
    clean = to_tensor(smooth_image)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    scorer = SureScorer([noisy], 0.1, None, seed=0)
    model = Blur(0.0)  # the identity: the worst denoiser of the three
    origin = [p.detach().clone() for p in model.parameters()]
    keeper = CheckpointKeeper(model, scorer)
    for step, weight in ((10, 0.9), (20, 0.3)):
        with torch.no_grad():
            model.weight.fill_(weight)
        keeper.offer(model, step)
    assert keeper.best_step == 10 and set(keeper.scores) == {0, 10, 20}
    assert keeper.scores[10] > keeper.scores[20] > keeper.scores[0]
    keeper.restore(model, origin)
    assert float(model.weight.detach()) == pytest.approx(0.9)

    worse = CheckpointKeeper(Blur(0.9), scorer)  # nothing offered beats the reference: keep it
    blurred = Blur(0.0)
    worse.offer(blurred, 5)
    worse.restore(blurred, [torch.tensor(0.9)])
    assert worse.best_step == 0 and float(blurred.weight.detach()) == pytest.approx(0.9)


# Which estimate scores the candidates: SURE, generalised cross-validation (GCV), or none.


@pytest.fixture
def textured():
    """A 3×128² image whose right half is fine random texture: the two σ estimators disagree on it."""
    g = torch.Generator().manual_seed(3)
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    smooth = (0.5 + 0.3 * torch.sin(x / 9) * torch.cos(y / 13)).expand(1, 3, 128, 128)
    texture = smooth + 0.2 * torch.randn(smooth.shape, generator=g)
    texture[..., 64:, :] = smooth[..., 64:, :]
    return noisy_copy(texture, 25 / 255, 4)


def test_gcv_ranks_denoisers_like_the_true_error_without_sigma(smooth_image):
    clean = to_tensor(smooth_image)
    sigma = 20 / 255
    noisy = noisy_copy(clean, sigma, 1)
    weights = [0.1, 0.3, 0.6, 0.9]
    true = [float(((denoise(Blur(w), noisy) - clean) ** 2).mean()) for w in weights]
    best = weights[true.index(min(true))]
    # GCV ignores the level it is given; SURE at half the level picks worse
    gcv = choose_interpolation(lambda a: Blur(a), GcvScorer([noisy], sigma / 2, None, 0), weights)
    sure = choose_interpolation(lambda a: Blur(a), SureScorer([noisy], sigma / 2, None, 0), weights)
    assert gcv.interpolation == best and sure.interpolation != best
    # reports show −10 log10 GCV (MSE + σ² in dB), ordered like the choice
    assert gcv.estimates[best] == max(gcv.estimates.values()) < -10 * math.log10(sigma**2)
    # its estimate of the error itself: GCV − σ̂² with the right σ̂, within the probes' noise
    terms = GcvScorer([noisy], sigma, None, 0).terms(Blur(best))
    assert terms.gcv() - sigma**2 == pytest.approx(min(true), abs=0.2 * sigma**2)
    # the identity (divergence 1) cannot be judged by GCV: never chosen, whatever it is compared with
    with_identity = choose_interpolation(lambda a: Blur(a), GcvScorer([noisy], sigma, None, 0), [0.0, 0.9])
    assert with_identity.interpolation == 0.9


def test_the_scorer_follows_the_noise_and_the_images(smooth_image, textured):
    colour = noisy_copy(to_tensor(smooth_image), 20 / 255, 1)
    known = make_scorer(GaussianNoise(20 / 255), [colour], [colour], None, 0)
    assert type(known) is SureScorer and known.low == known.high == pytest.approx(20 / 255)
    estimated = GaussianNoise(25 / 255, estimated=True)
    assert not estimate_noise_level(textured).precise
    disagree = make_scorer(estimated, [textured], [textured], None, 0)
    assert isinstance(disagree, GcvScorer) and disagree.criterion == "gcv"
    flat = noisy_copy(torch.full((1, 3, 128, 128), 0.5), 25 / 255, 5)
    assert estimate_noise_level(flat).precise
    agree = make_scorer(estimated, [flat], [flat], None, 0)
    assert type(agree) is SureScorer and agree.low < 25 / 255 < agree.high
    assert (
        type(make_scorer(estimated, [flat, textured], [flat, textured], None, 0)) is GcvScorer
    )  # one imprecise image
    gray = textured[:, :1]
    assert make_scorer(estimated, [gray], [gray], None, 0) is None  # the fixed quarter step
    assert type(make_scorer(UniformSigmaGaussianNoise(), [gray], [gray], None, 0)) is SureScorer


def test_adapt_reports_what_chose_the_result(tiny_dncnn, textured):
    model = tiny_dncnn(3)
    config = AdaptConfig(steps=2, lr=1e-3, checkpoint_every=1)
    gcv = adapt(model, textured, GaussianNoise(25 / 255, estimated=True), config)
    assert gcv.selected_by == "gcv" and gcv.sure_db and set(gcv.checkpoint_db) == {0, 1, 2}
    assert adapt(model, textured, GaussianNoise(25 / 255), config).selected_by == "sure"
    fixed = adapt(
        tiny_dncnn(1), textured[:, :1].contiguous(), GaussianNoise(25 / 255, estimated=True), config
    )
    assert fixed.selected_by is None and fixed.interpolation == 0.25
