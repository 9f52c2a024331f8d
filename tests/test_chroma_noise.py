"""Noise as a JPEG with subsampled chroma stores it: the model, the files that call for it, and the job."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image as PILImage

from rfr_deploy.cli import main
from rfr_deploy.images import read_image
from rfr_deploy.jobs.inputs import ImageJob
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import gaussian_level_of, source_level_of
from rfr_deploy.noise.build import build_noise
from rfr_deploy.noise.chroma import TRACE_LEVEL, YCBCR, ChromaSubsampledNoise, find_subsampled_chroma
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.level import CHROMA_DROPPED, JPEG_CHROMA_KEPT, estimate_noise_level, luma_sigma


def noise_statistics(noise: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel RMS, the R–G correlation, and each YCbCr plane's RMS and correlation with its right-hand
    and lower neighbours, of ``noise`` (H×W×3)."""
    flat = noise.reshape(-1, 3)
    ycc = (flat @ np.array(YCBCR).T).reshape(noise.shape)

    def neighbours(axis: int) -> np.ndarray:
        a, b = (ycc[:, :-1], ycc[:, 1:]) if axis == 1 else (ycc[:-1], ycc[1:])
        return np.array([np.corrcoef(a[..., c].ravel(), b[..., c].ravel())[0, 1] for c in range(3)])

    return {
        "rms": flat.std(0),
        "rg": np.corrcoef(flat[:, 0], flat[:, 1])[0, 1],
        "ycc_rms": ycc.reshape(-1, 3).std(0),
        "across": neighbours(1),
        "down": neighbours(0),
    }


@pytest.mark.parametrize("subsampling, factors", [(2, (2, 2)), (1, (1, 2))])
def test_the_noise_has_the_statistics_of_noise_a_jpeg_stored(subsampling, factors):
    """White noise of σ = 10 on flat grey, saved by Pillow at quality 100 and decoded, against the model."""
    size, sigma = 192, 10.0
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(128.0 + rng.normal(0, sigma, (size, size, 3))), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(noisy).save(buffer, "JPEG", quality=100, subsampling=subsampling)
    stored = np.asarray(PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float64) - 128.0
    x = torch.full((1, 3, size, size), 128 / 255)
    model = ChromaSubsampledNoise(GaussianNoise(sigma / 255), factors)
    drawn = ((model(x, torch.Generator().manual_seed(1))[0] - x)[0].permute(1, 2, 0) * 255).double().numpy()
    want, got = noise_statistics(stored), noise_statistics(drawn)
    np.testing.assert_allclose(got["rms"], want["rms"], rtol=0.05)
    np.testing.assert_allclose(got["ycc_rms"], want["ycc_rms"], rtol=0.08)
    assert abs(got["rg"] - want["rg"]) < 0.03 and want["rg"] > 0.3  # white noise would have none
    np.testing.assert_allclose(got["across"], want["across"], atol=0.05)
    np.testing.assert_allclose(got["down"], want["down"], atol=0.05)


def test_the_model_answers_for_the_white_noise_it_filters_but_is_not_white_itself():
    inner = GaussianNoise(0.1)
    model = ChromaSubsampledNoise(inner, (2, 2))
    assert gaussian_level_of(model) is None and source_level_of(model) == gaussian_level_of(inner)
    x = torch.rand(2, 3, 9, 11)  # odd sizes: the last row and column average with themselves
    first, sigma = model(x, torch.Generator().manual_seed(3))
    again, _ = model(x, torch.Generator().manual_seed(3))
    assert (
        first.shape == x.shape and torch.equal(first, again) and torch.allclose(sigma, torch.full((2,), 0.1))
    )
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="factors"):
        ChromaSubsampledNoise(inner, (3, 3))
    # only white Gaussian noise is filtered: other models describe their own processing
    assert isinstance(build_noise("gaussian", 0.1, "estimate", (), chroma=(2, 2)), ChromaSubsampledNoise)
    assert not isinstance(
        build_noise("camera", None, "estimate", (0.1,), chroma=(2, 2)), ChromaSubsampledNoise
    )


def test_a_jpeg_s_chroma_subsampling_is_read_from_its_header(tmp_path):
    pixels = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    for subsampling, factors in ((0, (1, 1)), (1, (1, 2)), (2, (2, 2))):
        PILImage.fromarray(pixels).save(tmp_path / "a.jpg", quality=90, subsampling=subsampling)
        assert read_image(tmp_path / "a.jpg").chroma_subsampling == factors
    PILImage.fromarray(pixels[..., 0]).save(tmp_path / "gray.jpg")
    PILImage.fromarray(pixels).save(tmp_path / "a.png")
    assert read_image(tmp_path / "gray.jpg").chroma_subsampling == (1, 1)
    assert read_image(tmp_path / "a.png").chroma_subsampling is None  # the format does not say
    image = PILImage.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # turned by 90°: 4:2:2's halved columns are rows of the decoded pixels
    image.save(tmp_path / "turned.jpg", exif=exif, subsampling=1)
    turned = read_image(tmp_path / "turned.jpg")
    assert turned.pixels.shape[:2] == (30, 20) and turned.chroma_subsampling == (2, 1)


@pytest.fixture
def jpeg_job(tmp_path):
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "tiny.safetensors", model.net, model.meta)
    rng = np.random.default_rng(1)
    noisy = np.clip(128 + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
    PILImage.fromarray(noisy).save(tmp_path / "a.jpg", quality=90, subsampling=2)
    PILImage.fromarray(noisy).save(tmp_path / "b.png")
    PILImage.open(tmp_path / "a.jpg").save(
        tmp_path / "c.png"
    )  # the JPEG's pixels, in a file that does not say
    return tmp_path


def adapt_json(job, name, *extra, sigma: str | None = "25"):
    """The manifest of adapting ``name`` (``sigma`` None: the level estimated)."""
    args = ["adapt-and-export", str(job / name), "--weights", str(job / "tiny.safetensors")]
    args += ["--sigma", sigma] if sigma else []
    result = CliRunner().invoke(main, [*args, "--steps", "2", "-o", str(job / "out"), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


def test_a_4_2_0_jpeg_adapts_on_noise_with_its_chroma_subsampled(jpeg_job):
    manifest = adapt_json(jpeg_job, "a.jpg")
    assert manifest["noise"]["chroma_subsampled"] == [2, 2] and manifest["noise"]["jpeg_quality"] == 90
    only_chroma = adapt_json(jpeg_job, "a.jpg", "--noise-jpeg", "off")["noise"]
    assert only_chroma["chroma_subsampled"] == [2, 2] and only_chroma["jpeg_quality"] is None
    # with the level estimated, a blind network's white noise is aimed to read it once compressed
    estimated = adapt_json(jpeg_job, "a.jpg", sigma=None)["noise"]
    assert len(estimated["aimed_levels"]) == 1 and estimated["aimed_levels"][0] > 0
    assert "aimed_levels" not in adapt_json(jpeg_job, "a.jpg", "--noise-jpeg", "off", sigma=None)["noise"]
    assert manifest["adaptation"]["interpolation"] == 1.0 and manifest["adaptation"]["selected_by"] is None
    assert adapt_json(jpeg_job, "b.png")["noise"]["chroma_subsampled"] is None
    assert adapt_json(jpeg_job, "a.jpg", "--noise-chroma", "off")["noise"]["chroma_subsampled"] is None


def jpeg_round_trip(pixels: np.ndarray, subsampling: int) -> torch.Tensor:
    """``pixels`` (H×W×3, uint8) through a JPEG of quality 90, decoded, as a 3×H×W tensor."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "JPEG", quality=90, subsampling=subsampling)
    return torch.from_numpy(np.asarray(PILImage.open(buffer).convert("RGB")).copy()).permute(2, 0, 1) / 255


def test_the_pixels_of_a_decoded_jpeg_show_how_its_chroma_was_stored():
    rng = np.random.default_rng(2)
    ramp = np.linspace(40, 200, 64)[None, :, None] * np.array([1.0, 0.8, 0.5])  # smooth colour
    pixels = np.clip(ramp + rng.normal(0, 20, (64, 64, 3)), 0, 255).round().astype(np.uint8)
    sigma = 20 / 255
    white = torch.from_numpy(pixels).permute(2, 0, 1) / 255
    assert find_subsampled_chroma(white, sigma) == (1, 1)
    assert find_subsampled_chroma(jpeg_round_trip(pixels, 0), sigma) == (1, 1)  # 4:4:4
    assert find_subsampled_chroma(jpeg_round_trip(pixels, 1), sigma) == (1, 2)  # 4:2:2
    decoded = jpeg_round_trip(pixels, 2)
    assert find_subsampled_chroma(decoded, sigma) == (2, 2)
    assert find_subsampled_chroma(decoded[:, 1:, 3:], sigma) == (2, 2)  # cropped off the 2×2 grid
    assert find_subsampled_chroma(jpeg_round_trip(pixels, 1).transpose(1, 2), sigma) == (2, 1)
    # nothing is read where the level is unknown or too low for the trace to be the noise's, in gray
    # images, and in images too small
    assert find_subsampled_chroma(decoded, None) == (1, 1)
    assert find_subsampled_chroma(decoded, TRACE_LEVEL * 0.9) == (1, 1)
    assert find_subsampled_chroma(decoded[:1], sigma) == (1, 1)
    assert find_subsampled_chroma(decoded[:, :12, :12], sigma) == (1, 1)


def test_a_png_of_a_4_2_0_jpeg_s_pixels_adapts_on_noise_with_its_chroma_subsampled(jpeg_job):
    manifest = adapt_json(jpeg_job, "c.png")
    assert manifest["noise"]["chroma_subsampled"] == [2, 2]
    assert manifest["noise"]["chroma_read_from"] == "pixels"
    assert adapt_json(jpeg_job, "a.jpg")["noise"]["chroma_read_from"] == "header"
    assert adapt_json(jpeg_job, "c.png", "--noise-chroma", "off")["noise"]["chroma_subsampled"] is None
    # a loss term on the noisy input needs white noise: a file that does not say keeps it, unrefused
    manifest = adapt_json(jpeg_job, "c.png", "--sure-loss", "0.3")
    assert manifest["noise"]["chroma_subsampled"] is None
    dry = CliRunner().invoke(
        main,
        [
            "adapt-and-export",
            str(jpeg_job / "c.png"),
            "--weights",
            str(jpeg_job / "tiny.safetensors"),
            "--sigma",
            "25",
            "--dry-run",
            "--json",
            "-o",
            str(jpeg_job / "dry"),
        ],
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["groups"][0]["noise"] == "gaussian with its chroma subsampled 2×2"


def test_the_level_of_a_jpeg_with_subsampled_chroma_is_the_luma_s(jpeg_job):
    """Its header says the chroma lost its noise: no threshold on the colour estimate decides."""
    x = torch.rand(
        1, 3, 48, 48, generator=torch.Generator().manual_seed(0)
    )  # white noise: colour estimate holds
    told = estimate_noise_level(x, chroma="subsampled")
    assert told.sigma == luma_sigma(x) and told.sigma != estimate_noise_level(x).sigma
    manifest = adapt_json(jpeg_job, "a.jpg", sigma=None)
    pixels = torch.from_numpy(read_image(jpeg_job / "a.jpg").pixels).permute(2, 0, 1)
    assert manifest["noise"]["sigma_estimates"] == [pytest.approx(luma_sigma(pixels) * 255, abs=1e-3)]


def test_a_full_chroma_jpeg_whose_chroma_lost_part_of_its_noise_reads_the_luma_s_level():
    """Chroma noise a quarter of the luma's (as a coarse chroma table leaves it): below JPEG_CHROMA_KEPT but
    above CHROMA_DROPPED, so a file said to be a full-chroma JPEG reads the luma's level, any other the colour one."""
    g = torch.Generator().manual_seed(0)
    ycbcr = torch.randn(3, 48, 48, generator=g) * torch.tensor([0.08, 0.02, 0.02]).view(3, 1, 1)
    to_rgb = torch.tensor([[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
    x = (0.5 + torch.einsum("ij,jhw->ihw", to_rgb, ycbcr))[None]
    colour, luma = estimate_noise_level(x), luma_sigma(x)
    assert CHROMA_DROPPED * luma < colour.sigma < JPEG_CHROMA_KEPT * luma
    assert estimate_noise_level(x, chroma="jpeg").sigma == luma
    white = torch.rand(1, 3, 48, 48, generator=g)  # white noise: its colour estimate holds in a JPEG too
    assert estimate_noise_level(white, chroma="jpeg") == estimate_noise_level(white)


def test_a_job_reads_how_its_file_stored_the_chroma(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    stored = {
        "png": ("PNG", {}),
        "444.jpg": ("JPEG", {"subsampling": 0}),
        "420.jpg": ("JPEG", {"subsampling": 2}),
    }
    for name, (kind, options) in stored.items():
        PILImage.fromarray(pixels).save(tmp_path / f"a.{name}", kind, **options)
    jobs = {name: ImageJob(tmp_path / f"a.{name}").load(torch.device("cpu")) for name in stored}
    assert {name: job.chroma_storage() for name, job in jobs.items()} == {
        "png": "plain",
        "444.jpg": "jpeg",
        "420.jpg": "subsampled",
    }


def test_a_dry_run_names_the_subsampled_noise(jpeg_job):
    args = ["adapt-and-export", str(jpeg_job / "a.jpg"), "--weights", str(jpeg_job / "tiny.safetensors")]
    result = CliRunner().invoke(main, [*args, "--sigma", "25", "--dry-run", "-o", str(jpeg_job / "o")])
    named = "gaussian with its chroma subsampled 2×2 and JPEG-compressed like the file (quality 90) noise"
    assert result.exit_code == 0 and f"{named}: to adapt" in result.stdout
    off = CliRunner().invoke(main, [*args, "--sigma", "25", "--dry-run", "--noise-jpeg", "off", "-o", "o2"])
    assert off.exit_code == 0 and "gaussian with its chroma subsampled 2×2 noise: to adapt" in off.stdout


def test_a_term_on_the_noisy_input_is_refused_for_such_a_jpeg(jpeg_job):
    args = ["adapt-and-export", str(jpeg_job / "a.jpg"), "--weights", str(jpeg_job / "tiny.safetensors")]
    result = CliRunner().invoke(
        main, [*args, "--sigma", "25", "--recorrupted", "0.5", "-o", str(jpeg_job / "o")]
    )
    assert result.exit_code == 2 and "--noise-chroma off" in result.stderr
    assert not (jpeg_job / "o").exists() or not any((jpeg_job / "o").iterdir())
