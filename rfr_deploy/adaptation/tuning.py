"""What an adaptation tunes: every weight, a per-channel affine map after every layer, or both.

``affine`` puts a gain g and a shift b on every output channel of every convolution (and linear
layer): y = g · conv(x) + b, identity at the start. Only g and b move. This is the view of the
network the authors' own code tunes (their DnCNN keeps its BatchNorm layers unfolded, running
statistics frozen, γ/β trained), and GainTuning's (Mohan et al. 2021): a few thousand parameters,
well conditioned, hard to overfit. The official weights have BatchNorm folded into the
convolutions, so the affine maps are written as parametrizations of the existing weights:

    weight ← weight · g (per output channel),  bias ← bias · g + b

which :func:`fold_affine` bakes back into plain weights. After folding the network has exactly the
parameters, names and shapes it had before, so weights files, ONNX graphs, TensorRT engines and
refit names do not change. A layer without a bias gets the gain alone (a shift would add a tensor).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn
from torch.nn.utils import parametrize

Tune = Literal["all", "affine", "all+affine"]
TUNE_CHOICES: tuple[str, ...] = get_args(Tune)

_LAYERS = (nn.Conv2d, nn.Conv1d, nn.Linear, nn.ConvTranspose2d)


class ChannelGain(nn.Module):
    """Parametrization of a weight: every output channel scaled by its gain."""

    def __init__(self, gain: nn.Parameter, dim: int, ndim: int):
        super().__init__()
        self.gain = gain
        self.shape = [1] * ndim
        self.shape[dim] = -1

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.gain.view(self.shape).to(weight.dtype)


class ChannelShift(nn.Module):
    """Parametrization of a bias: scaled by the same gain as its weight, plus a shift."""

    def __init__(self, gain: nn.Parameter):
        super().__init__()
        self.gain = gain
        self.shift = nn.Parameter(torch.zeros_like(gain))

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        return bias * self.gain.to(bias.dtype) + self.shift.to(bias.dtype)


def _output_dim(layer: nn.Module) -> int:
    return 1 if isinstance(layer, nn.ConvTranspose2d) else 0


def _tunable_layers(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(m, _LAYERS)
        and isinstance(getattr(m, "weight", None), nn.Parameter)
        and not parametrize.is_parametrized(m)
        and not (isinstance(m, nn.ConvTranspose2d) and m.groups != 1)
    ]


def add_affine(model: nn.Module) -> list[nn.Parameter]:
    """Give every layer of ``model`` an identity per-channel affine map (in place); returns its parameters."""
    added: list[nn.Parameter] = []
    for layer in _tunable_layers(model):
        weight = layer.weight
        dim = _output_dim(layer)
        gain = nn.Parameter(torch.ones(weight.shape[dim], device=weight.device, dtype=weight.dtype))
        parametrize.register_parametrization(layer, "weight", ChannelGain(gain, dim, weight.ndim))
        added.append(gain)
        if isinstance(getattr(layer, "bias", None), nn.Parameter):
            shift = ChannelShift(gain)
            parametrize.register_parametrization(layer, "bias", shift)
            added.append(shift.shift)
    return added


def affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The gains and shifts :func:`add_affine` gave ``model`` (or a copy of it), in a fixed order."""
    out: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, ChannelGain):
            out.append(m.gain)
        elif isinstance(m, ChannelShift):
            out.append(m.shift)
    return out


@torch.no_grad()
def fold_affine(model: nn.Module) -> nn.Module:
    """Bake the affine maps into the plain weights and remove them (in place); returns ``model``.

    A network without them is returned unchanged.
    """
    for m in list(model.modules()):
        if not parametrize.is_parametrized(m):
            continue
        for name in list(m.parametrizations.keys()):
            chain = m.parametrizations[name]
            if any(isinstance(p, ChannelGain | ChannelShift) for p in chain):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return model


def prepare_tuning(model: nn.Module, tune: Tune) -> list[str]:
    """Set ``model`` up (in place) for tuning ``tune``; returns the names of the weights it froze.

    'all': nothing changes; 'affine': per-channel gains and shifts added, every other weight frozen;
    'all+affine': gains and shifts added, the weights stay trainable.
    """
    if tune not in TUNE_CHOICES:
        raise ValueError(f"tune must be one of {', '.join(TUNE_CHOICES)}, not {tune!r}")
    if tune == "all":
        return []
    weights = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not add_affine(model):
        raise ValueError(f"tune={tune!r}: the network has no convolution or linear layer to give gains to")
    if tune == "all+affine":
        return []
    for _, p in weights:
        p.requires_grad_(False)
    return [name for name, _ in weights]


def finish_tuning(model: nn.Module, frozen: list[str]) -> nn.Module:
    """Fold the affine maps into ``model`` and make the weights :func:`prepare_tuning` froze trainable
    again (in place; ``model`` may be a copy of the prepared network); returns ``model``."""
    fold_affine(model)
    parameters = dict(model.named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(True)
    return model


LayerLr = Literal["uniform", "relative"]
LAYER_LR_CHOICES: tuple[str, ...] = get_args(LayerLr)


def parameter_groups(
    model: nn.Module, lr: float, affine_lr: float, layer_lr: LayerLr = "uniform"
) -> list[dict]:
    """The optimizer's parameter groups: trainable weights at ``lr``, affine maps at ``affine_lr``.

    ``layer_lr='relative'`` gives every weight tensor of more than one dimension its own group at
    ``lr × rms(w) / median rms`` (the median over those tensors), so each layer's steps are the same
    size relative to its weights. With BatchNorm folded in, a layer's scale is the BN gain the network
    was trained through, and Adam's fixed-size steps otherwise move the small-scaled layers further
    in relative terms than the unfolded network's training did (CDnCNN-B's layers range from 0.014 to
    0.109 in RMS). Biases and affine maps keep their rate.
    """
    affine = affine_parameters(model)
    ids = {id(p) for p in affine}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = _relative_groups(weights, lr) if layer_lr == "relative" else [{"params": weights, "lr": lr}]
    return [g for g in groups if g["params"]] + ([{"params": affine, "lr": affine_lr}] if affine else [])


@torch.no_grad()
def _relative_groups(weights: list[nn.Parameter], lr: float) -> list[dict]:
    scaled = [p for p in weights if p.ndim > 1]
    rms = [float(p.float().pow(2).mean().sqrt()) for p in scaled]
    reference = float(torch.tensor(rms).median()) if rms else 1.0
    ids = {id(p) for p in scaled}
    rest = [p for p in weights if id(p) not in ids]
    layers = [
        {"params": [p], "lr": lr * r / reference if reference > 0 else lr}
        for p, r in zip(scaled, rms, strict=True)
    ]
    return layers + [{"params": rest, "lr": lr}]
