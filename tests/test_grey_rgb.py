"""A grey image stored as RGB (three equal channels) is denoised as the gray image it is where the network
has gray weights, and written as RGB again: a colour network leaves most of its noise."""

import json

import numpy as np
import pytest
from cli_helpers import run
from PIL import Image as PILImage

from rfr_deploy.images import quantize, read_image, write_image


@pytest.fixture
def grey(smooth_image, rng):
    """A noisy gray 32×40 image (8-bit grid) and its clean version."""
    clean = quantize(smooth_image[:, :, :1])
    return quantize(np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)), clean


def test_a_grey_rgb_image_is_denoised_as_its_gray_image_and_written_as_rgb(tmp_path, grey):
    noisy, _ = grey
    rgb = write_image(tmp_path / "rgb" / "photo.png", np.repeat(noisy, 3, axis=2))
    gray = write_image(tmp_path / "gray" / "photo.png", noisy)
    for path in (rgb, gray):
        result = run("denoise", path, "--model", "dncnn", "-o", path.parent / "out", "--json", "--quiet")
        assert result.exit_code == 0, result.output
    from_rgb = read_image(tmp_path / "rgb" / "out" / "photo_denoised.png").pixels
    from_gray = read_image(tmp_path / "gray" / "out" / "photo_denoised.png").pixels
    assert from_rgb.shape == (*noisy.shape[:2], 3)
    np.testing.assert_array_equal(from_rgb, np.repeat(from_gray, 3, axis=2))  # the packaged gray network's


def test_the_manifest_and_the_plan_say_how_the_image_was_stored(tmp_path, grey):
    noisy, clean = grey
    path = write_image(tmp_path / "photo.png", np.repeat(noisy, 3, axis=2))
    reference = write_image(tmp_path / "clean.png", np.repeat(clean, 3, axis=2))
    plan = run("adapt-and-export", path, "--model", "dncnn", "--sigma", 25, "--dry-run", "-o", tmp_path / "o")
    assert "photo.png: 32×40, 1 channel(s) (grey, stored as RGB)" in plan.output
    args = ["--sigma", 25, "--steps", 1, "--reference", reference, "-o", tmp_path / "out", "--quiet"]
    result = run("adapt-and-export", path, "--model", "dncnn", *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "photo.json").read_text())
    (record,) = manifest["inputs"]
    assert (record["channels"], record["stored_channels"]) == (1, 3)
    assert manifest["model"]["weights"] == "packaged default (1-channel)"
    assert set(manifest["scores"]) >= {"noisy", "pretrained", "adapted"}
    written = read_image(tmp_path / "out" / "photo_rfr.png").pixels
    assert written.shape[2] == 3 and np.array_equal(written[..., 0], written[..., 2])


def test_a_colour_network_keeps_the_rgb_image_and_says_what_that_costs(tmp_path, grey, weights_file, recwarn):
    path = write_image(tmp_path / "photo.png", np.repeat(grey[0], 3, axis=2))
    result = run("denoise", path, "--weights", weights_file, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "out" / "photo_denoised.png").channels == 3
    assert [str(w.message) for w in recwarn if "grey" in str(w.message)] == [
        "photo.png: a grey image stored as RGB, denoised by a colour network, which leaves most of its noise "
        "(its three channels are one); give gray weights (--gray-weights) to denoise it as gray"
    ]


@pytest.mark.parametrize("subsampling", [0, 2])
def test_a_grey_rgb_jpeg_keeps_the_table_that_quantized_it(tmp_path, grey, subsampling):
    pixels = np.round(np.repeat(grey[0], 3, axis=2) * 255).astype(np.uint8)
    PILImage.fromarray(pixels).save(tmp_path / "a.jpg", quality=75, subsampling=subsampling)
    image = read_image(tmp_path / "a.jpg")
    assert image.grey_rgb and len(image.jpeg_tables) == 2
    gray = image.to_gray()
    assert gray.channels == 1 and gray.chroma_subsampling == (1, 1)
    assert gray.jpeg_tables == image.jpeg_tables[:1]
    np.testing.assert_array_equal(gray.pixels[..., 0], image.pixels[..., 1])


def test_a_colour_image_is_not_grey(smooth_image):
    from rfr_deploy.images import Image

    assert not Image(smooth_image, 8).grey_rgb
    almost = np.repeat(smooth_image[:, :, :1], 3, axis=2)
    almost[0, 0, 2] += 1 / 255
    assert not Image(almost, 8).grey_rgb and Image(np.repeat(smooth_image[:, :, :1], 3, axis=2), 8).grey_rgb


def test_per_set_keeps_a_grey_rgb_image_rgb_with_the_colour_images_it_shares_a_network_with(
    tmp_path, grey, smooth_image
):
    write_image(tmp_path / "in" / "grey.png", np.repeat(grey[0], 3, axis=2))
    write_image(tmp_path / "in" / "colour.png", smooth_image)
    args = ["--model", "dncnn", "--sigma", 25, "--steps", 1, "--per-set", "-o", tmp_path / "out", "--quiet"]
    result = run("adapt-and-export", tmp_path / "in", *args)
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "out" / "grey_rfr.png").channels == 3
