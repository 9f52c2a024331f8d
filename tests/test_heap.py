"""Keeping freed CPU memory in the process: glibc's page faults per reallocation, and who asks for it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rfr_deploy import heap
from rfr_deploy.adaptation import runners
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.update import UpdateContext
from rfr_deploy.jobs import adapt_export, preparation
from rfr_deploy.jobs import denoise as denoise_job
from rfr_deploy.jobs import pretrain as pretraining
from rfr_deploy.jobs.pretrain import PretrainConfig
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.noise.gaussian import GaussianNoise

_REFAULTS = """
import resource, sys, torch
from rfr_deploy.heap import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
faults = []
for _ in range(24):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20)  # 64 MiB: above the largest mmap threshold glibc sets for itself
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[16:]))  # the first few grow the heap past what small blocks took
"""


def _refaults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(heap.glibc_version() is None, reason="keeping freed memory is a glibc setting")
def test_kept_memory_is_reused_without_page_faults():
    kept, faults_kept = _refaults("keep")
    default, faults_default = _refaults("default")
    assert (kept, default) == ("True", "False")
    pages = 8 * (64 << 20) // 4096  # eight reallocations of 64 MiB in 4 KiB pages
    assert faults_default >= pages // 2  # glibc maps and faults such a block in afresh every time
    assert faults_kept < pages // 100


def test_other_c_libraries_are_left_alone(monkeypatch):
    def no_glibc(name):
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(heap.os, "confstr", no_glibc)
    monkeypatch.setattr(heap, "_kept", False)
    assert heap.glibc_version() is None
    assert heap.keep_freed_memory() is False
    assert heap.freed_memory_kept() is False


@pytest.fixture
def keep_calls(monkeypatch):
    """Records each call of keep_freed_memory (through :func:`rfr_deploy.heap.keep_freed_memory_on`)."""
    calls: list[str] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append("kept") or True)
    return calls


@pytest.mark.parametrize("keep", [True, False])
def test_update_runners_and_adapt_keep_memory_unless_told_not_to(keep_calls, tiny_dncnn, keep):
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = AdaptConfig(steps=1, keep_memory=keep)
    context = UpdateContext(tiny_dncnn(3), [target], GaussianNoise(0.1), config, torch.Generator())
    runners.make_runner(context)
    runners.make_runner(context, "eager")
    assert len(keep_calls) == (2 if keep else 0)
    adapt(tiny_dncnn(3), target, GaussianNoise(0.1), config, sigma=0.1)
    assert len(keep_calls) == (4 if keep else 0)  # at the start, and again (a no-op) by its runner


@pytest.mark.parametrize("keep", [True, False])
def test_the_job_keeps_memory_before_it_reads_the_images(
    monkeypatch, keep_calls, image_file, weights_file, tmp_path, keep
):
    real_read_jobs = preparation.read_jobs

    def read_jobs(*args):
        keep_calls.append("read")
        return real_read_jobs(*args)

    monkeypatch.setattr(preparation, "read_jobs", read_jobs)
    settings = JobSettings(weights=str(weights_file), sigma=25 / 255, output_dir=str(tmp_path / "out"))
    adapt_export.adapt_and_export([image_file], settings, AdaptConfig(steps=1, keep_memory=keep))
    assert keep_calls[:2] == (["kept", "read"] if keep else ["read"])
    assert ("kept" in keep_calls) is keep


def test_the_denoise_and_pretrain_jobs_keep_memory_on_the_cpu(
    monkeypatch, image_file, weights_file, tmp_path
):
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append("kept") or True)
    settings = JobSettings(weights=str(weights_file), output_dir=str(tmp_path / "out"))  # blind: no σ
    (record,) = denoise_job.denoise_files([image_file], settings)
    assert calls == ["kept"] and record["output"].endswith(".png")
    config = PretrainConfig(
        data=(str(image_file.parent),), out=str(tmp_path / "run"), steps=1, batch=2, patch=16, device="cpu"
    )
    assert pretraining.pretrain(config).exists() and calls == ["kept", "kept"]
