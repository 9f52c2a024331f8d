"""Resuming ``rfr-deploy pretrain`` from OUT/checkpoint.pt on tiny images: a broken checkpoint is one line,
changed training settings are refused, and a longer run goes on along the cosine over its new length."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from cli_helpers import run

from rfr_deploy.images import write_image
from rfr_deploy.jobs import pretrain
from rfr_deploy.jobs.pretrain import PretrainConfig, checkpoint_step
from rfr_deploy.jobs.pretrain_resume import read_checkpoint
from rfr_deploy.models.weights import read_weights_meta


@pytest.fixture
def data(tmp_path, smooth_image):
    folder = tmp_path / "train"
    for i in range(3):
        write_image(folder / f"{i}.png", np.roll(smooth_image[:, :32], 5 * i, axis=0))
    return folder


def train(data, out, *options):
    return run("pretrain", data, "-o", out, "--batch", 2, "--patch", 16, "-q", *options)


@pytest.mark.parametrize("broken", ["truncated", "empty", "state dict"])
def test_a_broken_checkpoint_is_one_line_naming_it(tmp_path, data, broken):
    out = tmp_path / "run"
    assert train(data, out, "--steps", 1).exit_code == 0
    checkpoint = out / "checkpoint.pt"
    if broken == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif broken == "empty":
        checkpoint.write_bytes(b"")
    else:
        torch.save({"weight": torch.zeros(2)}, checkpoint)
    result = train(data, out, "--steps", 2)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(
        f"error: {checkpoint}: not a resumable checkpoint of rfr-deploy pretrain ("
    ) and result.stderr.endswith("remove it to start afresh\n")
    with pytest.raises(pretrain.ConfigError, match="not a resumable checkpoint"):
        checkpoint_step(out)


def test_resuming_refuses_changed_training_settings_and_records_the_checkpoints(tmp_path, data):
    from rfr_deploy.models.weights import packaged_weights_path

    out = tmp_path / "run"
    init = packaged_weights_path("dncnn_color_blind.safetensors")
    assert train(data, out, "--channels", 3, "--steps", 2, "--init", init).exit_code == 0
    final = (out / "final.safetensors").read_bytes()
    changed = ("--lr", 0.5, "--loss", "mse", "--sigma-high", 10, "--batch", 1)
    result = run("pretrain", data, "-o", out, "--patch", 16, "--channels", 3, "--steps", 4, *changed)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    for named in (
        "--batch 2 (not 1)",
        "--loss l1 (not mse)",
        "--lr 0.0001 (not 0.5)",
        "--sigma-high 50 (not 10)",
    ):
        assert named in result.stderr
    assert "--steps" not in result.stderr.split(";")[0]  # --steps may extend a run
    assert checkpoint_step(out) == 2 and (out / "final.safetensors").read_bytes() == final

    # Only --steps and how the process runs change; the weights still name the checkpoint's warm start.
    result = train(
        data, out, "--channels", 3, "--steps", 3, "--threads", 1, "--checkpoint-every", 7, "--json"
    )
    assert result.exit_code == 0, result.output
    meta, extra = read_weights_meta(json.loads(result.output)["weights"])
    assert extra["training"]["steps_done"] == 3 and extra["training"]["config"]["lr"] == 1e-4
    assert meta.sigma_range == pytest.approx((0, 50 / 255)) and ", l1, Adam 0.0001→1e-06" in meta.notes
    assert "started from dncnn_color_blind.safetensors" in meta.notes


def test_other_training_folders_are_refused(tmp_path, data):
    out = tmp_path / "run"
    assert train(data, out, "--steps", 1).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    for image in data.iterdir():
        (other / image.name).write_bytes(image.read_bytes())
    result = train(other, out, "--steps", 2)
    assert result.exit_code == 2 and f"DATA {data} (not {other})" in result.stderr, result.output


def test_a_longer_run_resumes_along_the_cosine_over_its_new_length(tmp_path, data):
    out = str(tmp_path / "run")
    short = PretrainConfig(data=(str(data),), out=out, steps=2, batch=2, patch=16, lr=1e-3, lr_min=1e-5)
    pretrain.pretrain(short)
    long = dataclasses.replace(short, steps=10)
    cpu = torch.device("cpu")
    resumed = pretrain._start(long, cpu)
    path = tmp_path / "run" / "checkpoint.pt"
    step, _history, _config = pretrain._resume(path, read_checkpoint(path), resumed, long)
    fresh = pretrain._start(long, cpu)
    for _ in range(step):
        fresh.optimizer.step()
        fresh.scheduler.step()
    for _ in range(3):  # at the step resumed from, then along the schedule
        lr = resumed.optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(fresh.optimizer.param_groups[0]["lr"], rel=1e-9)
        assert lr > 5e-4  # not stuck at --lr-min, where the 2-step schedule ended
        for run_ in (resumed, fresh):
            run_.optimizer.step()
            run_.scheduler.step()
    assert pretrain.cosine_lr(long, 2) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi / 5)) / 2)
