"""``rfr-deploy env``: the report says what this machine runs, and the runner it names is the one ``adapt`` uses."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import rfr_deploy.cli.env as env
from rfr_deploy import AdaptConfig, GaussianNoise, adapt
from rfr_deploy.adaptation.runners import default_update
from rfr_deploy.cli import main
from tests.cli_helpers import run


def test_the_default_update_it_names_is_the_one_adapt_runs(tiny_dncnn):
    described = default_update(torch.device("cpu"))
    noisy = torch.rand(1, 3, 24, 24)
    # fp32_tail=0: with two updates, a bf16 CPU's default would otherwise run them all in its fp32 tail
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), AdaptConfig(steps=2, fp32_tail=0))
    assert result.runner == described["runner"].split(" (")[0]
    assert (described["steps"], described["patch"]) == (640, 64)


def test_env_reports_versions_device_packages_and_cache(own_cache_folder):
    (own_cache_folder / "rfr-deploy" / "onnx-graphs").mkdir(parents=True)
    (own_cache_folder / "rfr-deploy" / "onnx-graphs" / "k.onnx").write_bytes(b"g" * 2048)
    report = json.loads(run("env", "--device", "cpu", "--json").output)
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["device_type"] == "cpu"
    assert report["default_update"] == default_update(torch.device("cpu"))
    assert report["cache"] == {
        "folder": str(own_cache_folder / "rfr-deploy"),
        "bytes": 2048,
        "limit_bytes": 10 * 2**30,
    }
    assert set(report["packages"]) == set(env.PACKAGES)
    text = run("env", "--device", "cpu").output.splitlines()
    assert text[0].startswith("rfr-deploy ") and text[-1].endswith("2.0 KiB of at most 10.0 GiB")
    assert text[3].startswith(
        f"default update (--fast auto, --amp auto): {report['default_update']['runner']}, "
    )


def test_onnx_runtime_is_shown_with_its_providers():
    pytest.importorskip("onnxruntime")
    info = env.package_info("onnxruntime", env.PACKAGES["onnxruntime"])
    assert info["version"] and "CPUExecutionProvider" in info["providers"]


def test_a_package_that_is_installed_but_cannot_be_imported_says_why(monkeypatch):
    monkeypatch.setattr(env, "IMPORTED", ("rfr_no_such_module",))
    info = env.package_info("rfr_no_such_module", ("nothing-by-this-name", "pytest"))
    assert info["version"] == pytest.__version__ and "rfr_no_such_module" in info["error"]
    assert env._shown(info).startswith(f"{pytest.__version__} (cannot be imported: ")
    assert env.package_info("rfr_no_such_module", ("nothing-by-this-name",)) == {"version": None}


def test_env_reports_an_invalid_cache_size_instead_of_failing(monkeypatch, own_cache_folder):
    monkeypatch.setenv("RFR_DEPLOY_CACHE_SIZE", "bogus")
    result = run("env", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["environment"]["device_type"] == "cpu" and set(report["packages"]) == set(env.PACKAGES)
    assert report["cache"]["limit_bytes"] is None
    assert report["cache"]["limit_error"].startswith("RFR_DEPLOY_CACHE_SIZE must be a size")
    text = run("env", "--device", "cpu")
    assert text.exit_code == 0 and text.stdout.startswith("rfr-deploy ")
    assert "its limit is not known: RFR_DEPLOY_CACHE_SIZE must be a size" in text.stdout.splitlines()[-1]
    refused = CliRunner().invoke(main, ["cache", "list"])  # other commands still refuse it
    assert refused.exit_code == 2 and refused.output.startswith("error: RFR_DEPLOY_CACHE_SIZE")
