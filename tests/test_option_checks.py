"""``adapt-and-export``: options the run would not follow are refused in one line before any work
(``--dry-run`` too): an export option none of the chosen formats uses, ``--unknown-sigma`` with
``--sigma``, fewer updates than ``--rounds``, ``--amp fp16`` on the CPU, an empty ``-o``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from click.testing import CliRunner

from exporters import registry
from exporters.engine_format import EngineExporter
from exporters.onnx_format import OnnxExporter
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.runners import check_update_settings
from rfr_deploy.cli import adapt_export
from rfr_deploy.cli.exports import exporters_from
from rfr_deploy.errors import ConfigError
from rfr_deploy.export_protocol import Exporter
from tests.cli_helpers import run


def _dry_run(tmp_path, image_file, weights_file, *options):
    out = tmp_path / "o"
    return run(
        "adapt-and-export",
        image_file,
        "--weights",
        weights_file,
        "--sigma",
        25,
        *options,
        "-o",
        out,
        "--dry-run",
    )


def _refused(tmp_path, image_file, weights_file, *options) -> str:
    """The one line a dry run refuses ``options`` with (exit 2, nothing written)."""
    result = _dry_run(tmp_path, image_file, weights_file, *options)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
    return result.output.strip()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--opset", 5), "error: --opset applies to the onnx export; add --format onnx or drop it"),
        (("--no-graph-cache",), "error: --no-graph-cache applies to the onnx export; add --format onnx"),
        (
            ("--engine-max-size", "bogus"),
            "error: --engine-max-size applies to the engine export; add --format engine",
        ),
        (
            ("--format", "onnx", "--timing-cache", "/nonexist/dir/x"),
            "error: --timing-cache applies to the engine",
        ),
        (
            ("--format", "torchscript", "--precision", "fp16"),
            "error: --precision applies to the onnx and engine exports; add --format onnx or drop it",
        ),
    ],
)
def test_an_export_option_no_chosen_format_uses_is_refused(
    tmp_path, image_file, weights_file, options, message
):
    assert _refused(tmp_path, image_file, weights_file, *options).startswith(message)


def test_export_options_are_still_taken_and_checked_where_they_apply(tmp_path, image_file, weights_file):
    assert (
        _dry_run(tmp_path, image_file, weights_file, "--format", "onnx", "--precision", "fp16").exit_code == 0
    )
    assert _dry_run(tmp_path, image_file, weights_file, "--format", "onnx", "--opset", 18).exit_code == 0
    line = _refused(tmp_path, image_file, weights_file, "--format", "onnx", "--opset", 5)
    assert line.startswith("error: ONNX opset 5 is not supported")
    # an option given at its default value is given all the same
    line = _refused(tmp_path, image_file, weights_file, "--precision", "fp32")
    assert line.startswith("error: --precision applies to")


def test_the_formats_an_option_applies_to_come_from_their_settings():
    # 'engine' brings 'onnx', and --engine-from selects 'engine': their options apply
    given = {"opset": "--opset", "engine_max_size": "--engine-max-size", "precision": "--precision"}
    chosen = exporters_from({"formats": "engine", "opset": 17, "engine_max_size": "64x64"}, given)
    assert [type(e) for e in chosen] == [OnnxExporter, EngineExporter]
    chosen = exporters_from({"formats": "none", "engine_from": "base.engine"}, {"opset": "--opset"})
    assert [type(e) for e in chosen] == [OnnxExporter, EngineExporter]
    with pytest.raises(ConfigError, match="--opset applies to the onnx export"):
        exporters_from({"formats": "torchscript", "opset": 17}, {"opset": "--opset"})


@dataclass(frozen=True)
class _TagSettings:
    tag_label: str = field(default="x", metadata={"help": "A label."})


class _TagExporter(Exporter):
    format = "tag"
    settings_type = _TagSettings

    def __init__(self, settings=None):
        self.settings = settings

    def export(self, request):
        return []


def test_a_registered_format_s_options_are_checked_alike(monkeypatch, tmp_path, image_file, weights_file):
    monkeypatch.setattr(registry, "_FORMATS", dict(registry._FORMATS))
    registry.register_exporter(_TagExporter)
    command = adapt_export.build_command()
    common = [
        str(image_file),
        "--weights",
        str(weights_file),
        "--sigma",
        "25",
        "--dry-run",
        "-o",
        str(tmp_path),
    ]
    result = CliRunner().invoke(command, [*common, "--tag-label", "y"])
    assert isinstance(result.exception, ConfigError)  # outside `rfr-deploy`, the error itself
    assert str(result.exception) == "--tag-label applies to the tag export; add --format tag or drop it"
    result = CliRunner().invoke(command, [*common, "--tag-label", "y", "--format", "tag"])
    assert result.exit_code == 0, result.output


def test_unknown_sigma_with_a_given_sigma_is_refused(tmp_path, image_file, weights_file):
    line = _refused(tmp_path, image_file, weights_file, "--unknown-sigma", "uniform")
    assert line.startswith("error: --unknown-sigma is for a run without --sigma")
    out = tmp_path / "u"
    result = run(
        "adapt-and-export",
        image_file,
        "--weights",
        weights_file,
        "--unknown-sigma",
        "uniform",
        "-o",
        out,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output


def test_a_sigma_range_without_random_levels_is_refused(tmp_path, image_file, weights_file):
    line = _refused(tmp_path, image_file, weights_file, "--sigma-high", 30)  # _dry_run gives --sigma 25
    assert line == (
        "error: --sigma-high bounds the random levels of --unknown-sigma uniform, which this run does not "
        "draw: drop it (--sigma is a known level)"
    )
    common = ["adapt-and-export", image_file, "--weights", weights_file, "-o", tmp_path / "u", "--dry-run"]
    result = run(*common, "--sigma-low", 5, "--sigma-high", 30)
    assert result.exit_code == 2 and result.stderr == (
        "error: --sigma-low/--sigma-high bound the random levels of --unknown-sigma uniform, which this run "
        "does not draw: add --unknown-sigma uniform or drop them\n"
    )
    assert run(*common, "--sigma-low", 5, "--sigma-high", 30, "--unknown-sigma", "uniform").exit_code == 0


def test_fewer_updates_than_rounds_are_refused(tmp_path, image_file, weights_file):
    line = _refused(tmp_path, image_file, weights_file, "--rounds", 5, "--steps", 1)
    assert line.startswith("error: --rounds 5 needs at least one update per round, and --steps is 1")
    assert _dry_run(tmp_path, image_file, weights_file, "--rounds", 5, "--steps", 5).exit_code == 0
    assert _dry_run(tmp_path, image_file, weights_file, "--rounds", 5).exit_code == 0  # the default budget
    assert _dry_run(tmp_path, image_file, weights_file, "--steps", 0).exit_code == 0  # one round, no update


def test_amp_fp16_is_refused_on_the_cpu_only(tmp_path, image_file, weights_file):
    line = _refused(tmp_path, image_file, weights_file, "--amp", "fp16", "--device", "cpu")
    assert line.startswith("error: amp='fp16' (--amp fp16) needs a GPU") and "this run is on the cpu" in line
    config = AdaptConfig(amp="fp16")
    with pytest.raises(ConfigError, match="this run is on the cpu"):
        check_update_settings(config, torch.device("cpu"))
    check_update_settings(config, torch.device("cuda"))  # on a GPU it is valid (nothing runs here)


def test_an_empty_output_folder_is_refused(tmp_path, image_file, weights_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run(
        "adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "--steps", 1, "-o", ""
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: -o/--output-dir is empty")
    assert sorted(tmp_path.iterdir()) == before


def test_ray_tasks_asking_for_more_than_the_cluster_has_are_refused():
    """Ray would wait for ever for a GPU or CPUs no node has (a local cluster without a GPU)."""
    from rfr_deploy.jobs.distributed import RayOptions, _task_gpus
    from rfr_deploy.jobs.settings import JobSettings

    cpu_only, settings = {"CPU": 2.0}, JobSettings()
    with pytest.raises(ConfigError, match=r"^--gpus-per-image 0.25, but the Ray cluster has 0 GPUs$"):
        _task_gpus(RayOptions(address="local", gpus_per_image=0.25), settings, cpu_only)
    with pytest.raises(ConfigError, match=r"^--cpus-per-image 4, but the Ray cluster has 2 CPUs$"):
        _task_gpus(RayOptions(address="local", cpus_per_image=4), settings, cpu_only)
    assert _task_gpus(RayOptions(address="local", cpus_per_image=2), settings, cpu_only) == 0.0
    assert (
        _task_gpus(RayOptions(address="local", gpus_per_image=0.25), settings, {"CPU": 8, "GPU": 1}) == 0.25
    )
    assert _task_gpus(RayOptions(address="local"), settings, {"CPU": 8, "GPU": 2}) == 1.0


@pytest.mark.parametrize("command, tag", [("denoise", "denoised"), ("adapt-and-export", "rfr")])
def test_an_output_name_a_folder_holds_is_refused_before_any_work(
    tmp_path, image_file, weights_file, command, tag
):
    out = tmp_path / "out"
    (out / f"{image_file.stem}_{tag}.png").mkdir(parents=True)
    steps = ["--steps", 1] if command == "adapt-and-export" else []
    result = run(command, image_file, "--weights", weights_file, "--sigma", 25, "-o", out, *steps)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {out / f'{image_file.stem}_{tag}.png'} is a folder, where this run writes a file; "
        "move it or choose another -o\n"
    )


def test_every_unreadable_input_of_a_folder_is_named_in_one_line(tmp_path, image_file, weights_file):
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "good.png").write_bytes(image_file.read_bytes())
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (folder / name).write_bytes(b"")
    result = run(
        "adapt-and-export", folder, "--weights", weights_file, "--sigma", 25, "-o", tmp_path / "o", "-q"
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr == (
        f"error: 4 inputs cannot be read: {folder / 'a.png'}: file is empty; {folder / 'b.png'}: file is empty; "
        f"{folder / 'c.png'}: file is empty; …\n"
    )
    assert not (tmp_path / "o").exists()
