"""Unknown noise levels read from the pre-trained network: the residual's RMS for camera-like noise
models, the level a blind network implies for Gaussian noise on gray images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rfr_deploy.adaptation.scoring as scoring_module
import rfr_deploy.adaptation.targets as targets_module
import rfr_deploy.jobs.noise_aim as noise_aim_module
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.implied_level import TOLERANCE, implied_levels
from rfr_deploy.errors import ImageError
from rfr_deploy.images import read_image, write_image
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.jobs.adapt_export import JobSettings, adapt_and_export
from rfr_deploy.jobs.noise_aim import aim_noise
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import gaussian_level_of
from rfr_deploy.noise.level import estimate_noise_level, estimate_sigma, residual_level
from rfr_deploy.noise.registry import NoiseSettings, level_source, register_noise

CONFIG = AdaptConfig(steps=2, lr=1e-3, warmup=0)


def aim(kind, model, images, sigma=None, unknown="estimate", model_sigma=None, names=("noisy.png",)):
    """``aim_noise`` with the white-noise estimates of ``images``."""
    estimates = tuple(estimate_noise_level(y).sigma for y in images)
    return aim_noise(
        kind, NoiseSettings(sigma, unknown, estimates), model, images, model_sigma, CONFIG, names
    )


def test_level_sources_are_part_of_the_registration():
    assert level_source("camera") == "residual" and level_source("gaussian") == "white"
    with pytest.raises(ValueError, match="'white' or 'residual'"):
        register_noise("level-toy", lambda settings: None, level="psd")
    with pytest.raises(ValueError, match="unknown noise model"):
        level_source("level-toy")  # the refused registration left nothing behind


def test_the_residual_level_leaves_out_saturated_values():
    noisy = torch.tensor([[[[0.0, 1.0, 0.5, 0.3]]]])
    denoised = torch.tensor([[[[0.4, 0.2, 0.4, 0.5]]]])
    assert residual_level(noisy, denoised) == pytest.approx(((0.1**2 + 0.2**2) / 2) ** 0.5)
    assert residual_level(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)) == 0.0


def test_only_an_unknown_level_of_a_residual_model_is_read_from_the_residual(tiny_dncnn, image_file):
    model, y = tiny_dncnn(3), to_tensor(read_image(image_file).pixels)
    aimed = aim("camera", model, [y])
    x = denoise(model, y)
    assert torch.allclose(aimed.targets[0], x)
    assert aimed.levels == {"residual_levels": [pytest.approx(residual_level(y, x))]}
    assert aimed.noise.level == pytest.approx(residual_level(y, x))
    for kind, sigma, unknown in (
        ("gaussian", None, "estimate"),  # colour: the white-noise estimate
        ("camera", 0.1, "estimate"),
        ("camera", None, "uniform"),
    ):
        aimed = aim(kind, model, [y], sigma, unknown)
        assert aimed.targets is None and aimed.levels == {}


def identity_dncnn(channels: int = 3):
    """A residual DnCNN whose noise branch outputs zero: it removes nothing."""
    model = create_model("dncnn", weights=None, channels=channels, depth=3, features=8)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_a_network_that_removes_nothing_gives_no_level_to_aim_at(image_file):
    y = to_tensor(read_image(image_file).pixels)
    with pytest.raises(ImageError, match="noisy.png: the pre-trained network removes nothing"):
        aim("camera", identity_dncnn(), [y])
    with pytest.raises(ImageError, match="^a.png, b.png: the pre-trained network"):  # the median level is 0
        aim("camera", identity_dncnn(), [y, y], names=("a.png", "b.png"))


def test_a_camera_job_aims_at_the_residual_and_computes_the_targets_once(
    tmp_path, image_file, weights_file, tiny_dncnn, monkeypatch
):
    built, calls = [], []
    build = noise_aim_module.build_noise_from
    monkeypatch.setattr(
        noise_aim_module, "build_noise_from", lambda *a, **k: built.append(a) or build(*a, **k)
    )
    pseudo_clean = targets_module.pseudo_clean
    monkeypatch.setattr(
        targets_module, "pseudo_clean", lambda *a, **k: calls.append(1) or pseudo_clean(*a, **k)
    )
    settings = JobSettings(
        weights=str(weights_file), noise="camera", device="cpu", output_dir=str(tmp_path / "o")
    )
    adapt_and_export([image_file], settings, AdaptConfig(steps=2, lr=1e-3, warmup=0))

    y = to_tensor(read_image(image_file).pixels)
    expected = residual_level(y, denoise(tiny_dncnn(3), y))
    kind, chosen = built[-1][:2]
    sigma, unknown, levels = chosen.sigma, chosen.unknown_sigma, chosen.estimates
    assert (kind, sigma, unknown) == ("camera", None, "estimate") and levels == (pytest.approx(expected),)
    assert len(calls) == 1, "the job's pseudo-clean target must be the one adaptation trains on"
    noise = json.loads((tmp_path / "o" / "noisy.json").read_text())["noise"]
    assert noise["residual_levels"] == [pytest.approx(expected * 255, abs=1e-3)]
    # the white-noise estimate is still recorded beside the level the noise aimed at
    assert noise["mode"] == "estimate" and noise["sigma_estimates"]


def test_a_gaussian_job_keeps_the_white_noise_estimate(tmp_path, image_file, weights_file, monkeypatch):
    built = []
    build = noise_aim_module.build_noise_from
    monkeypatch.setattr(
        noise_aim_module, "build_noise_from", lambda *a, **k: built.append(a) or build(*a, **k)
    )
    settings = JobSettings(
        weights=str(weights_file), noise="gaussian", device="cpu", output_dir=str(tmp_path / "o")
    )
    adapt_and_export([image_file], settings, AdaptConfig(steps=1, lr=1e-3, warmup=0))
    y = to_tensor(read_image(image_file).pixels)
    assert built[-1][1].estimates == (pytest.approx(estimate_noise_level(y).sigma),)  # a colour image
    noise = json.loads((tmp_path / "o" / "noisy.json").read_text())["noise"]
    assert "residual_levels" not in noise and "implied_levels" not in noise


@pytest.fixture
def gray_file(tmp_path, smooth_image, rng):
    """A noisy 8-bit gray PNG (σ = 25) of ``smooth_image``'s first channel."""
    clean = smooth_image[:, :, :1]
    noisy = np.clip(clean + 25 / 255 * rng.standard_normal(clean.shape), 0, 1)
    return write_image(tmp_path / "in" / "gray.png", noisy)


def packaged_gray():
    return create_model("dncnn", weights="default", channels=1)  # the packaged blind gray network


def test_gaussian_noise_on_gray_images_aims_at_the_level_a_blind_network_implies(gray_file):
    y, model = to_tensor(read_image(gray_file).pixels), packaged_gray()
    aimed = aim("gaussian", model, [y])
    (level,) = implied_levels(model, [y], [estimate_noise_level(y).sigma], CONFIG.seed)
    assert aimed.levels == {"implied_levels": [level]} and aimed.targets is None
    declared = gaussian_level_of(aimed.noise)
    assert (declared.sigma, declared.estimated, declared.tolerance) == (level, True, TOLERANCE)
    assert abs(level - estimate_noise_level(y).sigma) > 1e-4  # not the white-noise estimate again


def test_a_set_of_gray_images_aims_at_the_median_of_their_implied_levels(gray_file):
    y, model = to_tensor(read_image(gray_file).pixels), packaged_gray()
    louder = (y + 0.06 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    aimed = aim("gaussian", model, [y, louder], names=("a.png", "b.png"))
    levels = aimed.levels["implied_levels"]
    rough = [estimate_noise_level(v).sigma for v in (y, louder)]
    assert levels == implied_levels(model, [y, louder], rough, CONFIG.seed) and levels[1] > levels[0]
    assert gaussian_level_of(aimed.noise).sigma == pytest.approx((levels[0] + levels[1]) / 2)


def test_the_implied_level_is_only_read_for_an_estimated_level_and_a_blind_network(gray_file):
    y, model = to_tensor(read_image(gray_file).pixels), packaged_gray()
    estimate = estimate_noise_level(y).sigma
    for aimed, sigma in (
        (aim("gaussian", model, [y], sigma=0.1), 0.1),  # a known level
        (aim("gaussian", model, [y], model_sigma=estimate), estimate),  # a noise-map network
        (aim("gaussian", identity_dncnn(1), [y]), estimate),  # no level implied: divergence 1
    ):
        declared = gaussian_level_of(aimed.noise)
        assert aimed.levels == {} and declared.sigma == pytest.approx(sigma) and declared.tolerance is None
    assert gaussian_level_of(aim("gaussian", model, [y], unknown="uniform").noise).random


def test_a_gray_job_trains_and_scores_at_the_implied_level_computed_once(tmp_path, gray_file, monkeypatch):
    def computed_again(*args, **kwargs):
        raise AssertionError("SURE must take the level the job aimed at, not compute it again")

    monkeypatch.setattr(scoring_module, "implied_level_scorer", computed_again)
    settings = JobSettings(device="cpu", output_dir=str(tmp_path / "o"))  # the packaged gray network
    adapt_and_export([gray_file], settings, CONFIG)

    y = to_tensor(read_image(gray_file).pixels)
    (level,) = implied_levels(packaged_gray(), [y], [estimate_noise_level(y).sigma], CONFIG.seed)
    manifest = json.loads((tmp_path / "o" / "gray.json").read_text())
    assert manifest["noise"]["implied_levels"] == [pytest.approx(level * 255, abs=1e-3)]
    assert manifest["noise"]["sigma_estimates"] == [
        pytest.approx(estimate_noise_level(y).sigma * 255, abs=1e-3)
    ]
    assert manifest["adaptation"]["selected_by"] == "sure"


def test_a_gray_noise_map_job_is_told_the_weak_texture_estimate_and_scored_at_what_it_implies(
    tmp_path, gray_file, monkeypatch
):
    told = []
    real = scoring_module.implied_level_scorer
    monkeypatch.setattr(scoring_module, "implied_level_scorer", lambda *a: told.append(a[4]) or real(*a))
    torch.manual_seed(0)
    ffdnet = create_model("ffdnet", weights=None, channels=1, depth=3, features=8)
    save_weights(tmp_path / "ffdnet.safetensors", ffdnet.net, ffdnet.meta)
    settings = JobSettings(
        model="ffdnet",
        weights=str(tmp_path / "ffdnet.safetensors"),
        device="cpu",
        output_dir=str(tmp_path / "o"),
    )
    adapt_and_export([gray_file], settings, CONFIG)
    y = to_tensor(read_image(gray_file).pixels)
    weak = estimate_sigma(y)
    assert weak != pytest.approx(estimate_noise_level(y).sigma, abs=1e-4)  # not the all-patch value
    manifest = json.loads((tmp_path / "o" / "gray.json").read_text())
    assert manifest["noise"]["sigma_estimates"] == [pytest.approx(weak * 255, abs=1e-3)]
    assert told == [pytest.approx(weak)]  # the scorer reads the level implied for the map's level
