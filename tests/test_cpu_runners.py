"""CPU runners: bf16 convolutions with fp32 master weights, the precision choice, per-update timing."""

from __future__ import annotations

import copy

import pytest
import torch

from rfr_deploy.adaptation import cpu_runners
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.cpu_runners import Bf16Runner, ChannelsLastRunner, FusedAdamRunner, cpu_precision
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.runners import make_runner
from rfr_deploy.adaptation.update import EagerRunner, StepTimer, UpdateContext
from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.gaussian import GaussianNoise


@pytest.fixture
def noisy():
    return torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))


def _train(cls, model, target, steps=4):
    model = copy.deepcopy(model).train()
    config = AdaptConfig(steps=steps, lr=1e-3, warmup=0, fp32_tail=0)
    runner = cls(
        UpdateContext(model, [target], GaussianNoise(25 / 255), config, torch.Generator().manual_seed(1))
    )
    losses = [float(runner.step(0, k, None)) for k in range(steps)]
    getattr(runner, "finish", lambda: None)()
    return losses, model, runner


def test_bf16_runner_runs_convolutions_in_bf16_and_keeps_fp32_state(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    losses, trained, runner = _train(Bf16Runner, model, noisy)
    assert runner.name == "eager+channels-last+bf16"
    assert seen and set(seen) == {torch.bfloat16}
    for p in trained.parameters():
        assert p.dtype == torch.float32 and p.is_contiguous()
    for state in runner.optimizer.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    fp32_losses, fp32_model, _ = _train(EagerRunner, model, noisy)
    assert losses == pytest.approx(fp32_losses, rel=5e-2)  # bf16 rounding, same noise and steps
    start = dict(model.state_dict())
    moved = max(float((a - start[k]).abs().max()) for k, a in fp32_model.state_dict().items())
    gap = max(float((a - fp32_model.state_dict()[k]).abs().max()) for k, a in trained.state_dict().items())
    assert moved > 0 and gap < moved  # the bf16 updates go where the fp32 ones go, roughly


def test_bf16_runner_runs_the_last_updates_in_fp32(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    seen: list[torch.dtype] = []
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # not fused: no ReLU after it
    last.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    config = AdaptConfig(steps=8, lr=1e-3, warmup=0, fp32_tail=3)
    runner = Bf16Runner(UpdateContext(model, [noisy], GaussianNoise(25 / 255), config, torch.Generator()))
    for k in range(8):
        runner.step(0, k, None)
    assert seen == [torch.bfloat16] * 5 + [torch.float32] * 3
    with pytest.raises(ValueError, match="fp32_tail"):
        AdaptConfig(fp32_tail=-1)


def test_a_round_no_longer_than_the_fp32_tail_gets_the_fp32_runner(tiny_dncnn, noisy, monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)  # native bf16 comes with AVX-512

    def runner(steps):
        config = AdaptConfig(steps=steps, amp="bf16", fp32_tail=10)
        return make_runner(
            UpdateContext(tiny_dncnn(3), [noisy], GaussianNoise(25 / 255), config, torch.Generator())
        )

    assert type(runner(10)) is ChannelsLastRunner and type(runner(11)) is Bf16Runner
    assert cpu_runners.bf16_updates(AdaptConfig(steps=None, fp32_tail=10)) == float("inf")


def test_fp32_runners_are_untouched_by_the_autocast_hook(tiny_dncnn, noisy):
    a, _, _ = _train(EagerRunner, tiny_dncnn(3), noisy)
    b, _, _ = _train(ChannelsLastRunner, tiny_dncnn(3), noisy)
    assert a == pytest.approx(b, rel=1e-5)


def test_the_cpu_runners_take_adams_fused_kernel_where_torch_has_it(tiny_dncnn, noisy, monkeypatch):
    assert not cpu_runners.cpu_fused_adam("2.3.1") and cpu_runners.cpu_fused_adam("2.4.0")
    assert cpu_runners.cpu_fused_adam("2.13.0+cpu")
    for cls in (FusedAdamRunner, ChannelsLastRunner, Bf16Runner):
        _, _, runner = _train(cls, tiny_dncnn(3), noisy, steps=2)
        assert runner.optimizer.defaults["fused"] is (True if cpu_runners.cpu_fused_adam() else None)
    _, _, eager = _train(EagerRunner, tiny_dncnn(3), noisy, steps=2)
    assert not eager.optimizer.defaults["fused"]  # the plain update stays the bench's baseline
    monkeypatch.setattr(cpu_runners, "cpu_fused_adam", lambda: False)
    _, _, older = _train(ChannelsLastRunner, tiny_dncnn(3), noisy, steps=2)
    assert not older.optimizer.defaults["fused"]


def test_cpu_precision_follows_amp_and_the_cpu(monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(cpu_runners, "cpu_bf16_units", lambda: None)
    assert cpu_precision("auto") == cpu_precision("off") == cpu_precision("fp16") == "fp32"
    with pytest.raises(ConfigError, match="no native bfloat16"):
        cpu_precision("bf16")
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)
    assert cpu_precision("bf16") == "bf16" and cpu_precision("off") == "fp32"
    measured = (  # auto: bf16 where it was measured faster, at fp32's gain
        ("AMX", "GenuineIntel", "bf16"),
        ("AVX512-BF16", "AuthenticAMD", "bf16"),
        ("AVX512-BF16", "GenuineIntel", "fp32"),
    )
    for units, vendor, auto in measured:
        monkeypatch.setattr(cpu_runners, "cpu_bf16_units", lambda units=units: units)
        monkeypatch.setattr(cpu_runners, "cpu_vendor", lambda vendor=vendor: vendor)
        assert cpu_precision("auto") == auto and cpu_precision("off") == "fp32"
    monkeypatch.setattr(cpu_runners, "CPU_BF16_AUTO", ())
    assert cpu_precision("auto") == "fp32"


def test_make_runner_picks_bf16_on_request(tiny_dncnn, noisy, monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)
    config = AdaptConfig(steps=2, amp="bf16", fp32_tail=0)

    def context(config):
        return UpdateContext(tiny_dncnn(3), [noisy], GaussianNoise(25 / 255), config, torch.Generator())

    assert type(make_runner(context(config))) is Bf16Runner
    assert type(make_runner(context(AdaptConfig(amp="off")))) is ChannelsLastRunner
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: False)  # as on an AVX2-only CPU
    assert not cpu_runners.channels_last_updates_pay()
    assert type(make_runner(context(AdaptConfig(amp="off")))) is FusedAdamRunner
    off = AdaptConfig(amp="bf16", fast="off")  # fast='off' is the plain eager loop whatever amp says
    assert type(make_runner(context(off))) is EagerRunner


def test_make_runner_builds_a_named_mode(tiny_dncnn, noisy):
    def context():
        return UpdateContext(
            tiny_dncnn(3), [noisy], GaussianNoise(25 / 255), AdaptConfig(), torch.Generator()
        )

    assert type(make_runner(context(), "eager")) is EagerRunner
    assert type(make_runner(context(), "fused-adam")) is FusedAdamRunner
    assert type(make_runner(context(), "channels-last")) is ChannelsLastRunner
    unfused = make_runner(context(), "bf16-unfused")
    assert type(unfused) is Bf16Runner and unfused.name == "eager+channels-last+bf16-unfused"
    assert not unfused._pairs
    assert make_runner(context(), "amp").name == "fused-eager+fp32+channels-last"  # no graphs, CPU: fp32
    with pytest.raises(ValueError, match="unknown runner mode"):
        make_runner(context(), "turbo")


@pytest.mark.parametrize("ema", [0.0, 0.9])
@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_adapt_on_a_fast_cpu_runner_returns_a_plain_fp32_network(tiny_dncnn, noisy, monkeypatch, amp, ema):
    """The weight average is what the run returns where ``ema`` is set: it too is in the plain layout."""
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)  # emulated where not native
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)  # channels-last pays, as on AVX-512
    config = AdaptConfig(steps=3, lr=1e-3, amp=amp, fp32_tail=1, ema=ema)
    result = adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), config)
    assert result.runner == ("eager+channels-last+bf16" if amp == "bf16" else "eager+channels-last")
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in result.model.parameters())
    assert len(result.step_seconds) == 3


def test_checkpoints_of_the_bf16_updates_before_an_fp32_tail_are_not_scored(tiny_dncnn, noisy, monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: True)  # emulated where not native

    def scored(tail: int, amp: str = "bf16") -> list[int]:
        config = AdaptConfig(steps=6, lr=1e-3, amp=amp, fp32_tail=tail, checkpoint_every=2)
        return sorted(adapt(tiny_dncnn(3), noisy, GaussianNoise(25 / 255), config).checkpoint_db)

    assert scored(tail=3) == [0, 4, 6]  # updates 1-3 in bf16: the checkpoint after 2 is fitted to bf16
    assert scored(tail=2) == [0, 6]  # 4 is the last bf16 update; the last network is always scored
    assert scored(tail=0) == scored(tail=0, amp="off") == [0, 2, 4, 6]  # bf16 throughout, or fp32


def test_step_timer_on_the_cpu_times_each_update(monkeypatch):
    from rfr_deploy.adaptation import update

    clock = iter([10.0, 10.5, 11.0, 12.25, 20.0, 20.125])  # start/stop of three updates
    monkeypatch.setattr(update.time, "perf_counter", lambda: next(clock))
    timer = StepTimer(torch.device("cpu"))
    for _ in range(3):
        timer.start()
        timer.stop()
    assert timer.seconds() == [0.5, 1.25, 0.125]
