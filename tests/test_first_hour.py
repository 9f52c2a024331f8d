"""What a new user hits in the first hour: bad inputs end in one `error:` line (exit 2) before any long
work, σ is estimated only where used, and the manifest and outputs are reproducible and well placed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import rfr_deploy.jobs.adapt_export as pipeline
import rfr_deploy.jobs.inputs as job_inputs
from rfr_deploy.cli import main
from rfr_deploy.images import write_image
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and all(w in lines[0] for w in words), lines[0]


@pytest.fixture
def no_long_work(monkeypatch):
    """Fails the test if the σ estimate or the adaptation starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("long work started before the inputs were checked")

    monkeypatch.setattr(job_inputs, "estimate_noise_level", refuse)
    monkeypatch.setattr(pipeline, "adapt", refuse)


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 3, 3), (64, 64, 3)], ids=["1x1", "3x3", "flat64"])
def test_an_image_without_a_measurable_noise_level_is_one_error(tmp_path, weights_file, shape, rng):
    pixels = np.full(shape, 0.5) if shape[0] == 64 else rng.random(shape)
    path = write_image(tmp_path / "img.png", pixels)
    out = tmp_path / "out"
    result = invoke("adapt-and-export", path, "--weights", weights_file, "--steps", 1, "-o", out)
    assert_one_error(result, "img.png", "no noise level can be estimated", "--sigma")
    assert not out.exists()


def test_sigma_zero_is_refused_before_any_work(image_file, weights_file, tmp_path, no_long_work):
    result = invoke("adapt-and-export", image_file, "--weights", weights_file, "--sigma", 0, "-o", tmp_path)
    assert_one_error(result, "--sigma 0")


@pytest.mark.parametrize("command", ["adapt-and-export", "denoise"])
@pytest.mark.parametrize("where", ["file", "under_file", "read_only"])
def test_an_unusable_output_folder_is_one_error_before_any_work(
    tmp_path, image_file, weights_file, command, where, monkeypatch, no_long_work
):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    target = {"file": blocker, "under_file": blocker / "sub" / "out", "read_only": tmp_path / "ro" / "out"}
    if where == "read_only":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        if os.geteuid() == 0:  # root writes anywhere: make the write probe fail as it would for a user
            import tempfile

            def denied(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    result = invoke(command, image_file, "--weights", weights_file, "--sigma", 25, "-o", target[where])
    words = {"file": "is a file", "under_file": "lies under", "read_only": "Permission denied"}
    assert_one_error(result, words[where])
    assert str(target[where]) in result.output  # the folder asked for, not only the parent that failed
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["adapt-and-export", "denoise"])
def test_two_inputs_that_would_write_the_same_files_are_one_error_before_any_work(
    tmp_path, image_file, weights_file, command, no_long_work
):
    twin = tmp_path / "elsewhere" / image_file.name
    twin.parent.mkdir()
    twin.write_bytes(image_file.read_bytes())
    out = tmp_path / "out"
    result = invoke(command, image_file, twin, "--weights", weights_file, "--sigma", 25, "-o", out)
    assert_one_error(result, str(image_file), str(twin), "would both write", str(out / "noisy"))
    assert not out.exists()


def test_a_reference_of_another_shape_is_one_error_before_any_work(
    tmp_path, image_file, weights_file, no_long_work
):
    other = write_image(tmp_path / "ref.png", np.zeros((8, 8, 3), dtype=np.float32))
    args = ["adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "-o", tmp_path / "out"]
    assert_one_error(invoke(*args, "--reference", other), str(other), "reference is (8, 8, 3)")
    assert not (tmp_path / "out").exists()


def test_an_unsupported_onnx_opset_is_one_error_before_any_work(
    tmp_path, image_file, weights_file, no_long_work
):
    args = ["adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "-o", tmp_path / "out"]
    assert_one_error(invoke(*args, "--format", "onnx", "--opset", 5), "ONNX opset 5 is not supported")
    assert not (tmp_path / "out").exists()


def test_missing_weights_are_reported_before_the_sigma_estimate(image_file, tmp_path, no_long_work):
    result = invoke("adapt-and-export", image_file, "--weights", tmp_path / "missing.pth", "-o", tmp_path)
    assert_one_error(result, "weights file not found")


@pytest.mark.parametrize(
    "args",
    [
        ["adapt-and-export", "x.png", "--steps", "-1"],
        ["adapt-and-export", "x.png", "--sigma", "abc"],
        ["denoise"],
        ["denoise", "x.png", "--no-such-option"],
        ["no-such-command"],
        ["pretrain", "--device", "tpu", "."],
    ],
)
def test_usage_errors_are_one_error_line(args):
    result = invoke(*args)
    assert_one_error(result, "--help")
    assert "Usage:" not in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--sigma-low", 60, "--sigma-high", 10], ["--sigma-low 60 is above --sigma-high 10"]),
        (["--sigma-high", 300], ["--sigma-high must be within [0, 255] grey levels, got 300"]),
        (["--lr", -1], ["--lr must be a positive number"]),
    ],
)
@pytest.mark.parametrize("command", ["adapt-and-export", "pretrain"])
def test_settings_out_of_range_are_one_error_line(tmp_path, image_file, command, args, words):
    extra = ["--unknown-sigma", "uniform"] if command == "adapt-and-export" else []
    result = invoke(command, image_file.parent, *args, *extra, "-o", tmp_path / "out")
    assert_one_error(result, *words)
    assert not (tmp_path / "out").exists()


def test_the_sigma_estimate_is_skipped_when_sigma_is_given_or_unused(
    tmp_path, image_file, weights_file, monkeypatch
):
    calls = []
    real = job_inputs.estimate_noise_level
    monkeypatch.setattr(job_inputs, "estimate_noise_level", lambda y, *a: calls.append(1) or real(y, *a))
    out = tmp_path / "out"
    adapt = ["adapt-and-export", image_file, "--weights", weights_file, "--steps", 1, "-o", out, "--json"]
    assert invoke(*adapt, "--sigma", 25).exit_code == 0 and calls == []
    denoised = invoke("denoise", image_file, "--weights", weights_file, "-o", out, "--json")
    assert denoised.exit_code == 0 and calls == []  # a blind network takes no σ
    assert json.loads(denoised.stdout)[0]["sigma_estimate"] is None
    torch.manual_seed(0)
    ffdnet = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "ffdnet.safetensors", ffdnet.net, ffdnet.meta)
    mapped = invoke("denoise", image_file, "--model", "ffdnet", "--weights", tmp_path / "ffdnet.safetensors")
    assert mapped.exit_code == 0 and calls == [1]  # a noise-map network needs one
    assert invoke(*adapt).exit_code == 0 and calls == [1, 1]  # unknown σ: adaptation noise at the estimate


def test_identical_runs_write_identical_weights_and_one_interpolation_field(
    tmp_path, image_file, weights_file
):
    manifests = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = invoke(
            "adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "--steps", 2, "-o", out
        )
        assert result.exit_code == 0, result.output
        manifests.append(json.loads((out / "noisy.json").read_text()))
        assert "noisy_rfr.safetensors" in result.stdout and "PSNR" not in result.stderr
    a, b = ((tmp_path / run / "noisy_rfr.safetensors").read_bytes() for run in ("a", "b"))
    assert (
        a == b
        and manifests[0]["model"]["adapted_weights_sha256"] == manifests[1]["model"]["adapted_weights_sha256"]
    )
    adaptation = manifests[0]["adaptation"]
    assert (
        "interpolation_used" not in adaptation and f"{adaptation['interpolation']:g}" in adaptation["sure_db"]
    )
    assert manifests[0]["torch"] == {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }


def test_result_lines_go_to_stdout_and_json_keeps_stdout_clean(tmp_path, image_file, weights_file):
    common = ["denoise", image_file, "--weights", weights_file, "-o", tmp_path / "out"]
    plain = invoke(*common)
    assert plain.exit_code == 0 and plain.stdout.count("\n") == 1 and "noisy_denoised.png" in plain.stdout
    assert "noisy_denoised.png" not in plain.stderr  # stderr: the progress bar only
    as_json = invoke(*common, "--json")
    assert json.loads(as_json.stdout)[0]["output"].endswith("noisy_denoised.png")


@pytest.mark.parametrize(
    "args",
    [
        ["eval", ".", "--markdown", "{blocker}/table.md"],
        ["bench", "--models", "dncnn", "--output", "{blocker}/bench.md"],
        ["bench", "--models", "dncnn", "--plot", "{blocker}/bench.png"],
    ],
    ids=["eval-markdown", "bench-output", "bench-plot"],
)
def test_a_report_file_that_cannot_be_written_is_refused_before_any_work(tmp_path, args, monkeypatch):
    import rfr_deploy.cli.bench as bench_cli
    import rfr_deploy.cli.evaluate as eval_cli

    def refuse(*a, **k):
        raise AssertionError("the evaluation or the bench started")

    monkeypatch.setattr(eval_cli, "evaluate", refuse)
    monkeypatch.setattr(bench_cli, "run_bench", refuse)
    (tmp_path / "blocker").write_text("a file where the report's folder should be")
    result = invoke(*[a.format(blocker=tmp_path / "blocker") for a in args])
    assert_one_error(result, args[-2], "blocker is a file")


def test_a_plot_without_matplotlib_is_refused_before_the_bench(tmp_path, monkeypatch):
    import sys

    import rfr_deploy.cli.bench as bench_cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setattr(bench_cli, "run_bench", lambda *a, **k: pytest.fail("the bench started"))
    result = invoke("bench", "--models", "dncnn", "--plot", tmp_path / "bench.png")
    assert_one_error(result, "matplotlib", "rfr-deploy[plot]")


def test_an_estimated_level_above_the_network_s_training_is_named(tmp_path, smooth_image, rng, recwarn):
    """The packaged DnCNN was trained on σ up to 50: an image far noisier is named, with what to do."""
    noisy = smooth_image + (90 / 255) * rng.standard_normal(smooth_image.shape).astype(np.float32)
    path = write_image(tmp_path / "dark.png", np.clip(noisy, 0, 1))
    result = invoke("adapt-and-export", path, "--model", "dncnn", "--dry-run")
    assert result.exit_code == 0, result.output
    (warned,) = [str(w.message) for w in recwarn if "trained on" in str(w.message)]
    assert warned.startswith("dark.png: its estimated noise level σ ")
    assert warned.endswith(
        "is above the levels the network was trained on (up to 50), beyond which it denoises less well: "
        "weights trained for such levels (--weights) suit it better"
    )
    calm = write_image(
        tmp_path / "calm.png",
        np.clip(smooth_image + (25 / 255) * rng.standard_normal(smooth_image.shape), 0, 1),
    )
    recwarn.clear()
    assert invoke("adapt-and-export", calm, "--model", "dncnn", "--dry-run").exit_code == 0
    assert not [w for w in recwarn if "trained on" in str(w.message)]
