"""Convolution + ReLU fused for the CPU bf16 update: same values and gradients, temporary, with a fallback."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from rfr_deploy.adaptation import cpu_runners, fused_conv_relu
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.cpu_runners import Bf16Runner
from rfr_deploy.adaptation.fused_conv_relu import ConvReLUFunction, find_pairs, fusion_available
from rfr_deploy.adaptation.update import UpdateContext
from rfr_deploy.noise.gaussian import GaussianNoise

needs_onednn = pytest.mark.skipif(
    not fusion_available(), reason="this PyTorch build has no oneDNN fused convolution"
)
needs_fused_bf16 = pytest.mark.skipif(
    not fusion_available(torch.bfloat16),
    reason="oneDNN's fused bf16 convolution needs AVX512BW/VL/DQ or AVX-NE-CONVERT, which this CPU lacks",
)


def _forward_backward(model: nn.Module, x: torch.Tensor, pairs=None):
    model.zero_grad(set_to_none=True)
    with fused_conv_relu.fused_conv_relu(pairs or []):
        out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@needs_onednn
def test_fused_pairs_give_the_values_and_gradients_of_the_unfused_network():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    )  # fmt: skip
    x = torch.randn(2, 3, 12, 10)
    pairs = find_pairs(model)
    assert [(p.conv_key, p.relu_key) for p in pairs] == [("0", "1"), ("2", "3")]
    plain_out, plain_grads = _forward_backward(model, x)
    fused_out, fused_grads = _forward_backward(model, x, pairs)
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6)


@needs_onednn
def test_fusion_is_recorded_in_the_graph_and_undone_before_the_block_returns():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    before = list(model)
    keys = list(model.state_dict())
    pairs = find_pairs(model)
    with fused_conv_relu.fused_conv_relu(pairs):
        assert isinstance(model[0], fused_conv_relu.FusedConvReLU) and isinstance(model[1], nn.Identity)
        out = model(torch.randn(1, 1, 8, 8, requires_grad=True))
    assert list(model) == before and list(model.state_dict()) == keys
    assert any("ConvReLUFunction" in type(f).__name__ for f in _graph_nodes(out.grad_fn))
    with pytest.raises(RuntimeError, match="boom"), fused_conv_relu.fused_conv_relu(pairs):
        raise RuntimeError("boom")
    assert list(model) == before  # restored on errors too


@needs_fused_bf16
def test_fused_pairs_follow_autocast_and_compute_in_fp32_where_a_block_turns_it_off():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    x = torch.randn(1, 1, 8, 8)
    with fused_conv_relu.fused_conv_relu(find_pairs(model)), torch.autocast("cpu", dtype=torch.bfloat16):
        inner = model[0](x)
        with torch.autocast("cpu", enabled=False):  # as the SURE loss computes its finite difference
            plain = model(x)
    assert inner.dtype == torch.bfloat16 and plain.dtype == torch.float32
    torch.testing.assert_close(plain, nn.Sequential(*model)(x))


def _graph_nodes(fn):
    seen, stack = [], [fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.append(node)
            stack.extend(n for n, _ in node.next_functions)
    return seen


def test_only_plain_zero_padded_convolutions_before_a_relu_in_a_sequential_are_paired():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"), nn.ReLU(),  # padding as a string: not fused
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),  # not zero padding
        nn.Conv2d(4, 4, 3, padding=1), nn.LeakyReLU(),  # not a ReLU
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),  # the one pair
    )  # fmt: skip
    assert [p.conv_key for p in find_pairs(model)] == ["6"]


@needs_onednn
def test_a_pair_can_run_its_backward_convolution_in_bf16():
    """The fp32 tail's pairs: fp32 forward, bf16 backward convolution, fp32 gradients."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 10, 10, requires_grad=True)
    weight, bias = torch.randn(6, 4, 3, 3, requires_grad=True), torch.randn(6, requires_grad=True)
    geometry = ([1, 1], [1, 1], [1, 1], 1)

    def gradients(backward_dtype):
        x.grad = weight.grad = bias.grad = None
        out = ConvReLUFunction.apply(x, weight, bias, *geometry, backward_dtype)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        return out.detach(), [t.grad.clone() for t in (x, weight, bias)]

    fp32_out, fp32_grads = gradients(None)
    out, grads = gradients(torch.bfloat16)
    assert torch.equal(out, fp32_out) and out.dtype == torch.float32  # the forward pass is untouched
    grad = torch.ops.aten.threshold_backward(torch.linspace(-1, 1, out.numel()).view_as(out), out, 0)
    bf16 = [t.detach().to(torch.bfloat16) for t in (grad, x, weight)]
    expected = torch.ops.aten.convolution_backward(
        *bf16, [6], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True]
    )  # fmt: skip
    for got, want, fp32 in zip(grads, expected, fp32_grads, strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, want.float())
        assert not torch.equal(got, fp32)  # bf16 rounding shows
        torch.testing.assert_close(got, fp32, rtol=0.05, atol=0.05 * float(fp32.abs().max()))


@needs_fused_bf16
@pytest.mark.parametrize("tail_backward", ["bf16", "fp32"])
def test_the_fp32_tail_keeps_its_forward_in_fp32_and_runs_the_pairs_backward_as_asked(
    tiny_dncnn, monkeypatch, tail_backward
):
    calls: list[tuple[int, torch.dtype, torch.dtype | None]] = []
    original, done = ConvReLUFunction.forward, [0]

    def spy(ctx, x, *args):
        calls.append((done[0], x.dtype, args[-1]))
        return original(ctx, x, *args)

    monkeypatch.setattr(ConvReLUFunction, "forward", staticmethod(spy))
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    config = AdaptConfig(steps=4, lr=1e-3, warmup=0, fp32_tail=2, tail_backward=tail_backward)
    runner = Bf16Runner(
        UpdateContext(tiny_dncnn(3), [target], GaussianNoise(25 / 255), config, torch.Generator())
    )
    for k in range(4):
        done[0] = k
        runner.step(0, k, None)
    head = [(k, torch.bfloat16, None) for k in (0, 1) for _ in range(2)]  # two pairs per update
    tail = [(k, torch.float32, torch.bfloat16) for k in (2, 3) for _ in range(2)]
    assert calls == head + (tail if tail_backward == "bf16" else [])  # fp32: the tail runs unfused
    with pytest.raises(ValueError, match="tail_backward"):
        AdaptConfig(tail_backward="fp16")


def _bf16_runner(model, target, fuse=True):
    config = AdaptConfig(steps=3, lr=1e-3, warmup=0, fp32_tail=0)
    context = UpdateContext(
        model, [target], GaussianNoise(25 / 255), config, torch.Generator().manual_seed(1)
    )
    return Bf16Runner(context, fuse=fuse)


@needs_fused_bf16
def test_bf16_runner_fuses_and_trains_like_the_unfused_update(tiny_dncnn):
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    calls = []
    original = ConvReLUFunction.forward

    def spy(ctx, x, *args):
        calls.append(x.dtype)
        return original(ctx, x, *args)

    fused_model, plain_model = tiny_dncnn(3), tiny_dncnn(3)
    fused = _bf16_runner(fused_model, target)
    plain = _bf16_runner(plain_model, target, fuse=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ConvReLUFunction, "forward", staticmethod(spy))
        fused_losses = [float(fused.step(0, k, None)) for k in range(3)]
    assert fused._pairs, "the fused path fell back"
    plain_losses = [float(plain.step(0, k, None)) for k in range(3)]
    assert len(calls) == 3 * 2 and set(calls) == {torch.bfloat16}  # two pairs per update, in bf16
    assert fused_losses == pytest.approx(plain_losses, rel=1e-2)
    for (name, a), b in zip(fused_model.state_dict().items(), plain_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4, msg=name)
    assert not any(isinstance(m, (fused_conv_relu.FusedConvReLU, nn.Identity)) for m in fused_model.modules())


def test_bf16_runner_falls_back_to_unfused_layers_when_the_fused_call_fails(tiny_dncnn, monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)

    def broken(*args):
        raise RuntimeError("mkldnn_convolution_pointwise: not on this CPU")

    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    model, reference_model = tiny_dncnn(3), tiny_dncnn(3)
    runner = _bf16_runner(model, target)
    runner._pairs[:] = find_pairs(runner.model)  # as on a build with the fused call
    reference = _bf16_runner(reference_model, target, fuse=False)
    monkeypatch.setattr(ConvReLUFunction, "forward", staticmethod(broken))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [float(runner.step(0, k, None)) for k in range(2)]
    assert runner._pairs == [] and runner.name == "eager+channels-last+bf16-unfused"  # the layout stayed
    assert [str(w.message) for w in caught if "not used" in str(w.message)] == [
        "fused convolution + ReLU not used: mkldnn_convolution_pointwise: not on this CPU"
    ]
    # the failed attempt left no trace: no optimizer step, the same noise drawn again
    assert losses == [float(reference.step(0, k, None)) for k in range(2)]
    for a, b in zip(model.state_dict().values(), reference_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@needs_onednn
def test_a_cpu_that_cannot_run_the_fused_bf16_call_gets_the_unfused_update_without_a_warning(
    tiny_dncnn, monkeypatch
):
    """As on an AVX2-only CPU (AMD Zen 2), where oneDNN refuses bf16 fused convolutions."""

    def refuse(x, *args):
        if x.dtype == torch.bfloat16:
            raise RuntimeError(
                "mkldnn_convolution: bf16 path needs the cpu support avx_ne_convert or avx512bw"
            )
        return torch.relu(torch.conv2d(x, *args[:1]))

    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(fused_conv_relu, "conv_relu", refuse)
    fusion_available.cache_clear()
    try:
        assert fusion_available() and not fusion_available(torch.bfloat16)
        target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runner = _bf16_runner(tiny_dncnn(3), target)
            runner.step(0, 0, None)
        assert runner._pairs == [] and runner.name == "eager+channels-last+bf16"
    finally:
        fusion_available.cache_clear()
