"""Whole-image updates that do not fit in memory: computed in tiles, against smaller patches.

Runs ``rfr-deploy adapt-and-export`` on pairs of a noisy image and its reference (central crops of
``--crop`` where given), in a fresh process per row, once per ``--layouts`` entry:

- ``whole``: every update one pass over the whole image (the memory check is switched off, so the
  machine must have the memory);
- ``tiles:N``: the same updates computed in N² tiles (margins included), as a machine whose memory fits
  an N² training step computes them since stop 53;
- ``patch:N``: updates on random N² patches, what such a machine trained on before (``--patch N``).

Reports the gain over the pre-trained network, the seconds of the updates, the peak memory, and what
the manifest says was used. Each job's other options come from ``--job`` (one string).

    python tiled_updates.py --pairs real/SIDD_samples --names NOISY_0,NOISY_1 --job "--model cbdnet \
        --noise camera" --layouts whole,tiles:256,patch:256 --name tiled_updates_sidd_cbdnet
    python tiled_updates.py job N ARGS...   # one adapt-and-export whose training steps fit N² pixels
    python tiled_updates.py step-memory NAME   # the probe's bytes per pixel against a measured step
    python tiled_updates.py term-gradients NAME [NOISY_IMAGE [TILE]]   # rounding of the noisy-input terms
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from common import environment, job_outcome, report, run_json_job

from rfr_deploy.images import read_image, write_image
from rfr_deploy.jobs.evaluate import center_crop
from rfr_deploy.shared import shared_path


def run_constrained(fits: int, argv: list[str]) -> None:
    """``rfr-deploy ARGV`` in this process, its training steps sized as if memory fitted ``fits``² pixels
    (0: as if it fitted any step)."""
    import rfr_deploy.adaptation.targets as targets
    from rfr_deploy.cli import main

    def side_that_fits(per_pixel, pixels, budget, multiple, smallest):
        return None if not fits or pixels <= fits * fits else fits

    targets.side_that_fits = side_that_fits
    main(argv, prog_name="rfr-deploy")


def run_job(noisy: Path, clean: Path, layout: str, args, out: Path) -> dict:
    """One adapt-and-export of ``layout`` in a fresh process: its manifest, with its peak memory."""
    kind, _, side = layout.partition(":")
    command = [sys.executable, __file__, "job", side if kind == "tiles" else "0"]
    command += ["adapt-and-export", str(noisy), "--reference", str(clean), "-o", str(out), "--json"]
    command += ["--threads", str(args.threads), *shlex.split(args.job)]
    command += ["--patch", side] if kind == "patch" else []
    print(" ".join(command[2:]), file=sys.stderr)
    return run_json_job(command)


def crop_pair(folder: Path, name: str, crop: int, into: Path) -> tuple[Path, Path]:
    """The noisy image ``name`` of a pair folder and its reference, cropped to the central ``crop``² (0:
    whole) and written to ``into`` (the noisy pixels as they are: no new noise)."""
    reference = name.replace("NOISY", "GT").replace("_noise", "_gt")  # SIDD_samples, Nam_CBDNet25
    paths = []
    for sub, stem in (("noisy", name), ("gt", reference)):
        source = next((folder / sub).glob(f"{stem}.*"))
        target = into / f"{sub}_{source.stem}.png"
        write_image(target, center_crop(read_image(source).pixels, crop or None))
        paths.append(target)
    return paths[0], paths[1]


def summarise(name: str, layout: str, manifest: dict) -> dict:
    timings, adaptation = manifest["timings"], manifest["adaptation"]
    return {
        "image": name,
        "layout": layout,
        "tile_used": adaptation.get("tile_used"),
        "steps": adaptation["steps"],
        "updates_s": adaptation["steps"] * timings["step_mean_s"],
        "adapt_s": timings["adapt_s"],
        **job_outcome(manifest),
    }


def render(rows: list[dict], args) -> str:
    lines = [
        f"# Whole-image updates in tiles: {args.pairs} {args.names}"
        + (f", central {args.crop}² crops" if args.crop else ""),
        "",
        f"`rfr-deploy adapt-and-export {args.job}` with `--reference`, {args.threads} thread(s), one fresh "
        "process per row. `whole`: one pass per update; `tiles:N`: the same updates computed in N² tiles; "
        "`patch:N`: `--patch N` (what a machine that fits N² trained on before stop 53).",
        "",
        "| image | layout | patch | tile | updates (s) | adapt (s) | peak memory (MB) | pre-trained (dB) "
        "| adapted (dB) | gain (dB) | α (by) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['layout']} | {r['patch_used'] or 'whole'} | {r['tile_used'] or '–'} "
            f"| {r['updates_s']:.1f} | {r['adapt_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['pretrained_psnr']:.4f} "
            f"| {r['adapted_psnr']:.4f} | {r['gain_db']:+.4f} | {r['interpolation']:g} ({r['selected_by']}) |"
        )
    lines += ["", "Mean gain by layout:"]
    for layout in args.layouts.split(","):
        gains = [r["gain_db"] for r in rows if r["layout"] == layout]
        if gains:
            lines.append(f"- `{layout}`: {sum(gains) / len(gains):+.4f} dB over {len(gains)} image(s)")
    return "\n".join(lines)


def step_peak(arch: str, side: int) -> dict:
    """In this process: the growth of its peak resident memory over one training step of the packaged
    colour ``arch`` on a ``side``² image, per pixel, and the probe's estimate."""
    import resource

    import torch

    from rfr_deploy.memory import bytes_per_pixel
    from rfr_deploy.models.factory import create_model

    model = create_model(arch, channels=3).train()
    probe = bytes_per_pixel(model, 3, training=True)
    clean = torch.rand(1, 3, side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = model(clean + 0.05 * torch.randn_like(clean), torch.full((1,), 0.05))
    torch.nn.functional.mse_loss(out, clean).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": arch,
        "side": side,
        "probe_bytes_per_pixel": probe,
        "measured_bytes_per_pixel": (after - before) / side**2,
    }


def step_memory(name: str, models: str = "dncnn,cbdnet,ridnet", side: str = "512") -> None:
    """The probe (:func:`rfr_deploy.memory.bytes_per_pixel`) that decides whether an update runs in tiles,
    against what one step measured, each network in a fresh process."""
    from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH

    rows = []
    for arch in models.split(","):
        command = [sys.executable, __file__, "step-peak", arch, side]
        rows.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    lines = [
        "# The memory of one training step, packaged colour networks",
        "",
        "The probe: `rfr_deploy.memory.bytes_per_pixel(..., training=True)`, each storage autograd saves counted "
        "once (since stop 53), times the factor for the gradients at the peak of backward. Measured: the growth "
        f"of a fresh process's peak resident memory over one step on a {side}² image (forward, MSE, backward; "
        "batch 1). A step that needs more than half the free memory (`TRAINING_MEMORY_FRACTION` = 0.5) runs in tiles.",
        "",
        f"| network | probe (bytes per pixel) | measured | probe / measured | probe for a {LARGE_IMAGE_PATCH}² step (GB) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['model']} | {r['probe_bytes_per_pixel']:,.0f} | {r['measured_bytes_per_pixel']:,.0f} "
            f"| {r['probe_bytes_per_pixel'] / r['measured_bytes_per_pixel']:.2f} "
            f"| {r['probe_bytes_per_pixel'] * LARGE_IMAGE_PATCH**2 / 1e9:.1f} |"
            for r in rows
        ),
    ]
    report(name, {"rows": rows, "environment": environment()}, "\n".join(lines))


def term_gradients(
    name: str, image: str = "/tmp/gauss_pairs/noisy/s12_05_noise.png", tile: str = "160"
) -> None:
    """How far one update's gradient moves, for each noisy-input term, when computed in tiles and when
    computed in one pass with channels-last weights (both: only the rounding changes), relative to the
    one-pass gradient. Packaged gray DnCNN, σ = 25, one thread."""
    import copy

    import torch

    from rfr_deploy import AdaptConfig, GaussianNoise
    from rfr_deploy.adaptation.recorrupt import Recorruption
    from rfr_deploy.adaptation.sure_loss import SureLoss
    from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
    from rfr_deploy.models.factory import create_model

    torch.set_num_threads(1)
    sigma = 25 / 255
    noisy = torch.from_numpy(read_image(image).pixels).permute(2, 0, 1)[None]
    model = create_model("dncnn", channels=1).train()
    with torch.no_grad():
        target = model(noisy, torch.full((1,), sigma))

    def gradient(term, tile_side, layout):
        net = copy.deepcopy(model).to(memory_format=layout)
        config = AdaptConfig(steps=1, warmup=0, lr=1e-30)  # the gradient, not the step
        generator = torch.Generator().manual_seed(1)
        context = UpdateContext(net, [target], GaussianNoise(sigma), config, generator, term, tile_side)
        EagerRunner(context).step(0, 0, None)
        return torch.cat([q.grad.flatten() for q in net.parameters()]).double()

    terms = {
        "none": None,
        "recorrupted 0.5": Recorruption([noisy], sigma, 0.5),
        "SURE 0.5": SureLoss([noisy], sigma, 0.5),
    }
    rows = []
    for label, term in terms.items():
        whole = gradient(term, None, torch.contiguous_format)
        tiled = gradient(term, int(tile), torch.contiguous_format)
        nhwc = gradient(term, None, torch.channels_last)
        rows.append(
            {
                "term": label,
                "tiles": float((tiled - whole).norm() / whole.norm()),
                "channels_last": float((nhwc - whole).norm() / whole.norm()),
            }
        )
    lines = [
        f"# One update's gradient: rounding, with and without the noisy-input terms ({Path(image).name})",
        "",
        f"Packaged gray DnCNN, σ = 25 known, whole-image batch, one thread. ‖g − g₁‖ / ‖g₁‖ against the one-pass "
        f"gradient g₁ in the default layout: g computed in {tile}² tiles, and g computed in one pass with "
        "channels-last weights (the same arithmetic in another order).",
        "",
        "| term | tiles | channels-last, one pass |",
        "|---|---:|---:|",
        *(f"| {r['term']} | {r['tiles']:.2e} | {r['channels_last']:.2e} |" for r in rows),
    ]
    report(
        name,
        {"rows": rows, "image": image, "tile": int(tile), "environment": environment()},
        "\n".join(lines),
    )


SUBCOMMANDS = {
    "job": lambda fits, *argv: run_constrained(int(fits), list(argv)),
    "step-peak": lambda arch, side: print(json.dumps(step_peak(arch, int(side)))),
    "term-gradients": term_gradients,
    "step-memory": step_memory,
}
"""The helper subcommands (``python tiled_updates.py NAME ARGS...``); anything else is a layout study."""


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in SUBCOMMANDS:
        SUBCOMMANDS[sys.argv[1]](*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pairs",
        default="real/SIDD_samples",
        help="folder with noisy/, gt/: under shared/data, or an absolute path",
    )
    parser.add_argument("--names", required=True, help="comma-separated noisy image stems")
    parser.add_argument("--crop", type=int, default=0)
    parser.add_argument("--job", default="", help="further adapt-and-export options, one string")
    parser.add_argument("--layouts", default="whole,tiles:256,patch:256")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    folder = (
        Path(args.pairs) if Path(args.pairs).is_absolute() else shared_path("data", *args.pairs.split("/"))
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names.split(","):
            noisy, clean = crop_pair(folder, name, args.crop, Path(tmp))
            for layout in args.layouts.split(","):
                out = Path(tmp) / f"out_{name}_{layout.replace(':', '_')}"  # a fresh folder: no resume
                rows.append(summarise(name, layout, run_job(noisy, clean, layout, args, out)))
                markdown = render(rows, args)
                report(args.name, {"environment": environment(), "args": vars(args), "rows": rows}, markdown)


if __name__ == "__main__":
    main()
