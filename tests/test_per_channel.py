"""A colour image whose noise its three channels share goes to the gray network run on each channel alone:
a colour network, trained on noise drawn per channel, leaves most of it."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import run

from rfr_deploy.images import quantize, read_image, write_image
from rfr_deploy.models.denoiser import each_channel
from rfr_deploy.noise.channels import chroma_share, neighbour_correlation, per_channel_level, shares_noise


def photo(shared: float, sigma: float = 25, seed: int = 0, size: tuple[int, int] = (72, 80)) -> np.ndarray:
    """A smooth colour image with Gaussian noise of ``sigma`` grey levels per channel, the ``shared`` part
    of its variance the same in the three channels, on the 8-bit grid."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    base = 0.5 + 0.2 * np.sin(x / 5.0) * np.cos(y / 7.0)
    clean = np.stack([base, 0.7 * base + 0.1, 0.9 - 0.6 * base], axis=2)
    noise = np.sqrt(shared) * rng.standard_normal((*size, 1)) + np.sqrt(1 - shared) * rng.standard_normal(
        clean.shape
    )
    return quantize(np.clip(clean + sigma / 255 * noise, 0, 1))


def chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_the_chroma_share_reads_white_noise_near_one_and_shared_noise_near_zero():
    white, level = chroma_share(chw(photo(0.0)))
    shared, _ = chroma_share(chw(photo(1.0)))
    half, _ = chroma_share(chw(photo(0.5)))
    assert 0.8 < white < 1.2 and shared < 0.1 and 0.55 < half < 0.85  # √(1 − ρ): 1, 0, 0.71
    assert level * 255 == pytest.approx(25, rel=0.15)
    assert shares_noise(chw(photo(1.0))) and not shares_noise(chw(photo(0.0)))


def test_noise_spread_over_neighbouring_pixels_is_not_read_as_shared():
    """Camera noise is correlated across the channels and in space: the gray network per channel does not
    suit it (a colour network did better on real photos)."""
    import torch.nn.functional as F

    clean = chw(photo(0.0, sigma=0))
    rng = np.random.default_rng(3)
    shared = torch.from_numpy(rng.standard_normal((1, 1, 76, 84)).astype(np.float32))
    spread = F.avg_pool2d(shared, 3, stride=1, padding=0) * 3  # σ ≈ 1 again, correlated over 3×3 pixels
    noisy = (clean + 25 / 255 * spread[0, :, :72, :80]).clamp(0, 1)
    assert chroma_share(noisy)[0] < 0.1  # shared by the channels …
    assert neighbour_correlation(noisy) > 0.3 and not shares_noise(noisy)  # … but not white in space
    assert abs(neighbour_correlation(chw(photo(1.0)))) < 0.1


def test_a_large_image_is_read_on_its_central_window():
    from rfr_deploy.noise import channels

    rng = np.random.default_rng(4)
    side, window = 300, 200
    image = 0.5 + 0.1 * torch.from_numpy(rng.standard_normal((1, side, side)).astype(np.float32)).repeat(
        3, 1, 1
    )
    inner = slice((side - window) // 2, (side + window) // 2)
    white = 0.1 * torch.from_numpy(rng.standard_normal((3, window, window)).astype(np.float32))
    image[:, inner, inner] = 0.5 + white  # shared noise around white noise
    assert shares_noise(image)  # read whole: the border's patches hold no chroma noise
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(channels, "READ_SIDE", window)
        assert not shares_noise(image)  # read on its central window: white


def test_small_images_and_low_levels_are_not_read_as_shared():
    assert not shares_noise(chw(photo(1.0, size=(40, 48))))  # too few patches for the chroma's covariance
    assert not shares_noise(chw(photo(1.0, sigma=2)))  # the image's own texture passes for noise there


def test_each_channels_level_is_read_as_a_gray_images():
    level = per_channel_level(chw(photo(1.0)))
    assert level.sigma * 255 == pytest.approx(25, rel=0.15) and level.low < level.sigma <= level.high


def test_a_gray_network_run_per_channel_denoises_each_channel_as_its_own_image(tiny_dncnn):
    gray = tiny_dncnn(1)
    model = each_channel(gray)
    assert (model.channels, model.meta.per_channel, model.meta.net_channels) == (3, True, 1)
    x = torch.rand(2, 3, 20, 22)
    expected = torch.cat([gray(x[:, c : c + 1]) for c in range(3)], dim=1)
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(Exception, match="only a gray network"):
        each_channel(tiny_dncnn(3))


def test_its_graph_is_not_the_gray_networks_for_graph_reuse(tiny_dncnn):
    from exporters.onnx_reuse import signature

    gray = tiny_dncnn(1)
    model = each_channel(gray)
    state = gray.state_dict()
    assert state.keys() == model.state_dict().keys()  # the same tensors: only the wrapper tells them apart
    assert signature(model, state, ()) != signature(gray, state, ())


def test_its_weights_file_loads_as_the_same_per_channel_network(tmp_path, tiny_dncnn):
    from rfr_deploy.models.factory import create_model
    from rfr_deploy.models.weights import save_weights

    model = each_channel(tiny_dncnn(1))
    save_weights(tmp_path / "w.safetensors", model.net, model.meta)
    loaded = create_model("dncnn", weights=str(tmp_path / "w.safetensors"), channels=3)
    assert loaded.meta == model.meta
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x))
    assert '"per_channel"' not in tiny_dncnn(1).meta.to_json()  # other files read as they did


def test_its_onnx_graph_takes_rgb_and_denoises_each_channel_alone(tmp_path, tiny_dncnn):
    ort = pytest.importorskip("onnxruntime")
    from exporters.onnx_export import export_onnx, onnx_metadata

    model = each_channel(tiny_dncnn(1)).eval()
    x = torch.rand(1, 3, 24, 28)
    export_onnx(model, tmp_path / "m.onnx", example=x, metadata=onnx_metadata(model))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["model.channels"] == "3" and json.loads(meta["model.meta"])["per_channel"] is True
    y = torch.rand(2, 3, 31, 17)  # another batch and size: the graph is not specialised to the example's
    (out,) = session.run(None, {"noisy": y.numpy()})
    np.testing.assert_allclose(out, model(y).detach().numpy(), atol=1e-5)


def test_denoise_gives_shared_noise_to_the_gray_network_per_channel(tmp_path):
    path = write_image(tmp_path / "photo.png", photo(1.0))
    outputs = {}
    for mode in ("auto", "off"):
        out = tmp_path / mode
        result = run(
            "denoise", path, "--model", "dncnn", "--per-channel", mode, "-o", out, "--json", "--quiet"
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0].get("per_channel", False) is (mode == "auto")
        outputs[mode] = read_image(out / "photo_denoised.png").pixels
    gray = tmp_path / "gray"
    for c in range(3):
        write_image(gray / f"c{c}.png", photo(1.0)[:, :, c : c + 1])
    assert run("denoise", gray, "--model", "dncnn", "-o", gray / "out", "--quiet").exit_code == 0
    planes = [read_image(gray / "out" / f"c{c}_denoised.png").pixels for c in range(3)]
    np.testing.assert_array_equal(outputs["auto"], np.concatenate(planes, axis=2))
    assert not np.array_equal(outputs["off"], outputs["auto"])


def test_auto_follows_sure_and_on_forces_the_gray_network(tmp_path, monkeypatch):
    """Under 'auto' SURE decides (tests/test_channel_choice.py); the job follows it and records it."""
    from rfr_deploy.jobs import model_cache

    asked = []

    def colour_scores_better(colour, per_channel, image, level, share):
        asked.append((colour.meta.channels, per_channel.meta.per_channel, tuple(image.shape), level, share))
        return False

    monkeypatch.setattr(model_cache, "per_channel_scores_better", colour_scores_better)
    path = write_image(tmp_path / "photo.png", photo(0.0))
    for mode, expected in (("auto", False), ("on", True)):
        args = ["--model", "dncnn", "--steps", 1, "--per-channel", mode, "-o", tmp_path / mode, "--quiet"]
        assert run("adapt-and-export", path, *args).exit_code == 0
        manifest = json.loads((tmp_path / mode / "photo.json").read_text())
        assert manifest["inputs"][0].get("per_channel", False) is expected
        assert manifest["model"]["meta"].get("per_channel", False) is expected
    ((channels, per_channel, shape, level, share),) = asked  # asked once, under 'auto'
    assert (channels, per_channel, shape) == (3, True, (1, 3, 72, 80))
    assert level * 255 == pytest.approx(25, rel=0.15) and 0.8 < share < 1.2


def test_adapt_and_export_adapts_the_per_channel_network_and_records_it(tmp_path):
    path = write_image(tmp_path / "photo.png", photo(1.0))
    plan = run("adapt-and-export", path, "--model", "dncnn", "--dry-run", "-o", tmp_path / "o")
    assert "photo.png: 72×80, 3 channel(s) (gray network per channel)" in plan.output
    args = ["--steps", 2, "--format", "onnx", "-o", tmp_path / "out", "--quiet"]
    result = run("adapt-and-export", path, "--model", "dncnn", *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert manifest["inputs"][0]["per_channel"] is True and manifest["model"]["meta"]["per_channel"] is True
    assert manifest["model"]["weights"] == "packaged default (1-channel)"
    adapted = read_image(tmp_path / "out" / "photo_rfr.png").pixels
    assert adapted.shape[2] == 3
    (graph,) = (tmp_path / "out").glob("*.onnx")  # the exported graph takes the RGB file as it is
    result = run("infer", graph, path, "-o", tmp_path / "inferred", "--quiet")
    assert result.exit_code == 0, result.output
    inferred = read_image(tmp_path / "inferred" / "photo_onnx.png").pixels
    assert np.abs(inferred - adapted).max() <= 1 / 255 + 1e-6


def test_per_channel_on_needs_gray_weights(tmp_path, weights_file):
    path = write_image(tmp_path / "photo.png", photo(1.0))
    result = run("denoise", path, "--weights", weights_file, "--per-channel", "on", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert (
        result.output.strip().splitlines()[-1].startswith("error: ") and "needs gray weights" in result.output
    )


def test_a_colour_network_keeps_shared_noise_and_says_so(tmp_path, weights_file, recwarn):
    path = write_image(tmp_path / "photo.png", photo(1.0))
    result = run("denoise", path, "--weights", weights_file, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in recwarn if "three channels" in str(w.message)] == [
        "photo.png: its noise is nearly the same in its three channels, which a colour network leaves in "
        "place; adapt it on noise shared alike (adapt-and-export --noise-channels auto, the default), or "
        "give gray weights (--gray-weights) to denoise each channel alone"
    ]


def test_infer_says_where_a_colour_graph_meets_noise_the_channels_share(tmp_path, recwarn):
    from exporters.onnx_export import export_onnx, onnx_metadata
    from rfr_deploy.models.factory import create_model

    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8).eval()
    graph = tmp_path / "colour.onnx"
    export_onnx(model, graph, example=torch.rand(1, 3, 24, 24), metadata=onnx_metadata(model, noise={}))
    for name, shared in (("shared.png", 1.0), ("white.png", 0.0)):
        write_image(tmp_path / "in" / name, photo(shared))
    result = run("infer", graph, tmp_path / "in", "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in recwarn if "three channels" in str(w.message)] == [
        "shared.png: its noise is nearly the same in its three channels, which a colour network leaves in "
        "place; export the gray network run per channel (adapt-and-export --per-channel on)"
    ]


def test_per_set_adapts_one_per_channel_network_only_when_every_image_goes_to_it(tmp_path):
    write_image(tmp_path / "in" / "shared.png", photo(1.0))
    write_image(tmp_path / "in" / "grey.png", np.repeat(photo(1.0)[:, :, 1:2], 3, axis=2))
    for mode, expected in (("on", True), ("auto", False)):
        out = tmp_path / mode
        args = ["--model", "dncnn", "--steps", 1, "--per-set", "--per-channel", mode, "-o", out, "--quiet"]
        result = run("adapt-and-export", tmp_path / "in", *args)
        assert result.exit_code == 0, result.output
        (manifest,) = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "summary.json"]
        assert [i.get("per_channel", False) for i in manifest["inputs"]] == [expected, expected]
        assert [i["channels"] for i in manifest["inputs"]] == [3, 3]  # the grey one is not taken as gray


def test_a_grey_image_toned_after_its_noise_reads_as_shared():
    """Sepia toning scales the channels unequally: the noise is one in all three, each at its own level."""
    grey = photo(1.0)[:, :, :1]
    toned = quantize(np.clip(grey * np.float32([1.0, 0.85, 0.65]) + np.float32([0.0, 0.02, 0.05]), 0, 1))
    assert shares_noise(chw(toned))
