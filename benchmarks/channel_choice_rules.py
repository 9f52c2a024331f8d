"""Rules for choosing between the colour network and the gray one per channel, scored on their SURE terms.

For every crop and network pair of ``benchmarks/luma_noise.py`` (central crops, Gaussian noise of level σ
per channel correlated by ρ between the channels, 8 bits), this records the true PSNR of both networks'
pre-trained outputs (M = 0), the chroma share and level that ``rfr_deploy.noise.channels`` reads, and
SURE's estimate of both networks' MSE at the level read, once with probes independent in each channel
(ρ = 0) and once with one probe value per pixel (ρ = 1). SURE's expectation is linear in the probes'
correlation, so SURE at any ρ is the mix of the two; each rule is then scored without running a network
again. Rules: the library's (probes correlated by 1 − share² − bias, the gray network only where its
estimate is lower by a margin in dB, :mod:`rfr_deploy.adaptation.channel_choice`) over a grid of biases
and margins, and the same with the margin counted in σ̂² instead (an error in σ̂ shifts both estimates
alike, which a ratio does not cancel). The first ``--dev`` images of each set choose a rule; the others
check it.

    python benchmarks/channel_choice_rules.py --threads 1 --limit 8 --dev 4 --sigmas 5,15,25,50 --rhos 0,0.3,0.5,1
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch
from common import environment, report, use_threads
from luma_noise import PAIRS, add_noise_arguments, load_networks, noisy_images, read_levels, run_method

from rfr_deploy.adaptation.channel_choice import CORRELATION_BIAS, MARGIN_DB, correlated_probes
from rfr_deploy.adaptation.sure import sure_terms
from rfr_deploy.images import quantize
from rfr_deploy.inference import to_tensor
from rfr_deploy.metrics import psnr
from rfr_deploy.models.denoiser import each_channel
from rfr_deploy.noise.channels import read_channel_noise

BIASES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
MARGINS_DB = (0.0, 0.1, 0.2, 0.3, 0.5)
MARGINS_SIGMA2 = (0.0, 0.005, 0.01, 0.02, 0.04)
PROBES = 2


@torch.inference_mode()
def score(args, networks) -> list[dict]:
    rows, seen = [], {}
    for row, noisy, clean in noisy_images(args):
        row["position"] = seen.setdefault((row["set"], row["image"]), sum(k[0] == row["set"] for k in seen))
        y = to_tensor(noisy, "cpu")
        reading = read_channel_noise(y[0])
        white = reading is not None and reading.white
        row |= {"white": white, "share": None, "level": None}
        if white:
            row |= {"share": round(reading.share, 4), "level": round(reading.level * 255, 3)}
        for pair, (colour, gray) in networks.items():
            for method in ("colour", "gray per channel"):
                out = quantize(np.clip(run_method(method, colour, gray, noisy), 0, 1))
                row[f"{pair}: {method}"] = round(psnr(out, clean), 4)
            if white:
                row[f"{pair}: sure"] = sure_estimates(colour, each_channel(gray, 3), y, reading.level)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def sure_estimates(colour, per_channel, y: torch.Tensor, level: float) -> dict[str, list[float]]:
    """SURE's MSE (grey levels²) of each network at ``level``: [with ρ = 0 probes, with ρ = 1 probes]."""
    estimates = {}
    for name, model in (("colour", colour), ("gray", per_channel)):
        values = []
        for rho in (0.0, 1.0):
            probes = correlated_probes(y, rho, PROBES, torch.Generator().manual_seed(int(rho)))
            terms = sure_terms(model, y, None, probes, sigmas=(level,))
            values.append(round(terms.mse(level) * 255**2, 4))
        estimates[name] = values
    return estimates


def chooses_gray(row: dict, pair: str, bias: float, margin: float, kind: str) -> bool:
    """Whether the rule (``kind`` 'dB' or 'sigma2', with ``bias`` and ``margin``) sends the crop per channel."""
    if not row["white"]:
        return False
    rho = min(max(1.0 - row["share"] ** 2 - bias, 0.0), 1.0)
    sure = row[f"{pair}: sure"]
    colour, gray = ((1 - rho) * sure[n][0] + rho * sure[n][1] for n in ("colour", "gray"))
    if kind == "dB":
        return gray > 0 and colour >= gray * 10 ** (margin / 10)
    return colour - gray >= margin * row["level"] ** 2


def mean_psnr(rows: list[dict], pair: str, pick) -> float:
    """Mean PSNR of the network ``pick(row, pair)`` chooses (True: the gray one per channel)."""
    return statistics.mean(r[f"{pair}: {'gray per channel' if pick(r, pair) else 'colour'}"] for r in rows)


def rules():
    """(name, pick) of every rule scored."""
    yield "colour network always", lambda r, pair: False
    yield (
        "better network per crop (oracle)",
        lambda r, pair: r[f"{pair}: gray per channel"] > r[f"{pair}: colour"],
    )
    for kind, margins, unit in (("dB", MARGINS_DB, "dB"), ("sigma2", MARGINS_SIGMA2, "σ̂²")):
        for bias in BIASES:
            for margin in margins:
                library = kind == "dB" and bias == CORRELATION_BIAS and margin == MARGIN_DB
                name = f"bias {bias:g}, margin {margin:g} {unit}" + (" (the library's)" if library else "")
                yield name, lambda r, pair, b=bias, m=margin, k=kind: chooses_gray(r, pair, b, m, k)


def rule_table(rows: list[dict], pairs: list[str], dev: int) -> str:
    """Mean PSNR of every rule on the first ``dev`` images of each set (choosing) and on the rest (checking)."""
    parts = {
        "choosing": [r for r in rows if r["position"] < dev],
        "checking": [r for r in rows if r["position"] >= dev],
    }
    head = ["rule", *(f"{pair}, {part} ({len(chosen)})" for pair in pairs for part, chosen in parts.items())]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, pick in rules():
        cells = [
            f"{mean_psnr(chosen, pair, pick):.3f}" if chosen else "–"
            for pair in pairs
            for chosen in parts.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_noise_arguments(parser, "Kodak24,CBSD68,McMaster", 8, sigmas="5,15,25,50", rhos="0,0.3,0.5,1")
    parser.add_argument("--pairs", default="official,packaged")
    parser.add_argument("--dev", type=int, default=4, help="images per set that choose the rule")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="channel_choice_rules")
    args = parser.parse_args()
    use_threads(args)
    read_levels(args)
    args.real, args.pairs = "", [p for p in args.pairs.split(",") if p in PAIRS]
    rows = score(args, load_networks(args.pairs))
    command = (
        f"python benchmarks/channel_choice_rules.py --threads {args.threads} --datasets {args.datasets} "
        f"--pairs {','.join(args.pairs)} --limit {args.limit} --skip {args.skip} "
        f"--dev {args.dev} --sigmas {','.join(f'{v:g}' for v in args.sigmas)} "
        f"--rhos {','.join(f'{v:g}' for v in args.rhos)} --name {args.name}"
    )
    markdown = (
        "# Choosing the colour network or the gray one per channel: rules on SURE's terms\n\n"
        f"Central {args.crop}² crops of {args.limit} images of {args.datasets} (after the first {args.skip}), "
        f"Gaussian noise of σ ∈ {{{', '.join(f'{v:g}' for v in args.sigmas)}}} per channel with correlation "
        f"ρ ∈ {{{', '.join(f'{v:g}' for v in args.rhos)}}} between the channels, 8 bits; pre-trained output "
        f"(M = 0), mean PSNR in dB of the network each rule chooses. The first {args.dev} images of each set "
        "choose a rule (choosing), the others check it (checking). A crop whose noise does not read as white "
        "in space at a level of at least 5 goes to the colour network under every rule, as in the library. "
        f"SURE with {PROBES} probes at ρ = 0 and {PROBES} at ρ = 1, mixed.\n\n"
        + rule_table(rows, args.pairs, args.dev)
        + f"\n\n`{command}`\n"
    )
    report(args.name, {"environment": environment(), "rows": rows, "args": vars(args)}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
