"""The command line, end to end on tiny images and tiny models."""

import json
import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from cli_helpers import run
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.files import sha256_file
from rfr_deploy.images import Alpha, Extras, quantize, read_image, write_image

COMMANDS = ["denoise", "adapt-and-export", "eval", "pretrain", "bench", "models", "infer", "cache", "env"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS], ["cache", "list"], ["cache", "clear"]])
def test_every_help_works(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_the_command_alone_shows_its_help_not_an_error_line():
    result = run()
    assert result.exit_code in (0, 2)  # click 8.1 exits 0 after the help, 8.2 and later 2
    assert result.output.startswith("Usage: ") and "\n  adapt-and-export " in result.output


def test_adapt_and_export_writes_outputs_and_a_manifest(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    result = run(
        "adapt-and-export",
        image_file,
        "--weights",
        weights_file,
        "--sigma",
        25,
        "--steps",
        3,
        "-o",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    manifests = json.loads(result.output)
    assert len(manifests) == 1
    manifest = json.loads((out / "noisy.json").read_text())
    roles = {f["role"]: f for f in manifest["files"]}
    assert set(roles) == {"output", "weights"}
    for record in manifest["files"]:
        assert sha256_file(out / record["path"]) == record["sha256"]
    assert manifest["model"]["weights_sha256"] == sha256_file(weights_file)
    assert manifest["adaptation"]["steps"] == 3 and len(manifest["losses"]) == 3
    assert manifest["noise"]["mode"] == "known" and manifest["noise"]["sigma"] == 25
    seconds = manifest["timings"]
    assert seconds["adapt_s"] > 0 and seconds["updates_s"] > 0 and seconds["scoring_s"] >= 0
    assert seconds["updates_s"] + seconds["scoring_s"] <= seconds["adapt_s"] + 1e-3
    assert read_image(out / "noisy_rfr.png").pixels.shape == read_image(image_file).pixels.shape
    assert sorted(p.name for p in out.iterdir()) == ["noisy.json", "noisy_rfr.png", "noisy_rfr.safetensors"]


def test_unknown_sigma_is_estimated(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    result = run(
        "adapt-and-export", image_file, "--weights", weights_file, "--steps", 1, "-o", out, "--quiet"
    )
    assert result.exit_code == 0, result.output
    noise = json.loads((out / "noisy.json").read_text())["noise"]
    assert noise["mode"] == "estimate" and noise["sigma"] is None
    assert noise["sigma_estimates"][0] == pytest.approx(25.5, rel=0.15)


def test_per_set_adapts_one_network_for_all_images(tmp_path, image_file, weights_file, smooth_image):
    write_image(image_file.parent / "second.png", smooth_image[:24, :30])
    out = tmp_path / "out"
    result = run(
        "adapt-and-export",
        image_file.parent,
        "--weights",
        weights_file,
        "--sigma",
        10,
        "--steps",
        2,
        "--per-set",
        "-o",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    manifests = list(out.glob("*.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert len(manifest["inputs"]) == 2
    assert sorted(f["role"] for f in manifest["files"]) == ["output", "output", "weights"]


def test_denoise_writes_the_pretrained_output(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    result = run("denoise", image_file, "--weights", weights_file, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["output"].endswith("noisy_denoised.png")
    assert (out / "noisy_denoised.png").is_file()


def test_sixteen_bit_input_gives_sixteen_bit_output(tmp_path, smooth_image, weights_file):
    path = write_image(tmp_path / "deep.png", smooth_image, bit_depth=16)
    result = run("denoise", path, "--weights", weights_file, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0
    assert read_image(tmp_path / "out" / "deep_denoised.png").bit_depth == 16


@pytest.mark.parametrize("command", [["denoise"], ["adapt-and-export", "--sigma", 25, "--steps", 2]])
def test_an_input_s_alpha_colour_profile_and_exif_are_written_back_unchanged(
    tmp_path, smooth_image, rng, weights_file, command
):
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"
    extras = Extras(Alpha(quantize(rng.random(smooth_image.shape[:2]))), b"a colour profile", exif.tobytes())
    path = write_image(tmp_path / "cutout.png", smooth_image, extras=extras)
    result = run(command[0], path, "--weights", weights_file, *command[1:], "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "out").glob("cutout_*.png")
    image = read_image(written)
    assert image.channels == 3 and np.array_equal(image.extras.alpha.values, extras.alpha.values)
    assert (image.extras.icc_profile, image.extras.exif) == (extras.icc_profile, extras.exif)


def test_an_image_mostly_transparent_is_named_once_with_what_its_pixels_mislead(
    tmp_path, smooth_image, weights_file, recwarn
):
    alpha = np.ones(smooth_image.shape[:2], dtype=np.float32)
    alpha[:, :10] = 0  # a quarter of the pixels
    path = write_image(tmp_path / "cutout.png", smooth_image, extras=Extras(Alpha(alpha)))
    result = run("adapt-and-export", path, "--weights", weights_file, "--dry-run")
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in recwarn if "transparent" in str(w.message)] == [
        "cutout.png: 25% of its pixels are fully transparent; what is read off its pixels (the noise level, "
        "subsampled chroma) counts their colour as well: give --sigma and --noise-chroma where they are known"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "file is empty"), (b"hello", "not an image")],
)
def test_bad_images_give_one_line_errors(tmp_path, weights_file, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(
        main, ["adapt-and-export", str(path), "--weights", str(weights_file), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["denoise", "adapt-and-export"])
def test_gray_image_with_color_weights_is_a_clear_error_naming_the_image(
    tmp_path, smooth_image, weights_file, command
):
    write_image(tmp_path / "in" / "a.png", smooth_image)
    path = write_image(tmp_path / "in" / "gray.png", smooth_image[:, :, :1])
    args = [command, str(tmp_path / "in"), "--weights", str(weights_file), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, "--sigma", "25"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"weights are for 3-channel images, but the input has 1 channel(s): {path}" in result.output
    assert not (tmp_path / "out").exists()  # a.png, first in the folder, was not processed


def test_mismatched_weights_give_one_line_errors(tmp_path, image_file):
    import torch

    bad = tmp_path / "bad.pth"
    torch.save({"model.0.weight": torch.zeros(4, 3, 3, 3)}, bad)
    result = CliRunner().invoke(
        main, ["adapt-and-export", str(image_file), "--weights", str(bad), "--model", "ffdnet"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_unknown_export_format_is_rejected(image_file, weights_file):
    result = CliRunner().invoke(
        main, ["adapt-and-export", str(image_file), "--weights", str(weights_file), "--format", "tflite"]
    )
    assert result.exit_code == 2 and "unknown export format" in result.output


def test_threads_sets_pytorch_s_cpu_threads_for_the_run(tmp_path, image_file, weights_file):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = tmp_path / "o"
        result = run(
            "adapt-and-export", image_file, "--weights", weights_file, "--steps", 1, "--threads", 1, "-o", out
        )
        assert result.exit_code == 0, result.output
        assert json.loads((out / "noisy.json").read_text())["torch"]["threads"] == 1
        result = run("denoise", image_file, "--weights", weights_file, "--threads", 0, "-o", tmp_path / "d")
        assert result.exit_code == 2 and "--threads" in result.output and not (tmp_path / "d").exists()
    finally:
        torch.set_num_threads(before)


def test_every_adaptation_setting_is_an_option():
    import dataclasses

    from rfr_deploy.adaptation.config import AdaptConfig
    from rfr_deploy.cli.adapt_options import ADAPT_OPTION_NAMES, adapt_options

    params = {p.name for p in adapt_options(click.command()(lambda **kw: None)).params}
    assert params == set(ADAPT_OPTION_NAMES)
    fields = {f.name for f in dataclasses.fields(AdaptConfig)} - {"steps", "seed"}
    assert set(ADAPT_OPTION_NAMES) == fields and len(ADAPT_OPTION_NAMES) == len(fields)


def test_bad_adaptation_settings_are_usage_errors(image_file, weights_file):
    result = CliRunner().invoke(
        main, ["adapt-and-export", str(image_file), "--weights", str(weights_file), "--interpolation", "0"]
    )
    assert result.exit_code == 2 and "--interpolation" in result.output


def test_reference_scores_noisy_pretrained_and_adapted(tmp_path, image_file, weights_file, smooth_image):
    reference = write_image(tmp_path / "clean.png", smooth_image)
    out = tmp_path / "out"
    result = run(
        "adapt-and-export",
        image_file,
        "--weights",
        weights_file,
        "--reference",
        reference,
        "--steps",
        1,
        "-o",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "noisy.json").read_text())["scores"]
    assert set(scores) == {"reference", "noisy", "pretrained", "adapted"}
    assert 10 < scores["noisy"]["psnr"] < 30


def test_the_reference_score_reuses_the_pretrained_output_the_targets_are(
    tmp_path, image_file, weights_file, smooth_image, monkeypatch
):
    import rfr_deploy.jobs.reference as reference_module

    passes = []
    monkeypatch.setattr(reference_module, "denoise", _counting(reference_module.denoise, passes))
    reference = write_image(tmp_path / "clean.png", smooth_image)
    scores = []
    for out, extra in (("reused", ()), ("refreshed", ("--refresh-every", 1))):
        args = ("--reference", reference, "--steps", 2, "-o", tmp_path / out, "-q", *extra)
        assert run("adapt-and-export", image_file, "--weights", weights_file, *args).exit_code == 0
        scores.append(json.loads((tmp_path / out / "noisy.json").read_text())["scores"]["pretrained"])
    assert len(passes) == 1, "targets refreshed by the adapted network are not the pre-trained output"
    assert scores[0] == scores[1]


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


def test_integer_inputs_get_quantized_synthetic_noise(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    assert (
        run(
            "adapt-and-export", image_file, "--weights", weights_file, "--steps", 1, "-o", out, "-q"
        ).exit_code
        == 0
    )
    assert json.loads((out / "noisy.json").read_text())["noise"]["quantized_to_bits"] == 8
    assert (
        run(
            "adapt-and-export",
            image_file,
            "--weights",
            weights_file,
            "--steps",
            1,
            "-o",
            out,
            "-q",
            "--noise-quantization",
            "off",
        ).exit_code
        == 0
    )
    assert json.loads((out / "noisy.json").read_text())["noise"]["quantized_to_bits"] is None


def test_sample_and_inputs_are_exclusive(image_file):
    result = CliRunner().invoke(main, ["adapt-and-export", str(image_file), "--sample"])
    assert result.exit_code == 2 and "either INPUTS or --sample" in result.output
    result = CliRunner().invoke(main, ["adapt-and-export"])
    assert result.exit_code == 2 and "--sample" in result.output


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    script = (
        "import click\nfrom rfr_deploy.cli import main\n"
        "@main.command('flood')\ndef flood():\n    while True:\n        click.echo('x' * 1000)\n"
        "main(['flood'])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(10)
    process.stdout.close()  # like `rfr-deploy models | head -1`
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""  # no traceback, no "error: Broken pipe"


def test_denoise_shows_each_image_on_stderr_and_results_on_stdout(tmp_path, image_file, weights_file):
    args = ["denoise", image_file, "--weights", weights_file, "-o", tmp_path / "out"]
    shown = run(*args)
    assert shown.exit_code == 0, shown.output
    assert "denoising 1 image(s): noisy.png" in shown.stderr
    assert shown.stdout.startswith("noisy.png -> ") and "denoising" not in shown.stdout
    quiet = run(*args, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout.startswith("noisy.png -> ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("denoise", "x.png", "--threads", 100000), "'--threads': 100000 is not in the range 1<=x<=1024"),
        (("infer", "m.onnx", "x.png", "--threads", 5000), "'--threads': 5000 is not in the range 1<=x<=1024"),
        (
            ("adapt-and-export", "--sample", "--seed", 2**64),
            "'--seed': 18446744073709551616 is not in the range",
        ),
        (("bench", "--models", "dncnn", "--plot", "speed.txt"), "--plot speed.txt: matplotlib writes .avif"),
        (("cache", "clear", "--unused-days", "nan"), "--unused-days must be a number of days, got nan"),
    ],
)
def test_values_the_work_would_fail_on_are_refused_in_one_line(tmp_path, args, message):
    """Thousands of threads crash the OpenMP runtime, a seed over 63 bits overflows torch's generator,
    matplotlib refuses the plot's format only after the whole bench: all said before any work."""
    if "--plot" in args:
        pytest.importorskip("matplotlib")
    result = run(*args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and message in result.output


def test_denoise_says_a_sigma_the_network_does_not_take_is_ignored(tmp_path, image_file, weights_file):
    with pytest.warns(UserWarning, match="--sigma is ignored: dncnn takes no noise level"):
        result = run(
            "denoise", image_file, "--weights", weights_file, "--sigma", 25, "-o", tmp_path / "o", "--json"
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["sigma"] is None  # the output does not depend on it


def test_denoise_names_its_ensemble_as_adapt_and_export_does(tmp_path, image_file, weights_file):
    outputs = []
    for flag in ("--output-ensemble", "--ensemble", None):
        out = tmp_path / (flag or "plain")
        assert (
            run("denoise", image_file, "--weights", weights_file, "-o", out, *[flag] * bool(flag)).exit_code
            == 0
        )
        outputs.append((out / "noisy_denoised.png").read_bytes())
    assert outputs[0] == outputs[1] != outputs[2]


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "rfr_deploy.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("rfr-deploy, version ")
