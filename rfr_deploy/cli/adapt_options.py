"""The adaptation settings (``AdaptConfig``) as click options, shared by every command that adapts.

Each option is generated from the ``AdaptConfig`` field it sets (:func:`rfr_deploy.cli.options.field_option`),
so ``--refresh-every 10`` is ``AdaptConfig(refresh_every=10)``; names, types, defaults and help are
read from the dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import click

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.cli.options import field_options
from rfr_deploy.errors import ConfigError

ADAPT_OPTION_NAMES = (
    *("lr", "loss", "batch", "patch", "schedule", "warmup", "interpolation", "select", "ema"),
    *("refresh_every", "rounds", "recorrupted", "sure_loss", "tune", "affine_lr", "layer_lr"),
    *("checkpoint_every", "score_pixels", "optimizer", "target_ensemble", "fast", "amp", "fp32_tail"),
    *("tail_backward", "keep_memory"),
)
"""Every ``AdaptConfig`` field but ``steps`` and ``seed`` (each command places those), in the order
``--help`` lists them; tests/test_cli.py checks that no field is missing."""

adapt_options: Callable[[Callable], Callable] = field_options(AdaptConfig, *ADAPT_OPTION_NAMES)
"""Add every adaptation option (all ``AdaptConfig`` fields except ``steps`` and ``seed``)."""


def adapt_config(steps: int | None, seed: int, options: Mapping[str, Any]) -> AdaptConfig:
    """Build the ``AdaptConfig`` from the command's keyword arguments; a bad value is a usage error."""
    try:
        return AdaptConfig(steps=steps, seed=seed, **{name: options[name] for name in ADAPT_OPTION_NAMES})
    except ValueError as exc:  # the library names fields ("sure_loss"); the user typed options
        fields = "|".join(sorted((*ADAPT_OPTION_NAMES, "steps"), key=len, reverse=True))
        message = re.sub(rf"\b({fields})\b", lambda m: "--" + m.group(1).replace("_", "-"), str(exc))
        raise click.UsageError(message) from exc


def check_adapt_options(config: AdaptConfig) -> None:
    """Refuse settings the adaptation would not follow, before any work: fewer updates than rounds (a
    round without updates). What the run's device cannot do is refused where the device is known
    (:func:`~rfr_deploy.adaptation.runners.check_update_settings`)."""
    if config.steps is not None and config.rounds > 1 and config.steps < config.rounds:
        raise ConfigError(
            f"--rounds {config.rounds} needs at least one update per round, and --steps is {config.steps}: "
            f"give --steps {config.rounds} or more, or fewer --rounds"
        )
