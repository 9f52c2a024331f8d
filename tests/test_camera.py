"""The in-camera noise model (CBDNet) and its ISP operators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.camera import ENV_VAR, CameraNoise, CameraParams, CameraResponses
from rfr_deploy.noise.isp import BAYER_PATTERNS, bayer_sites, demosaic, jpeg_round_trip, mosaic

GAMMA = CameraResponses(np.linspace(0, 1, 256)[None] ** (1 / 2.2), source="gamma 2.2")


def _image(n=2, c=3, h=24, w=20):
    y, x = torch.meshgrid(torch.linspace(0.05, 0.95, h), torch.linspace(0.05, 0.95, w), indexing="ij")
    base = torch.stack([x, 0.5 * (x + y), y][:c])
    return base.expand(n, c, h, w).contiguous()


def _fixed(noise: CameraNoise, x: torch.Tensor, sigma_s: float, sigma_c: float, mosaic_on: bool = False):
    n, c = x.shape[:2]
    return CameraParams(
        curve=torch.zeros(n, dtype=torch.long),
        sigma_s=torch.full((n, c, 1, 1), sigma_s),
        sigma_c=torch.full((n, c, 1, 1), sigma_c),
        pattern=torch.zeros(n, dtype=torch.long),
        mosaic=torch.full((n, 1, 1, 1), mosaic_on),
        quality=None,
    )


def test_same_generator_seed_same_noise_and_independent_of_global_rng():
    noise = CameraNoise(CameraResponses.parametric())
    x = _image()
    a = noise(x, torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    b = noise(x, torch.Generator().manual_seed(5))
    c = noise(x, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sigma_is_the_rms_of_the_added_noise_and_map_matches_monte_carlo():
    noise = CameraNoise(GAMMA)
    x = _image(n=1)
    noisy, sigma = noise(x, torch.Generator().manual_seed(0))
    assert sigma.shape == (1,)
    assert torch.allclose(sigma, (noisy - x).square().mean().sqrt(), rtol=1e-5)

    copies = x.expand(256, -1, -1, -1)
    params = _fixed(noise, copies, sigma_s=0.08, sigma_c=0.02, mosaic_on=True)
    noisy, _, sigma_map = noise.apply(copies, params, torch.Generator().manual_seed(1), with_map=True)
    empirical = (noisy - copies).std(dim=0)
    predicted = sigma_map[0]
    assert predicted.shape == x.shape[1:]
    relative = ((predicted - empirical).abs() / empirical).median()
    assert relative < 0.15, float(relative)


def test_noise_grows_with_the_signal():
    noise = CameraNoise(GAMMA, mosaic_probability=0.0)
    levels = torch.tensor([0.15, 0.4, 0.8]).view(3, 1, 1, 1).expand(3, 3, 32, 32).contiguous()
    params = _fixed(noise, levels, sigma_s=0.1, sigma_c=0.0)
    noisy, _, _ = noise.apply(levels, params, torch.Generator().manual_seed(0))
    std = (noisy - levels).flatten(1).std(dim=1)
    assert std[0] < std[1] < std[2]
    # Read noise alone (σ_s = 0) is compressed by the response curve in bright areas instead.
    params = _fixed(noise, levels, sigma_s=0.0, sigma_c=0.02)
    noisy, _, _ = noise.apply(levels, params, torch.Generator().manual_seed(0))
    std = (noisy - levels).flatten(1).std(dim=1)
    assert std[0] > std[2]


@pytest.mark.parametrize("jpeg", [None, (60.0, 90.0)])
def test_zero_noise_leaves_the_image_untouched(jpeg):
    noise = CameraNoise(CameraResponses.parametric(), sigma_s=(0, 0), sigma_c=(0, 0), jpeg_quality=jpeg)
    x = _image()
    noisy, sigma = noise(x, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, x)
    assert torch.all(sigma == 0)


def test_jpeg_compression_changes_the_noise():
    x = _image(n=1, h=32, w=32)
    plain = CameraNoise(GAMMA)(x, torch.Generator().manual_seed(0))[0]
    compressed = CameraNoise(GAMMA, jpeg_quality=(30, 30))(x, torch.Generator().manual_seed(0))[0]
    assert not torch.allclose(plain, compressed)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtype_shape_and_grey_images(dtype):
    noise = CameraNoise(CameraResponses.parametric())
    x = _image(n=3, c=1, h=17, w=13).to(dtype)
    noisy, sigma = noise(x, torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape and noisy.dtype == dtype and sigma.dtype == dtype
    assert torch.isfinite(noisy).all() and (sigma > 0).all()
    sample = noise.sample(x, torch.Generator().manual_seed(0))
    assert torch.equal(sample.noisy, noisy) and sample.sigma_map.shape == x.shape


def test_rejects_unsupported_inputs_and_settings():
    noise = CameraNoise(CameraResponses.parametric())
    with pytest.raises(ValueError, match="1 or 3 channels"):
        noise(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="sigma_s"):
        CameraNoise(CameraResponses.parametric(), sigma_s=(0.2, 0.1))
    with pytest.raises(ValueError, match="jpeg_quality"):
        CameraNoise(CameraResponses.parametric(), jpeg_quality=(0, 50))
    with pytest.raises(ConfigError, match="monotonically"):
        CameraResponses(np.linspace(1, 0, 16)[None])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_without_host_synchronisation():
    noise = CameraNoise(CameraResponses.parametric(), jpeg_quality=(60, 100)).cuda()
    x = _image().cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    noise(x, generator)  # warm-up (lazy initialisation may synchronise)
    torch.cuda.set_sync_debug_mode("error")
    try:
        noisy, sigma = noise(x, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert noisy.device.type == "cuda" and sigma.device.type == "cuda"


def test_default_responses_without_data_are_the_parametric_family(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    responses = CameraNoise().responses
    assert len(responses) == 48 and "parametric" in responses.source
    monkeypatch.setenv(ENV_VAR, "/nonexistent/crf")
    with pytest.raises(ConfigError, match="not found"):
        CameraNoise()


def test_measured_curves_are_monotone_and_invertible(shared, monkeypatch):
    folder = shared("data", "noise", "CBDNet_CRF")
    monkeypatch.setenv(ENV_VAR, str(folder))
    responses = CameraNoise().responses
    assert len(responses) == 201
    f, inv = responses.forward.double(), responses.inverse.double()
    assert torch.all(f[:, 1:] >= f[:, :-1]) and torch.all(inv[:, 1:] >= inv[:, :-1])
    assert torch.allclose(f[:, [0, -1]], torch.tensor([0.0, 1.0], dtype=torch.float64))
    grid = torch.linspace(0, 1, 1024, dtype=torch.float64)
    # CRF(CRF⁻¹(y)) = y up to the interpolation of the tables.
    n = f.shape[1] - 1
    for k in range(0, 201, 20):
        irradiance = np.interp(grid.numpy(), np.linspace(0, 1, n + 1), inv[k].numpy())
        back = np.interp(irradiance, np.linspace(0, 1, n + 1), f[k].numpy())
        assert np.abs(back - grid.numpy()).max() < 2e-3
    published = CameraResponses.from_mat(folder, inverse="published")
    assert (published.inverse.double() - inv).abs().median() < 2e-3


@pytest.mark.parametrize("pattern", range(len(BAYER_PATTERNS)))
def test_demosaicing_reproduces_flat_colours_and_mosaic_picks_the_filter_colour(pattern):
    colour = torch.tensor([0.7, 0.4, 0.2]).view(1, 3, 1, 1).expand(1, 3, 12, 10)
    sites = bayer_sites(torch.tensor([pattern]), 12, 10)
    raw = mosaic(colour, sites)
    first = BAYER_PATTERNS[pattern][0]
    assert raw[0, 0, 0, 0] == colour[0, "RGB".index(first), 0, 0]
    assert torch.allclose(demosaic(raw, sites), colour, atol=1e-6)


def test_jpeg_round_trip_quality_controls_the_error():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 18)
    high = jpeg_round_trip(x, torch.tensor([100.0, 100.0]))
    low = jpeg_round_trip(x, torch.tensor([10.0, 10.0]))
    assert high.shape == x.shape
    assert torch.equal(high, torch.round(high * 255) / 255)  # 8-bit output
    assert (high - x).abs().mean() < (low - x).abs().mean()
    grey = jpeg_round_trip(x[:, :1], torch.tensor([100.0, 100.0]))
    assert (grey - x[:, :1]).abs().max() < 3 / 255


def test_jpeg_round_trip_is_close_to_libjpeg(rng):
    import io

    from PIL import Image

    y, x = np.mgrid[0:48, 0:40].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / 5), 0.5 + 0.3 * np.cos(y / 7), (x + y) / 88], axis=2)
    img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
    img = (np.round(img * 255) / 255).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buffer, "JPEG", quality=50)
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
    ours = jpeg_round_trip(torch.from_numpy(img).permute(2, 0, 1)[None], torch.tensor([50.0]))
    ours = ours[0].permute(1, 2, 0).numpy()

    def rms(a, b):
        return float(np.sqrt(np.mean((a - b) ** 2)) * 255)

    assert abs(rms(ours, img) - rms(reference, img)) < 0.15 * rms(reference, img)
    assert rms(ours, reference) < 4.0


@pytest.mark.parametrize("level", [2.0, 8.0, 20.0])
def test_level_scales_each_random_camera_to_the_requested_rms(level):
    x = _image(n=4, h=48, w=40)
    noise = CameraNoise(CameraResponses.parametric(), level=level / 255)
    noisy, sigma = noise(x, torch.Generator().manual_seed(1))
    rms = (noisy - x).square().flatten(1).mean(1).sqrt() * 255
    assert torch.allclose(rms, sigma * 255)
    assert ((rms / level) - 1).abs().max() < 0.15, rms
    assert "level=" in repr(noise)
    with pytest.raises(ValueError, match="level must be positive"):
        CameraNoise(GAMMA, level=0.0)


def test_a_camera_aimed_at_a_level_develops_the_clean_image_once_per_draw(monkeypatch):
    """The trial draw that scales the noise and the draw returned share the clean image's development
    (response curve, demosaicing, JPEG): it does not depend on the noise levels."""
    noise = CameraNoise(level=0.05, jpeg_quality=(70, 90))
    developed = []
    real = CameraNoise._develop
    monkeypatch.setattr(CameraNoise, "_develop", lambda self, *a: developed.append(1) or real(self, *a))
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    noisy, sigma = noise(x, torch.Generator().manual_seed(1))
    assert len(developed) == 1 and sigma == pytest.approx([0.05, 0.05], rel=0.1)
    sample = noise.sample(x, torch.Generator().manual_seed(1))
    assert len(developed) == 2 and torch.equal(sample.noisy, noisy) and torch.equal(sample.sigma, sigma)


def test_build_noise_aims_the_camera_at_the_known_or_estimated_level():
    from rfr_deploy.noise.build import build_noise

    assert build_noise("camera", 10 / 255, "estimate", [3 / 255]).level == pytest.approx(10 / 255)
    assert build_noise("camera", None, "estimate", [3 / 255, 5 / 255, 4 / 255]).level == pytest.approx(
        4 / 255
    )
    assert build_noise("camera", None, "uniform", [4 / 255]).level is None  # CBDNet's random levels
