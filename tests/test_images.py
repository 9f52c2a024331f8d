from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from rfr_deploy.errors import ImageError, ResourceError
from rfr_deploy.images import Alpha, Extras, list_images, quantize, read_image, write_image


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_is_exact_on_the_integer_grid(tmp_path, smooth_image, suffix, bit_depth, channels):
    pixels = quantize(smooth_image[:, :, :channels], bit_depth)
    path = write_image(tmp_path / f"a{suffix}", pixels, bit_depth=bit_depth)
    image = read_image(path)
    assert image.bit_depth == bit_depth and image.channels == channels
    np.testing.assert_allclose(image.pixels, pixels, atol=1e-7)


def test_jpeg_reads_as_rgb(tmp_path, smooth_image):
    write_image(tmp_path / "a.jpg", smooth_image)
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape == smooth_image.shape
    assert np.abs(image.pixels - smooth_image).mean() < 0.02


def test_alpha_is_kept_apart_from_the_pixels(tmp_path, smooth_image, rng):
    opacity = np.round(rng.random(smooth_image.shape[:2]) * 255) / 255
    rgba = np.concatenate([smooth_image, opacity[:, :, None]], axis=2)
    PILImage.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.channels == 3 and not image.extras.alpha.premultiplied
    np.testing.assert_allclose(image.extras.alpha.values, opacity, atol=1e-7)
    np.testing.assert_allclose(image.pixels, np.round(smooth_image * 255) / 255, atol=1e-7)


def test_gray_alpha_becomes_gray_with_its_alpha(tmp_path):
    PILImage.new("LA", (8, 8), (100, 37)).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.channels == 1 and np.all(image.extras.alpha.values == np.float32(37 / 255))


def test_an_image_without_alpha_has_none(tmp_path, smooth_image):
    assert read_image(write_image(tmp_path / "a.png", smooth_image)).extras.alpha is None


@pytest.mark.parametrize(("suffix", "bit_depth"), [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16)])
@pytest.mark.parametrize("channels", [1, 3])
def test_alpha_is_written_back_exactly(tmp_path, smooth_image, rng, suffix, bit_depth, channels):
    pixels = quantize(smooth_image[:, :, :channels], bit_depth)
    alpha = Alpha(quantize(rng.random(pixels.shape[:2]), bit_depth))
    path = write_image(tmp_path / f"a{suffix}", pixels, bit_depth=bit_depth, extras=Extras(alpha))
    image = read_image(path)
    assert image.bit_depth == bit_depth and image.channels == channels
    np.testing.assert_allclose(image.pixels, pixels, atol=1e-7)
    np.testing.assert_allclose(image.extras.alpha.values, alpha.values, atol=1e-7)


@pytest.mark.parametrize("premultiplied", [False, True])
def test_a_tiff_s_alpha_keeps_its_kind(tmp_path, premultiplied):
    extra = "assocalpha" if premultiplied else "unassalpha"
    samples = np.full((8, 8, 4), 60, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", samples, photometric="rgb", extrasamples=[extra])
    image = read_image(tmp_path / "a.tif")
    assert image.channels == 3 and image.extras.alpha.premultiplied is premultiplied
    write_image(tmp_path / "b.tif", image.pixels, extras=image.extras)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        assert tuple(tif.pages[0].extrasamples) == ((1,) if premultiplied else (2,))
        assert np.array_equal(tif.asarray(), samples)


def camera_exif(orientation: int = 1) -> bytes:
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[0x010F], exif[0x0112] = "TestCam", orientation  # Make, Orientation
    return exif.tobytes()


@pytest.mark.parametrize(
    ("suffix", "bit_depth"), [(".png", 8), (".png", 16), (".tif", 16), (".tif", 32), (".jpg", 8)]
)
@pytest.mark.parametrize("with_alpha", [False, True])
def test_a_colour_profile_and_exif_are_read_and_written_back(
    tmp_path, smooth_image, suffix, bit_depth, with_alpha
):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    alpha = (
        Alpha(np.ones(smooth_image.shape[:2], dtype=np.float32)) if with_alpha and suffix != ".jpg" else None
    )
    extras = Extras(alpha, profile, camera_exif())
    image = read_image(write_image(tmp_path / f"a{suffix}", smooth_image, bit_depth=bit_depth, extras=extras))
    assert image.extras.icc_profile == profile and (image.extras.alpha is None) == (alpha is None)
    if suffix == ".tif":  # TIFFs keep no EXIF here; Pillow opens no float TIFF
        assert image.extras.exif is None
    else:  # where other software finds them
        assert image.extras.exif == extras.exif
        with PILImage.open(tmp_path / f"a{suffix}") as opened:
            assert opened.info.get("icc_profile") == profile and opened.getexif()[0x010F] == "TestCam"
    plain = read_image(write_image(tmp_path / f"b{suffix}", smooth_image, bit_depth=bit_depth))
    assert plain.extras == Extras()


def test_a_turned_jpeg_s_exif_loses_its_orientation_with_the_turn(tmp_path, smooth_image):
    PILImage.fromarray((smooth_image * 255).astype(np.uint8)).save(tmp_path / "a.jpg", exif=camera_exif(6))
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape[:2] == smooth_image.shape[1::-1]  # turned by 90° as viewers show it
    written = read_image(write_image(tmp_path / "b.png", image.pixels, extras=image.extras))
    assert written.pixels.shape == image.pixels.shape  # not turned again
    with PILImage.open(tmp_path / "b.png") as opened:
        assert opened.getexif().get(0x0112) is None and opened.getexif()[0x010F] == "TestCam"


def test_formats_without_alpha_drop_it_with_a_warning(tmp_path, smooth_image):
    alpha = Alpha(np.ones(smooth_image.shape[:2], dtype=np.float32))
    with pytest.warns(UserWarning, match=r"a.jpg: alpha channel dropped \(.jpg has none\)"):
        write_image(tmp_path / "a.jpg", smooth_image, extras=Extras(alpha))
    assert read_image(tmp_path / "a.jpg").extras.alpha is None


def test_an_alpha_of_another_size_is_refused(tmp_path, smooth_image):
    with pytest.raises(ImageError, match="alpha of shape"):
        write_image(tmp_path / "a.png", smooth_image, extras=Extras(Alpha(np.ones((3, 3), dtype=np.float32))))
    assert list(tmp_path.iterdir()) == []


def test_palette_images_are_expanded(tmp_path, smooth_image):
    PILImage.fromarray((smooth_image * 255).astype(np.uint8)).convert("P").save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    expected = np.asarray(PILImage.open(tmp_path / "p.png").convert("RGB"))  # each index's palette colour
    assert image.channels == 3 and np.array_equal(image.pixels * 255, expected)


def test_sixteen_bit_gray_png_keeps_precision(tmp_path):
    data = (np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)
    PILImage.fromarray(data).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.bit_depth == 16
    np.testing.assert_allclose(image.pixels[:, :, 0], data / 65535.0, atol=1e-7)


def _one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text and text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file") as info:
        read_image(tmp_path / "nope.png")
    _one_line(info)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as info:
        read_image(tmp_path / "e.png")
    _one_line(info)


def test_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image") as info:
        read_image(tmp_path / "t.png")
    _one_line(info)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, smooth_image, suffix):
    big = np.tile(smooth_image, (8, 8, 1))
    write_image(tmp_path / f"full{suffix}", big)
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt|cannot decode") as info:
        read_image(tmp_path / f"cut{suffix}")
    _one_line(info)


def test_truncated_16_bit_png(tmp_path, smooth_image):
    write_image(tmp_path / "full.png", np.tile(smooth_image, (4, 4, 1)), bit_depth=16)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        read_image(tmp_path / "cut.png")
    _one_line(info)


def test_non_finite_float_tiff(tmp_path):
    data = np.full((8, 8, 3), 0.5, dtype=np.float32)
    data[2, 2, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", data, photometric="rgb")
    with pytest.raises(ImageError, match="non-finite") as info:
        read_image(tmp_path / "nan.tif")
    _one_line(info)


def test_float_tiff_out_of_range(tmp_path):
    tifffile.imwrite(tmp_path / "big.tif", np.full((8, 8), 300.0, dtype=np.float32))
    with pytest.raises(ImageError, match="expected \\[0, 1\\]"):
        read_image(tmp_path / "big.tif")


def test_float_tiff_in_range_is_accepted(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((8, 8), 0.25, dtype=np.float32))
    image = read_image(tmp_path / "f.tif")
    assert image.bit_depth == 32 and image.pixels.mean() == pytest.approx(0.25)


def test_wrong_channel_count(tmp_path):
    tifffile.imwrite(
        tmp_path / "five.tif",
        np.zeros((8, 8, 5), dtype=np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    )
    with pytest.raises(ImageError, match="5 channels; expected 1") as info:
        read_image(tmp_path / "five.tif")
    _one_line(info)


def test_multi_page_tiff_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 8, 8), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(ImageError, match="multi-page TIFF"):
        read_image(tmp_path / "stack.tif")


def test_image_too_large(tmp_path, smooth_image):
    write_image(tmp_path / "a.png", smooth_image)
    with pytest.raises(ResourceError, match="megapixels, above the limit"):
        read_image(tmp_path / "a.png", max_pixels=100)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_a_file_named_twice_is_listed_once_where_it_first_came(tmp_path, smooth_image):
    write_image(tmp_path / "d" / "a.png", smooth_image)
    b = write_image(tmp_path / "d" / "b.png", smooth_image)
    again = f"{tmp_path}/d/../d/a.png"
    assert list_images([b, again, tmp_path / "d"]) == [b, Path(again)]


def test_failed_write_leaves_no_file(tmp_path, smooth_image):
    bad = smooth_image.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ImageError, match="non-finite"):
        write_image(tmp_path / "out.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, smooth_image, monkeypatch):
    from rfr_deploy.images import encoding

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoding, "_write_png16", boom)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "out.png", smooth_image, bit_depth=16)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_output_format(tmp_path, smooth_image):
    with pytest.raises(ImageError, match="unsupported output format"):
        write_image(tmp_path / "out.webp", smooth_image)


def test_a_png_with_an_sbit_chunk_is_read_at_full_scale(tmp_path, rng):
    """pypng shifts 12 significant bits of a 16-bit PNG down to 12 bits: they are scaled back to 16."""
    import png

    data = (rng.random((6, 7)) * 4095).round().astype(np.uint16)
    with open(tmp_path / "a.png", "wb") as fh:
        png.Writer(7, 6, greyscale=True, bitdepth=12).write(fh, data.tolist())  # stored as 16 with sBIT 12
    image = read_image(tmp_path / "a.png")
    assert image.bit_depth == 16
    np.testing.assert_allclose(image.pixels[:, :, 0], data / 4095, atol=1e-5)


def test_exif_orientation_is_applied(tmp_path, smooth_image):
    pixels = (smooth_image * 255).astype(np.uint8)
    im = PILImage.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "a.jpg", exif=exif.tobytes(), quality=100)
    image = read_image(tmp_path / "a.jpg")
    assert image.pixels.shape == (pixels.shape[1], pixels.shape[0], 3)
    expected = np.rot90(pixels, k=-1) / 255
    assert np.abs(image.pixels - expected).mean() < 0.02


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiffs_orientation_tag_turns_it_as_pillow_turns_it(tmp_path, rng, orientation):
    """tifffile returns the stored rows; the image reads as viewers (and Pillow's fallback) show it."""
    data = (rng.random((4, 6, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    from PIL import ImageOps

    shown = np.asarray(ImageOps.exif_transpose(PILImage.open(tmp_path / "a.tif")))
    assert shown.shape[:2] == ((4, 6) if orientation < 5 else (6, 4))
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").pixels * 255, shown)


def test_the_decoder_follows_the_signature_not_the_name(tmp_path, rng):
    data = (rng.random((5, 4, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.png", data)  # a 16-bit RGB TIFF named .png
    image = read_image(tmp_path / "a.png")
    assert image.bit_depth == 16
    np.testing.assert_allclose(image.pixels, data / 65535, atol=1e-7)


@pytest.mark.parametrize("mode, bits", [("L", 8), ("RGB", 8), ("I;16", 16)])
def test_tiffs_tifffile_cannot_decode_here_are_read_through_pillow(tmp_path, rng, mode, bits, monkeypatch):
    """LZW needs imagecodecs in tifffile (not installed here: checked either way by a stand-in)."""
    shape = {"L": (6, 7), "RGB": (6, 7, 3), "I;16": (6, 7)}[mode]
    data = (rng.random(shape) * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
    PILImage.fromarray(data).save(tmp_path / "a.tif", compression="tiff_lzw")

    def needs_imagecodecs(self, *args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", needs_imagecodecs)
    image = read_image(tmp_path / "a.tif")
    assert image.bit_depth == bits
    np.testing.assert_allclose(image.pixels.reshape(shape), data / (2**bits - 1), atol=1e-7)
    tifffile.imwrite(tmp_path / "b.tif", (rng.random((6, 7, 3)) * 65535).astype(np.uint16))  # Pillow: 8 bits
    with pytest.raises(
        ImageError, match=r"b.tif: cannot decode image \(.*imagecodecs.*: pip install imagecodecs\)$"
    ):
        read_image(tmp_path / "b.tif")


def test_a_miniswhite_tiff_is_read_with_black_at_zero(tmp_path):
    data = np.array([[0, 255], [100, 200]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").pixels[:, :, 0] * 255, 255 - data)


def test_a_tiff_of_two_images_of_different_sizes_is_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "a.tif") as tif:
        tif.write(np.zeros((8, 8), np.uint8))
        tif.write(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError, match="multi-page TIFF"):
        read_image(tmp_path / "a.tif")


def test_float_images_are_written_as_float_tiffs_unclipped(tmp_path, rng):
    pixels = (rng.random((4, 5, 1)) * 1.2 - 0.1).astype(np.float32)
    write_image(tmp_path / "a.tif", pixels, bit_depth=32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), pixels[:, :, 0])
    write_image(tmp_path / "a.png", pixels, bit_depth=32)  # PNG has no float: 16 bits
    assert read_image(tmp_path / "a.png").bit_depth == 16
    np.testing.assert_array_equal(quantize(pixels, 32), pixels)


def test_hidden_files_of_a_folder_are_not_images(tmp_path, smooth_image):
    """A killed run's temporary file (``.<stem>.XXXX.part.png``) or macOS's ``._a.png`` is not an input."""
    write_image(tmp_path / "a.png", smooth_image)
    (tmp_path / ".a_denoised.k3j2x9.part.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    assert list_images([tmp_path]) == [tmp_path / "a.png"]


def test_a_file_whose_name_fits_is_written_however_long_its_name(tmp_path, smooth_image):
    """The temporary name adds a random part and '.part': it is cut short, not the target's name."""
    target = tmp_path / ("é" * 100 + "b" * 40 + "_rfr.png")  # 254 bytes
    write_image(target, smooth_image)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_input_whose_outputs_would_have_too_long_a_name_is_refused_before_any_work(tmp_path, smooth_image):
    from tests.cli_helpers import run

    image = write_image(tmp_path / "in" / ("b" * 245 + ".png"), smooth_image)
    result = run("adapt-and-export", image, "--sigma", 25, "--steps", 1, "-o", tmp_path / "out")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert (
        "would be a 261-byte name, over the 255 bytes a file name may have; rename the input" in result.output
    )
    assert not (tmp_path / "out").exists()
