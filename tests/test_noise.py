import numpy as np
import pytest
import torch

from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
from rfr_deploy.noise.level import estimate_sigma


def test_gaussian_noise_level_and_reproducibility():
    x = torch.zeros(4, 1, 64, 64)
    noise = GaussianNoise(25 / 255)
    a, s = noise(x, torch.Generator().manual_seed(1))
    b, _ = noise(x, torch.Generator().manual_seed(1))
    c, _ = noise(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.std()) * 255 == pytest.approx(25, rel=0.03)
    assert torch.allclose(s, torch.full((4,), 25 / 255))


def test_uniform_sigma_draws_per_sample_levels_in_range():
    x = torch.zeros(256, 1, 16, 16)
    noisy, s = UniformSigmaGaussianNoise(5 / 255, 40 / 255)(x, torch.Generator().manual_seed(0))
    assert float(s.min()) * 255 >= 5 and float(s.max()) * 255 <= 40
    per_sample = noisy.flatten(1).std(dim=1)
    assert torch.corrcoef(torch.stack([per_sample, s]))[0, 1] > 0.95


def test_invalid_levels_are_rejected():
    with pytest.raises(ValueError):
        GaussianNoise(-1)
    with pytest.raises(ValueError):
        UniformSigmaGaussianNoise(30 / 255, 10 / 255)


def test_levels_in_grey_levels_are_refused_with_the_unit():
    # σ is in [0, 1] units: a grey-level value (> 1) is a unit mistake, not a strong noise
    with pytest.raises(ValueError, match=r"\[0, 1\] units.*25 grey levels is 25/255"):
        GaussianNoise(25)
    with pytest.raises(ValueError, match="high is in \\[0, 1\\] units"):
        UniformSigmaGaussianNoise(0, 50)
    assert GaussianNoise(1.0).sigma == 1.0  # the largest level


def test_noise_models_declare_their_gaussian_level():
    from rfr_deploy.noise.base import GaussianLevel, QuantizedNoise, gaussian_level_of
    from rfr_deploy.noise.camera import CameraNoise, CameraResponses

    assert GaussianNoise(0.1).gaussian_level() == GaussianLevel(0.1, 0.1)
    estimated = GaussianNoise(0.1, estimated=True).gaussian_level()
    assert estimated.sigma == 0.1 and estimated.estimated
    uniform = UniformSigmaGaussianNoise(0.0, 0.2).gaussian_level()
    assert (uniform.low, uniform.high, uniform.sigma) == (0.0, 0.2, None)
    assert CameraNoise(CameraResponses.parametric()).gaussian_level() is None
    # the quantising wrapper answers for the model it wraps
    assert QuantizedNoise(GaussianNoise(0.1, estimated=True)).gaussian_level() == estimated
    assert QuantizedNoise(CameraNoise(CameraResponses.parametric())).gaussian_level() is None
    # a module that does not declare a level is not taken for Gaussian noise
    assert gaussian_level_of(torch.nn.Identity()) is None


def test_grey_level_conversions_read_back_as_typed():
    from rfr_deploy.units import grey_levels, sigma_from_grey

    for typed in (25.0, 7.97, 63.85, 0.0, 50.0, 12.5):
        assert grey_levels(sigma_from_grey(typed)) == typed
    assert sigma_from_grey(25) == 25 / 255


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_estimate_sigma_on_a_structured_image(sigma):
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    clean = (0.5 + 0.3 * torch.sin(x / 7) * torch.cos(y / 11)).expand(1, 3, 128, 128)
    noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert estimate_sigma(noisy) == pytest.approx(sigma / 255, rel=0.1)


def test_estimate_sigma_on_real_images(shared):
    from rfr_deploy.datasets import load_folder
    from rfr_deploy.inference import to_tensor

    for item in load_folder(shared("data", "test", "Set12"), limit=4):
        clean = to_tensor(item.pixels)
        noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        assert estimate_sigma(noisy) == pytest.approx(25 / 255, abs=2.5 / 255), item.name


def test_quantized_noise_looks_like_an_integer_file():
    from rfr_deploy.noise.base import QuantizedNoise

    x = torch.linspace(0, 1, 64).expand(2, 1, 64, 64)
    noisy, s = QuantizedNoise(GaussianNoise(25 / 255), bit_depth=8)(x, torch.Generator().manual_seed(0))
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0
    assert torch.allclose(noisy * 255, torch.round(noisy * 255), atol=1e-4)
    assert torch.allclose(s, torch.full((2,), 25 / 255))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quantized_noise_at_16_bits_keeps_a_half_precision_batch_finite(dtype):
    from rfr_deploy.noise.base import QuantizedNoise

    x = torch.full((1, 1, 8, 8), 0.99, dtype=dtype)
    noisy, _ = QuantizedNoise(GaussianNoise(0.05), bit_depth=16)(x, torch.Generator().manual_seed(0))
    assert noisy.dtype == dtype and torch.isfinite(noisy).all() and float(noisy.max()) == 1.0


@pytest.mark.parametrize("sigma", [5, 25])
def test_estimate_sigma_ignores_natural_texture(shared, sigma):
    # on textured photographs the all-patch covariance reads texture as noise (BSD68 at σ = 5:
    # up to 14 on 256² crops); the weak-texture patches do not
    from rfr_deploy.datasets import load_folder
    from rfr_deploy.inference import to_tensor
    from rfr_deploy.jobs.evaluate import center_crop

    g = torch.Generator().manual_seed(0)
    plain, weak = [], []
    for item in load_folder(shared("data", "test", "BSD68"), limit=8):
        clean = to_tensor(center_crop(item.pixels, 128))
        noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=g)
        plain.append(estimate_sigma(noisy, iterations=0))
        weak.append(estimate_sigma(noisy))
    mean = sum(weak) / len(weak)
    assert mean == pytest.approx(sigma / 255, rel=0.15)
    assert abs(mean - sigma / 255) < 0.5 * abs(sum(plain) / len(plain) - sigma / 255)


def test_estimate_sigma_leaves_out_clipped_regions():
    # half the image sits at black: clipping there thins the noise, which must not pull the estimate down
    g = torch.Generator().manual_seed(2)
    clean = torch.full((1, 1, 128, 128), 0.5)
    clean[..., :64, :] = 0.0
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    noisy = torch.round(noisy * 255) / 255
    assert estimate_sigma(noisy) == pytest.approx(25 / 255, rel=0.05)
    assert estimate_sigma(noisy, iterations=0) < 22 / 255


def test_estimate_on_the_denoisers_flattest_patches_sees_past_faint_texture():
    # faint fine texture (half σ) everywhere but a third of the image: every patch of the noisy image
    # looks like noise a little stronger than σ, so the weak-texture estimate reads high; the denoised
    # image (here the clean one) shows where it is flat
    from rfr_deploy.noise.level import estimate_sigma_on_flat

    g = torch.Generator().manual_seed(4)
    sigma = 25 / 255
    clean = 0.5 + 0.5 * sigma * torch.randn(1, 1, 192, 192, generator=g)
    clean[..., :, :64] = 0.5
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    weak = estimate_sigma(noisy)
    flat = estimate_sigma_on_flat(noisy, clean)
    assert weak > 1.05 * sigma
    assert flat == pytest.approx(sigma, rel=0.03)
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_sigma_on_flat(noisy, clean[..., :64])


def test_noise_level_range_narrow_when_estimators_agree():
    from rfr_deploy.noise.level import AGREED_RANGE, DISAGREED_RANGE, estimate_noise_level, estimate_sigma

    g = torch.Generator().manual_seed(3)
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    smooth = (0.5 + 0.3 * torch.sin(x / 9) * torch.cos(y / 13)).expand(1, 1, 128, 128)
    flat = torch.full((1, 3, 128, 128), 0.5)
    level = estimate_noise_level(flat + 25 / 255 * torch.randn(flat.shape, generator=g))
    assert level.sigma == pytest.approx(25 / 255, rel=0.03)
    assert (level.low, level.high) == pytest.approx(tuple(level.sigma * r for r in AGREED_RANGE))
    assert level.precise
    # fine random texture inflates the all-patch estimate: the estimators disagree, the range widens
    smooth = smooth.expand(1, 3, 128, 128)
    texture = smooth + 0.2 * torch.randn(smooth.shape, generator=g)
    texture[..., 64:, :] = smooth[..., 64:, :]
    level = estimate_noise_level(texture + 25 / 255 * torch.randn(smooth.shape, generator=g))
    assert (level.low, level.high) == pytest.approx(tuple(level.sigma * r for r in DISAGREED_RANGE))
    assert level.low < 25 / 255 < level.high and not level.precise
    # gray: the all-patch value and the range below it; told to a noise-map network, the weak-texture one
    noisy_gray = texture[:, :1] + 25 / 255 * torch.randn(1, 1, 128, 128, generator=g)
    gray = estimate_noise_level(noisy_gray)
    assert (gray.low, gray.high) == pytest.approx((0.9 * gray.sigma, gray.sigma)) and not gray.precise
    mapped = estimate_noise_level(noisy_gray, noise_map=True)
    assert mapped.sigma == estimate_sigma(noisy_gray) and not mapped.precise
    assert (mapped.low, mapped.high) == pytest.approx(tuple(mapped.sigma * r for r in DISAGREED_RANGE))
    assert abs(mapped.sigma - 25 / 255) < abs(gray.sigma - 25 / 255)  # texture inflates the all-patch value


def test_auto_noise_follows_the_training_noise_and_explicit_choices_win():
    from rfr_deploy.noise.build import build_noise, resolve_noise_kind

    assert resolve_noise_kind("auto", "camera") == "camera"
    assert resolve_noise_kind("auto", "gaussian") == "gaussian"
    assert resolve_noise_kind("auto", "self-supervised") == "gaussian"
    assert resolve_noise_kind("gaussian", "camera") == "gaussian"
    assert resolve_noise_kind("camera", "gaussian") == "camera"
    with pytest.raises(ValueError, match="resolved noise kind"):
        build_noise("auto", 25 / 255, "estimate", [25 / 255])


def _noisy_colour(sigma: float, size: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    clean = np.stack([0.3 + 0.4 * x, 0.5 + 0.2 * np.sin(6 * y), 0.7 - 0.4 * x * y], axis=2)
    noise = np.random.default_rng(0).standard_normal(clean.shape) * sigma / 255
    return np.clip(np.round((clean + noise) * 255), 0, 255).astype(np.uint8)


def test_a_4_2_0_jpeg_reads_its_noise_from_the_luma():
    """Chroma subsampling leaves half a colour patch's dimensions without noise: the colour estimate
    read σ = 25 as about 1, and a noise-map network was told so."""
    import io

    from PIL import Image

    from rfr_deploy.noise.level import estimate_noise_level

    buffer = io.BytesIO()
    Image.fromarray(_noisy_colour(25)).save(buffer, "JPEG", quality=90, subsampling=2)
    jpeg = torch.from_numpy(np.asarray(Image.open(buffer)).copy()).permute(2, 0, 1).float() / 255
    level = estimate_noise_level(jpeg)
    assert 255 * level.sigma == pytest.approx(25, rel=0.15) and not level.precise
    png = torch.from_numpy(_noisy_colour(25)).permute(2, 0, 1).float() / 255  # white noise: as before
    assert 255 * estimate_noise_level(png).sigma == pytest.approx(25, rel=0.05)


def test_a_grey_image_stored_as_rgb_reads_as_grey():
    from rfr_deploy.noise.level import estimate_noise_level

    grey = torch.from_numpy(_noisy_colour(25)[:, :, :1]).permute(2, 0, 1).float() / 255
    assert estimate_noise_level(grey.expand(3, -1, -1)) == estimate_noise_level(grey)
