"""The ``pretrain`` command end to end on tiny images: checkpoints, resuming, starting from weights,
refusing unusable data."""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.errors import WeightsError
from rfr_deploy.images import write_image
from rfr_deploy.models.weights import read_weights_meta


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
    assert not (tmp_path / "run").exists()  # no empty run folder left behind
    result = run(*args, "--channels", 3, "-o", tmp_path / "made" / "run")
    assert result.exit_code == 2 and not (tmp_path / "made").exists()  # nor the parents it made
    (tmp_path / "kept").mkdir()
    assert run(*args, "--channels", 3, "-o", tmp_path / "kept").exit_code == 2
    assert (tmp_path / "kept").is_dir()  # a folder the run did not make stays


def test_pretraining_on_the_cpu_takes_channels_last_only_where_it_pays(tmp_path, smooth_image, monkeypatch):
    """On AVX2-only CPUs channels-last weight gradients are several times slower (cpu_runners)."""
    import torch

    from rfr_deploy.jobs import pretrain
    from rfr_deploy.jobs.pretrain import PretrainConfig

    write_image(tmp_path / "a.png", smooth_image)
    config = PretrainConfig(data=(str(tmp_path),), out=str(tmp_path / "run"), steps=1, batch=2, patch=16)
    for pays in (True, False):
        monkeypatch.setattr(pretrain, "channels_last_updates_pay", lambda pays=pays: pays)
        model = pretrain._start(config, torch.device("cpu")).model
        weight = next(p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1)  # 64 → 64
        assert weight.is_contiguous(memory_format=torch.channels_last) is pays
        assert weight.is_contiguous() is not pays


def test_pretrain_trains_the_network_of_the_weights_it_starts_from(tmp_path, smooth_image):
    """Weights that record no architecture settings (a plain state dict) are read by their tensors; the
    run trains that network, and resuming its checkpoint (without --init) goes on with it."""
    import torch

    from rfr_deploy.jobs.pretrain import PretrainConfig, pretrain
    from rfr_deploy.models.factory import create_model

    write_image(tmp_path / "train" / "0.png", smooth_image)
    args = ["pretrain", tmp_path / "train", "--batch", 1, "--patch", 16, "-q", "-o", tmp_path / "run"]
    small = create_model("dncnn", weights=None, channels=1, depth=3, features=8).net.state_dict()
    torch.save(small, tmp_path / "small.pth")
    result = run(*args, "--steps", 1, "--init", tmp_path / "small.pth")
    assert result.exit_code == 0, result.output
    assert read_weights_meta(tmp_path / "run" / "final.safetensors")[0].arch_kwargs == {
        "depth": 3,
        "features": 8,
    }
    assert run(*args, "--steps", 2).exit_code == 0
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert trained["step"] == 2 and trained["model"].keys() == small.keys()
    asked = PretrainConfig(
        data=(str(tmp_path / "train"),), out=str(tmp_path / "r2"), steps=1, batch=1, patch=16,
        init=str(tmp_path / "small.pth"), arch_kwargs={"depth": 5},
    )  # fmt: skip
    with pytest.raises(
        WeightsError, match=r"small.pth: weights have depth=3, but the run trains 'dncnn' with depth=5$"
    ):
        pretrain(asked)
    assert not (tmp_path / "r2").exists()


def test_pretrain_starts_from_official_weights(tmp_path, smooth_image, shared):
    from rfr_deploy.models.factory import get_entry
    from rfr_deploy.models.weights import load_weights

    write_image(tmp_path / "train" / "0.png", smooth_image)
    args = ["pretrain", tmp_path / "train", "--batch", 1, "--patch", 16, "--steps", 1, "--json"]
    cases = (
        ("dncnn", "dncnn/dncnn_gray_blind.pth", {}),
        ("ffdnet", "ffdnet/ffdnet_gray.pth", {}),
        ("dncnn", "dncnn/dncnn_25.pth", {"depth": 17}),  # DnCNN-S: 17 layers
    )
    missing = [str(shared("weights", name)) for _, name, _ in cases if not shared("weights", name).is_file()]
    if missing:
        pytest.skip(f"not found: {', '.join(missing)}")
    for model, name, arch in cases:
        init = shared("weights", name)
        out = tmp_path / name.replace("/", "_")
        result = run(*args, "-o", out, "--model", model, "--init", init, "--lr", 1e-12, "--lr-min", 0)
        assert result.exit_code == 0, result.output
        entry = get_entry(model)
        weights = json.loads(result.output)["weights"]
        assert read_weights_meta(weights)[0].arch_kwargs == arch
        trained = load_weights(weights, entry).net.state_dict()
        start = load_weights(init, entry).net.state_dict()
        assert max(float((trained[k] - start[k]).abs().max()) for k in start) < 1e-6


def test_pretrain_refuses_an_output_folder_it_cannot_write_before_reading_images(tmp_path):
    (tmp_path / "empty").mkdir()  # reading the images first would fail with "no images found"
    (tmp_path / "afile").write_text("")
    outs = [(tmp_path / "afile" / "sub", "lies under"), (tmp_path / "afile", "is a file")]
    if Path("/proc").is_dir():
        outs.append((Path("/proc/x"), "cannot write into the output folder /proc/x"))
    for out, message in outs:
        result = run("pretrain", tmp_path / "empty", "-o", out, "--steps", 1, "-q")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, (out, result.output)
        assert result.stderr.startswith("error: ") and message in result.stderr


def test_each_patch_of_a_batch_gets_its_own_flip_or_rotation(tmp_path, rng):
    """The paper's recipe augments every patch; one transform per batch left each update's 64 patches in
    one orientation."""
    import torch

    from rfr_deploy.jobs.pretrain import PatchSampler
    from rfr_deploy.transforms import DIHEDRAL, dihedral

    pixels = np.round(rng.random((16, 16, 1)) * 255) / 255  # its 8 transforms all differ
    write_image(tmp_path / "a.png", pixels.astype(np.float32))
    batch = PatchSampler((str(tmp_path),), 1, patch=16, seed=0).sample(64)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    transforms = [dihedral(image, k) for k in range(DIHEDRAL)]
    seen = [
        next(k for k, t in enumerate(transforms) if torch.allclose(patch, t[0], atol=1e-6)) for patch in batch
    ]
    assert len(set(seen)) == DIHEDRAL  # 64 patches: every transform among them


def test_a_sigma_range_with_camera_noise_is_refused(tmp_path, smooth_image):
    """Camera noise draws CBDNet's random camera levels: a Gaussian σ range would be silently ignored."""
    write_image(tmp_path / "train" / "0.png", smooth_image)
    args = ["pretrain", tmp_path / "train", "--noise", "camera", "--channels", 3, "-o", tmp_path / "run"]
    result = run(*args, "--sigma-high", 30)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: --sigma-high bounds Gaussian noise levels; --noise camera draws CBDNet's random camera "
        "levels: drop it\n",
    )
    assert not (tmp_path / "run").exists()
