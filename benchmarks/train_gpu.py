"""Train the packaged DnCNN weights on a GPU for a fixed wall time, from ``gpu_pack/`` arrays.

The paper's recipe (as ``rfr-deploy pretrain``): random patches with a random flip/rotation, Gaussian
noise σ ∈ [0, 50] drawn per patch, L1 loss, Adam with the learning rate decaying 1e-4 → 1e-6 (cosine,
over the time budget instead of a step count; a linear ramp over the first ``--warmup-steps``, since
Adam's first, sign-like steps of 1e-4 on every weight wreck the warm-started network for a while). For speed on a GPU: the whole training set sits on
the device as uint8, patches are gathered there by index, and the network runs under bf16 autocast
(fp32 master weights and Adam). Starts from the packaged weights (``--init scratch`` for fresh ones).

Writes ``<out>/<name>.safetensors`` every ``--save-every`` seconds and at the end (so a run cut
short still leaves weights), and prints one JSON line: steps, seconds, and PSNR at σ = 25 on the
packed test images of the new and the packaged weights.

    python benchmarks/train_gpu.py gray --seconds 180 --out $OUT     # on the GPU machine

It runs on a CPU too (``--device cpu``; bf16 autocast pays on CPUs with AMX or AVX512-BF16): the packaged
weights of stop 46 were trained so, 70 minutes per network on one core of an AMX CPU (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rfr_deploy.adaptation.cpu_runners import channels_last_updates_pay, cpu_fused_adam
from rfr_deploy.inference import denoise
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.transforms import DIHEDRAL, dihedral

ROOT = Path(__file__).resolve().parent.parent
CHANNELS = {"gray": 1, "color": 3}


class DevicePatches:
    """Random training patches gathered on the device from uint8 images of one size."""

    def __init__(self, images: np.ndarray, device: torch.device, patch: int, generator: torch.Generator):
        if images.ndim == 3:
            images = images[..., None]
        self.images = torch.from_numpy(images).to(device)  # N×H×W×C uint8
        self.patch, self.generator, self.device = patch, generator, device
        self.ramp = torch.arange(patch, device=device)

    def sample(self, batch: int) -> torch.Tensor:
        n, h, w, _ = self.images.shape
        g, p = self.generator, self.patch
        index = torch.randint(n, (batch,), device=self.device, generator=g)
        ys = torch.randint(h - p + 1, (batch,), device=self.device, generator=g)
        xs = torch.randint(w - p + 1, (batch,), device=self.device, generator=g)
        rows = (ys[:, None] + self.ramp)[:, :, None]
        cols = (xs[:, None] + self.ramp)[:, None, :]
        x = self.images[index[:, None, None], rows, cols]  # B×p×p×C
        return x.permute(0, 3, 1, 2).float().div_(255.0)


def cosine_lr(fraction: float, high: float, low: float) -> float:
    return low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * min(1.0, fraction)))


@torch.inference_mode()
def test_psnr(
    model, test: dict[str, np.ndarray], kind: str, device: torch.device, limit: int | None
) -> float:
    """Mean PSNR (σ = 25, fixed noise) of ``model`` on the first ``limit`` packed test images of ``kind``."""
    scores = []
    for n, key in enumerate(sorted(k for k in test if k.startswith(kind))[:limit]):
        clean = torch.from_numpy(test[key]).float().div(255.0).to(device)
        clean = (clean[None, None] if clean.ndim == 2 else clean.permute(2, 0, 1)[None]).contiguous()
        g = torch.Generator().manual_seed(n)
        noisy = clean + (25 / 255) * torch.randn(clean.shape, generator=g).to(device)
        out = denoise(model, noisy).clamp(0, 1).mul(255).round().div(255)
        mse = float(((out - clean) ** 2).mean())
        scores.append(10 * math.log10(1.0 / mse))
    return float(np.mean(scores)) if scores else float("nan")


def starting_model(args, channels: int, device: torch.device):
    """The network training starts from: the packaged weights, or fresh ones (``--init scratch``)."""
    torch.manual_seed(args.seed)
    start_from = {"weights": None} if args.init == "scratch" else {}  # default: the packaged weights
    model = create_model("dncnn", channels=channels, device=device, **start_from)
    return model.train()


def training_layout(device: torch.device) -> torch.memory_format:
    """Channels-last on a GPU and on CPUs where it speeds up training (AVX-512), else the default layout."""
    fast = device.type == "cuda" or channels_last_updates_pay()
    return torch.channels_last if fast else torch.contiguous_format


def train_step(model, optimizer, patches, batch: int, layout, dtype) -> torch.Tensor:
    """One step of the paper's recipe: a batch of patches, each flipped/rotated its own way, σ uniform in
    [0, 50], L1."""
    patch = patches.sample(batch)
    generator, device = patches.generator, patch.device
    transforms = torch.randint(DIHEDRAL, (batch,), device=device, generator=generator)
    every = torch.stack([dihedral(patch, k) for k in range(DIHEDRAL)])  # 8×B×C×p×p, p×p square
    clean = every[transforms, torch.arange(batch, device=device)].contiguous(memory_format=layout)
    sigma = torch.rand(batch, device=device, generator=generator) * (50 / 255)
    noisy = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, device=device, generator=generator)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        restored = model(noisy, sigma)
    loss = nn.functional.l1_loss(restored.float(), clean)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(args) -> dict:
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    channels = CHANNELS[args.kind]
    pack = np.load(args.pack / f"train_{args.kind}.npz")["images"]
    patches = DevicePatches(pack, device, args.patch, torch.Generator(device=device).manual_seed(args.seed))
    packaged = create_model("dncnn", channels=channels, device=device).eval()
    layout = training_layout(device)
    model = starting_model(args, channels, device).to(memory_format=layout)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.lr, fused=device.type == "cuda" or cpu_fused_adam()
    )
    dtype = torch.bfloat16 if args.amp == "bf16" else None
    out = args.out / f"dncnn_{args.kind}_blind.safetensors"
    start = last_save = time.perf_counter()
    step, losses = 0, []
    while (elapsed := time.perf_counter() - start) < args.seconds:
        ramp = min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else 1.0
        for group in optimizer.param_groups:  # Adam's first sign-like steps would wreck warm-started weights
            group["lr"] = ramp * cosine_lr(elapsed / args.seconds, args.lr, args.lr_min)
        loss = train_step(model, optimizer, patches, args.batch, layout, dtype)
        step += 1
        if step % 100 == 0:
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise RuntimeError(f"training diverged at step {step}")
        if time.perf_counter() - last_save > args.save_every:
            save(model, out, args, step, time.perf_counter() - start)
            last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    model.eval().to(memory_format=torch.contiguous_format)
    save(model, out, args, step, seconds)
    test = dict(np.load(args.pack / "test.npz"))
    return {
        "kind": args.kind,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "steps": step,
        "seconds": round(seconds, 1),
        "steps_per_second": round(step / seconds, 2),
        "batch": args.batch,
        "patch": args.patch,
        "amp": args.amp,
        "init": args.init,
        "loss_every_100": [round(v, 5) for v in losses],
        "test_images": args.test_limit or "all",
        "test_psnr_s25_new": round(test_psnr(model, test, args.kind, device, args.test_limit), 3),
        "test_psnr_s25_packaged": round(test_psnr(packaged, test, args.kind, device, args.test_limit), 3),
        "weights": str(out),
    }


def save(model, path: Path, args, step: int, seconds: float) -> None:
    """The weights so far (written atomically: a run cut short leaves the last complete file)."""
    meta = dataclasses.replace(
        model.meta,
        sigma_range=(0.0, 50 / 255),
        source="rfr-deploy benchmarks/train_gpu.py",
        notes=f"{step} steps of batch {args.batch}×{args.patch}² in {seconds:.0f} s, L1, {args.amp} autocast, "
        f"Adam {args.lr:g}→{args.lr_min:g} (cosine over the time), σ ∈ [0, 50]; started from {args.init}",
    )
    save_weights(path, model.net, meta, extra={"training": {"steps": step, "seconds": round(seconds, 1)}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(CHANNELS))
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pack", type=Path, default=ROOT / "gpu_pack")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--patch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-min", type=float, default=1e-6)
    parser.add_argument("--amp", choices=["bf16", "off"], default="bf16")
    parser.add_argument("--init", choices=["packaged", "scratch"], default="packaged")
    parser.add_argument("--warmup-steps", type=int, default=500, help="linear learning-rate ramp")
    parser.add_argument("--save-every", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test-limit", type=int, default=None, help="packed test images scored (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    if not (args.pack / f"train_{args.kind}.npz").is_file():
        print(
            f"error: {args.pack}/train_{args.kind}.npz missing (run benchmarks/pack_gpu_data.py)",
            file=sys.stderr,
        )
        return 2
    summary = train(args)
    text = json.dumps(summary)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
