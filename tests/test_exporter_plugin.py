"""Export formats as plugins: a toy format defined here, registered at run time and exported end to end
(job API and CLI); the registry's rules; TorchScript as a built-in ``--format torchscript``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from exporters import registry
from exporters.engine_format import EngineExporter
from exporters.onnx_format import OnnxExporter
from exporters.registry import register_exporter, resolve_formats
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.cli import main
from rfr_deploy.cli.adapt_export import build_command
from rfr_deploy.cli.exports import exporters_from
from rfr_deploy.errors import ConfigError
from rfr_deploy.export_protocol import ExportedFile, Exporter, ExportRequest
from rfr_deploy.files import atomic_write
from rfr_deploy.jobs.adapt_export import adapt_and_export
from rfr_deploy.jobs.settings import JobSettings


@dataclass(frozen=True)
class NpzSettings:
    npz_compressed: bool = field(default=False, metadata={"help": "Compress the .npz file."})


class NpzExporter(Exporter):
    """The toy format: the adapted network's parameters as ``<stem>_rfr.npz``, one array per parameter."""

    format = "npz"
    summary = "NumPy arrays"
    settings_type = NpzSettings

    def __init__(self, settings: NpzSettings | None = None):
        self.settings = settings or NpzSettings()
        self.sizes: list[tuple[int, int]] | None = None

    def prepare(self, sizes):
        self.sizes = list(sizes)

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        path = request.target("npz")
        arrays = {k: v.detach().cpu().numpy() for k, v in request.model.net.state_dict().items()}
        save = np.savez_compressed if self.settings.npz_compressed else np.savez
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            save(f, **arrays)
        return [ExportedFile("npz", path, {"compressed": self.settings.npz_compressed})]


@pytest.fixture
def npz_format(monkeypatch):
    """The toy format registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))
    return register_exporter(NpzExporter)


def adapt_args(image_file, weights_file, out, *extra) -> list[str]:
    args = ["adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "--steps", 1]
    return [str(a) for a in [*args, "-o", out, "--json", *extra]]


def check_npz(manifest: dict, out, compressed: bool) -> None:
    from safetensors.numpy import load_file

    (record,) = [f for f in manifest["files"] if f["role"] == "npz"]
    assert record["path"] == "noisy_rfr.npz" and record["compressed"] is compressed
    assert record["bytes"] == (out / "noisy_rfr.npz").stat().st_size and len(record["sha256"]) == 64
    assert [f["role"] for f in manifest["files"]] == ["output", "weights", "npz"]
    with np.load(out / "noisy_rfr.npz") as arrays:
        weights = load_file(out / "noisy_rfr.safetensors")  # the adapted weights, written by the job
        assert set(arrays.files) == set(weights)
        assert all(np.array_equal(arrays[k], weights[k]) for k in weights)


def test_the_job_exports_a_format_it_knows_nothing_about(npz_format, image_file, weights_file, tmp_path):
    out = tmp_path / "out"
    exporter = NpzExporter()
    settings = JobSettings(weights=str(weights_file), sigma=25 / 255, output_dir=str(out))
    (manifest,) = adapt_and_export([image_file], settings, AdaptConfig(steps=1), exporters=[exporter])
    assert exporter.sizes == [(32, 40)]  # prepared with the run's image sizes
    check_npz(manifest, out, compressed=False)
    assert json.loads((out / "noisy.json").read_text())["files"] == manifest["files"]


def test_the_cli_takes_a_format_registered_after_it_was_built(npz_format, image_file, weights_file, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, adapt_args(image_file, weights_file, out, "--format", "npz"))
    assert result.exit_code == 0, result.output
    check_npz(json.loads(result.stdout)[0], out, compressed=False)


def test_a_command_built_after_registration_has_the_formats_options(
    npz_format, image_file, weights_file, tmp_path
):
    command = build_command()
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "--npz-compressed / --no-npz-compressed" in help_text and "npz (NumPy arrays)" in help_text
    out = tmp_path / "out"
    args = adapt_args(image_file, weights_file, out, "--format", "npz", "--npz-compressed")[1:]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    check_npz(json.loads(result.stdout)[0], out, compressed=True)


def test_a_format_registered_twice_is_refused(npz_format):
    with pytest.raises(ValueError, match="'npz' is already registered"):
        register_exporter(NpzExporter)

    class OtherOnnx(NpzExporter):
        format = "onnx"

    with pytest.raises(ValueError, match="'onnx' is already registered"):
        register_exporter(OtherOnnx)
    assert registry.exporter_formats()["npz"] is NpzExporter


def test_formats_come_with_those_they_need_in_registration_order():
    assert resolve_formats(["engine"]) == ["onnx", "engine"]
    assert resolve_formats(["torchscript", "onnx", "onnx"]) == ["onnx", "torchscript"]
    with pytest.raises(
        ConfigError, match="unknown export format.s. nope; choose from onnx, engine, torchscript"
    ):
        resolve_formats(["onnx", "nope"])
    selected = exporters_from({"formats": "none", "engine_from": "base.engine", "precision": "fp16"})
    assert [type(e) for e in selected] == [OnnxExporter, EngineExporter]  # --engine-from selects 'engine'
    assert selected[0].settings.precision == selected[1].settings.precision == "fp16"  # shared --precision


@pytest.mark.parametrize("ensemble", [False, True], ids=["single", "ensemble"])
def test_torchscript_is_a_format(image_file, weights_file, tmp_path, ensemble):
    from rfr_deploy.images import read_image
    from rfr_deploy.inference import denoise, to_tensor
    from rfr_deploy.models.factory import create_model

    out = tmp_path / "out"
    extra = ["--format", "torchscript"] + (["--output-ensemble"] if ensemble else [])
    result = CliRunner().invoke(main, adapt_args(image_file, weights_file, out, *extra))
    assert result.exit_code == 0, result.output
    (manifest,) = json.loads(result.stdout)
    (record,) = [f for f in manifest["files"] if f["role"] == "torchscript"]
    assert record["path"] == "noisy_rfr.pt" and record["max_abs_error"] < 1e-4
    files = {"rfr_deploy.json": "", "rfr_deploy.txt": ""}
    module = torch.jit.load(str(out / "noisy_rfr.pt"), _extra_files=files)
    props = json.loads(files["rfr_deploy.json"])
    assert props["format"] == "torchscript" and props["ensemble"] == ("x8" if ensemble else "none")
    assert json.loads(props["noise"]) == manifest["noise"]
    adapted = create_model("dncnn", weights=str(out / "noisy_rfr.safetensors"), channels=3)
    x = to_tensor(read_image(image_file).pixels)
    with torch.no_grad():
        got = module(x)
    want = denoise(adapted, x, ensemble=ensemble)  # what the written image shows
    assert float((got - want).abs().max()) < 1e-4
