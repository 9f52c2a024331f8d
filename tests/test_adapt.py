import dataclasses

import pytest
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.errors import ConfigError
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.metrics import psnr
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise


@pytest.fixture
def noisy(smooth_image):
    clean = to_tensor(smooth_image)
    return clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))


def test_adapt_returns_a_trained_copy_and_per_step_records(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=5, lr=1e-3))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "input model was modified"
    changed = [not torch.equal(v, result.model.state_dict()[k]) for k, v in before.items()]
    assert all(changed)
    assert len(result.losses) == 5 and len(result.step_seconds) == 5
    assert all(loss > 0 for loss in result.losses)
    assert result.runner.startswith("eager") and result.pseudo_clean[0].shape == noisy.shape


def test_adapt_is_reproducible_with_a_seed(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    a = adapt(model, noisy, UniformSigmaGaussianNoise(), AdaptConfig(steps=4, lr=1e-3, seed=7))
    b = adapt(model, noisy, UniformSigmaGaussianNoise(), AdaptConfig(steps=4, lr=1e-3, seed=7))
    c = adapt(model, noisy, UniformSigmaGaussianNoise(), AdaptConfig(steps=4, lr=1e-3, seed=8))
    assert a.losses == b.losses and a.losses != c.losses


def test_loss_falls_when_fitting_the_pseudo_clean_target(tiny_dncnn, noisy):
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=60, lr=3e-3, batch=2))
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.85 * first


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_patches_batches_schedules_and_losses(tiny_dncnn, noisy, loss):
    config = AdaptConfig(steps=3, lr=1e-3, loss=loss, batch=3, patch=16, schedule="cosine", warmup=1)
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), config)
    assert result.patch == 16 and len(result.losses) == 3
    mse = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), dataclasses.replace(config, loss="mse"))
    # the same draws: a mean absolute error of residuals below 1 exceeds their mean square
    assert result.losses == mse.losses if loss == "mse" else result.losses[0] > mse.losses[0]


def test_the_optimiser_and_its_schedule_are_those_configured(tiny_dncnn):
    import math

    from rfr_deploy.adaptation.update import make_optimizer

    config = AdaptConfig(steps=6, lr=1e-3, warmup=3, schedule="cosine", optimizer="radam")  # warm-up ≤ 6 // 4
    optimizer, scheduler = make_optimizer(tiny_dncnn(3), config)
    assert isinstance(optimizer, torch.optim.RAdam)
    rates = []
    for _ in range(config.steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    cosine = [0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(5)]
    assert rates == pytest.approx([1e-3] + [1e-3 * c for c in cosine])  # warm-up cut to 1 update


def test_a_set_of_images_of_different_sizes_shares_one_network(tiny_dncnn, noisy):
    images = [noisy, noisy[..., :20, :24].contiguous(), noisy[..., :28, :].contiguous()]
    seen = []
    result = adapt(
        tiny_dncnn(3),
        images,
        GaussianNoise(25 / 255),
        AdaptConfig(steps=6, lr=1e-3),
        callback=lambda info: seen.append(info.step),
    )
    assert seen == list(range(1, 7))
    assert len(result.pseudo_clean) == 3


def test_noise_map_models_receive_sigma(noisy):
    from rfr_deploy.models.factory import create_model

    model = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    expected = denoise(model, noisy, sigma=25 / 255)
    assert not torch.allclose(expected, denoise(model, noisy, sigma=50 / 255))  # the map matters
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=2, lr=1e-3), sigma=25 / 255)
    assert len(result.losses) == 2
    torch.testing.assert_close(result.pseudo_clean[0], expected)  # targets denoised at the σ given


def test_invalid_settings_are_rejected():
    for kwargs in ({"steps": -1}, {"lr": 0}, {"batch": 0}, {"patch": 4}, {"loss": "huber"}):
        with pytest.raises(ValueError):
            AdaptConfig(**kwargs)


def test_fast_path_on_cpu_is_refused_clearly(tiny_dncnn, noisy):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=1, fast="on"))


def test_adaptation_does_not_hurt_official_dncnn(shared):
    """A real network on a real image: 10 updates at the paper's learning rate must not lose quality."""
    from rfr_deploy.images import read_image
    from rfr_deploy.models.factory import create_model

    model = create_model("dncnn", weights=str(shared("weights", "dncnn", "dncnn_25.pth")))
    clean = to_tensor(read_image(shared("data", "test", "Set12", "08.png")).pixels)[..., 128:224, 128:224]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    base = psnr(denoise(model, noisy).clamp(0, 1), clean)
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=10, lr=1e-5))
    after = psnr(denoise(result.model, noisy).clamp(0, 1), clean)
    assert after > base - 0.05, (base, after)


def _distance(a, b):
    return sum(
        float((p - q).detach().abs().sum()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_interpolation_moves_part_of_the_way_from_the_pretrained_weights(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    full = adapt(
        model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=4, lr=1e-3, interpolation=1.0, select="off")
    )
    half = adapt(
        model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=4, lr=1e-3, interpolation=0.5, select="off")
    )
    for p0, p1, ph in zip(model.parameters(), full.model.parameters(), half.model.parameters(), strict=True):
        assert torch.allclose(ph, p0 + 0.5 * (p1 - p0), atol=1e-6)
    assert half.losses == full.losses


def test_snapshots_see_the_interpolated_network(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    seen = []
    result = adapt(
        model,
        noisy,
        GaussianNoise(25 / 255),
        AdaptConfig(steps=3, lr=1e-3, interpolation=0.5, select="off"),
        callback=lambda info: seen.append(info.model),
    )
    assert _distance(seen[-1], result.model) < 1e-5


def test_weight_averaging_and_iterated_targets(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    plain = adapt(
        model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=6, lr=1e-3, interpolation=1.0, select="off")
    )
    averaged = adapt(
        model,
        noisy,
        GaussianNoise(25 / 255),
        AdaptConfig(steps=6, lr=1e-3, ema=0.99, interpolation=1.0, select="off"),
    )
    # the average of the iterates lies closer to the start than the last iterate
    assert 0 < _distance(model, averaged.model) < _distance(model, plain.model)
    refreshed = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=6, lr=1e-3, refresh_every=2))
    # refreshed targets train the updates after the second; the result keeps f(Y), the first ones
    assert refreshed.losses[:2] == plain.losses[:2] and refreshed.losses[2:] != plain.losses[2:]
    assert torch.equal(refreshed.pseudo_clean[0], plain.pseudo_clean[0])


def test_rounds_split_the_updates_and_restart_from_the_network_the_previous_round_returned(tiny_dncnn, noisy):
    model, noise = tiny_dncnn(3), GaussianNoise(25 / 255)
    config = AdaptConfig(steps=3, lr=1e-3, checkpoint_every=1, seed=5)
    seen = []
    two = adapt(model, noisy, noise, dataclasses.replace(config, steps=6, rounds=2), callback=seen.append)
    first = adapt(model, noisy, noise, config)
    second = adapt(first.model, noisy, noise, dataclasses.replace(config, seed=6))
    # round 2 is a plain run from round 1's selected network, on its targets, with the next seed
    assert two.losses == first.losses + second.losses and len(two.step_seconds) == 6
    assert _distance(two.model, second.model) == 0 < _distance(two.model, first.model)
    assert (two.interpolation, two.checkpoint_step) == (second.interpolation, second.checkpoint_step)
    assert torch.equal(two.pseudo_clean[0], first.pseudo_clean[0])  # f(Y) of the pre-trained network
    assert not torch.equal(second.pseudo_clean[0], first.pseudo_clean[0])
    # the callback counts the M updates across rounds, so "the network after M updates" is the last round's
    assert [(info.step, info.total) for info in seen] == [(i, 6) for i in range(1, 7)]
    assert _distance(seen[-1].model, two.model) == 0
    with pytest.raises(ValueError, match="rounds"):
        AdaptConfig(rounds=0)


def test_a_given_first_round_target_leaves_later_rounds_their_own(tiny_dncnn, noisy):
    """A job that computed X̃ = f(Y) to aim its noise hands it over for the first round only; ``targets``
    (a teacher, an oracle) hold for every round."""
    model, noise = tiny_dncnn(3), GaussianNoise(25 / 255)
    config = AdaptConfig(steps=6, lr=1e-3, rounds=2, seed=5)
    computed = adapt(model, noisy, noise, config)
    handed = adapt(model, noisy, noise, config, pseudo_clean=computed.pseudo_clean)
    assert _distance(handed.model, computed.model) == 0 and handed.losses == computed.losses
    teacher = adapt(model, noisy, noise, config, targets=computed.pseudo_clean)
    assert _distance(teacher.model, computed.model) > 0  # round 2 kept training towards f(Y)


def test_rounds_share_the_updates_that_do_not_divide():
    from rfr_deploy.adaptation.loop import round_steps

    assert round_steps(640, 2) == [320, 320]
    assert round_steps(7, 3) == [3, 2, 2]
    assert round_steps(1, 2) == [1, 0]
    assert sum(round_steps(641, 4)) == 641


def test_radam_runs(tiny_dncnn, noisy):
    result = adapt(
        tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=2, lr=1e-3, optimizer="radam")
    )
    assert len(result.losses) == 2


@pytest.mark.parametrize(
    "kwargs", [{"ema": 1.0}, {"interpolation": 0.0}, {"refresh_every": -1}, {"optimizer": "sgd"}]
)
def test_invalid_new_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        AdaptConfig(**kwargs)


def test_default_number_of_updates_follows_the_noise_model():
    from rfr_deploy.adaptation.config import (
        CAMERA_STEPS,
        FIXED_INTERPOLATION,
        GAUSSIAN_PATCH,
        GAUSSIAN_STEPS,
        SUBSAMPLED_CHROMA_INTERPOLATION,
    )
    from rfr_deploy.adaptation.defaults import resolve_defaults
    from rfr_deploy.noise.base import QuantizedNoise
    from rfr_deploy.noise.camera import CameraNoise, CameraResponses
    from rfr_deploy.noise.chroma import ChromaSubsampledNoise

    images = [torch.rand(1, 3, 8, 8)]
    camera = CameraNoise(CameraResponses.parametric())
    gaussian = (GaussianNoise(25 / 255), UniformSigmaGaussianNoise(), QuantizedNoise(GaussianNoise(10 / 255)))
    assert all(resolve_defaults(AdaptConfig(), n, images).steps == GAUSSIAN_STEPS for n in gaussian)
    assert resolve_defaults(AdaptConfig(), camera, images).steps == CAMERA_STEPS < GAUSSIAN_STEPS
    assert resolve_defaults(AdaptConfig(), QuantizedNoise(camera), images).steps == CAMERA_STEPS
    assert resolve_defaults(AdaptConfig(steps=7), camera, images).steps == 7
    assert resolve_defaults(AdaptConfig(steps=0), GaussianNoise(25 / 255), images).steps == 0
    assert resolve_defaults(AdaptConfig(), camera, images).interpolation == FIXED_INTERPOLATION
    # white noise whose chroma is then subsampled (a 4:2:0 JPEG) keeps the Gaussian budget; no scorer
    # models it, so a fixed interpolation applies
    jpeg = resolve_defaults(AdaptConfig(), QuantizedNoise(ChromaSubsampledNoise(GaussianNoise(0.1))), images)
    assert (jpeg.steps, jpeg.patch, jpeg.interpolation) == (
        GAUSSIAN_STEPS,
        GAUSSIAN_PATCH,
        SUBSAMPLED_CHROMA_INTERPOLATION,
    )


def test_a_resolved_config_is_left_as_it_is(tiny_dncnn, noisy):
    from rfr_deploy.adaptation.defaults import resolve_defaults
    from rfr_deploy.noise.camera import CameraNoise, CameraResponses

    gaussian, camera = GaussianNoise(25 / 255), CameraNoise(CameraResponses.parametric())
    budget = resolve_defaults(AdaptConfig(), gaussian, [noisy])  # the CPU's Gaussian budget
    assert resolve_defaults(AdaptConfig(), camera, [noisy]) != budget  # camera noise would resolve otherwise
    assert resolve_defaults(budget, camera, [noisy]) == budget
    partial = AdaptConfig(steps=3, lr=1e-3)
    config = resolve_defaults(partial, gaussian, [noisy])
    assert config != partial and None not in (config.interpolation, config.checkpoint_every, config.ema)
    # adapt resolves a partial config itself, and the same way
    expected = adapt(tiny_dncnn(3), noisy, gaussian, partial)
    assert adapt(tiny_dncnn(3), noisy, gaussian, config).losses == expected.losses


def test_given_targets_replace_the_pseudo_clean_image(tiny_dncnn, noisy, smooth_image):
    model, config = tiny_dncnn(3), AdaptConfig(steps=4, lr=1e-3, select="off", interpolation=1.0)
    default = adapt(model, noisy, GaussianNoise(25 / 255), config)
    same = adapt(model, noisy, GaussianNoise(25 / 255), config, targets=[default.pseudo_clean[0]])
    assert same.losses == default.losses, "the default run's own targets must reproduce it exactly"
    clean = to_tensor(smooth_image)
    oracle = adapt(model, noisy, GaussianNoise(25 / 255), config, targets=[clean])
    assert torch.equal(oracle.pseudo_clean[0], clean) and oracle.pseudo_clean[0] is not clean
    assert oracle.losses != default.losses


def test_stages_name_the_work_between_updates_and_the_updates_total(tiny_dncnn, noisy):
    config, told = AdaptConfig(steps=3, lr=1e-3, rounds=2), []
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), config, stage=lambda *a: told.append(a))
    one_round = [("pseudo-clean target", None), ("updating", 3), ("choosing the network to keep", None)]
    assert told == one_round * 2
    told.clear()
    given = result.pseudo_clean
    adapt(
        tiny_dncnn(3), noisy, GaussianNoise(25 / 255), config, targets=given, stage=lambda *a: told.append(a)
    )
    assert told == one_round[1:] * 2, "given targets take no pass"


def test_given_targets_must_match_the_noisy_images(tiny_dncnn, noisy):
    with pytest.raises(ValueError, match="one tensor per noisy image"):
        adapt(
            tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=1), targets=[noisy[..., :8, :8]]
        )
    with pytest.raises(ValueError, match="one tensor per noisy image"):
        adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=1), targets=[noisy, noisy])


def _force_kept_checkpoint(monkeypatch, kept: int, offered: dict) -> None:
    """Make the checkpoint keeper keep update ``kept`` whatever its score (0: the pre-trained network);
    ``offered`` collects a copy of the weights offered at each update."""
    from rfr_deploy.adaptation.checkpoints import CheckpointKeeper

    offer = CheckpointKeeper.offer

    def patched(self, model, step):
        offered[step] = [p.detach().clone() for p in model.parameters()]
        self.best_gain = float("-inf") if step == kept else float("inf")
        offer(self, model, step)

    monkeypatch.setattr(CheckpointKeeper, "offer", patched)


def test_the_callback_after_the_last_update_sees_the_network_adapt_returns(tiny_dncnn, noisy, monkeypatch):
    _force_kept_checkpoint(monkeypatch, 1, offered := {})
    model, seen = tiny_dncnn(3), {}
    result = adapt(
        model,
        noisy,
        GaussianNoise(25 / 255),
        AdaptConfig(steps=4, lr=1e-2, checkpoint_every=1),
        callback=lambda info: seen.update({info.step: (info.model, info.interpolation())}),
    )
    assert set(offered) == {1, 2, 3, 4} and result.checkpoint_step in (1, 4)
    assert seen[4][0] is result.model and seen[4][1] == result.interpolation
    assert _distance(seen[3][0], result.model) > 0  # update 3's network: a copy built then
    # the returned network interpolates the weights of the update it reports, at the α it reports
    alpha, kept = result.interpolation, offered[result.checkpoint_step]
    for p0, pk, p in zip(model.parameters(), kept, result.model.parameters(), strict=True):
        assert torch.allclose(p, p0 + alpha * (pk - p0), atol=1e-6)


def test_the_last_weights_at_their_own_interpolation_when_no_checkpoint_wins_at_full_step(
    tiny_dncnn, noisy, monkeypatch
):
    _force_kept_checkpoint(monkeypatch, 0, offered := {})
    model = tiny_dncnn(3)
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=3, lr=1e-2, checkpoint_every=1))
    # no checkpoint beat the pre-trained network at α = 1: SURE's α on the last weights decides (0 included)
    assert result.checkpoint_step == 3 and set(result.sure_db) == {0.0, 0.25, 0.5, 0.75, 1.0, 1.25}
    alpha = result.interpolation
    for p0, p3, p in zip(model.parameters(), offered[3], result.model.parameters(), strict=True):
        assert torch.allclose(p, p0 + alpha * (p3 - p0), atol=1e-6)


def test_the_last_weights_win_when_the_scorer_prefers_them_to_the_kept_checkpoint(
    tiny_dncnn, noisy, monkeypatch
):
    import rfr_deploy.adaptation.blending as blending
    from rfr_deploy.adaptation.sure import Selection

    _force_kept_checkpoint(monkeypatch, 1, offered := {})
    # the selection on the last weights (asked first) claims the larger gain
    picks = iter([Selection(0.5, {0.5: 30.0}, gain=2.0), Selection(0.25, {0.25: 29.0}, gain=1.0)])
    monkeypatch.setattr(blending, "choose_interpolation", lambda *a, **k: next(picks))
    model = tiny_dncnn(3)
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=4, lr=1e-2, checkpoint_every=1))
    assert next(picks, None) is None  # both were asked: the kept update 1 and the last
    assert (result.checkpoint_step, result.interpolation, result.sure_db) == (4, 0.5, {0.5: 30.0})
    for p0, p4, p in zip(model.parameters(), offered[4], result.model.parameters(), strict=True):
        assert torch.allclose(p, p0 + 0.5 * (p4 - p0), atol=1e-6)
