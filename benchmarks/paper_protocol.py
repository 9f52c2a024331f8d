"""The loop behind the Table 2/3 reproductions: datasets × weights × σ, one results file per table."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from common import environment, write_results

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.errors import ModelError
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate
from rfr_deploy.models.weights import packaged_weights_path
from rfr_deploy.progress import Reporter
from rfr_deploy.shared import shared_path

COLOR_SETS = ("CBSD68", "Kodak24", "McMaster")
GRAY_SETS = ("Set12", "BSD68")


@dataclass(frozen=True)
class Network:
    """A zoo model with its weights: a file under ``shared/weights`` (``{sigma}`` is replaced by σ),
    or ``packaged:NAME`` for the weights rfr-deploy ships in ``rfr_deploy/data``."""

    model: str
    weights: str
    sigmas: tuple[float, ...] | None = None
    """The σ it was trained for (None: blind, every σ)."""

    def trained_for(self, sigma: float) -> bool:
        return self.sigmas is None or sigma in self.sigmas

    def path(self, sigma: float) -> Path | None:
        """The weights file for σ, or None where it is not there."""
        if self.weights.startswith("packaged:"):
            try:
                return packaged_weights_path(self.weights.removeprefix("packaged:"))
            except ModelError:
                return None
        path = shared_path("weights", self.weights.format(sigma=int(sigma)))
        return path if path.is_file() else None


COLOR_WEIGHTS = {
    "CDnCNN-B": Network("dncnn", "dncnn/dncnn_color_blind.pth"),
    "RDN (ours)": Network("rdn", "packaged:rdn_color_blind.safetensors"),
}
GRAY_WEIGHTS = {
    "DnCNN-B": Network("dncnn", "dncnn/dncnn_gray_blind.pth"),
    "DnCNN-S": Network("dncnn", "dncnn/dncnn_{sigma}.pth"),
    "DnCNN-N2S (ours)": Network("dncnn_n2s", "packaged:dncnn_n2s_gray_s25.safetensors", sigmas=(25.0,)),
}


@dataclass
class Cell:
    dataset: str
    network: str
    model: str
    weights: str
    sigma: float


def plan(sigmas: list[float], datasets: list[str], networks: list[str] | None) -> list[Cell]:
    """Every (dataset, network, σ) whose weights exist; ``networks`` picks by name (default: all)."""
    cells = []
    for dataset in datasets:
        table = COLOR_WEIGHTS if dataset in COLOR_SETS else GRAY_WEIGHTS
        for name, network in table.items():
            if networks and name not in networks:
                continue
            for sigma in sigmas:
                path = network.path(sigma)
                if path is not None and network.trained_for(sigma):
                    cells.append(Cell(dataset, name, network.model, str(path), sigma))
    return cells


def run_table(
    name: str,
    title: str,
    cells: list[Cell],
    sigma_mode: str,
    config: AdaptConfig,
    steps: tuple[int, ...],
    limit: int | None,
    crop: int | None,
    seed: int = 0,
    score_ensemble: bool = False,
) -> None:
    results = []
    reporter = Reporter()
    for cell in cells:
        settings = EvalSettings(
            model=cell.model,
            weights=cell.weights,
            sigma=cell.sigma / 255,  # EvalSettings takes [0, 1] units; the cell is in grey levels
            steps=steps,
            sigma_mode=sigma_mode,
            crop=crop,
            limit=limit,
            seed=seed,
            score_ensemble=score_ensemble,
            device="auto",
        )
        started = time.perf_counter()
        report = evaluate(
            shared_path("data", "test", cell.dataset),
            settings,
            dataclasses.replace(config, steps=max(steps)),
            reporter=reporter,
        )
        data = report.to_dict()
        data.update(dataclasses.asdict(cell), wall_seconds=round(time.perf_counter() - started, 1))
        results.append(data)
        print(
            f"{cell.dataset} {cell.network} σ={cell.sigma:g}: {data['mean']} gains {data['mean_gain_db']}",
            flush=True,
        )
        payload = {
            "title": title,
            "sigma_mode": sigma_mode,
            "steps": steps,
            "limit": limit,
            "crop": crop,
            "seed": seed,
            "score_ensemble": score_ensemble,
            "adapt": dataclasses.asdict(config),
            "environment": environment(),
            "cells": results,
        }
        write_results(name, payload, markdown(payload))


def markdown(payload: dict) -> str:
    steps = [m for m in payload["steps"]]
    last = str(max(steps))
    ensemble_head = f" | ×8 ensemble M=0 / M={last}" if payload.get("score_ensemble") else ""
    lines = [
        f"# {payload['title']}",
        "",
        f"σ mode `{payload['sigma_mode']}`; images: {payload['limit'] or 'all'} per set; crop: "
        f"{payload['crop'] or 'whole images'}; seed {payload['seed']}; device {payload['environment']['device']}; "
        f"torch {payload['environment']['torch']}; rfr-deploy {payload['environment']['rfr_deploy']}.",
        "",
        "Adaptation settings: " + ", ".join(f"{k}={v}" for k, v in payload["adapt"].items() if k != "steps"),
        "",
        "Mean PSNR (dB) / SSIM; gain over M = 0 and the worst single image in brackets."
        + (
            " The ensemble column scores the ×8 flip/rotation self-ensemble of the pre-trained and the"
            " adapted network; its gains are over the single-pass pre-trained output."
            if ensemble_head
            else ""
        ),
        "",
        "| dataset | network | σ | " + " | ".join(f"M={m}" for m in steps) + ensemble_head + " | wall s |",
        "|---" * (len(steps) + 4 + bool(ensemble_head)) + "|",
    ]
    for c in payload["cells"]:
        cells = []
        for m in steps:
            mean = c["mean"][str(m)]
            text = f"{mean['psnr']:.2f} / {mean['ssim']:.4f}"
            if m:
                text += f" ({c['mean_gain_db'][str(m)]:+.3f}, worst {c['worst_gain_db'][str(m)]:+.3f})"
            cells.append(text)
        if ensemble_head:
            gain = c["ensemble_gain_db"]
            cells.append(
                f"{c['ensemble_mean_psnr']['0']:.2f} / {c['ensemble_mean_psnr'][last]:.2f} "
                f"({gain['0']:+.3f} / {gain[last]:+.3f}, worst {c['ensemble_worst_gain_db'][last]:+.3f})"
            )
        lines.append(
            f"| {c['dataset']} | {c['network']} | {c['sigma']:g} | "
            + " | ".join(cells)
            + f" | {c['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)
