"""The command line's first second: nothing heavy is imported before its handlers are in place."""

import importlib
import subprocess
import sys

import pytest
from click.testing import CliRunner

import rfr_deploy
from rfr_deploy.cli import COMMANDS, main


def test_importing_the_command_line_imports_no_torch():
    """Ctrl-C while torch was being imported (the first second of every run) printed a traceback: the
    package and the command line are imported without it, the commands' modules when one is looked up."""
    code = "import sys, rfr_deploy.cli; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_interrupt_while_a_command_is_imported_is_one_line(monkeypatch):
    main.commands.pop("models", None)  # looked up again, as in a fresh process
    real = importlib.import_module

    def interrupted(name, *args):
        if name == "rfr_deploy.cli.models":
            raise KeyboardInterrupt
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", interrupted)
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in result.output


def test_every_command_is_listed_and_found():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
        assert main.get_command(None, name).name == name


def test_the_package_s_public_names_resolve_on_first_use():
    for name in rfr_deploy.__all__:
        assert getattr(rfr_deploy, name) is not None
    assert set(rfr_deploy.__all__) <= set(dir(rfr_deploy))
    with pytest.raises(AttributeError, match="no_such_name"):
        rfr_deploy.no_such_name  # noqa: B018


def test_the_public_names_are_the_lazily_imported_ones():
    assert set(rfr_deploy.__all__) == {*rfr_deploy._EXPORTS, "__version__"}
