"""What ``rfr-deploy pretrain`` starts from, checked before it trains: the checkpoint of a run to resume
(readable, and trained with the same settings), or weights to warm-start from (whose network it trains).
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from rfr_deploy.errors import ConfigError, WeightsError, first_line
from rfr_deploy.models.factory import create_model, get_entry
from rfr_deploy.models.registry import ModelEntry, WeightsMeta
from rfr_deploy.models.weights import load_weights

CHECKPOINT_KEYS = ("model", "optimizer", "generator", "sampler", "config", "step", "history")
"""What a checkpoint of ``rfr-deploy pretrain`` holds (older ones also hold a scheduler state, unused)."""
RUN_FIELDS = frozenset({"steps", "threads", "device", "checkpoint_every", "out", "init", "data"})
"""Settings that may change when a run resumes: its length (``steps`` extends a run), how and where the
process runs, and the warm start (a checkpoint replaces it). ``data`` is compared as resolved folders."""


def not_resumable(path: Path, reason: str) -> ConfigError:
    """The one-line error for a file at ``OUT/checkpoint.pt`` that cannot be resumed."""
    return ConfigError(
        f"{path}: not a resumable checkpoint of rfr-deploy pretrain ({reason}); remove it to start afresh"
    )


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` with its ``config`` decoded, or None where there is none.

    Raises :class:`ConfigError` where the file is truncated, empty, or not a checkpoint of this command.
    """
    if not os.path.lexists(path):
        return None
    if not path.is_file():
        raise not_resumable(path, "not a file")
    if path.stat().st_size == 0:
        raise not_resumable(path, "the file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, empty file (EOFError), foreign pickle...
        raise not_resumable(path, first_line(exc, typed=True, limit=120)) from exc
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise not_resumable(path, f"it holds no {', '.join(missing)}")
    try:
        config = json.loads(state["config"])
        step = int(state["step"])
    except (TypeError, ValueError) as exc:
        raise not_resumable(path, f"unreadable settings ({first_line(exc)})") from exc
    if not isinstance(config, dict) or step < 0:
        raise not_resumable(path, "unreadable settings")
    return {**state, "config": config, "step": step}


def resolved_folders(data: list[str] | tuple[str, ...]) -> list[str]:
    """The training folders as absolute paths, as a checkpoint records them to compare on resume."""
    return [str(Path(folder).resolve()) for folder in data]


def check_same_training(path: Path, state: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint trained with settings other than ``recorded`` (as
    :func:`rfr_deploy.jobs.pretrain._recorded` writes them), but for :data:`RUN_FIELDS`."""
    saved = state["config"]
    current = json.loads(json.dumps(recorded))  # tuples as lists, as the checkpoint holds them
    differ = [key for key in sorted(current.keys() - RUN_FIELDS) if not _same(saved.get(key), current[key])]
    folders = state.get("data_folders")
    if folders is not None and json.loads(folders) != resolved_folders(current["data"]):
        differ.insert(0, "data")
        saved = {**saved, "data": json.loads(folders)}
        current = {**current, "data": resolved_folders(current["data"])}
    if differ:
        listed = ", ".join(
            f"{_option_name(key)} {_shown(saved.get(key))} (not {_shown(current[key])})" for key in differ
        )
        raise ConfigError(
            f"{path}: the checkpoint was trained with {listed}; only --steps and how the process runs may "
            "change when resuming: run with the checkpoint's settings, or remove it to start afresh"
        )


def _same(saved: Any, current: Any) -> bool:
    if isinstance(saved, float) and isinstance(current, float):
        return math.isclose(saved, current, rel_tol=1e-9, abs_tol=1e-12)
    return saved == current


def _option_name(key: str) -> str:
    return {"data": "DATA", "arch_kwargs": "architecture settings"}.get(key, "--" + key.replace("_", "-"))


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "none" if value is None else str(value)


def run_architecture(
    init: str | None, model: str, channels: int, asked: dict[str, Any], state: dict[str, Any] | None
) -> tuple[dict[str, Any], torch.nn.Module | None]:
    """The architecture settings the run trains, and the network to warm-start from (None where none).

    A checkpoint (``state``) goes on with the settings it records. A warm start trains the network of its
    ``init`` weights: the settings the run leaves open are theirs (``dncnn_25.pth`` trains the official
    17-layer DnCNN-S), and those it asks for (``asked``) must be theirs too."""
    if state is not None:
        return {**state["config"].get("arch_kwargs", {}), **asked}, None
    if not init:
        return dict(asked), None
    entry = get_entry(model)
    loaded = load_weights(init, entry, channels=channels)
    theirs = architecture_of(entry, loaded.meta, loaded.net)
    check_same_architecture(init, {key: theirs.get(key) for key in asked}, asked, model)
    default = create_model(model, weights=None, channels=channels)
    ours = architecture_of(entry, default.meta, default.net)
    adopted = {key: value for key, value in theirs.items() if ours.get(key) != value}
    return {**adopted, **asked}, loaded.net


def architecture_of(entry: ModelEntry, meta: WeightsMeta, net: torch.nn.Module) -> dict[str, Any]:
    """The architecture settings of ``net`` in full: the entry's defaults, those ``meta`` records, and
    those read off its tensors (weights that record none, e.g. official ``.pth`` files, are compared by
    what they are, not by the empty settings of a default network)."""
    parameters = inspect.signature(entry.build).parameters.values()
    settings = {
        p.name: p.default
        for p in parameters
        if p.name != "channels" and p.default is not inspect.Parameter.empty and p.default is not None
    }
    settings.update(meta.arch_kwargs)
    if entry.infer_kwargs is not None:
        try:
            inferred = entry.infer_kwargs(net.state_dict())
        except (KeyError, IndexError, ValueError):
            inferred = {}
        settings.update({k: v for k, v in inferred.items() if k not in ("channels", "_in_channels")})
    return settings


def check_same_architecture(init: str, theirs: dict[str, Any], ours: dict[str, Any], model: str) -> None:
    """Refuse weights to warm-start from whose architecture settings differ from those the run asks for."""
    differ = sorted(key for key in theirs.keys() | ours.keys() if theirs.get(key) != ours.get(key))
    if differ:
        raise WeightsError(
            f"{init}: weights have {', '.join(f'{k}={theirs.get(k)}' for k in differ)}, but the run trains "
            f"'{model}' with {', '.join(f'{k}={ours.get(k)}' for k in differ)}"
        )
