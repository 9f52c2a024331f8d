"""Resuming a run: which inputs are already done in the output folder.

A group of inputs (one image, or the whole set with ``per_set``) is done when its
manifest ``OUT/<stem>.json`` exists, records the same settings fingerprint, lists
inputs with the same sha256 in the same order, and every file it lists is still
there with its recorded size. The manifest is the last file a group writes, each
file is renamed into place whole, so a manifest that passes these checks marks a
finished group. Both the sequential run and the Ray run (:mod:`rfr_deploy.jobs.distributed`)
skip such groups; a changed setting, input or weights file redoes them.

Where only the export formats or their settings changed, the adaptation is reused: a manifest whose
adaptation fingerprint (everything but the exports) matches, whose inputs match and whose adapted
images and weights are still there, with the weights' recorded sha256, gets only its exports written
again (:mod:`rfr_deploy.jobs.exports`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfr_deploy.errors import ConfigError
from rfr_deploy.files import sha256_file, sha256_file_cached
from rfr_deploy.jobs.outputs import (
    ADAPTED_ROLES,
    ADAPTED_TAG,
    check_distinct_names,
    check_name_length,
    folders_in,
    output_name,
    taken_by_folder,
)
from rfr_deploy.units import grey_levels
from rfr_deploy.version import __version__

SIGMA_FIELDS = ("sigma", "sigma_low", "sigma_high")
"""Job settings that hold a noise level ([0, 1] units)."""
PROCESS_FIELDS = ("keep_memory",)
"""Adaptation settings that decide how the process runs, not what it writes: left out of the fingerprint."""
JOB_PROCESS_FIELDS = ("output_dir", "threads")
"""Job settings left out of the fingerprint: where the files go, and how the process runs."""


def group_stem(paths: Sequence[str | os.PathLike]) -> str:
    """The name every output of a group starts with: the image's stem, or ``<first>_set<N>`` for a set."""
    first = Path(paths[0])
    return first.stem if len(paths) == 1 else f"{first.stem}_set{len(paths)}"


def plan_groups(inputs: Sequence[Path], settings: Any) -> list[tuple[str, ...]]:
    """The groups of a job's ``inputs`` (each image alone, or the whole set with ``settings.per_set``),
    refused before any work where ``--reference`` cannot apply or two groups would write the same files."""
    if settings.reference and (len(inputs) != 1 or settings.per_set):
        raise ConfigError("--reference scores a single input image; give exactly one input without --per-set")
    groups = [tuple(str(p) for p in inputs)] if settings.per_set else [(str(p),) for p in inputs]
    manifests = ((g[0], f"{group_stem(g)}.json") for g in groups)  # every group's files start with its stem
    check_distinct_names(manifests, settings.output_dir)
    if settings.per_set:  # one group, an adapted image per input
        check_distinct_names(((p, output_name(p, ADAPTED_TAG)) for p in inputs), settings.output_dir)
    return groups


def check_output_names(out_dir: Path, groups: Iterable[Sequence[str]]) -> None:
    """Refuse, before any work, a folder where one of ``groups`` writes a file: its manifest, or any
    ``<stem>_rfr.*`` (adapted images, weights, exports); and a group whose longest file name
    (``<stem>_rfr.safetensors``, as long as an engine's sidecar) is longer than a file name may be. The
    output folder is listed once, whatever the number of groups."""
    folders = folders_in(out_dir)
    for group in groups:
        stem = group_stem(group)
        check_name_length(f"{stem}_{ADAPTED_TAG}.safetensors", group[0])
        if not folders:
            continue
        names = {f"{stem}.json", *(output_name(Path(p), ADAPTED_TAG) for p in group)}
        taken = sorted(n for n in folders if n in names or n.startswith(f"{stem}_{ADAPTED_TAG}."))
        if taken:
            raise taken_by_folder(out_dir / taken[0])


@dataclass(frozen=True)
class Fingerprint:
    """What a manifest records of the settings that wrote it."""

    settings: str
    """sha256 of everything that decides the group's files (``settings_sha256``)."""
    adaptation: str
    """sha256 of the same but the export formats and their settings: what decides the adapted images and
    weights (``adaptation_sha256``)."""


@dataclass(frozen=True)
class Earlier:
    """What an earlier run left of a group: its manifest, complete with these settings (the group is
    skipped) or holding an adaptation with these adaptation settings (only the exports are written again)."""

    manifest: dict[str, Any]
    complete: bool


def run_fingerprint(settings: Any, config: Any, exporters: Sequence[Any] = ()) -> Fingerprint:
    """The :class:`Fingerprint` of a run: job settings (but :data:`JOB_PROCESS_FIELDS`), adaptation
    settings as given (but :data:`PROCESS_FIELDS`), the weights file's content and the rfr-deploy version;
    for ``settings`` also the export formats and their settings."""
    document = _adaptation_document(settings, config)
    adaptation = _sha256_of(document)
    document["exports"] = {e.format: _settings_record(e.settings) for e in exporters}
    return Fingerprint(_sha256_of(document), adaptation)


def find_earlier(
    out_dir: Path, paths: Sequence[str | os.PathLike], fingerprint: Fingerprint
) -> Earlier | None:
    """What an earlier run left of the group of ``paths`` in ``out_dir`` for a run with ``fingerprint``
    (see the module's docstring), or None where the group must be adapted. The manifest's fingerprints
    and files are compared first: the inputs (and, to reuse, the weights) are hashed only where they match."""
    manifest = _read_manifest(out_dir, paths)
    if manifest is None:
        return None
    files = _file_records(manifest)
    if manifest.get("settings_sha256") == fingerprint.settings and all(
        _still_there(out_dir, r) for r in files
    ):
        complete = True
    elif manifest.get("adaptation_sha256") == fingerprint.adaptation and _adapted_there(out_dir, files):
        complete = False
    else:
        return None
    if not _same_inputs(manifest, paths) or not (complete or _weights_intact(out_dir, files)):
        return None
    return Earlier(manifest, complete)


def _adaptation_document(settings: Any, config: Any) -> dict[str, Any]:
    job = dataclasses.asdict(settings)
    for key in JOB_PROCESS_FIELDS:
        job.pop(key, None)
    for key in SIGMA_FIELDS:  # recorded in grey levels, as the command line takes them
        if job.get(key) is not None:
            job[key] = grey_levels(job[key])
    return {
        "rfr_deploy_version": __version__,
        "settings": job,
        "adaptation": {k: v for k, v in dataclasses.asdict(config).items() if k not in PROCESS_FIELDS},
        "weights_sha256": _weights_sha256(settings.weights),
        **(
            {"gray_weights_sha256": _weights_sha256(gray)}
            if (gray := getattr(settings, "gray_weights", None))
            else {}
        ),
    }


def _sha256_of(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _settings_record(settings: Any) -> Any:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return dataclasses.asdict(settings)
    return None if settings is None else repr(settings)


def _read_manifest(out_dir: Path, paths: Sequence[str | os.PathLike]) -> dict[str, Any] | None:
    """The group's manifest in ``out_dir``, its path added as ``manifest``; None where there is none."""
    manifest_path = out_dir / f"{group_stem(paths)}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("inputs"), list):
        return None
    manifest["manifest"] = str(manifest_path)
    return manifest


def _same_inputs(manifest: dict[str, Any], paths: Sequence[str | os.PathLike]) -> bool:
    """Whether ``manifest`` lists inputs of the same contents as ``paths``, in the same order."""
    recorded = [item.get("sha256") if isinstance(item, dict) else None for item in manifest["inputs"]]
    return len(recorded) == len(paths) and _same_contents(paths, recorded)


def _adapted_there(out_dir: Path, files: list[dict[str, Any]]) -> bool:
    """Whether the adapted images and the one weights file the records list are still there."""
    adapted = [r for r in files if r.get("role") in ADAPTED_ROLES]
    weights = sum(r.get("role") == "weights" for r in adapted)
    return weights == 1 and all(_still_there(out_dir, r) for r in adapted)


def _weights_intact(out_dir: Path, files: list[dict[str, Any]]) -> bool:
    """Whether the weights file has its recorded sha256 (they are read again to export)."""
    weights = next(r for r in files if r.get("role") == "weights")
    return sha256_file(out_dir / weights["path"]) == weights.get("sha256")


def _file_records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    files = manifest.get("files")
    return [r for r in files if isinstance(r, dict)] if isinstance(files, list) else []


def _same_contents(paths: Sequence[str | os.PathLike], digests: list[str | None]) -> bool:
    try:
        return all(sha256_file(path) == digest for path, digest in zip(paths, digests, strict=True))
    except OSError:
        return False


def _still_there(out_dir: Path, record: dict[str, Any]) -> bool:
    target = out_dir / str(record.get("path", ""))
    return target.is_file() and target.stat().st_size == record.get("bytes")


def _weights_sha256(weights: str | None) -> str | None:
    if not weights or not Path(weights).is_file():
        return None
    return sha256_file_cached(weights)
