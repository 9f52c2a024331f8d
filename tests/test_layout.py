"""CPU forward passes in channels-last layout (rfr_deploy/layout.py): the same result as the default
layout up to rounding, the weights handed back as they were, and a fallback for networks that need NCHW."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from rfr_deploy import layout
from rfr_deploy.inference import denoise
from rfr_deploy.layout import in_channels_last, run_channels_last
from rfr_deploy.models.factory import create_model


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(layout, "_DEFAULT_LAYOUT_ONLY", set())


def tiny(name: str, channels: int = 3):
    torch.manual_seed(0)
    return create_model(name, weights=None, channels=channels, depth=3, features=8).eval()


def last_conv_inputs(model: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    conv.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    return seen


@pytest.mark.parametrize(
    "name, channels, sigma", [("dncnn", 3, None), ("dncnn", 1, None), ("ffdnet", 3, 0.1)]
)
def test_channels_last_matches_the_default_layout(name, channels, sigma):
    model = tiny(name, channels)
    torch.manual_seed(1)
    noisy = torch.rand(1, channels, 36, 44)
    weights = {k: p for k, p in model.named_parameters()}
    seen = last_conv_inputs(model)
    fast = denoise(model, noisy, sigma=sigma)
    assert seen[-1].is_contiguous(memory_format=torch.channels_last) and not seen[-1].is_contiguous()
    plain = denoise(model, noisy, sigma=sigma, channels_last=False)
    assert seen[-1].is_contiguous()
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=0)
    assert fast.is_contiguous()
    # the same parameters, back in the default layout, with the same values
    assert all(p is weights[k] and p.is_contiguous() for k, p in model.named_parameters())
    torch.testing.assert_close(denoise(model, noisy, sigma=sigma, ensemble=True),
                               denoise(model, noisy, sigma=sigma, ensemble=True, channels_last=False),
                               atol=1e-6, rtol=0)  # fmt: skip


def test_a_network_already_in_channels_last_layout_stays_so():
    model = tiny("dncnn").to(memory_format=torch.channels_last)
    assert in_channels_last(model)
    denoise(model, torch.rand(1, 3, 20, 20))
    assert in_channels_last(model)
    assert not in_channels_last(tiny("dncnn"))


class _NchwOnly(nn.Module):
    """Reads its activations with ``view``, which channels-last activations refuse."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.view(y.shape[0], -1).view_as(y)[:, :3]


def test_a_network_that_needs_nchw_falls_back_once_with_a_warning():
    model, x = _NchwOnly(), torch.rand(1, 3, 8, 8)
    expected = run_channels_last(model, x, lambda fmt: model(x.contiguous(memory_format=fmt)), wanted=False)
    with pytest.warns(UserWarning, match="channels-last layout not used for _NchwOnly"):
        got = run_channels_last(model, x, lambda fmt: model(x.contiguous(memory_format=fmt)))
    assert torch.equal(got, expected) and not in_channels_last(model)
    layouts = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_channels_last(model, x, lambda fmt: layouts.append(fmt) or model(x.contiguous(memory_format=fmt)))
    assert layouts == [torch.contiguous_format]  # remembered: not tried in channels-last again


class _WithVolumeWeights(nn.Module):
    """A 5-D weight (``Conv3d``), which channels-last (a 4-D layout) refuses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.volume = nn.Conv3d(1, 1, 1)

    def forward(self, x):
        return self.conv(x) + self.volume(x[:, None])[:, 0]


def test_a_network_with_weights_channels_last_cannot_hold_runs_in_the_default_layout():
    model, x = _WithVolumeWeights(), torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        with pytest.warns(UserWarning, match="channels-last layout not used for _WithVolumeWeights"):
            got = run_channels_last(model, x, lambda fmt: model(x.contiguous(memory_format=fmt)))
    assert torch.equal(got, expected)
    assert all(p.is_contiguous() for p in model.parameters())  # the half-converted weights are back


def test_an_error_of_both_layouts_is_raised_and_not_remembered():
    model = tiny("dncnn")

    def fail(fmt):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_channels_last(model, torch.rand(1, 3, 8, 8), fail)
    assert not layout._DEFAULT_LAYOUT_ONLY and not in_channels_last(model)
