"""The exporter protocol: what adapt-and-export asks of an export format, and what it hands it.

The job (:func:`rfr_deploy.jobs.adapt_export.adapt_and_export`) takes a list of exporters and knows
nothing of ONNX, TensorRT or TorchScript. Per run it calls every exporter's :meth:`Exporter.check`
(before any input is read) and :meth:`Exporter.prepare` (with the sizes of the run's images, before
any adaptation); per adapted network :meth:`Exporter.export`, which writes ``OUT/<stem>_rfr.<ext>``
and returns the files it wrote, in the order of the exporters. The formats live in the ``exporters``
package, register themselves in :mod:`exporters.registry`, and are built by the CLI from
``--format`` and the options of their settings dataclasses. This module is in the base layer so that
the job and the exporters, which may not import each other, share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from rfr_deploy.progress import QUIET, Reporter


@dataclass(frozen=True)
class ExportRequest:
    """One adapted network to export, as the job hands it to every exporter of the run."""

    model: Any
    """The adapted network (a :class:`~rfr_deploy.models.denoiser.Denoiser`)."""
    out_dir: Path
    stem: str
    """The group's name (:func:`rfr_deploy.jobs.resume.group_stem`); files are ``<stem>_rfr.<ext>``."""
    example: torch.Tensor
    """An input of the network (the group's first image, ``N×C×H×W`` in [0, 1]), to trace and verify on."""
    sigma: float | None
    """σ/255 that noise-map networks run with (the exported default); None for blind networks."""
    noise: dict[str, Any]
    """The manifest's description of the adaptation noise, for the exported file's metadata."""
    ensemble: bool = False
    """The written output is the ×8 self-ensemble: an exported graph computes the same."""
    reporter: Reporter = QUIET
    written: Mapping[str, Path] = field(default_factory=dict)
    """Files the group's earlier exporters wrote, by role (the TensorRT engine is built from 'onnx')."""

    def target(self, extension: str) -> Path:
        """``OUT/<stem>_rfr.<extension>``."""
        return self.out_dir / f"{self.stem}_rfr.{extension}"


@dataclass(frozen=True)
class ExportedFile:
    """A file an exporter wrote; the job records it in the manifest with its size and sha256."""

    role: str
    path: Path
    details: dict[str, Any] = field(default_factory=dict)
    """Further fields of the file's manifest record (after role, path, bytes and sha256)."""


class Exporter(Protocol):
    """An export format. Subclasses inherit the no-op defaults of every method but :meth:`export`."""

    format: ClassVar[str]
    """The ``--format`` value (lower case, no comma)."""
    summary: ClassVar[str] = ""
    """Shown after the format's name in ``--format``'s help, e.g. 'TensorRT'."""
    settings_type: ClassVar[type | None] = None
    """Dataclass of the format's settings (None: no settings); every field is a CLI option, named,
    typed and documented from the field (see :mod:`rfr_deploy.cli.options`)."""
    needs: ClassVar[tuple[str, ...]] = ()
    """Formats that must be exported before this one (whose files it reads from ``request.written``)."""
    needs_sizes: ClassVar[bool] = False
    """:meth:`prepare` needs the sizes of every image of the run (a Ray driver reads them only then)."""
    settings: Any

    def check(self) -> None:
        """Fail now, with one line, where this format cannot be exported (a missing package, no GPU)."""

    def prepare(self, sizes: Sequence[tuple[int, int]]) -> None:
        """Plan the run from the (H, W) its exported graph runs at for each image (the image's, or for an image
        too small to reflect the edge-padded size: :func:`rfr_deploy.models.denoiser.graph_size`); raises if the
        run cannot be exported."""

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        """Write the adapted network of ``request`` (atomically) and return the files written."""
        ...

    def moved(self, old_dir: Path, new_dir: Path) -> None:
        """The files written into ``old_dir`` now live in ``new_dir`` (a Ray task's staging folder)."""
