"""The command line, end to end on tiny images and tiny models."""

import json
import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.files import sha256_file
from rfr_deploy.images import read_image, write_image

COMMANDS = ["denoise", "adapt-and-export", "eval", "pretrain", "bench", "models"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_every_help_works(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


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
    assert manifest["timings"]["adapt_s"] > 0
    assert read_image(out / "noisy_rfr.png").pixels.shape == read_image(image_file).pixels.shape
    assert sorted(p.name for p in out.iterdir()) == ["noisy.json", "noisy_rfr.png", "noisy_rfr.safetensors"]


def test_unknown_sigma_is_estimated(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    result = run(
        "adapt-and-export", image_file, "--weights", weights_file, "--steps", 1, "-o", out, "--quiet"
    )
    assert result.exit_code == 0, result.output
    noise = json.loads((out / "noisy.json").read_text())["noise"]
    assert noise["mode"] == "estimate" and noise["sigma"] is None and noise["sigma_estimates"][0] > 5


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


def test_eval_reports_psnr_before_and_after(tmp_path, smooth_image, weights_file):
    data = tmp_path / "set"
    for i in range(2):
        write_image(data / f"{i}.png", np.roll(smooth_image, 3 * i, axis=1))
    result = run(
        "eval",
        data,
        "--weights",
        weights_file,
        "--sigma",
        25,
        "--steps",
        "0,2,3",
        "--interpolation",
        0.25,
        "--warmup",
        1,
        "--json",
        "--markdown",
        tmp_path / "t.md",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["mean"]) == {"0", "2", "3"} and len(report["images"]) == 2
    assert report["adapt"]["interpolation"] == 0.25 and report["adapt"]["warmup"] == 1
    assert report["images"][0]["noisy_psnr"] < 25
    assert all(i["noise_sigma"] == 25 for i in report["images"])  # the known level adaptation drew at
    assert report["environment"]["torch"] and report["wall_seconds"] > 0
    table = (tmp_path / "t.md").read_text()
    assert "| **mean** |" in table and "interpolation=0.25" in table and "σ = 25" in table
    # SURE chose each checkpoint's interpolation (the default); the weight is recorded per image
    assert report["adapt"]["select"] == "sure"
    assert all(set(i["interpolation"]) == {"2", "3"} for i in report["images"])
    # M = 3 is scored on the network adapt returns; the update it interpolates is recorded per image
    assert all(i["checkpoint"] in (1, 2, 3) for i in report["images"])


def test_eval_scores_adapt_and_exports_own_budget_by_default(
    tmp_path, smooth_image, weights_file, monkeypatch
):
    from rfr_deploy.adaptation import config

    monkeypatch.setattr(config, "GAUSSIAN_STEPS", 4)  # the CPU's default Gaussian budget, made tiny
    data = tmp_path / "set"
    write_image(data / "a.png", smooth_image)
    result = run("eval", data, "--weights", weights_file, "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["settings"]["steps"] == [0, 4] and set(report["mean"]) == {"0", "4"}
    adapt = report["adapt"]
    assert (adapt["steps"], adapt["patch"], adapt["ema"]) == (4, config.GAUSSIAN_PATCH, config.GAUSSIAN_EMA)
    assert report["images"][0]["psnr"]["4"] != report["images"][0]["psnr"]["0"]
    # intermediate M are scored along the same run; an M past the default budget is refused
    result = run("eval", data, "--weights", weights_file, "--warmup", 0, "--steps", "2,default", "--json")
    assert set(json.loads(result.output)["mean"]) == {"0", "2", "4"}
    result = CliRunner().invoke(
        main, ["eval", str(data), "--weights", str(weights_file), "--steps", "0,8,default"]
    )
    assert (
        result.exit_code == 2
        and result.output == "error: --steps 8 is beyond the default budget of 4 updates\n"
    )


def test_eval_reads_every_image_before_adapting_and_holds_one_at_a_time(
    tmp_path, smooth_image, weights_file, monkeypatch
):
    import weakref

    from rfr_deploy.jobs import evaluate

    data = tmp_path / "set"
    for i in range(3):
        write_image(data / f"{i}.png", np.roll(smooth_image, 3 * i, axis=1))
    (data / "3.png").write_bytes(b"not a png")  # the last one: found before any adaptation
    monkeypatch.setattr(evaluate, "adapt", lambda *a, **k: pytest.fail("adaptation started"))
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "-q")
    assert result.exit_code == 2 and "3.png" in result.stderr
    (data / "3.png").unlink()
    monkeypatch.undo()
    read, score = evaluate.read_source, evaluate._score_image
    decoded, most = [], [0]

    def tracked_read(source):
        images = read(source)
        decoded.append(weakref.ref(images[1].pixels))
        return images

    def tracked_score(image_run, *args):
        most[0] = max(most[0], sum(ref() is not None for ref in decoded))
        return score(image_run, *args)

    monkeypatch.setattr(evaluate, "read_source", tracked_read)
    monkeypatch.setattr(evaluate, "_score_image", tracked_score)
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "--crop", 16, "-q")
    assert result.exit_code == 0, result.output
    assert len(decoded) == 6 and most[0] == 0  # each read twice; whole images let go once cropped
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "-q")
    assert result.exit_code == 0 and most[0] == 1  # uncropped: the image being scored, no other


@pytest.mark.parametrize("steps", ["", "0,ten", "-1,default", "0,1.5"])
def test_eval_refuses_malformed_steps(tmp_path, smooth_image, steps):
    write_image(tmp_path / "set" / "a.png", smooth_image)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "set"), "--steps", steps])
    assert result.exit_code == 2 and "--steps" in result.output and "default" in result.output


def test_eval_on_real_noise_pairs_adapts_with_camera_noise(tmp_path, smooth_image, weights_file, rng):
    data = tmp_path / "pairs"
    for i in range(2):
        clean = np.roll(smooth_image, 5 * i, axis=0)
        noisy = np.clip(clean + 0.04 * rng.standard_normal(clean.shape), 0, 1)
        write_image(data / "gt" / f"{i}_mean.png", clean)
        write_image(data / "noisy" / f"{i}_real.png", noisy)
    # files pair up by name without their suffixes; with no true σ, "known" falls back to the estimate
    result = run(
        "eval",
        data,
        "--pairs",
        "--weights",
        weights_file,
        "--noise",
        "camera",
        "--steps",
        "0,2",
        "--select",
        "off",
        "--warmup",
        0,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["settings"]["pairs"] is True and report["settings"]["noise"] == "camera"
    assert len(report["images"]) == 2 and set(report["mean"]) == {"0", "2"}
    for image in report["images"]:
        # the PSNR of the real noisy image, not of synthetic noise added to the clean one
        assert 24 < image["noisy_psnr"] < 31
        assert image["psnr"]["2"] != image["psnr"]["0"]


def test_eval_pairs_without_the_gt_folder_is_a_one_line_error(tmp_path, weights_file, smooth_image):
    write_image(tmp_path / "pairs" / "noisy" / "a.png", smooth_image)
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "pairs"), "--pairs", "--weights", str(weights_file)]
    )
    assert result.exit_code != 0 and "expected sub-folders 'noisy' and 'gt'" in result.output
    assert "Traceback" not in result.output


def test_eval_scores_the_self_ensemble_beside_the_single_pass(tmp_path, smooth_image, weights_file):
    data = tmp_path / "set"
    write_image(data / "a.png", smooth_image)
    result = run(
        "eval",
        data,
        "--weights",
        weights_file,
        "--steps",
        "0,2",
        "--select",
        "off",
        "--score-ensemble",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    image = report["images"][0]
    assert set(image["ensemble_psnr"]) == {"0", "2"} and image["interpolation"] == {"2": 0.5}
    assert image["ensemble_psnr"]["0"] != image["psnr"]["0"]
    gain = report["ensemble_gain_db"]["0"]
    assert gain == pytest.approx(image["ensemble_psnr"]["0"] - image["psnr"]["0"], abs=1e-3)


def test_pretrain_trains_checkpoints_and_resumes(tmp_path, smooth_image):
    data = tmp_path / "train"
    for i in range(3):
        write_image(data / f"{i}.png", np.roll(smooth_image, 5 * i, axis=0))
    out = tmp_path / "run"
    common = [
        "pretrain",
        data,
        "--channels",
        3,
        "-o",
        out,
        "--batch",
        2,
        "--patch",
        16,
        "--checkpoint-every",
        2,
        "--quiet",
    ]
    assert run(*common, "--steps", 2).exit_code == 0
    from rfr_deploy.jobs.pretrain import checkpoint_step

    assert checkpoint_step(out) == 2
    result = run(*common, "--steps", 4, "--json")
    assert result.exit_code == 0, result.output
    assert checkpoint_step(out) == 4
    from rfr_deploy.models.weights import read_weights_meta

    meta, extra = read_weights_meta(json.loads(result.output)["weights"])
    assert meta.arch == "dncnn" and meta.channels == 3 and extra["training"]["steps_done"] == 4


def test_pretrain_can_start_from_existing_weights(tmp_path, smooth_image):
    from rfr_deploy.models.factory import get_entry
    from rfr_deploy.models.weights import load_weights, packaged_weights_path, read_weights_meta

    data = tmp_path / "train"
    write_image(data / "0.png", smooth_image)
    init = packaged_weights_path("dncnn_color_blind.safetensors")
    args = ["pretrain", data, "--channels", 3, "-o", tmp_path / "run", "--batch", 1, "--patch", 16]
    result = run(*args, "--steps", 1, "--lr", 1e-12, "--lr-min", 1e-13, "--init", init, "--json")
    assert result.exit_code == 0, result.output
    entry = get_entry("dncnn")
    trained = load_weights(json.loads(result.output)["weights"], entry).net.state_dict()
    start = load_weights(init, entry).net.state_dict()
    assert max(float((trained[k] - start[k]).abs().max()) for k in start) < 1e-6
    meta, _ = read_weights_meta(json.loads(result.output)["weights"])
    assert "started from dncnn_color_blind.safetensors" in meta.notes
    wrong = CliRunner().invoke(
        main,
        [str(a) for a in [*args, "-o", tmp_path / "r2", "--channels", 1, "--steps", 1, "--init", init, "-q"]],
    )
    assert (
        wrong.exit_code == 2 and "3-channel" in wrong.output and len(wrong.output.strip().splitlines()) == 1
    )
    assert not (tmp_path / "r2").exists()  # refused before the output folder was made


def test_pretrain_refuses_unusable_data_before_any_output_and_a_divergence_is_one_line(
    tmp_path, smooth_image, monkeypatch
):
    from rfr_deploy.jobs import pretrain

    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "small" / "0.png", smooth_image[:8, :8])
    for data, message in (("empty", "no images found"), ("small", "no training image of at least 16×16")):
        result = run("pretrain", tmp_path / data, "-o", tmp_path / "run", "--patch", 16, "--steps", 1)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "pretraining" not in result.stderr  # no progress bar before the data is checked
        assert not (tmp_path / "run").exists()
    monkeypatch.setattr(pretrain.Training, "loss", lambda self, clean: self.model(clean).sum() * float("nan"))
    args = ["pretrain", tmp_path / "small", "-o", tmp_path / "run", "--patch", 8, "--steps", 1, "-q"]
    result = run(*args, "--channels", 3)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: training diverged at step 1 (loss nan); lower the learning rate\n",
    )


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
