"""Helpers shared by the command-line tests."""

from click.testing import CliRunner

from rfr_deploy.cli import main


def run(*args):
    """``rfr-deploy`` with ``args`` (as strings), in process; exceptions propagate."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
