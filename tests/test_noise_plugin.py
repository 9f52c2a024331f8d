"""A noise model from outside the package: defined here, registered by name, adapted with end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.jobs.adapt_export import JobSettings, adapt_and_export
from rfr_deploy.noise.base import GaussianLevel, gaussian_level_of
from rfr_deploy.noise.build import build_noise, list_noise_choices
from rfr_deploy.noise.gaussian import build_gaussian
from rfr_deploy.noise.registry import NoiseSettings, register_noise

TOY = "laplace-toy"


class LaplaceNoise(nn.Module):
    """Additive white Laplacian noise of standard deviation ``sigma`` ([0, 1] units)."""

    draws = 0

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        LaplaceNoise.draws += 1
        u = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator) - 0.5
        scale = self.sigma / math.sqrt(2.0)  # a Laplace distribution of scale b has std b·√2
        n = -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs().clamp(max=0.5 - 1e-7))
        return x + n, torch.full((x.shape[0],), self.sigma, device=x.device, dtype=x.dtype)

    def gaussian_level(self) -> GaussianLevel | None:
        return None  # not Gaussian: no SURE, no recorrupted term, the camera-like budget


BUILT: list[NoiseSettings] = []


def build_laplace(settings: NoiseSettings) -> LaplaceNoise:
    if settings.sigma is None and settings.unknown_sigma == "uniform":
        raise ValueError(f"{TOY} noise has no random levels")
    BUILT.append(settings)
    return LaplaceNoise(settings.level)


register_noise(TOY, build_laplace)


def test_a_second_registration_of_a_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_noise(TOY, build_laplace)
    with pytest.raises(ValueError, match="already registered"):
        register_noise("gaussian", build_laplace)
    with pytest.raises(ValueError, match="already registered"):
        register_noise("auto", build_laplace)  # a choice of the command line, not a model


def test_the_registered_model_is_a_choice_and_builds_from_the_job_choices():
    assert TOY in list_noise_choices() and TOY in list_noise_choices(auto=False)
    assert list_noise_choices()[:3] == ("auto", "gaussian", "camera")
    noise = build_noise(TOY, 0.1, "estimate", [], bit_depth=8)
    assert gaussian_level_of(noise) is None  # quantised: it answers for the toy model
    assert isinstance(noise.inner, LaplaceNoise) and noise.inner.sigma == 0.1
    x = torch.full((2, 3, 64, 64), 0.5)
    noisy, sigma = noise.inner(x, torch.Generator().manual_seed(0))
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.05)
    assert torch.equal(sigma, torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="unknown noise model 'nope'"):
        build_noise("nope", 0.1, "estimate", [])


def test_a_job_adapts_with_the_registered_noise_end_to_end(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    settings = JobSettings(
        weights=str(weights_file), noise=TOY, sigma=25 / 255, device="cpu", output_dir=str(out)
    )
    draws = LaplaceNoise.draws
    [manifest] = adapt_and_export([image_file], settings, AdaptConfig(steps=2, lr=1e-3))

    # the job built the toy model from its choices (σ in [0, 1] units) and drew from it at every update
    assert BUILT[-1].sigma == 25 / 255 and BUILT[-1].unknown_sigma == "estimate"
    assert LaplaceNoise.draws - draws >= 2
    # outputs written, every one listed with its digest
    assert sorted(p.name for p in out.iterdir()) == ["noisy.json", "noisy_rfr.png", "noisy_rfr.safetensors"]
    written = json.loads((out / "noisy.json").read_text())
    assert {f["role"] for f in written["files"]} == {"output", "weights"}
    # the manifest names the toy noise, σ in grey levels as given on the command line
    assert written["noise"]["kind"] == TOY and written["noise"]["mode"] == "known"
    assert written["noise"]["sigma"] == 25
    assert written["noise"]["quantized_to_bits"] == 8
    assert written["adaptation"]["steps"] == 2 and len(written["losses"]) == 2
    assert not written["adaptation"]["sure_db"]  # not Gaussian: SURE does not choose the step
    assert manifest["noise"] == written["noise"]
    # the adapted weights moved away from the pre-trained ones
    before, after = load_file(str(weights_file)), load_file(str(out / "noisy_rfr.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(after[k]).all() for k in after)


GAUSSIAN_COPY = "gaussian-copy"
register_noise(GAUSSIAN_COPY, build_gaussian)


def test_a_jobs_checks_ask_the_noise_model_what_it_draws_not_its_name(tmp_path, image_file, weights_file):
    """White Gaussian noise under another name is checked and recorded as Gaussian noise is."""
    from rfr_deploy.errors import ConfigError, ImageError
    from rfr_deploy.images import write_image
    from rfr_deploy.jobs.adapt_export import plan_adapt_and_export

    def settings(noise, **kwargs):
        return JobSettings(
            weights=str(weights_file), noise=noise, device="cpu", output_dir=str(tmp_path), **kwargs
        )

    recorrupted = AdaptConfig(steps=2, recorrupted=0.5)
    plan_adapt_and_export([image_file], settings(GAUSSIAN_COPY, sigma=0.1), recorrupted)  # one level: taken
    with pytest.raises(
        ConfigError, match=f"--recorrupted needs Gaussian noise of one level .*not {TOY} noise"
    ):
        plan_adapt_and_export([image_file], settings(TOY, sigma=0.1), recorrupted)
    with pytest.raises(
        ConfigError, match=f"--noise {TOY}: {TOY} noise has no random levels"
    ):  # before adapting
        plan_adapt_and_export([image_file], settings(TOY, unknown_sigma="uniform"), AdaptConfig(steps=2))
    flat = write_image(tmp_path / "flat.png", torch.full((24, 24, 3), 0.5).numpy())
    with pytest.raises(ImageError, match="no noise level can be estimated"):  # σ = 0 would not adapt at all
        plan_adapt_and_export([flat], settings(GAUSSIAN_COPY), AdaptConfig(steps=2))
    uniform = settings(GAUSSIAN_COPY, unknown_sigma="uniform", sigma_low=5 / 255, sigma_high=30 / 255)
    [manifest] = adapt_and_export([image_file], uniform, AdaptConfig(steps=2, lr=1e-3))
    assert manifest["noise"]["sigma_range"] == [5, 30]  # the levels it drew, from the model


def test_weights_trained_with_a_registered_model_name_it_and_adapt_with_it(tmp_path, tiny_dncnn):
    import dataclasses

    from rfr_deploy.errors import ConfigError
    from rfr_deploy.models.factory import create_model
    from rfr_deploy.models.weights import save_weights
    from rfr_deploy.noise.build import resolve_noise_kind

    model = tiny_dncnn(1)
    save_weights(tmp_path / "w.safetensors", model.net, dataclasses.replace(model.meta, noise=TOY))
    loaded = create_model("dncnn", weights=str(tmp_path / "w.safetensors"))
    assert loaded.meta.noise == TOY and resolve_noise_kind("auto", loaded.meta.noise) == TOY
    assert resolve_noise_kind("auto", "self-supervised") == "gaussian"
    with pytest.raises(ConfigError, match="trained with noise 'pink', which is not registered here"):
        resolve_noise_kind("auto", "pink")  # a plug-in this process has not imported


def test_the_camera_model_takes_levels_in_unit_range_only():
    with pytest.raises(ValueError, match=r"level is in \[0, 1\] units, got 25"):
        build_noise("camera", 25.0, "estimate", [])
    with pytest.raises(ValueError, match="camera noise of level 0 draws no noise"):
        build_noise("camera", 0.0, "estimate", [])  # not CBDNet's random levels
