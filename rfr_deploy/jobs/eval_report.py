"""What ``rfr-deploy eval`` reports: per-image scores (:class:`ImageScore`) and the run's table, as JSON
and markdown (:class:`EvalReport`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from rfr_deploy.units import grey_levels


@dataclass
class ImageScore:
    name: str
    noisy_psnr: float
    psnr: dict[int, float] = field(default_factory=dict)
    ssim: dict[int, float] = field(default_factory=dict)
    sigma_estimate: float = 0.0
    """[0, 1] units (reported in grey levels)."""
    noise_sigma: float | None = None
    """The one level adaptation's Gaussian noise drew at ([0, 1] units): the known σ, the estimate, or the
    level the network implies (:mod:`rfr_deploy.jobs.noise_aim`); None for other noise or no adaptation."""
    seconds: float = 0.0
    ensemble_psnr: dict[int, float] = field(default_factory=dict)
    """×8 self-ensemble PSNR per checkpoint (``score_ensemble``)."""
    interpolation: dict[int, float] = field(default_factory=dict)
    """Interpolation weight the adaptation returned at each checkpoint (chosen by SURE by default)."""
    checkpoint: int | None = None
    """:attr:`~rfr_deploy.adaptation.loop.AdaptResult.checkpoint_step` of the adaptation: the update whose
    weights the returned network interpolates; None where no checkpoints were scored."""


@dataclass
class EvalReport:
    dataset: str
    settings: dict[str, Any]
    adapt: dict[str, Any]
    images: list[ImageScore]
    left_out: list[str] = field(default_factory=list)
    """Files of a set of pairs left out for want of a partner (``noisy/NAME``, ``gt/NAME``)."""
    environment: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def mean(self, metric: str, m: int) -> float:
        return statistics.fmean(getattr(s, metric)[m] for s in self.images)

    def gains(self, m: int) -> list[float]:
        return [s.psnr[m] - s.psnr[0] for s in self.images]

    def ensemble_gains(self, m: int) -> list[float]:
        """×8 self-ensemble at M = m over the single-pass pre-trained output."""
        return [s.ensemble_psnr[m] - s.psnr[0] for s in self.images]

    def to_dict(self) -> dict[str, Any]:
        steps = sorted(self.images[0].psnr) if self.images else []
        return {
            "dataset": self.dataset,
            "settings": self.settings,
            "adapt": self.adapt,
            "environment": self.environment,
            "wall_seconds": round(self.wall_seconds, 1),
            "left_out": self.left_out,
            "mean": {
                str(m): {"psnr": round(self.mean("psnr", m), 4), "ssim": round(self.mean("ssim", m), 5)}
                for m in steps
            },
            "mean_gain_db": {str(m): round(statistics.fmean(self.gains(m)), 4) for m in steps if m},
            "worst_gain_db": {str(m): round(min(self.gains(m)), 4) for m in steps if m},
            **(self._ensemble_summary(steps) if self.images and self.images[0].ensemble_psnr else {}),
            "images": [
                {
                    "name": s.name,
                    "noisy_psnr": round(s.noisy_psnr, 4),
                    "sigma_estimate": grey_levels(s.sigma_estimate, 3),
                    "noise_sigma": grey_levels(s.noise_sigma, 3),
                    "seconds": round(s.seconds, 3),
                    "psnr": {str(k): round(v, 4) for k, v in s.psnr.items()},
                    "ssim": {str(k): round(v, 5) for k, v in s.ssim.items()},
                    "ensemble_psnr": {str(k): round(v, 4) for k, v in s.ensemble_psnr.items()},
                    "interpolation": {str(k): v for k, v in s.interpolation.items()},
                    "checkpoint": s.checkpoint,
                }
                for s in self.images
            ],
        }

    def _ensemble_summary(self, steps: list[int]) -> dict[str, Any]:
        return {
            "ensemble_mean_psnr": {
                str(m): round(statistics.fmean(s.ensemble_psnr[m] for s in self.images), 4) for m in steps
            },
            "ensemble_gain_db": {str(m): round(statistics.fmean(self.ensemble_gains(m)), 4) for m in steps},
            "ensemble_worst_gain_db": {str(m): round(min(self.ensemble_gains(m)), 4) for m in steps},
        }

    def _pairs_shown(self) -> str:
        """How many pairs the table holds, and the files left out for want of a partner."""
        left = f" ({len(self.left_out)} files without a partner left out)" if self.left_out else ""
        count = len(self.images)
        return f"{count} real noise pair{'' if count == 1 else 's'}{left}"

    def to_markdown(self) -> str:
        steps = sorted(self.images[0].psnr) if self.images else []
        s, a = self.settings, self.adapt
        listed = ", ".join(
            f"{k}={'auto' if v is None else v}"
            for k, v in a.items()
            if k not in ("steps", "seed", "fast", "amp")
        )
        context = [
            f"Dataset `{self.dataset}`"
            + (f" (first {s['limit']})" if s.get("limit") else "")
            + (f", central crops of at most {s['crop']}²" if s.get("crop") else ", whole images")
            + f"; model `{s['model']}`, weights `{s.get('weights') or 'packaged'}`; "
            + (
                self._pairs_shown()
                if s.get("pairs")
                else f"Gaussian σ = {s['sigma']:g} (unclipped), seed {s['seed']}"
            )
            + (
                f"; adaptation noise: {s['noise']}"
                if s.get("pairs") or s.get("noise") != "gaussian"
                else f"; adaptation σ: {s['sigma_mode']}"
            )
            + ".",
            f"Adaptation: {listed}.",
            "PSNR on 8-bit outputs, colour over R, G and B together; SSIM (11×11 Gaussian window) the mean of"
            " the channels'.",
            f"{self.environment.get('device', '?')}, torch {self.environment.get('torch', '?')}, "
            f"rfr-deploy {self.environment.get('rfr_deploy', '?')}; wall time {self.wall_seconds:.0f} s.",
            "",
            "PSNR (dB) / SSIM per image.",
            "",
        ]
        head = "| image | noisy | " + " | ".join(f"M={m}" for m in steps) + " |"
        rule = "|---" * (len(steps) + 2) + "|"
        rows = [*context, head, rule]
        for s in self.images:
            cells = " | ".join(f"{s.psnr[m]:.2f} / {s.ssim[m]:.4f}" for m in steps)
            rows.append(f"| {s.name} | {s.noisy_psnr:.2f} | {cells} |")
        means = " | ".join(f"**{self.mean('psnr', m):.2f} / {self.mean('ssim', m):.4f}**" for m in steps)
        rows.append(f"| **mean** | {statistics.fmean(s.noisy_psnr for s in self.images):.2f} | {means} |")
        gains = " | ".join(
            "" if m == 0 else f"{statistics.fmean(self.gains(m)):+.3f} (worst {min(self.gains(m)):+.3f})"
            for m in steps
        )
        rows.append(f"| gain dB | | {gains} |")
        if self.images and self.images[0].ensemble_psnr:
            ens = " | ".join(
                f"{statistics.fmean(s.ensemble_psnr[m] for s in self.images):.2f} "
                f"({statistics.fmean(self.ensemble_gains(m)):+.3f}, worst {min(self.ensemble_gains(m)):+.3f})"
                for m in steps
            )
            rows.append(f"| ×8 ensemble (gain over single-pass M=0) | | {ens} |")
        return "\n".join(rows)
