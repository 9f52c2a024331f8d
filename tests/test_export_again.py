"""A rerun whose export formats or settings changed reuses the adaptation: only the exports are written."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.files import sha256_file

pytest.importorskip("onnxruntime")


def run(job, *extra, out="out"):
    args = ["adapt-and-export", str(job / "in"), "--weights", str(job / "tiny.safetensors"), "--sigma", "25"]
    return CliRunner().invoke(main, [*args, "--steps", "2", "-o", str(job / out), *extra])


def manifest(job, name="a", out="out"):
    return json.loads((job / out / f"{name}.json").read_text())


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_new_format_exports_the_adapted_weights_without_adapting_again(job):
    assert run(job, "--quiet").exit_code == 0
    first, before = manifest(job), mtimes(job / "out")
    again = run(job, "--format", "onnx")
    assert again.exit_code == 0, again.output
    assert "exported 2 image(s) again" in again.stderr and "adapting" not in again.stderr
    after = mtimes(job / "out")
    for name in ("a_rfr.png", "a_rfr.safetensors", "b_rfr.png", "b_rfr.safetensors"):
        assert after[name] == before[name]  # the adaptation's files are not rewritten
    second = manifest(job)
    assert [f["path"] for f in second["files"]] == ["a_rfr.png", "a_rfr.safetensors", "a_rfr.onnx"]
    assert second["adaptation_sha256"] == first["adaptation_sha256"]
    assert second["settings_sha256"] != first["settings_sha256"]
    assert second["created"] == first["created"] and "exported" in second and "exported" not in first
    assert second["losses"] == first["losses"] and second["files"][:2] == first["files"]
    # the export equals the one a run that adapted and exported at once writes
    assert run(job, "--format", "onnx", "--quiet", out="direct").exit_code == 0
    assert sha256_file(job / "out" / "a_rfr.onnx") == sha256_file(job / "direct" / "a_rfr.onnx")
    assert manifest(job, out="direct")["settings_sha256"] == second["settings_sha256"]
    rerun = run(job, "--format", "onnx")
    assert "skipped 2 image(s)" in rerun.stderr and mtimes(job / "out") == after


def test_dropping_a_format_removes_its_files_and_a_dry_run_says_what_is_to_export(job):
    assert run(job, "--format", "onnx", "--quiet").exit_code == 0
    (job / "out" / "a_rfr.notes.txt").write_text("mine")  # not listed by the manifest: kept
    plan = run(job, "--dry-run")
    assert plan.exit_code == 0 and "a.png: adapted with these settings" in plan.stdout
    assert "0 of 2 group(s) to adapt and 2 to export again" in plan.stdout
    assert run(job, "--quiet").exit_code == 0
    assert not (job / "out" / "a_rfr.onnx").exists() and (job / "out" / "a_rfr.notes.txt").is_file()
    assert [f["path"] for f in manifest(job)["files"]] == ["a_rfr.png", "a_rfr.safetensors"]


def test_an_adaptation_setting_or_damaged_weights_adapt_again(job):
    assert run(job, "--quiet").exit_code == 0
    changed = run(job, "--format", "onnx", "--steps", "3", "--json")  # --steps after: it wins
    assert [m["status"] for m in json.loads(changed.stdout)] == ["done", "done"]
    weights = job / "out" / "b_rfr.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, other bytes: the size check alone would pass it
    weights.write_bytes(bytes(data))
    again = json.loads(run(job, "--steps", "3", "--json").stdout)
    assert [m["status"] for m in again] == ["exported", "done"]
    assert sha256_file(weights) == again[1]["model"]["adapted_weights_sha256"]


def test_an_export_stopped_halfway_is_exported_again(job, monkeypatch):
    assert run(job, "--quiet").exit_code == 0
    from exporters import onnx_format

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(onnx_format.OnnxExporter, "export", fail)
        stopped = run(job, "--format", "onnx")
    assert stopped.exit_code != 0 and manifest(job).get("exported") is None  # the old manifest stays
    again = run(job, "--format", "onnx", "--json")
    assert [m["status"] for m in json.loads(again.stdout)] == ["exported", "exported"]
