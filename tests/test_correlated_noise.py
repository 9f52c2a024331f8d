"""Synthetic noise correlated between the channels like a colour image's (:mod:`rfr_deploy.noise.correlated`),
and the jobs that draw it (:mod:`rfr_deploy.jobs.channel_noise`)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image as PILImage

from rfr_deploy.adaptation.channel_choice import SharedNoiseSure, channel_correlation
from rfr_deploy.adaptation.scoring import make_scorer
from rfr_deploy.cli import main
from rfr_deploy.images import read_image
from rfr_deploy.jobs.channel_noise import LEAST_LEVEL
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import QuantizedNoise, gaussian_level_of, source_level_of
from rfr_deploy.noise.build import build_noise
from rfr_deploy.noise.channels import implied_correlation, read_channel_noise
from rfr_deploy.noise.chroma import ChromaSubsampledNoise
from rfr_deploy.noise.correlated import ChannelCorrelatedNoise, channel_correlation_of
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise


def correlations(noise: torch.Tensor) -> list[float]:
    """The correlations of the three pairs of channels of ``noise`` (N×3×H×W)."""
    flat = noise.transpose(0, 1).reshape(3, -1)
    matrix = torch.corrcoef(flat)
    return [float(matrix[i, j]) for i, j in ((0, 1), (0, 2), (1, 2))]


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_each_channel_keeps_its_level_and_the_channels_are_correlated_by_rho(rho):
    x = torch.full((2, 3, 128, 128), 0.5)
    noisy, sigma = ChannelCorrelatedNoise(GaussianNoise(0.1), rho)(x, torch.Generator().manual_seed(0))
    noise = noisy - x
    assert torch.equal(sigma, torch.full((2,), 0.1))
    assert noise.std(dim=(0, 2, 3)).tolist() == pytest.approx([0.1] * 3, rel=0.02)
    assert correlations(noise) == pytest.approx([rho] * 3, abs=0.02)


def test_random_levels_are_kept_per_sample_and_the_draws_follow_the_generator():
    noise = ChannelCorrelatedNoise(UniformSigmaGaussianNoise(0.02, 0.2), 0.7)
    x = torch.zeros(4, 3, 64, 64)
    first, sigma = noise(x, torch.Generator().manual_seed(3))
    again, _ = noise(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert first.std(dim=(1, 2, 3)).tolist() == pytest.approx(sigma.tolist(), rel=0.05)
    other, _ = noise(x, torch.Generator().manual_seed(4))
    assert not torch.equal(first, other)


def test_the_noise_is_not_white_but_keeps_the_wrapped_level():
    quantized = QuantizedNoise(ChannelCorrelatedNoise(GaussianNoise(0.1, estimated=True), 0.4), 8)
    assert gaussian_level_of(quantized) is None  # SURE with white probes does not apply
    level = source_level_of(quantized)
    assert (level.sigma, level.estimated) == (0.1, True)
    assert channel_correlation_of(quantized) == 0.4
    assert channel_correlation_of(GaussianNoise(0.1)) is None


def test_only_white_gaussian_noise_of_full_chroma_is_made_correlated():
    assert isinstance(build_noise("gaussian", 0.1, "estimate", (), correlation=0.5), ChannelCorrelatedNoise)
    assert isinstance(build_noise("gaussian", 0.1, "estimate", ()), GaussianNoise)
    subsampled = build_noise("gaussian", 0.1, "estimate", (), chroma=(2, 2), correlation=0.5)
    assert isinstance(subsampled, ChromaSubsampledNoise) and channel_correlation_of(subsampled) is None
    camera = build_noise("camera", None, "uniform", (0.1,), correlation=0.5)
    assert channel_correlation_of(camera) is None
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ChannelCorrelatedNoise(GaussianNoise(0.1), 1.5)
    with pytest.raises(ValueError, match="white Gaussian"):
        ChannelCorrelatedNoise(camera, 0.5)


def test_correlated_noise_is_scored_with_probes_correlated_alike_at_the_level_drawn():
    y = 0.5 + 0.08 * torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    given = make_scorer(ChannelCorrelatedNoise(GaussianNoise(0.08), 0.6), [y], [y], None, seed=0)
    assert isinstance(given, SharedNoiseSure) and (given.low, given.high) == (0.08, 0.08)
    assert given.criterion == "shared-noise-sure"
    estimated = make_scorer(
        ChannelCorrelatedNoise(GaussianNoise(0.07, estimated=True), 0.6), [y], [y], None, 0
    )
    assert isinstance(estimated, SharedNoiseSure)
    assert 0.07 < estimated.low <= estimated.high < 0.09  # the level each channel of the image holds


def shared_noise_png(path, rho: float, sigma: float = 25.0, seed: int = 0):
    """A smooth 96×96 colour image with noise of ``sigma`` grey levels per channel, correlated by ``rho``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    clean = np.stack([90 + xx, 120 + yy / 2, 150 - xx / 2], axis=2)
    noise = sigma * (
        np.sqrt(rho) * rng.standard_normal((96, 96, 1)) + np.sqrt(1 - rho) * rng.standard_normal((96, 96, 3))
    )
    PILImage.fromarray(np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("correlated")
    for name in ("dncnn", "ffdnet"):
        model = create_model(name, weights=None, channels=3, depth=3, features=8)
        save_weights(folder / f"{name}.safetensors", model.net, model.meta)
    return folder


def adapt_record(folder, image, model: str, *extra: str) -> dict:
    args = [
        "adapt-and-export",
        str(image),
        "--model",
        model,
        "--weights",
        str(folder / f"{model}.safetensors"),
    ]
    out = folder / f"out_{model}_{len(extra)}_{'_'.join(extra).replace('-', '')}"
    result = CliRunner().invoke(main, [*args, "--steps", "2", "-o", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


def test_a_colour_network_on_shared_noise_adapts_on_noise_correlated_alike(tiny_networks):
    image = shared_noise_png(tiny_networks / "shared.png", rho=0.8)
    record = adapt_record(tiny_networks, image, "dncnn")
    noise = record["noise"]
    # drawn at the correlation the chroma share implies, not lowered by the channel choice's bias
    reading = read_channel_noise(torch.from_numpy(read_image(image).pixels).permute(2, 0, 1))
    assert noise["channel_correlation"] == pytest.approx(implied_correlation(reading.share), abs=1e-4)
    assert noise["channel_correlation"] > max(0.6, channel_correlation(reading.share))
    # drawn at the level each channel holds, which the estimate off the colour image reads low
    assert 20 < noise["channel_levels"][0] < 30 and noise["sigma_estimates"][0] < noise["channel_levels"][0]
    assert "told_levels" not in noise  # a blind network
    assert record["adaptation"]["selected_by"] == "shared-noise-sure"
    assert (
        adapt_record(tiny_networks, image, "dncnn", "--noise-channels", "off")["noise"]["channel_correlation"]
        is None
    )
    given = adapt_record(tiny_networks, image, "dncnn", "--sigma", "25")["noise"]
    assert given["channel_correlation"] == noise["channel_correlation"] and "channel_levels" not in given
    # a loss term on the noisy input needs white noise in it, and keeps the synthetic noise white
    kept = adapt_record(tiny_networks, image, "dncnn", "--sigma", "25", "--sure-loss", "0.5")["noise"]
    assert kept["channel_correlation"] is None
    weights = str(tiny_networks / "dncnn.safetensors")
    dry = [
        "adapt-and-export",
        str(image),
        "--weights",
        weights,
        "--dry-run",
        "-o",
        str(tiny_networks / "dry"),
    ]
    planned = CliRunner().invoke(main, dry)
    rho = noise["channel_correlation"]
    assert f"gaussian correlated between the channels (ρ = {rho:.2f}) noise: to adapt" in planned.stdout


def test_white_noise_stays_white_and_a_noise_map_network_is_told_the_channel_level(tiny_networks):
    white = shared_noise_png(tiny_networks / "white.png", rho=0.0)
    assert adapt_record(tiny_networks, white, "dncnn")["noise"]["channel_correlation"] is None
    # shared, but at a level where texture passes for noise in the readings
    faint = shared_noise_png(tiny_networks / "faint.png", rho=0.8, sigma=7.0)
    reading = read_channel_noise(torch.from_numpy(read_image(faint).pixels).permute(2, 0, 1))
    assert reading.shared and 5 / 255 < reading.level < LEAST_LEVEL
    assert adapt_record(tiny_networks, faint, "dncnn")["noise"]["channel_correlation"] is None
    shared = shared_noise_png(tiny_networks / "shared_ffdnet.png", rho=0.8, seed=1)
    noise = adapt_record(tiny_networks, shared, "ffdnet")["noise"]
    assert noise["channel_correlation"] > 0.3
    assert noise["told_levels"] == pytest.approx(noise["channel_levels"], abs=1e-3)
