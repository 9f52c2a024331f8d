"""Noise compressed as the input JPEG was: the file's tables, the model, and where jobs use it."""

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
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import gaussian_level_of, source_level_of
from rfr_deploy.noise.build import build_noise
from rfr_deploy.noise.chroma import ChromaSubsampledNoise
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.isp import quantization_tables
from rfr_deploy.noise.jpeg import TOLD_FLOOR, JpegStoredNoise, JpegTables, aim_white_level, told_level
from rfr_deploy.noise.level import luma_sigma


def decoded(pixels: np.ndarray, quality: int, subsampling: int = 2) -> tuple[np.ndarray, JpegTables]:
    """``pixels`` (uint8) through Pillow's JPEG, and the tables the file holds."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    with PILImage.open(buffer) as im:
        tables = JpegTables(*(tuple(im.quantization[k]) for k in sorted(im.quantization)))
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255, tables


def test_the_tables_are_read_from_the_header_and_name_their_quality(tmp_path):
    pixels = (np.random.default_rng(0).random((24, 40, 3)) * 255).astype(np.uint8)
    for quality in (50, 75, 90):
        PILImage.fromarray(pixels).save(tmp_path / "a.jpg", quality=quality)
        image = read_image(tmp_path / "a.jpg")
        assert len(image.jpeg_tables) == 2 and JpegTables(*image.jpeg_tables).quality() == quality
    PILImage.fromarray(pixels[..., 0]).save(tmp_path / "gray.jpg", quality=75)
    assert JpegTables(*read_image(tmp_path / "gray.jpg").jpeg_tables).quality() == 75
    PILImage.fromarray(pixels).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").jpeg_tables is None
    custom = list(read_image(tmp_path / "a.jpg").jpeg_tables[0])
    custom[5] += 1
    assert JpegTables(tuple(custom)).quality() is None  # a camera's own tables
    with pytest.raises(ValueError, match="64 steps"):
        JpegTables((1,) * 63)


def test_a_turned_file_s_tables_are_transposed_with_its_pixels(tmp_path):
    pixels = (np.random.default_rng(1).random((16, 24, 3)) * 255).astype(np.uint8)
    image = PILImage.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # turned by 90°: the blocks' rows are the pixels' columns
    image.save(tmp_path / "turned.jpg", exif=exif, quality=75)
    image.save(tmp_path / "upright.jpg", quality=75)
    upright = np.array(read_image(tmp_path / "upright.jpg").jpeg_tables[0]).reshape(8, 8)
    turned = np.array(read_image(tmp_path / "turned.jpg").jpeg_tables[0]).reshape(8, 8)
    assert (turned == upright.T).all() and not (turned == upright).all()


def test_the_noise_is_compressed_as_pillow_compresses_it():
    """White noise on a flat grey image, compressed by the model and by Pillow at quality 75: the noise
    left in each YCbCr plane agrees within 10 %; compression took some of the luma's, most of the chroma's."""
    rng = np.random.default_rng(2)
    clean = np.full((96, 96, 3), 0.5, dtype=np.float32)
    noisy = np.clip(np.round((clean + rng.normal(0, 15 / 255, clean.shape)) * 255), 0, 255).astype(np.uint8)
    reference, tables = decoded(noisy, 75)
    inner = GaussianNoise(15 / 255)
    model = JpegStoredNoise(inner, tables, (2, 2))
    x = torch.from_numpy(clean).permute(2, 0, 1)[None]
    out, sigma = model(x, torch.Generator().manual_seed(0))
    ycc = torch.tensor([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]])

    def plane_rms(img: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,jhw->ihw", ycc, img - 0.5).pow(2).mean(dim=(1, 2)).sqrt()

    ours, pillows = plane_rms(out[0]), plane_rms(torch.from_numpy(reference).permute(2, 0, 1))
    assert torch.allclose(ours, pillows, rtol=0.1), (ours, pillows)
    white = plane_rms(inner(x, torch.Generator().manual_seed(0))[0][0])
    assert white[0] > ours[0] and (white[1:] > 3 * ours[1:]).all()  # some of the luma's, most of the chroma's
    assert float(sigma[0]) == pytest.approx(15 / 255)


def test_the_model_reports_the_white_noise_s_level_and_wraps_only_white_noise():
    tables = JpegTables(tuple(range(1, 65)), tuple(range(1, 65)))
    model = JpegStoredNoise(GaussianNoise(0.1), tables, (2, 2))
    assert gaussian_level_of(model) is None and source_level_of(model).sigma == pytest.approx(0.1)
    assert "quality=custom" in repr(model)
    with pytest.raises(ValueError, match="gray JPEG"):
        JpegStoredNoise(GaussianNoise(0.1), JpegTables(tables.luma), (1, 1))(torch.rand(1, 3, 8, 8))
    for chroma in ((2, 2), (1, 1)):  # subsampled chroma, or full chroma (and gray files)
        built = build_noise("gaussian", 0.1, "estimate", (), chroma=chroma, jpeg=tables)
        assert isinstance(built, JpegStoredNoise) and built.factors == chroma
    assert isinstance(build_noise("gaussian", 0.1, "estimate", (), chroma=(2, 2)), ChromaSubsampledNoise)
    assert isinstance(build_noise("gaussian", 0.1, "estimate", ()), GaussianNoise)
    # never for camera noise, which describes its own processing
    camera = build_noise("camera", None, "estimate", (0.1,), chroma=(2, 2), jpeg=tables)
    assert not isinstance(camera, JpegStoredNoise | ChromaSubsampledNoise)


def test_the_white_level_is_aimed_so_that_the_compressed_noise_reads_the_file_s_level():
    """Quality 75 takes part of the noise: the white level whose compressed noise (the same draw, as the
    aim reads it) reads 6 grey levels (on top of the target's own) is higher than 6. The level read can
    jump as the estimator's patches change, so the aim is where it crosses: below it reads less, above
    it at least that."""
    _, tables = decoded(np.full((16, 16, 3), 128, dtype=np.uint8), 75)
    model = JpegStoredNoise(GaussianNoise(0.1), tables, (2, 2))
    rows, cols = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    target = (0.5 + 0.2 * torch.sin(rows / 7) * torch.cos(cols / 5)).expand(1, 3, 96, 96).clone()
    target[:, 0] *= 0.9  # some colour
    aimed = aim_white_level(model, target, 6 / 255, torch.Generator().manual_seed(0))
    draw = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))

    def read(white: float) -> float:
        return luma_sigma(model.compress(target + white * draw))

    wanted = ((6 / 255) ** 2 + read(0.0) ** 2) ** 0.5  # on top of what the target reads alone
    assert aimed > 6.5 / 255
    assert read(aimed / 1.02) < wanted <= read(aimed * 1.02)


def test_the_white_level_is_never_aimed_below_the_file_s():
    """Compression takes noise away: where the compressed noise reads higher than the file's level (here a
    stand-in compression that makes it 1.5 times louder), that is the estimator's error, and the level stays."""
    model = JpegStoredNoise(GaussianNoise(0.1), JpegTables((1,) * 64), (1, 1))
    model.compress = lambda noisy: 0.3 + 1.5 * (noisy - 0.3)
    aimed = aim_white_level(model, torch.full((1, 1, 96, 96), 0.3), 9 / 255, torch.Generator().manual_seed(0))
    assert aimed == pytest.approx(9 / 255, rel=1e-9)


@pytest.fixture
def plain_jpegs(tmp_path):
    """A colour JPEG of full chroma and a gray JPEG at quality 75, and tiny networks for each."""
    noisy = np.clip(128 + np.random.default_rng(3).normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
    PILImage.fromarray(noisy).save(tmp_path / "full.jpg", quality=75, subsampling=0)
    PILImage.fromarray(noisy[..., 0]).save(tmp_path / "gray.jpg", quality=75)
    for channels in (1, 3):
        model = create_model("dncnn", weights=None, channels=channels, depth=3, features=8)
        save_weights(tmp_path / f"tiny{channels}.safetensors", model.net, model.meta)
    return tmp_path


@pytest.mark.parametrize("name, channels", [("full.jpg", 3), ("gray.jpg", 1)])
def test_full_chroma_and_gray_jpegs_adapt_on_noise_compressed_like_them(plain_jpegs, name, channels):
    def noise(*extra: str) -> dict:
        args = [
            "adapt-and-export",
            str(plain_jpegs / name),
            "--weights",
            str(plain_jpegs / f"tiny{channels}.safetensors"),
        ]
        result = CliRunner().invoke(
            main, [*args, "--steps", "2", "-o", str(plain_jpegs / "out"), "--json", *extra]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]["noise"]

    told = noise("--sigma", "25")
    assert told["jpeg_quality"] == 75 and told["chroma_subsampled"] is None
    estimated = noise()  # a blind network: the white level aimed so that, compressed, it reads the file's
    assert estimated["jpeg_quality"] == 75 and estimated["aimed_levels"][0] > 0
    assert noise("--sigma", "25", "--noise-jpeg", "off")["jpeg_quality"] is None
    # a loss term on the noisy input needs white noise in it, and keeps the synthetic noise white
    assert noise("--sigma", "25", "--sure-loss", "0.5")["jpeg_quality"] is None
    dry = CliRunner().invoke(
        main,
        [
            "adapt-and-export",
            str(plain_jpegs / name),
            "--weights",
            str(plain_jpegs / f"tiny{channels}.safetensors"),
            "--sigma",
            "25",
            "--dry-run",
            "-o",
            str(plain_jpegs / "o"),
        ],
    )
    assert "gaussian JPEG-compressed like the file (quality 75) noise: to adapt" in dry.stdout


def test_denoise_tells_a_noise_map_network_the_aimed_level_of_a_jpeg(tmp_path):
    """Without adaptation too: a first pass at the estimate, the level aimed on it, a second pass at that."""
    noisy = np.clip(128 + np.random.default_rng(4).normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    PILImage.fromarray(noisy).save(tmp_path / "a.jpg", quality=75, subsampling=2)
    model = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "tiny.safetensors", model.net, model.meta)
    records = {}
    for mode in ("auto", "off"):
        args = ["denoise", str(tmp_path / "a.jpg"), "--weights", str(tmp_path / "tiny.safetensors")]
        out = tmp_path / mode
        result = CliRunner().invoke(main, [*args, "--noise-jpeg", mode, "-o", str(out), "--json"])
        assert result.exit_code == 0, result.output
        records[mode] = json.loads(result.stdout)[0]
    assert records["auto"]["sigma_told"] > records["auto"]["sigma_estimate"] > 0
    assert (
        records["off"]["sigma_told"] == records["off"]["sigma_estimate"] == records["auto"]["sigma_estimate"]
    )
    pixels = torch.from_numpy(read_image(tmp_path / "a.jpg").pixels).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = model.eval()(pixels, torch.tensor([records["auto"]["sigma_told"] / 255])).clamp(0, 1)
    got = torch.from_numpy(read_image(tmp_path / "auto" / "a_denoised.png").pixels).permute(2, 0, 1)[None]
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-3  # the output of the second pass, in 8 bits


def test_denoise_tells_at_least_the_floor_where_the_compression_took_the_noise(tmp_path):
    """A nearly clean, smooth quality-50 JPEG reads a level near 0: the network is told half the step level
    of its luma table instead (the blocking is the error left)."""
    y, x = np.mgrid[0:48, 0:48]
    smooth = 128 + 40 * np.sin(x / 7.0) * np.cos(y / 9.0) + np.random.default_rng(4).normal(0, 1, (48, 48))
    pixels = np.repeat(np.clip(smooth, 0, 255)[..., None], 3, axis=2) * np.array([1.0, 0.8, 0.6])
    PILImage.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.jpg", quality=50, subsampling=2)
    model = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "tiny.safetensors", model.net, model.meta)
    args = ["denoise", str(tmp_path / "a.jpg"), "--weights", str(tmp_path / "tiny.safetensors")]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["sigma_estimate"] < TOLD_FLOOR * 19.37 - 1
    assert record["sigma_told"] == pytest.approx(TOLD_FLOOR * 19.37, abs=0.01)


def test_a_noise_map_network_is_told_the_aimed_level_in_training_and_when_it_denoises(tmp_path):
    """FFDNet on a 4:2:0 JPEG at an estimated level: the white level drawn is aimed (above the estimate),
    and the network is told it, in training (the noise's second output) and in its export and output."""
    noisy = np.clip(128 + np.random.default_rng(4).normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    PILImage.fromarray(noisy).save(tmp_path / "a.jpg", quality=75, subsampling=2)
    model = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "tiny.safetensors", model.net, model.meta)
    args = ["adapt-and-export", str(tmp_path / "a.jpg"), "--weights", str(tmp_path / "tiny.safetensors")]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*args, "--steps", "2", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    noise = json.loads(result.stdout)[0]["noise"]
    assert noise["jpeg_quality"] == 75 and noise["aimed_levels"][0] > noise["sigma_estimates"][0] > 0
    floor = TOLD_FLOOR * 9.75  # half the step level of quality 75's luma table, in grey levels
    assert noise["told_levels"] == pytest.approx([max(v, floor) for v in noise["aimed_levels"]], abs=0.01)
    # exported again from that adaptation: with the level it was told, read back from its manifest
    export = [*args, "--steps", "2", "-o", str(out), "--format", "torchscript", "--json"]
    result = CliRunner().invoke(main, export)
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["status"] == "exported", result.output
    files = {"rfr_deploy.txt": ""}
    torch.jit.load(str(out / "a_rfr.pt"), _extra_files=files)
    exported = dict(line.split("=", 1) for line in files["rfr_deploy.txt"].decode().splitlines())
    assert float(exported["sigma"]) * 255 == pytest.approx(noise["told_levels"][0], abs=1e-3)
    stored = JpegStoredNoise(GaussianNoise(0.1), JpegTables((1,) * 64, (1,) * 64), (2, 2))
    x = torch.full((2, 3, 16, 16), 0.5)
    assert torch.equal(stored(x, torch.Generator().manual_seed(0))[1], torch.full((2,), 0.1))


@pytest.mark.parametrize(("quality", "level"), [(50, 19.37), (75, 9.75), (90, 3.87)])
def test_a_table_s_step_level_is_the_rms_error_of_its_quantizer(quality, level):
    luma, chroma = (
        tuple(int(v) for v in t.flatten()) for t in quantization_tables(torch.tensor([float(quality)]))
    )
    assert JpegTables(luma, chroma).step_level() * 255 == pytest.approx(level, abs=0.005)
    assert JpegTables((12,) * 64).step_level() * 255 == pytest.approx(12 / 12**0.5)


def test_a_noise_map_network_is_told_at_least_the_floor_where_the_compression_took_the_noise():
    tables = JpegTables((16,) * 64)  # step level 16/√12 = 4.62 grey levels
    assert told_level(0.001, tables) == pytest.approx(TOLD_FLOOR * 16 / 12**0.5 / 255)
    assert told_level(0.2, tables) == 0.2  # above the floor: the aimed level
