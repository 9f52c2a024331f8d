"""Helpers shared by the update runners' tests (test_fastpath.py on the CPU, test_cuda_graphs.py on CUDA)."""

from __future__ import annotations

import copy

import torch

from rfr_deploy.adaptation.update import UpdateContext
from rfr_deploy.noise.gaussian import UniformSigmaGaussianNoise

KS = [0, 1, 5, 3, 2, 7, 4, 6]


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def relative_gap(candidate: dict, reference: dict, start: dict) -> float:
    """Mean |candidate − reference| over the mean distance the reference moved from ``start``.

    Robust to Adam's sign flips: where a gradient component is ~0, summation-order noise can flip
    the sign of its first updates (a ±lr step on that one weight), which a max norm would flag.
    """
    flat = {
        name: torch.cat([d[k].flatten().float() for k in sorted(d)])
        for name, d in (("c", candidate), ("r", reference), ("s", start))
    }
    moved = float((flat["r"] - flat["s"]).abs().mean())
    assert moved > 0, "the reference did not train"
    return float((flat["c"] - flat["r"]).abs().mean()) / moved


def run_updates(
    runner_cls, model, targets, config, noise=None, steps=6, offsets=None, noisy_term=None, **kwargs
):
    model = copy.deepcopy(model).train()
    generator = torch.Generator(device=targets[0].device).manual_seed(3)
    context = UpdateContext(
        model, targets, noise or UniformSigmaGaussianNoise(), config, generator, noisy_term
    )
    runner = runner_cls(context, **kwargs)
    losses = [float(runner.step(0, KS[i % len(KS)], offsets)) for i in range(steps)]
    if hasattr(runner, "finish"):
        runner.finish()
    return losses, model, runner


def refuse_work(text: str, total) -> None:
    """An ``adapt`` stage callback that fails the test: work started before the settings were checked."""
    raise AssertionError(f"work started before the settings were checked: {text}")
