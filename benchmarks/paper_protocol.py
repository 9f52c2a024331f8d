"""The loop behind the Table 2/3 reproductions: datasets × weights × σ, one results file per table."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from common import environment, write_results

from rfr_deploy.adapt import AdaptConfig
from rfr_deploy.evaluation import EvalSettings, evaluate
from rfr_deploy.progress import Reporter
from rfr_deploy.shared import shared_path

COLOR_SETS = ("CBSD68", "Kodak24", "McMaster")
GRAY_SETS = ("Set12", "BSD68")
COLOR_WEIGHTS = {"CDnCNN-B": "dncnn/dncnn_color_blind.pth"}
GRAY_WEIGHTS = {"DnCNN-B": "dncnn/dncnn_gray_blind.pth", "DnCNN-S": "dncnn/dncnn_{sigma}.pth"}


@dataclass
class Cell:
    dataset: str
    network: str
    weights: str
    sigma: float


def plan(sigmas: list[float], datasets: list[str], networks: list[str] | None) -> list[Cell]:
    cells = []
    for dataset in datasets:
        table = COLOR_WEIGHTS if dataset in COLOR_SETS else GRAY_WEIGHTS
        for network, pattern in table.items():
            if networks and network not in networks:
                continue
            for sigma in sigmas:
                weights = pattern.format(sigma=int(sigma))
                if shared_path("weights", weights).is_file():
                    cells.append(Cell(dataset, network, weights, sigma))
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
            model="dncnn",
            weights=str(shared_path("weights", cell.weights)),
            sigma=cell.sigma,
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
