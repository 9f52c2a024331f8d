"""One engine per run: which network builds, which are refitted, and the profile covering every image; one
build per graph, profile and GPU across runs (the engine cache).

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
import torch
from click.testing import CliRunner

from exporters import tensorrt_engine
from exporters.engine_cache import EngineCache, engine_key
from exporters.engine_format import EngineExporter
from exporters.engine_plan import EngineRun
from exporters.engine_sidecar import EngineProfile, EngineSidecar, RuntimeInfo, compute_profile, sidecar_path
from exporters.errors import EngineMismatchError, ProfileError
from exporters.onnx_export import export_onnx
from exporters.onnx_format import OnnxExporter
from exporters.tensorrt_engine import EngineOptions
from rfr_deploy.cli import main
from rfr_deploy.images import write_image
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from tests.model_helpers import perturbed_model

SIZES = [(24, 20), (16, 40), (32, 28)]
L4 = RuntimeInfo("10.16.0.72", "NVIDIA L4", "8.9")


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
    monkeypatch.setattr(tensorrt_engine, "current_runtime", lambda: L4)
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


def test_a_worker_builds_one_engine_and_refits_it_for_its_next_images(
    folder, recorder, tmp_path, own_cache_folder
):
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
    # A new run plans its own engine: it refits the copy the engine cache kept, not the first run's file
    # (the image's adaptation, done with the same settings, is reused: only its exports are written).
    cached = next((own_cache_folder / "rfr-deploy" / "tensorrt-engines").glob("*.engine"))
    assert again["status"] == "exported" and recorder.calls[-1] == ("refit", "img1_rfr.engine", cached.name)


# --------------------------------------------------------------------------- the engine cache, across runs


def engines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [next(f for f in m["files"] if f["role"] == "engine") for m in json.loads(result.stdout)]


def test_a_later_run_refits_the_engine_an_earlier_run_built(folder, recorder, tmp_path, own_cache_folder):
    first = engines(adapt_and_export(*folder, tmp_path / "out1"))
    second = engines(adapt_and_export(*folder, tmp_path / "out2"))
    (entry,) = (own_cache_folder / "rfr-deploy" / "tensorrt-engines").glob("*.engine")
    assert [e["mode"] for e in first] == ["built", "refit", "refit"]
    assert [e["mode"] for e in second] == ["refit"] * 3 and Path(second[0]["base"]) == entry
    # later networks refit the run's own first engine: the cache entry may be trimmed meanwhile
    assert all(Path(e["base"]) == tmp_path / "out2" / "img0_rfr.engine" for e in second[1:])
    assert entry.read_bytes() == (tmp_path / "out1" / "img0_rfr.engine").read_bytes()
    assert [c[0] for c in recorder.calls] == ["built"] + ["refit"] * 5


def test_another_profile_or_no_engine_cache_builds(folder, recorder, tmp_path, own_cache_folder):
    runs = [
        engines(adapt_and_export(*folder, tmp_path / "out1")),
        engines(adapt_and_export(*folder, tmp_path / "out2", "--engine-max-size", "64x64")),
        engines(adapt_and_export(*folder, tmp_path / "out3", "--no-engine-cache")),
    ]
    assert [run[0]["mode"] for run in runs] == ["built", "built", "built"]
    assert len(list((own_cache_folder / "rfr-deploy" / "tensorrt-engines").glob("*.engine"))) == 2


def exported(tmp_path, seed: int):
    torch.manual_seed(seed)
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8).eval()
    onnx_path = tmp_path / f"net{seed}.onnx"
    export_onnx(model, onnx_path, example=torch.rand(1, 3, 24, 24))
    return model, onnx_path


def test_a_cached_engine_that_cannot_be_refitted_is_removed_and_the_run_builds(tmp_path):
    cache, recorded = EngineCache(tmp_path / "cache"), Recorder()
    runs = []
    for seed, refit_fails in ((0, False), (1, True), (2, False)):
        refit = recorded.refit
        if refit_fails:  # e.g. the cached file no longer matches its sidecar

            def refit(base, engine_path, **kwargs):
                raise EngineMismatchError(f"{base}: the engine file does not match its sidecar")

        run = EngineRun(
            SIZES, EngineOptions(), build=recorded.build, refit=refit, cache=cache, runtime=lambda: L4
        )
        model, onnx_path = exported(tmp_path, seed)
        runs.append(
            run.export(model, onnx_path, tmp_path / f"{seed}.engine", example=None, precision="fp32").mode
        )
    assert runs == ["built", "built", "refit"]
    assert [c[:2] for c in recorded.calls] == [
        ("built", "0.engine"),
        ("built", "1.engine"),
        ("refit", "2.engine"),
    ]
    assert len(list((tmp_path / "cache").glob("*.engine"))) == 1


def test_the_key_ignores_weight_values_but_not_the_graph_profile_or_gpu(tmp_path):
    (model_a, onnx_a), (_, onnx_b) = exported(tmp_path, 0), exported(tmp_path, 1)
    parameters = set(model_a.state_dict())
    profile, other = compute_profile(SIZES), compute_profile(SIZES, max_hw=(64, 64))

    def key(onnx_path, profile=profile, runtime=L4, precision="fp32"):
        return engine_key(onnx_path, parameters, profile, precision, EngineOptions(), runtime)

    assert key(onnx_a) == key(onnx_b)  # other weights: the same engine, refitted
    h100 = RuntimeInfo("10.16.0.72", "NVIDIA H100 80GB HBM3", "9.0")
    assert (
        len(
            {
                key(onnx_a),
                key(onnx_a, profile=other),
                key(onnx_a, runtime=h100),
                key(onnx_a, precision="fp16"),
            }
        )
        == 4
    )
    torch.manual_seed(0)
    wider = create_model("dncnn", weights=None, channels=3, depth=3, features=16).eval()
    export_onnx(wider, tmp_path / "wider.onnx", example=torch.rand(1, 3, 24, 24))
    assert engine_key(
        tmp_path / "wider.onnx", set(wider.state_dict()), profile, "fp32", EngineOptions(), L4
    ) != key(onnx_a)


def test_ray_tasks_carry_only_the_sizes_the_engine_profile_depends_on(rng):
    from exporters.engine_sidecar import compute_profile
    from rfr_deploy.jobs.distributed import deciding_sizes

    sizes = [(int(h), int(w)) for h, w in rng.integers(20, 900, size=(500, 2))]
    few = deciding_sizes(sizes)
    assert len(few) <= 6 and set(few) <= set(sizes) and deciding_sizes([]) == ()
    assert compute_profile(list(few)) == compute_profile(sizes)


def test_an_image_too_small_to_reflect_is_planned_at_the_size_its_runtime_pads_it_to(tmp_path, monkeypatch):
    """FFDNet pads to even sizes and its graph reflects: a 1-pixel row runs edge-padded to 2×6, which the
    engine's profile must cover (the TensorRT runner and the C++ sample pad it so)."""
    from rfr_deploy.jobs.preparation import graph_sizes

    assert graph_sizes([(1, 5), (3, 1), (2, 7), (40, 33)], "ffdnet") == [(2, 6), (4, 2), (2, 7), (40, 33)]
    assert graph_sizes([(1, 5)], "dncnn") == [(1, 5)]
    planned = []
    monkeypatch.setattr(EngineExporter, "prepare", lambda self, sizes: planned.append(sizes))
    monkeypatch.setattr(EngineExporter, "check", lambda self: None)
    weights = tmp_path / "ffdnet.safetensors"
    model = perturbed_model("ffdnet", 3, depth=3, seed=0)
    save_weights(weights, model.net, model.meta)
    image = tmp_path / "row.png"
    write_image(image, np.random.default_rng(0).random((1, 5, 3)))
    result = CliRunner().invoke(
        main,
        ["adapt-and-export", str(image), "--model", "ffdnet", "--weights", str(weights), "--format", "engine"]
        + ["--sigma", "25", "--dry-run", "-o", str(tmp_path / "out")],
    )
    assert planned == [[(2, 6)]], result.output
