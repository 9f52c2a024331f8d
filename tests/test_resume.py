"""Resuming adapt-and-export (sequential path), reproducible weights files, and the --ray options' checks."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rfr_deploy import progress
from rfr_deploy.cli import main
from rfr_deploy.errors import ImageError, MissingDependencyError
from rfr_deploy.images import write_image
from rfr_deploy.jobs.resume import Fingerprint, find_earlier, run_fingerprint
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights, sorted_header
from rfr_deploy.optional import import_optional


def run(job, *extra):
    args = ["adapt-and-export", str(job / "in"), "--weights", str(job / "tiny.safetensors"), "--sigma", "25"]
    return CliRunner().invoke(main, [*args, "--steps", "2", "-o", str(job / "out"), *extra])


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_rerun_skips_done_images_and_redoes_changed_or_incomplete_ones(job):
    assert run(job, "--quiet").exit_code == 0
    before = mtimes(job / "out")
    again = run(job)
    assert again.exit_code == 0, again.output
    assert "skipped 2 image(s) already done" in again.stderr and mtimes(job / "out") == before
    (job / "out" / "b_rfr.png").unlink()  # an output gone: b is redone, a still skipped
    again = run(job)
    assert "skipped 1 image(s)" in again.stderr and (job / "out" / "b_rfr.png").is_file()
    assert mtimes(job / "out")["a.json"] == before["a.json"]
    changed = run(job, "--steps", "3", "--json")  # a changed setting redoes both
    assert changed.exit_code == 0 and "skipped" not in changed.stderr
    assert [m["adaptation"]["steps"] for m in json.loads(changed.stdout)] == [3, 3]


def test_a_folder_is_held_one_image_at_a_time_and_done_images_are_not_estimated_again(job, monkeypatch):
    from rfr_deploy.jobs import inputs, preparation

    held, most, estimated = set(), [0], []
    load, release = inputs.ImageJob.load, inputs.ImageJob.release

    def tracked_load(self, device):
        held.add(self.path)
        most[0] = max(most[0], len(held))
        return load(self, device)

    def tracked_release(self):
        held.discard(self.path)
        release(self)

    monkeypatch.setattr(inputs.ImageJob, "load", tracked_load)
    monkeypatch.setattr(inputs.ImageJob, "release", tracked_release)
    real_levels = preparation.set_sigma_levels
    monkeypatch.setattr(
        preparation,
        "set_sigma_levels",
        lambda jobs, *a, **k: estimated.extend(jobs) or real_levels(jobs, *a, **k),
    )
    write_image(job / "in" / "c.png", np.random.default_rng(1).random((20, 24, 3)).astype(np.float32))
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # stderr is a log here: every step a line
    for command in (
        run,
        lambda j: CliRunner().invoke(main, ["denoise", str(j / "in"), "-o", str(j / "plain")]),
    ):
        result = command(job)
        assert result.exit_code == 0, result.output
        assert most[0] == 1 and not held  # every image let go; never two at once
        assert "checking 3 inputs: 3/3" in result.stderr  # the pass before any work shows its progress
        if command is run:  # each adaptation's bar says where the run stands
            assert "adapting a.png [1/3]" in result.stderr and "adapting c.png [3/3]" in result.stderr
    assert [j.path.name for j in estimated] == ["a.png", "b.png", "c.png"]  # each when its turn came
    (job / "out" / "b_rfr.png").unlink()  # b is redone; a and c are read (checked) but not estimated again
    assert run(job).exit_code == 0 and {j.path.name for j in estimated[3:]} == {"b.png"}


def failing_outputs(monkeypatch, name: str, error: Exception) -> None:
    """Writing the adapted output of the input ``name`` raises ``error``."""
    from rfr_deploy.jobs import adapt_export

    real = adapt_export.write_output

    def write_output(out_dir, job, *args):
        if job.path.name == name:
            raise error
        return real(out_dir, job, *args)

    monkeypatch.setattr(adapt_export, "write_output", write_output)


def test_an_image_that_fails_mid_run_is_named_and_the_run_goes_on_and_a_rerun_redoes_it(job, monkeypatch):
    failing_outputs(monkeypatch, "a.png", RuntimeError("the exporter rejected it"))
    result = run(job, "--json")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"error: {job / 'in' / 'a.png'}: RuntimeError: the exporter rejected it" in lines
    assert lines[-1].startswith("error: 1 of 2 image(s) failed (named above)")
    failed, done = json.loads(result.stdout)  # --json lists every group, the failed one's record too
    assert failed["status"] == "failed" and failed["inputs"] == [str(job / "in" / "a.png")]
    where, _, function = failed["raised_at"].rpartition(" in ")  # not one of rfr-deploy's errors: a bug
    assert where.startswith(f"{__file__}:") and function == "write_output"
    assert done["inputs"][0]["path"].endswith("b.png") and (job / "out" / "b.json").is_file()
    assert not (job / "out" / "a.json").exists()
    monkeypatch.undo()
    again = run(job)
    assert again.exit_code == 0, again.output
    assert "skipped 1 image(s)" in again.stderr and (job / "out" / "a.json").is_file()


def test_in_a_folder_each_level_is_estimated_at_its_turn_and_a_flat_image_fails_alone(job, monkeypatch):
    """A folder of large photos used to wait for every estimate before the first adaptation."""
    from rfr_deploy.jobs import adapt_export, inputs

    write_image(job / "in" / "a.png", np.full((20, 24, 3), 0.5, np.float32))  # flat: no level to read
    events = []
    real_estimate, real_adapt = inputs.estimate_noise_level, adapt_export.adapt
    monkeypatch.setattr(
        inputs, "estimate_noise_level", lambda *a, **k: events.append("estimate") or real_estimate(*a, **k)
    )
    monkeypatch.setattr(adapt_export, "adapt", lambda *a, **k: events.append("adapt") or real_adapt(*a, **k))
    args = ["adapt-and-export", str(job / "in"), "--weights", str(job / "tiny.safetensors"), "--steps", "2"]
    result = CliRunner().invoke(main, [*args, "-o", str(job / "out")])
    assert (
        result.exit_code == 1 and (job / "out" / "b.json").is_file() and not (job / "out" / "a.json").exists()
    )
    assert f"error: {job / 'in' / 'a.png'}: no noise level can be estimated" in result.stderr
    assert events == ["estimate", "estimate", "adapt"]  # a's estimate failed; b's came at its turn


def test_a_redo_stopped_halfway_is_redone_whatever_the_files_it_left(job, monkeypatch):
    """A rerun with other settings that stops after rewriting some of a group's files (a weights file keeps
    its size) must not leave them under the old manifest; nor the temporary files of a killed write."""
    from rfr_deploy.jobs import adapt_export

    assert run(job, "--quiet").exit_code == 0
    leftover = job / "out" / ".a_rfr.k3j2x9.part.safetensors"  # what a killed write leaves
    leftover.write_bytes(b"half")
    real = adapt_export._save_adapted_weights

    def stopped_after_the_weights(run_, settings, out_dir):
        real(run_, settings, out_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt_export, "_save_adapted_weights", stopped_after_the_weights)
    assert run(job, "--steps", "3").exit_code == 130  # a's image and weights rewritten, then stopped
    monkeypatch.undo()
    assert not (job / "out" / "a.json").exists() and not leftover.exists()
    again = run(job)  # the first settings again: a is redone, b (untouched) skipped
    assert again.exit_code == 0 and "skipped 1 image(s)" in again.stderr
    assert json.loads((job / "out" / "a.json").read_text())["adaptation"]["steps"] == 2


def test_a_redone_set_clears_the_temporary_files_its_member_images_left(job):
    """A per-set group writes one output per member image, named after the member, not the set."""
    import os

    assert run(job, "--per-set", "--quiet").exit_code == 0
    leftover = job / "out" / ".b_rfr.k3j2x9.part.png"  # a killed write of member b's output
    leftover.write_bytes(b"half")
    os.utime(leftover, (1, 1))
    assert run(job, "--per-set", "--steps", "3", "--quiet").exit_code == 0
    assert not leftover.exists()


def test_a_redone_group_removes_the_exports_its_earlier_manifest_listed(job):
    """An ONNX export of other weights must not stay beside the new ones, unlisted."""
    pytest.importorskip("onnxruntime")
    assert run(job, "--format", "onnx", "--quiet").exit_code == 0
    assert (job / "out" / "a_rfr.onnx").is_file()
    (job / "out" / "a_rfr.notes.txt").write_text("mine")  # not listed by the manifest: kept
    assert run(job, "--steps", "3", "--quiet").exit_code == 0
    assert not (job / "out" / "a_rfr.onnx").exists() and (job / "out" / "a_rfr.notes.txt").is_file()
    listed = {f["path"] for f in json.loads((job / "out" / "a.json").read_text())["files"]}
    assert listed == {"a_rfr.png", "a_rfr.safetensors"}


def test_json_says_which_groups_this_run_did_and_which_it_skipped(job):
    first = json.loads(run(job, "--json").stdout)
    assert [m["status"] for m in first] == ["done", "done"]
    (job / "out" / "b.json").unlink()  # b is redone, a was done before
    again = json.loads(run(job, "--json").stdout)
    assert [m["status"] for m in again] == ["skipped", "done"]
    assert again[0]["created"] == first[0]["created"]  # the manifest written then


def test_sigterm_stops_a_run_as_ctrl_c_does(job, monkeypatch):
    """A batch scheduler's SIGTERM: the line says so, exit 143, no temporary file left, and the handler
    the process had before is back."""
    import os
    import signal

    from rfr_deploy.files import atomic_write
    from rfr_deploy.jobs import outputs

    before = signal.getsignal(signal.SIGTERM)

    def write_image(path, *args, **kwargs):
        with atomic_write(path) as tmp:
            tmp.write_bytes(b"half an image")
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the output is being written

    monkeypatch.setattr(outputs, "write_image", write_image)
    result = run(job)
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (143, "terminated")
    assert [p.name for p in (job / "out").glob(".*")] == [] and not (job / "out" / "a.json").exists()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_full_output_folder_stops_the_run_in_one_line(job, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device", str(job / "out" / "a_rfr.png"))
    failing_outputs(monkeypatch, "a.png", full)
    result = run(job)
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-1] == f"error: {job / 'out' / 'a_rfr.png'}: No space left on device"
    assert "b.png" not in result.stderr and "Traceback" not in result.output  # b was never started


def test_one_image_that_fails_is_the_run_s_own_error_and_gpu_memory_is_one_line(job, monkeypatch):
    args = ["adapt-and-export", str(job / "in" / "a.png"), "--weights", str(job / "tiny.safetensors")]
    args += ["--steps", "1", "-o", str(job / "out"), "--quiet"]
    failing_outputs(monkeypatch, "a.png", ImageError("a.png: changed during the run"))
    result = CliRunner().invoke(main, args)
    assert (result.exit_code, result.stderr) == (2, "error: a.png: changed during the run\n")
    failing_outputs(
        monkeypatch, "a.png", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: out of GPU memory (CUDA out of memory. Tried to allocate 2 GiB)")


def test_inputs_are_hashed_only_where_an_earlier_manifest_has_these_settings(job, monkeypatch):
    """A folder of thousands of large inputs with a changed setting is not read through to hash them."""
    from rfr_deploy.jobs import resume

    assert run(job, "--quiet").exit_code == 0
    hashed = []
    real = resume.sha256_file
    monkeypatch.setattr(resume, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    assert run(job, "--steps", "3", "--dry-run").exit_code == 0 and hashed == []
    assert run(job, "--dry-run").exit_code == 0 and sorted(hashed) == ["a.png", "b.png"]


def test_a_changed_input_or_weights_file_is_not_done(job):
    assert run(job, "--quiet").exit_code == 0
    manifest = json.loads((job / "out" / "a.json").read_text())
    fingerprint = Fingerprint(manifest["settings_sha256"], manifest["adaptation_sha256"])
    earlier = find_earlier(job / "out", [job / "in" / "a.png"], fingerprint)
    assert earlier.complete and earlier.manifest["manifest"].endswith("a.json")
    assert find_earlier(job / "out", [job / "in" / "a.png"], Fingerprint("0" * 64, "0" * 64)) is None
    write_image(job / "in" / "a.png", np.zeros((20, 24, 3), np.float32))
    assert find_earlier(job / "out", [job / "in" / "a.png"], fingerprint) is None
    from rfr_deploy.adaptation.config import AdaptConfig
    from rfr_deploy.jobs.settings import JobSettings

    settings, config = JobSettings(weights=str(job / "tiny.safetensors")), AdaptConfig()
    first = run_fingerprint(settings, config)
    assert run_fingerprint(JobSettings(weights=settings.weights, output_dir="elsewhere"), config) == first
    assert run_fingerprint(settings, AdaptConfig(keep_memory=False)) == first  # same files either way
    assert run_fingerprint(JobSettings(weights=settings.weights, threads=1), config) == first
    changed = run_fingerprint(settings, AdaptConfig(lr=2e-5))
    assert changed.settings != first.settings and changed.adaptation != first.adaptation
    model = create_model("dncnn", weights=None, channels=3, depth=2, features=8)
    save_weights(job / "tiny.safetensors", model.net, model.meta)  # same path, other weights
    assert run_fingerprint(settings, config).adaptation != first.adaptation


def test_equal_weights_give_equal_files_whatever_order_safetensors_wrote_the_metadata_in():
    from safetensors.torch import load, save

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    data = save(tensors, metadata={"format": "x", "rfr_deploy": "{}", "extra": "é"})
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    shuffled = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode().ljust(size, b" ")
    other = struct.pack("<Q", size) + shuffled + data[8 + size :]
    assert other != data  # the same tensors and metadata, the metadata in another order
    assert sorted_header(other) == sorted_header(data)
    loaded = load(sorted_header(other))
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_a_missing_optional_package_is_one_line_naming_the_extra():
    with pytest.raises(
        MissingDependencyError, match=r"'no_such_pkg' is needed to run here .*rfr-deploy\[ray\]"
    ):
        import_optional("no_such_pkg.sub", "ray", "run here")


def test_ray_resources_need_ray_and_ray_takes_an_address(job):
    result = run(job, "--cpus-per-image", "2")
    assert result.exit_code == 2 and "--cpus-per-image and --gpus-per-image need --ray" in result.output
    result = run(job, "--ray", str(job / "in"))
    assert result.exit_code == 2 and "--ray takes 'local' or a cluster address" in result.output
    result = run(job, "--ray", "local", "--threads", "2")
    assert result.exit_code == 2 and "with --ray, --cpus-per-image sets each task's threads" in result.output
    assert not (job / "out").exists()
