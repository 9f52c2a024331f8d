"""How far to move from the pre-trained weights: true PSNR and SURE's estimate along the interpolation path.

Each image is adapted for M updates (CLI defaults, but returning the last weights θ_M); then every
interpolation weight α of θ0 + α(θ_M − θ0) is scored twice: against the clean image (PSNR) and by
Stein's unbiased risk estimate on the noisy image alone (what ``--select sure`` uses). The table
compares a fixed α, the α SURE picks per image, and the oracle α (best true PSNR per image), and, for
an unknown σ, the α SURE picks at the estimate σ̂, over the estimator's range, and the α generalised
cross-validation (no σ at all) picks, all from the same probes.

    python benchmarks/interpolation_sweep.py Set12 --weights dncnn/dncnn_gray_blind.pth --crop 128
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
from common import (
    add_crop_arguments,
    crop_words,
    crops_with_networks,
    environment,
    parse_overrides,
    write_results,
)

from rfr_deploy.adaptation.blending import interpolated
from rfr_deploy.adaptation.config import GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.adaptation.implied_level import implied_level, tolerance_band
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.scoring import GcvScorer
from rfr_deploy.adaptation.sure import (
    CANDIDATES,
    SureScorer,
    choose_interpolation,
    draw_probes,
    probe_count,
    sure_terms,
)
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import get_entry, list_models
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.level import estimate_noise_level

ADAPTED_AT = {
    "true": "",
    "estimate": " (the network adapted at the estimate σ̂)",
    "own": " (the network adapted at the level its own residual implies)",
    "weak": " (the network adapted, and its noise map set, at the weak-texture estimate)",
}


def sweep_image(
    model,
    index: int,
    pixels: np.ndarray,
    sigma: float,
    config: AdaptConfig,
    candidates: tuple[float, ...],
    adapt_at: str = "true",
) -> dict:
    """``adapt_at``: the level of the synthetic noise: the true σ, the estimate σ̂ (what adapt-and-export
    does when no --sigma is given), the level the pre-trained network's own residual implies
    (:func:`~rfr_deploy.adaptation.implied_level.implied_level`), or the weak-texture estimate. A
    noise-map network's map is set to the level of the synthetic noise."""
    clean = to_tensor(pixels)
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    origin = [p.detach().clone() for p in model.parameters()]
    level = estimate_noise_level(noisy)
    weak = estimate_noise_level(noisy, noise_map=True).sigma  # what a job tells a noise-map network
    draws = draw_probes([noisy], index, probe_count([noisy]))
    stated = {"true": sigma / 255, "estimate": level.sigma, "weak": weak}
    given = stated[adapt_at] if model.meta.noise_map else None  # "own" is refused for noise-map networks
    own = implied_level(model, [noisy], draws, level.sigma, given) or level.sigma
    at = own if adapt_at == "own" else stated[adapt_at]
    noise = GaussianNoise(at, estimated=adapt_at != "true")
    result = adapt(model, noisy, noise, dataclasses.replace(config, seed=index), given)

    def build(alpha: float):
        return interpolated(result.model, origin, alpha)

    levels = (sigma / 255, level.sigma, level.low, level.high, *tolerance_band(own))
    terms = {a: sure_terms(build(a), noisy, given, draws[0], sigmas=levels) for a in candidates}
    true = {a: psnr(quantize(to_pixels(denoise(build(a), noisy, sigma=given))), pixels) for a in candidates}
    # the selection rules the library uses, all on the same terms (none is scored again)
    scorers = _scorers(noisy, levels, draws, given)
    choices = {
        name: choose_interpolation(build, scorer, candidates, known=terms) for name, scorer in scorers.items()
    }
    picks = {name: c.interpolation for name, c in choices.items()}
    return {
        "psnr": true,
        "sure_db": choices["sure"].estimates,
        "picked": picks["sure"],
        "picks": picks,
        "gains": {  # each rule's estimate of each α's improvement over α = 0 (its worst end)
            name: {a: scorer.worst_gain(terms[candidates[0]], terms[a]) for a in candidates}
            for name, scorer in scorers.items()
        },
        "sigma_hat": [round(v * 255, 3) for v in levels[1:4]],
        "own_level": round(own * 255, 3),
        "weak_level": round(weak * 255, 3),
        "map_level": None if given is None else round(given * 255, 3),
        "terms": {a: {"residual": t.residual, "divergence": t.divergence} for a, t in terms.items()},
    }


def _scorers(noisy, levels: tuple[float, ...], draws, given: float | None) -> dict[str, SureScorer]:
    """One scorer per selection rule: SURE at the true σ, at the estimate σ̂, over the estimator's range
    (worst end), over ±1 % around the network's own level (the rule for gray images with σ estimated),
    and generalised cross-validation (no σ)."""
    known, hat, low, high, own_low, own_high = levels
    return {
        "sure": SureScorer([noisy], known, given, 0, draws=draws),
        "sure_hat": SureScorer([noisy], hat, given, 0, draws=draws),
        "sure_low": SureScorer([noisy], low, given, 0, draws=draws),
        "sure_range": SureScorer([noisy], (low, high), given, 0, draws=draws),
        "sure_own": SureScorer([noisy], (own_low, own_high), given, 0, draws=draws),
        "gcv": GcvScorer([noisy], (low, high), given, 0, draws=draws),
    }


def _key(a) -> str:
    return f"{a:g}" if isinstance(a, float | int) else a


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_crop_arguments(parser, steps=GAUSSIAN_STEPS)
    parser.add_argument("--lr", type=float, default=AdaptConfig().lr, help="Adam learning rate")
    parser.add_argument(
        "--candidates",
        default=",".join(f"{a:g}" for a in CANDIDATES),
        help="interpolation weights to score (the first is the reference, normally 0)",
    )
    parser.add_argument(
        "--adapt",
        default="",
        help="AdaptConfig fields that differ from the CLI defaults, e.g. 'recorrupted=0.5'",
    )
    parser.add_argument(
        "--adapt-sigma",
        choices=tuple(ADAPTED_AT),
        default="true",
        help="level of the synthetic noise (and of a noise-map network's map): the true σ, the estimate σ̂ "
        "(adapt-and-export without --sigma), the level the pre-trained network's residual implies, or the "
        "weak-texture estimate",
    )
    parser.add_argument(
        "--model",
        default="dncnn",
        choices=list_models(),
        help="registered model name (ffdnet, fdncnn: noise-map networks)",
    )
    parser.add_argument("--name", default=None, help="results file name under benchmarks/results")
    args = parser.parse_args()
    if args.adapt_sigma == "own" and get_entry(args.model).noise_map:
        parser.error(f"--adapt-sigma own: {args.model} takes a noise map, so it implies no level of its own")
    return args


def summarise(rows: dict, candidates: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """Mean and worst gain of each way to pick α: fixed, SURE (and its variants), GCV, the oracle."""

    def gains(pick) -> list[float]:
        return [r["psnr"][pick(r)] - r["psnr"][0.0] for r in rows.values()]

    policies = {f"fixed α = {a:g}": (lambda r, a=a: a) for a in candidates if a}
    policies["SURE-selected α (--select sure)"] = lambda r: r["picked"]
    policies["SURE at the estimate σ̂"] = lambda r: r["picks"]["sure_hat"]
    policies["SURE over σ̂'s range (worst end)"] = lambda r: r["picks"]["sure_range"]
    policies["SURE over ±1 % around the network's own level (gray, σ estimated)"] = lambda r: r["picks"][
        "sure_own"
    ]
    policies["GCV (no σ)"] = lambda r: r["picks"]["gcv"]
    guards = {"SURE at σ̂": "sure_hat", "SURE at σ̂'s low end": "sure_low", "GCV": "gcv", "SURE at σ": "sure"}
    if 0.25 in candidates:  # a fixed quarter step, or none where the rule says it loses
        for label, rule in guards.items():
            policies[f"α = 0.25 unless {label} says it loses"] = lambda r, g=rule: (
                0.25 if r["gains"][g][0.25] > 0 else 0.0
            )
    policies["oracle α (best true PSNR)"] = lambda r: max(r["psnr"], key=r["psnr"].get)
    return {
        name: {"mean_gain_db": statistics.fmean(gains(p)), "worst_gain_db": min(gains(p))}
        for name, p in policies.items()
    }


def to_markdown(name: str, args, payload: dict, rows: dict, candidates: tuple[float, ...]) -> str:
    summary = payload["summary"]
    lines = [
        f"# {name}",
        "",
        f"{args.dataset}, first {len(rows)} images, {crop_words(args.crop)[1]}, weights `{args.weights}`, "
        f"σ = {args.sigma:g}"
        + ADAPTED_AT[args.adapt_sigma]
        + f", M = {args.steps}, Adam lr {args.lr:g}"
        + (f", {args.adapt}" if args.adapt else "")
        + f" (defaults otherwise); {payload['environment']['device']}, "
        f"torch {payload['environment']['torch']}; {payload['wall_seconds']:.0f} s.",
        "",
        "PSNR gain (dB) of θ0 + α(θ_M − θ0) over the pre-trained network (α = 0).",
        "",
        "| policy | mean gain | worst image |",
        "|---|---:|---:|",
        *(f"| {n} | {s['mean_gain_db']:+.3f} | {s['worst_gain_db']:+.3f} |" for n, s in summary.items()),
        "",
        "| image | σ̂ | weak-texture σ̂ | own level | picked α: SURE, σ̂ range, own level, GCV | "
        + " | ".join(f"α={a:g}" for a in candidates)
        + " |",
        "|---" * (len(candidates) + 5) + "|",
        *(
            f"| {n} | {r['sigma_hat'][0]:.2f} | {r['weak_level']:.2f} | {r['own_level']:.2f} | {r['picked']:g}, "
            f"{r['picks']['sure_range']:g}, {r['picks']['sure_own']:g}, {r['picks']['gcv']:g} | "
            + " | ".join(
                f"{r['psnr'][a] - r['psnr'][0.0]:+.3f} (SURE {r['sure_db'][a] - r['sure_db'][0.0]:+.3f})"
                for a in candidates
            )
            + " |"
            for n, r in rows.items()
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    candidates = tuple(float(a) for a in args.candidates.split(","))
    overrides = parse_overrides(args.adapt)
    config = AdaptConfig(steps=args.steps, lr=args.lr, **overrides, select="off", interpolation=1.0)
    started = time.perf_counter()
    rows = {}
    for index, name, pixels, model in crops_with_networks(args, args.model):
        rows[name] = sweep_image(model, index, pixels, args.sigma, config, candidates, args.adapt_sigma)
        print(name, rows[name]["picks"], flush=True)
    payload = {
        "protocol": vars(args),
        "adapt": dataclasses.asdict(config),
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summarise(rows, candidates),
        "images": {
            n: {k: ({_key(a): v for a, v in d.items()} if isinstance(d, dict) else d) for k, d in r.items()}
            for n, r in rows.items()
        },
    }
    name = (
        args.name
        or f"interpolation_sweep_{args.dataset}_s{args.sigma:g}_{crop_words(args.crop)[0]}_lr{args.lr:g}"
    )
    write_results(name, payload, to_markdown(name, args, payload, rows, candidates))


if __name__ == "__main__":
    main()
