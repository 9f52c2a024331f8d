"""One engine per run: which network builds, which are refitted, and the profile covering every image.

TensorRT is not needed: the build and refit functions are replaced by recorders that
write a placeholder file and say what they were asked. Real builds and refits run in
test_tensorrt_engine.py where TensorRT and a GPU exist.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from exporters import tensorrt_engine
from exporters.engine_format import EngineExporter
from exporters.engine_plan import EngineRun
from exporters.engine_sidecar import EngineProfile, EngineSidecar, RuntimeInfo, compute_profile, sidecar_path
from exporters.errors import ProfileError
from exporters.onnx_format import OnnxExporter
from exporters.tensorrt_engine import EngineOptions
from rfr_deploy.cli import main
from rfr_deploy.images import write_image
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights

SIZES = [(24, 20), (16, 40), (32, 28)]


class Recorder:
    """Stand-ins for build_engine / refit_engine that log their calls and write a placeholder engine."""

    def __init__(self):
        self.calls: list[tuple] = []

    def build(self, onnx_path, engine_path, *, model, profile, precision, example, sigma, options):
        self.calls.append(("built", Path(engine_path).name, profile))
        return self._artifact(engine_path, "built")

    def refit(self, base, engine_path, *, model, onnx_path, example, sigma, options):
        self.calls.append(("refit", Path(engine_path).name, Path(base).name))
        return self._artifact(engine_path, "refit")

    def _artifact(self, engine_path, mode):
        engine_path = Path(engine_path)
        engine_path.write_bytes(mode.encode())
        side = sidecar_path(engine_path)
        side.write_text("{}")
        return SimpleNamespace(path=engine_path, sidecar=side, mode=mode, seconds=0.25, max_abs_error=1e-4)


def test_the_first_network_builds_over_every_size_and_the_rest_refit_it(tmp_path):
    recorder = Recorder()
    run = EngineRun(SIZES, EngineOptions(), build=recorder.build, refit=recorder.refit)
    assert run.next_mode() == "built"
    for name in ("a", "b", "c"):
        run.export(
            None, tmp_path / f"{name}.onnx", tmp_path / f"{name}.engine", example=None, precision="fp32"
        )
    profile = recorder.calls[0][2]
    assert [c[:2] for c in recorder.calls] == [
        ("built", "a.engine"),
        ("refit", "b.engine"),
        ("refit", "c.engine"),
    ]
    assert all(c[2] == "a.engine" for c in recorder.calls[1:])
    assert all(profile.contains(1, h, w) for h, w in SIZES)
    assert profile.height == (16, 32, 32) and profile.width == (20, 28, 40)  # opt: the largest image (32×28)


def test_user_sizes_widen_the_profile_and_must_contain_every_image(tmp_path):
    run = EngineRun(SIZES, EngineOptions(min_hw=(8, 8), max_hw=(64, 64)))
    assert run.profile.height == (8, 32, 64) and run.profile.width == (8, 28, 64)
    with pytest.raises(ProfileError, match="outside the engine's profile"):
        EngineRun(SIZES, EngineOptions(max_hw=(32, 32)))  # the 16×40 image does not fit


def write_base_engine(path: Path, profile: EngineProfile) -> Path:
    path.write_bytes(b"base plan")
    EngineSidecar(
        runtime=RuntimeInfo("10.16.0.72", "NVIDIA L4", "8.9"),
        precision="fp32",
        profile=profile,
        io=[],
        refittable=True,
        engine_sha256=hashlib.sha256(b"base plan").hexdigest(),
        onnx_sha256="",
        weights_sha256=None,
        weight_map=None,
        mode="built",
    ).write(sidecar_path(path))
    return path


def test_a_users_base_engine_is_refitted_for_every_network_and_must_cover_them(tmp_path):
    base = write_base_engine(tmp_path / "base.engine", compute_profile([(64, 64)], min_hw=(8, 8)))
    recorder = Recorder()
    run = EngineRun(SIZES, EngineOptions(), base, build=recorder.build, refit=recorder.refit)
    for name in ("a", "b"):
        run.export(
            None, tmp_path / f"{name}.onnx", tmp_path / f"{name}.engine", example=None, precision="fp32"
        )
    assert recorder.calls == [("refit", "a.engine", "base.engine"), ("refit", "b.engine", "base.engine")]
    small = write_base_engine(tmp_path / "small.engine", compute_profile([(24, 24)], min_hw=(8, 8)))
    with pytest.raises(ProfileError, match=r"1×16×40"):
        EngineRun(SIZES, EngineOptions(), small)


# --------------------------------------------------------------------------- adapt-and-export DIR


@pytest.fixture
def folder(tmp_path, rng):
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, model.net, model.meta)
    for i, (h, w) in enumerate(SIZES):
        write_image(tmp_path / "in" / f"img{i}.png", rng.random((h, w, 3)).astype(np.float32))
    return tmp_path / "in", weights


@pytest.fixture
def recorder(monkeypatch):
    """adapt-and-export with TensorRT replaced: no support check, build/refit recorded."""
    recorder = Recorder()
    monkeypatch.setattr(tensorrt_engine, "check_engine_support", lambda: None)
    monkeypatch.setattr(tensorrt_engine, "build_engine", recorder.build)
    monkeypatch.setattr(tensorrt_engine, "refit_engine", recorder.refit)
    return recorder


def adapt_and_export(folder, weights, out, *extra):
    args = ["adapt-and-export", str(folder), "--weights", str(weights), "--steps", "1", "--sigma", "25"]
    return CliRunner().invoke(main, [*args, "--format", "engine", "-o", str(out), "--json", *extra])


def test_a_folder_builds_one_engine_and_refits_it_per_image(folder, recorder, tmp_path):
    out = tmp_path / "out"
    result = adapt_and_export(*folder, out)
    assert result.exit_code == 0, result.output
    manifests = json.loads(result.stdout)
    engines = [next(f for f in m["files"] if f["role"] == "engine") for m in manifests]
    assert [e["path"] for e in engines] == ["img0_rfr.engine", "img1_rfr.engine", "img2_rfr.engine"]
    assert [e["mode"] for e in engines] == ["built", "refit", "refit"]
    assert all(e["seconds"] == 0.25 for e in engines)
    assert "base" not in engines[0] and all(Path(e["base"]).name == "img0_rfr.engine" for e in engines[1:])
    profile = recorder.calls[0][2]
    assert all(profile.contains(1, h, w) for h, w in SIZES)
    assert [c[0] for c in recorder.calls] == ["built", "refit", "refit"]


def test_images_outside_a_users_base_engine_fail_before_any_adaptation(folder, recorder, tmp_path):
    base = write_base_engine(tmp_path / "base.engine", compute_profile([(24, 24)], min_hw=(8, 8)))
    out = tmp_path / "out"
    result = adapt_and_export(*folder, out, "--engine-from", str(base))
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: input 1×16×40 (N×H×W) is outside the engine's profile N 1-1, H 8-24, W 8-24 "
        "(optimised for 1×24×24); build an engine for this size or run it in tiles"
    ]
    assert recorder.calls == [] and not out.exists()


def test_engine_runs_are_planned_only_for_engine_exports(folder, tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(EngineExporter, "prepare", lambda self, sizes: planned.append(sizes))
    result = CliRunner().invoke(
        main,
        ["adapt-and-export", str(folder[0] / "img0.png"), "--weights", str(folder[1]), "--steps", "1"]
        + ["--sigma", "25", "-o", str(tmp_path / "out"), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert planned == []


# --------------------------------------------------------------------------- a Ray worker's engine run


def test_a_worker_builds_one_engine_and_refits_it_for_its_next_images(folder, recorder, tmp_path):
    """What one Ray worker process does with --format engine (the task function, run here without Ray)."""
    from dataclasses import replace

    from rfr_deploy.adaptation.config import AdaptConfig
    from rfr_deploy.jobs.ray_worker import STAGING, GroupTask, run_group
    from rfr_deploy.jobs.settings import JobSettings

    images, weights = folder
    out = tmp_path / "out"
    settings = JobSettings(weights=str(weights), sigma=25 / 255, output_dir=str(out))
    exporters = (OnnxExporter(), EngineExporter())
    task = GroupTask("run-1", (), settings, AdaptConfig(steps=1), exporters=exporters, sizes=tuple(SIZES))
    records = [run_group(replace(task, paths=(str(images / f"img{i}.png"),))) for i in range(3)]
    assert [r["status"] for r in records] == ["done"] * 3, records
    engines = [
        next(f for f in json.loads(Path(r["manifest"]).read_text())["files"] if f["role"] == "engine")
        for r in records
    ]
    assert [e["mode"] for e in engines] == ["built", "refit", "refit"]
    # the base built into the first task's staging folder is refitted where it now lives, in OUT
    assert all(Path(e["base"]) == out / "img0_rfr.engine" for e in engines[1:])
    assert [c[0] for c in recorder.calls] == ["built", "refit", "refit"]
    assert all(recorder.calls[0][2].contains(1, h, w) for h, w in SIZES)  # the run's profile, not one image's
    assert (out / "img0_rfr.engine").read_bytes() == b"built" and not any((out / STAGING).iterdir())
    again = run_group(replace(task, run_id="run-2", paths=(str(images / "img1.png"),)))
    assert again["status"] == "done" and recorder.calls[-1][0] == "built"  # a new run plans its own engine
