"""The ``rfr-deploy`` command line (click).

Each sub-command lives in its own module; options map one-to-one to keyword
arguments of the library's settings dataclasses. Errors the user can fix are
printed as one line (``error: ...``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings

import click

from rfr_deploy.errors import RfrError, first_line
from rfr_deploy.version import __version__

COMMANDS = {
    "adapt-and-export": "adapt_export",
    "bench": "bench",
    "cache": "cache",
    "denoise": "denoise",
    "env": "env",
    "eval": "evaluate",
    "infer": "infer",
    "models": "models",
    "pretrain": "pretrain",
}
"""Each sub-command and the module of :mod:`rfr_deploy.cli` that defines it, imported when the command is
looked up: importing this package costs no torch import, so Ctrl-C at any point of a run, its first
second of imports included, ends with one line instead of a traceback."""

_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
"""What click ≥ 8.2 raises for a group given no command (8.1 prints the help itself)."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler ending the job, ``kill``), handled as Ctrl-C is: the file being written
    is removed, the line says so, exit 143 (128 + SIGTERM)."""


def _terminate(signum, frame) -> None:
    raise _Terminated


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's usage errors, like every other error, as one line ``error: ...`` (exit 2), no usage text."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        handled = threading.current_thread() is threading.main_thread()  # signals reach the main thread
        before = signal.signal(signal.SIGTERM, _terminate) if handled else None
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # `rfr-deploy` alone: its help, not an error line
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_usage_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if handled:
                signal.signal(signal.SIGTERM, before)
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(importlib.import_module(f"rfr_deploy.cli.{COMMANDS[cmd_name]}").command)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RfrError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except MemoryError:
            click.echo("error: out of memory; adaptation needs less with a smaller --patch", err=True)
            sys.exit(3)
        except BrokenPipeError:  # e.g. `rfr-deploy models | head -1`: the reader is gone, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
            sys.exit(141)  # as a process the pipe's signal ended (128 + SIGPIPE)
        except OSError as exc:  # the file system refused: e.g. the output folder is full or read-only
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or first_line(exc)}", err=True)
            sys.exit(3)
        except RuntimeError as exc:  # torch.OutOfMemoryError: the GPU's memory
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            click.echo(
                f"error: out of GPU memory ({first_line(exc, limit=160)}); adaptation needs less with a "
                "smaller --patch, and --device cpu uses the host's memory",
                err=True,
            )
            sys.exit(3)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, _Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(143 if terminated else 130)


def _usage_message(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message = f"{message.rstrip('.')} (see {ctx.command_path} --help)"
    return message


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rfr-deploy")
def main() -> None:
    """Make a pre-trained denoiser better on the image in front of it (restore-from-restored),
    then export the adapted network to ONNX and TensorRT."""
    warnings.filterwarnings(
        "once", category=UserWarning
    )  # e.g. an input's alpha, read when checked and again
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
