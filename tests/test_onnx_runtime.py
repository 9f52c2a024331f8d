"""The ONNX Runtime wrapper (whole images and tiles) and the ``rfr-deploy infer`` command."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from exporters.onnx_export import export_onnx, onnx_metadata
from rfr_deploy.cli import main
from rfr_deploy.errors import ConfigError, ImageError, ModelError
from rfr_deploy.images import quantize, read_image, write_image
from rfr_deploy.inference import plan_tiles, run_tiled
from rfr_deploy.models.factory import create_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from exporters.onnx_runtime import OnnxDenoiser, choose_providers, providers_for  # noqa: E402
from tests.model_helpers import perturbed_model, torch_output  # noqa: E402


def exported(tmp_path, name: str, sigma: float | None = None, channels: int = 3):
    model = perturbed_model(name, channels, depth=4)
    path = tmp_path / f"{name}.onnx"
    meta = onnx_metadata(model, noise={}, sigma=sigma)
    export_onnx(model, path, example=torch.rand(1, channels, 24, 24), sigma=sigma, metadata=meta)
    return model, path


@pytest.fixture
def image(rng):
    return rng.random((53, 47, 3), dtype=np.float32)


def test_whole_image_matches_pytorch(tmp_path, image):
    model, path = exported(tmp_path, "dncnn")
    runner = OnnxDenoiser(path)
    assert runner.providers[-1] == "CPUExecutionProvider" and runner.metadata["model.name"] == "dncnn"
    assert "sigma" not in runner.metadata and "sigma.units" not in runner.metadata  # it has no σ input
    np.testing.assert_allclose(runner.denoise(image), torch_output(model, image), atol=1e-5)


@pytest.mark.parametrize("name, sigma", [("dncnn", None), ("ffdnet", 30 / 255)])
def test_tiles_with_half_receptive_field_overlap_equal_the_whole_image(tmp_path, image, name, sigma):
    _, path = exported(tmp_path, name, sigma=sigma)
    runner = OnnxDenoiser(path)
    # 4 convolutions of 3×3: receptive field 9; FFDNet's run at half resolution, behind a 2×2 unshuffle.
    assert runner.receptive_field == (9 if name == "dncnn" else 1 + 1 + 4 * 2 * 2) and runner.exact_tiles
    whole = runner.denoise(image)
    tiled = runner.denoise(image, tile=24)
    assert len(plan_tiles(53, 47, 24, runner.default_overlap, runner.pad_multiple)) > 4
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_strided_layers_widen_the_overlap_of_exact_tiles(tmp_path, rng):
    """CBDNet's U-Net pools twice and upsamples back: its layers at quarter resolution reach four
    times further in input pixels, which the overlap read off the graph must cover."""
    torch.manual_seed(0)
    model = create_model("cbdnet", weights=None, channels=3, features=8, estimator_features=8).eval()
    path = tmp_path / "cbdnet.onnx"
    export_onnx(model, path, example=torch.rand(1, 3, 64, 64), metadata=onnx_metadata(model, noise={}))
    probe = torch.rand(1, 3, 161, 161, requires_grad=True)
    model(probe)[0, :, 80, 80].sum().backward()
    rows = torch.nonzero(probe.grad[0].abs().sum(0).sum(1))
    reach = max(80 - int(rows.min()), int(rows.max()) - 80)
    runner = OnnxDenoiser(path)
    assert runner.exact_tiles and reach <= runner.default_overlap < 2 * reach
    pixels = rng.random((200, 190, 3), dtype=np.float32)
    assert len(plan_tiles(200, 190, 160, runner.default_overlap, runner.pad_multiple)) == 16
    np.testing.assert_allclose(runner.denoise(pixels, tile=160), runner.denoise(pixels), atol=1e-5)


def test_too_small_an_overlap_shows_seams(tmp_path, image):
    _, path = exported(tmp_path, "dncnn")
    runner = OnnxDenoiser(path)
    whole = runner.denoise(image)
    seams = runner.denoise(image, tile=24, overlap=1)
    assert np.abs(seams - whole).max() > 1e-4


def test_memory_budget_triggers_tiling(tmp_path, rng):
    _, path = exported(tmp_path, "dncnn")
    image = rng.random((230, 200, 3), dtype=np.float32)  # larger than the smallest tile (2 overlaps + 64)
    runner, tiles = OnnxDenoiser(path, memory_budget=10_000), []
    assert runner.tile_for(230, 200) is not None
    tiled = runner.denoise(image, on_tile=lambda done, total: tiles.append(total))
    assert len(tiles) > 1  # the budget, not a forced tile, split it
    np.testing.assert_allclose(tiled, OnnxDenoiser(path).denoise(image), atol=1e-6)


def test_noise_level_defaults_to_the_exported_one(tmp_path, image):
    model, path = exported(tmp_path, "ffdnet", sigma=20 / 255)
    runner = OnnxDenoiser(path)
    assert (
        runner.default_sigma == pytest.approx(20 / 255) and "input 'sigma'" in runner.metadata["sigma.units"]
    )
    np.testing.assert_allclose(runner.denoise(image), torch_output(model, image, 20 / 255), atol=1e-5)
    np.testing.assert_allclose(
        runner.denoise(image, sigma=40 / 255), torch_output(model, image, 40 / 255), atol=1e-5
    )
    with pytest.raises(ConfigError, match="grey levels"):
        runner.denoise(image, sigma=300 / 255)


def test_wrong_channel_count_is_one_line(tmp_path, image):
    _, path = exported(tmp_path, "dncnn")
    with pytest.raises(ImageError, match="3-channel"):
        OnnxDenoiser(path).denoise(image[:, :, 0])


def test_provider_choice_prefers_tensorrt_then_cuda():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(
        ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    ) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_run_tiled_aligns_tiles_for_strided_networks():
    x = np.arange(2 * 1 * 9 * 13, dtype=np.float32).reshape(2, 1, 9, 13)
    assert np.array_equal(run_tiled(lambda t: t * 2, x, tile=6, overlap=1, align=2), x * 2)
    for t in plan_tiles(9, 13, 6, 1, align=2):
        assert t.read[0].start % 2 == 0 and t.read[1].start % 2 == 0


def test_infer_command_writes_images_and_json(tmp_path, image):
    model, path = exported(tmp_path, "dncnn")
    source = write_image(tmp_path / "in" / "a.png", image)
    result = CliRunner().invoke(
        main, ["infer", str(path), str(source), "-o", str(tmp_path / "out"), "--tile", "32", "--json"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert records[0]["tile"] == 32 and records[0]["providers"][-1] == "CPUExecutionProvider"
    written = read_image(records[0]["output"]).pixels
    expected = np.clip(np.round(torch_output(model, read_image(source).pixels) * 255), 0, 255) / 255
    assert np.abs(written - expected).max() <= 1 / 255 + 1e-6


def test_infer_shows_each_image_and_tile_on_stderr(tmp_path, image, recwarn, monkeypatch):
    from PIL import Image

    from rfr_deploy import progress

    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # stderr is a log here: a line every tile
    _, path = exported(tmp_path, "dncnn")
    source = tmp_path / "in" / "a.png"  # with alpha: written back
    source.parent.mkdir()
    rgba = np.concatenate([image, np.ones_like(image[..., :1])], axis=2)
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(source, icc_profile=b"a colour profile")
    args = ["infer", str(path), str(source), "-o", str(tmp_path / "out"), "--tile", "32"]
    shown = CliRunner().invoke(main, args)
    assert shown.exit_code == 0, shown.output
    assert not [w for w in recwarn if "alpha" in str(w.message)]
    written = read_image(tmp_path / "out" / "a_onnx.png")
    assert written.extras.icc_profile == b"a colour profile" and np.all(
        written.extras.alpha.values == 1.0
    )  # kept
    assert "denoising 1 image(s): a.png: tile 1/" in shown.stderr
    assert re.search(r"a\.png: tile (\d+)/\1$", shown.stderr, re.MULTILINE)  # up to the last tile
    assert "a.png ->" in shown.stdout and "tile" not in shown.stdout  # results stay on stdout
    quiet = CliRunner().invoke(main, [*args, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])  # with and without a noise-level input
def test_infer_refuses_a_noise_level_out_of_range_whatever_the_model(tmp_path, image, name):
    _, path = exported(tmp_path, name, sigma=30 / 255 if name == "ffdnet" else None)
    source = write_image(tmp_path / "in" / "a.png", image)
    result = CliRunner().invoke(
        main, ["infer", str(path), str(source), "-o", str(tmp_path / "o"), "--sigma", "300"]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: --sigma must be within [0, 255] grey levels, got 300")
    assert not (tmp_path / "o").exists()


def test_infer_refuses_a_tile_too_small_for_its_overlap_before_any_image(tmp_path, image):
    _, path = exported(tmp_path, "dncnn")
    small = write_image(tmp_path / "in" / "a.png", image[:16, :16])  # fits one tile: no tiling of its own
    large = write_image(tmp_path / "in" / "b.png", image)
    out = tmp_path / "out"
    args = ["infer", str(path), str(small), str(large), "-o", str(out), "--tile", "16", "--overlap", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: tiles of 16 pixels leave nothing to write with an overlap of 8")
    assert not out.exists()


@pytest.mark.parametrize(
    "bad, problem",
    [("gray", "this model takes 3-channel images, got 1"), ("corrupt", "not an image file")],
)
def test_infer_checks_every_image_of_a_folder_before_the_first_is_denoised(tmp_path, image, bad, problem):
    _, path = exported(tmp_path, "dncnn")  # a colour network
    write_image(tmp_path / "in" / "a.png", image)
    culprit = tmp_path / "in" / "b.png"
    if bad == "gray":
        write_image(culprit, image[:, :, :1])
    else:
        culprit.write_bytes(b"not a png")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["infer", str(path), str(tmp_path / "in"), "-o", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {culprit}: {problem}")
    assert not out.exists()  # a.png, first in the folder, was not denoised


def test_infer_refuses_two_images_that_would_write_the_same_file(tmp_path, image):
    _, path = exported(tmp_path, "dncnn")
    png = write_image(tmp_path / "in" / "a.png", image)
    jpg = write_image(tmp_path / "in" / "a.jpg", image)
    result = CliRunner().invoke(main, ["infer", str(path), str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"error: {jpg} and {png} would both write {tmp_path / 'out' / 'a_onnx.png'}" in result.output


def test_infer_warns_that_sigma_is_ignored_by_a_network_without_a_noise_map(tmp_path, image):
    model, path = exported(tmp_path, "dncnn")
    source = write_image(tmp_path / "a.png", image)
    args = ["infer", str(path), str(source), "-o", str(tmp_path), "--sigma", "10", "--json"]
    with pytest.warns(UserWarning, match="--sigma is ignored: dncnn.onnx takes no noise level"):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["sigma"] is None


def test_infer_command_reports_bad_models_in_one_line(tmp_path, image):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    source = write_image(tmp_path / "a.png", image)
    result = CliRunner().invoke(main, ["infer", str(bogus), str(source)])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_infer_takes_sigma_in_grey_levels_and_reports_it_so(tmp_path, image):
    model, path = exported(tmp_path, "ffdnet", sigma=20 / 255)
    source = write_image(tmp_path / "a.png", image)
    runs = {}
    for args in ([], ["--sigma", "40"]):
        out = tmp_path / f"out{len(args)}"
        result = CliRunner().invoke(main, ["infer", str(path), str(source), "-o", str(out), "--json", *args])
        assert result.exit_code == 0, result.output
        (record,) = json.loads(result.output)
        runs[record["sigma"]] = read_image(record["output"]).pixels
    assert set(runs) == {20.0, 40.0}
    pixels = read_image(source).pixels
    for level, written in runs.items():
        expected = np.clip(torch_output(model, pixels, level / 255), 0, 1)
        np.testing.assert_allclose(written, expected, atol=1 / 255 + 1e-6)
    assert not np.array_equal(runs[20.0], runs[40.0])


def test_providers_by_name_keep_the_cpu_behind_a_gpu_one_and_refuse_what_is_not_installed():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("auto", gpu) is None  # the best installed, with the fallback to the CPU
    assert providers_for("cuda", gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cpu", gpu) == ["CPUExecutionProvider"]
    with pytest.raises(
        ModelError, match="--provider tensorrt: this ONNX Runtime offers CPUExecutionProvider"
    ):
        providers_for("tensorrt", ["CPUExecutionProvider"])


def test_infer_runs_on_the_provider_and_threads_it_is_given(tmp_path, image, monkeypatch):
    _, path = exported(tmp_path, "dncnn")
    source = write_image(tmp_path / "a.png", image)
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(path),
            str(source),
            "-o",
            str(tmp_path / "out"),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["providers"] == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = CliRunner().invoke(
        main, ["infer", str(path), str(source), "-o", str(tmp_path / "o2"), "--provider", "cuda"]
    )
    assert result.exit_code == 2 and result.output.startswith("error: --provider cuda: ")
    assert not (tmp_path / "o2").exists()


@pytest.mark.filterwarnings("ignore:Specified provider")  # ONNX Runtime's own, for the unavailable CUDA
def test_a_named_provider_that_does_not_start_is_an_error_not_a_quiet_fallback(tmp_path, monkeypatch):
    _, path = exported(tmp_path, "dncnn")

    class DroppingSession(ort.InferenceSession):  # as ONNX Runtime does when CUDA's libraries are missing
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", DroppingSession)
    with pytest.raises(
        ModelError, match="CUDAExecutionProvider did not start; ONNX Runtime runs CPUExecutionProvider"
    ):
        OnnxDenoiser(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OnnxDenoiser(path).providers == ["CPUExecutionProvider"]  # 'auto' keeps its quiet fallback


def test_a_resize_brings_the_stride_back_by_its_scale(tmp_path):
    """A strided convolution, a 2× resize back, a convolution: the last one runs at full resolution."""
    from onnx import TensorProto, helper, numpy_helper

    from exporters.onnx_runtime import _graph_locality

    weight = numpy_helper.from_array(np.zeros((1, 1, 3, 3), np.float32), "w")
    scales = helper.make_node("Constant", [], ["scales"], value_floats=[1.0, 1.0, 2.0, 2.0])
    nodes = [
        helper.make_node("Conv", ["noisy", "w"], ["down"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        scales,
        helper.make_node("Resize", ["down", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Conv", ["up", "w"], ["denoised"], kernel_shape=[3, 3], pads=[1] * 4),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 8, 8]) for n in ("noisy", "denoised")]
    graph = helper.make_graph(nodes, "g", [io[0]], [io[1]], initializer=[weight])
    onnx.save(helper.make_model(graph), tmp_path / "g.onnx")
    # 2 (the strided 3×3) + 2 (the resize: one pixel at stride 2) + 2 (the last 3×3, at stride 1 again)
    assert _graph_locality(tmp_path / "g.onnx") == (1 + 2 + 2 + 2, False)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1)])
def test_a_one_pixel_side_is_padded_as_pytorch_pads_it(tmp_path, rng, shape):
    """Reflect padding needs a side of 2: the graph refused a 1-pixel row, which PyTorch edge-pads."""
    model, path = exported(tmp_path, "ffdnet", sigma=20 / 255)
    image = rng.random((*shape, 3), dtype=np.float32)
    out = OnnxDenoiser(path).denoise(image)
    np.testing.assert_allclose(out, torch_output(model, image, 20 / 255), atol=1e-5)


def test_an_export_verifies_on_an_image_with_a_one_pixel_side(tmp_path):
    """Its example is edge-padded to a side the graph's reflect padding takes (it failed after adapting)."""
    model = perturbed_model("ffdnet", 1)
    meta = onnx_metadata(model, noise={}, sigma=25 / 255)
    report = export_onnx(
        model, tmp_path / "a.onnx", example=torch.rand(1, 1, 1, 9), sigma=25 / 255, metadata=meta
    )
    assert report.max_abs_error < 1e-4 and len(report.verified_shapes) >= 2
    row = np.random.default_rng(0).random((1, 9, 1), dtype=np.float32)
    out = OnnxDenoiser(tmp_path / "a.onnx").denoise(row)
    np.testing.assert_allclose(out, torch_output(model, row, 25 / 255), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_infer_takes_a_grey_rgb_image_as_gray_for_a_gray_model_and_warns_for_a_colour_one(
    tmp_path, image, channels, recwarn
):
    model, path = exported(tmp_path, "dncnn", channels=channels)
    grey = quantize(image[:, :, :1])
    source = write_image(tmp_path / "in" / "photo.png", np.repeat(grey, 3, axis=2))
    shown = CliRunner().invoke(
        main, ["infer", str(path), str(source), "-o", str(tmp_path / "out"), "--quiet"]
    )
    assert shown.exit_code == 0, shown.output
    written = read_image(tmp_path / "out" / "photo_onnx.png").pixels
    warned = [str(w.message) for w in recwarn if "grey image stored as RGB" in str(w.message)]
    if channels == 1:  # the gray model's output, written as RGB
        expected = quantize(np.repeat(torch_output(model, grey), 3, axis=2))
        np.testing.assert_allclose(written, expected, atol=1.5 / 255)
        assert warned == []
    else:
        assert written.shape[2] == 3 and len(warned) == 1 and "export a gray network" in warned[0]
