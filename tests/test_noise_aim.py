"""Camera-like noise models read their unknown level from the pre-trained network's residual."""

from __future__ import annotations

import json

import pytest
import torch

import rfr_deploy.adaptation.targets as targets_module
import rfr_deploy.jobs.adapt_export as adapt_export_module
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.errors import ImageError
from rfr_deploy.images import read_image
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.jobs.adapt_export import JobSettings, adapt_and_export
from rfr_deploy.jobs.noise_aim import residual_aim
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.level import estimate_noise_level, residual_level
from rfr_deploy.noise.registry import level_source, register_noise


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
    aim = residual_aim("camera", None, "estimate", model, [y], None, False, ["noisy.png"])
    x = denoise(model, y)
    assert torch.allclose(aim.targets[0], x) and aim.levels == [pytest.approx(residual_level(y, x))]
    for kind, sigma, unknown in (
        ("gaussian", None, "estimate"),
        ("camera", 0.1, "estimate"),
        ("camera", None, "uniform"),
    ):
        assert residual_aim(kind, sigma, unknown, model, [y], None, False, ["noisy.png"]) is None


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
        residual_aim("camera", None, "estimate", identity_dncnn(), [y], None, False, ["noisy.png"])
    with pytest.raises(ImageError, match="^a.png, b.png: the pre-trained network"):  # the median level is 0
        residual_aim("camera", None, "estimate", identity_dncnn(), [y, y], None, False, ["a.png", "b.png"])


def test_a_camera_job_aims_at_the_residual_and_computes_the_targets_once(
    tmp_path, image_file, weights_file, tiny_dncnn, monkeypatch
):
    built, calls = [], []
    build = adapt_export_module.build_noise
    monkeypatch.setattr(adapt_export_module, "build_noise", lambda *a, **k: built.append(a) or build(*a, **k))
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
    kind, sigma, unknown, levels = built[-1][:4]
    assert (kind, sigma, unknown) == ("camera", None, "estimate") and levels == [pytest.approx(expected)]
    assert len(calls) == 1, "the job's pseudo-clean target must be the one adaptation trains on"
    noise = json.loads((tmp_path / "o" / "noisy.json").read_text())["noise"]
    assert noise["residual_levels"] == [pytest.approx(expected * 255, abs=1e-3)]
    # the white-noise estimate is still recorded beside the level the noise aimed at
    assert noise["mode"] == "estimate" and noise["sigma_estimates"]


def test_a_gaussian_job_keeps_the_white_noise_estimate(tmp_path, image_file, weights_file, monkeypatch):
    built = []
    build = adapt_export_module.build_noise
    monkeypatch.setattr(adapt_export_module, "build_noise", lambda *a, **k: built.append(a) or build(*a, **k))
    settings = JobSettings(
        weights=str(weights_file), noise="gaussian", device="cpu", output_dir=str(tmp_path / "o")
    )
    adapt_and_export([image_file], settings, AdaptConfig(steps=1, lr=1e-3, warmup=0))
    y = to_tensor(read_image(image_file).pixels)
    assert built[-1][3] == [pytest.approx(estimate_noise_level(y).sigma)]
    assert "residual_levels" not in json.loads((tmp_path / "o" / "noisy.json").read_text())["noise"]
