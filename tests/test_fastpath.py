"""The fast step runners: the CPU channels-last path, the graph runner's helpers and its fallbacks off the GPU."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
from runner_helpers import KS, max_diff, params_of, relative_gap, run_updates

from rfr_deploy.adaptation import cpu_runners
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.cpu_runners import ChannelsLastRunner, FusedAdamRunner
from rfr_deploy.adaptation.cuda_graphs import CaptureError, FastRunner, resolve_precision, try_graph_runner
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.plan import DeviceLearningRates, UpdateSnapshot, clean_batch, training_shapes
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.runners import make_runner
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.adaptation.update import EagerRunner, UpdateContext, make_optimizer
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
from rfr_deploy.transforms import DIHEDRAL, dihedral


@pytest.fixture
def noisy():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 24, 20, generator=g)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 6, "lr": 1e-3},
        {"steps": 5, "lr": 1e-3, "batch": 3, "patch": 16, "schedule": "cosine", "warmup": 2, "loss": "l1"},
    ],
)
@pytest.mark.parametrize(("avx512", "runner"), [(True, "eager+channels-last"), (False, FusedAdamRunner.name)])
def test_cpu_fast_path_matches_the_eager_loop(tiny_dncnn, noisy, kwargs, monkeypatch, avx512, runner):
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: avx512)  # channels-last where AVX-512 runs
    model = tiny_dncnn(3)
    start = params_of(model)
    eager = adapt(model, noisy, UniformSigmaGaussianNoise(), AdaptConfig(fast="off", **kwargs))
    fast = adapt(model, noisy, UniformSigmaGaussianNoise(), AdaptConfig(fast="auto", amp="off", **kwargs))
    assert eager.runner == "eager" and fast.runner == runner
    assert fast.losses == pytest.approx(eager.losses, rel=1e-5)
    assert relative_gap(params_of(fast.model), params_of(eager.model), start) < 1e-2
    # the network is handed back in the default layout
    assert all(p.is_contiguous() for p in fast.model.parameters())


def test_cpu_fast_path_serves_noise_map_networks(noisy, monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)
    model = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    config = AdaptConfig(steps=3, lr=1e-3, amp="off")  # fp32 (amp='auto' may mean bf16 on this CPU)
    eager = adapt(
        model, noisy, GaussianNoise(25 / 255), dataclasses.replace(config, fast="off"), sigma=25 / 255
    )
    fast = adapt(model, noisy, GaussianNoise(25 / 255), config, sigma=25 / 255)
    assert fast.runner == "eager+channels-last"
    assert fast.losses == pytest.approx(eager.losses, rel=1e-5)


def test_fast_off_is_exactly_the_eager_loop(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    config = AdaptConfig(steps=4, lr=1e-3, fast="off", interpolation=1.0, select="off")
    runner = make_runner(
        UpdateContext(copy.deepcopy(model), [noisy], GaussianNoise(25 / 255), config, torch.Generator())
    )
    assert type(runner) is EagerRunner
    a = adapt(model, noisy, GaussianNoise(25 / 255), config)
    # the same plan by hand: EagerRunner on the pseudo-clean target, k and generator as adapt draws them
    plan = torch.Generator().manual_seed(config.seed)
    reference = copy.deepcopy(model).train()
    by_hand = EagerRunner(
        UpdateContext(
            reference,
            a.pseudo_clean,
            GaussianNoise(25 / 255),
            config,
            torch.Generator().manual_seed(config.seed),
        )
    )
    losses = [
        float(by_hand.step(0, int(torch.randint(DIHEDRAL, (1,), generator=plan)), None)) for _ in range(4)
    ]
    assert a.losses == losses
    assert max_diff(params_of(a.model), params_of(reference)) == 0.0


def test_channels_last_runner_only_changes_the_layout(tiny_dncnn, noisy):
    config = AdaptConfig(steps=6, lr=1e-3)
    start = params_of(tiny_dncnn(3))
    eager_losses, eager_model, _ = run_updates(EagerRunner, tiny_dncnn(3), [noisy], config)
    fast_losses, fast_model, runner = run_updates(ChannelsLastRunner, tiny_dncnn(3), [noisy], config)
    assert runner.name == "eager+channels-last"
    assert fast_losses == pytest.approx(eager_losses, rel=1e-5)
    assert relative_gap(params_of(fast_model), params_of(eager_model), start) < 1e-2
    assert all(p.is_contiguous() for p in fast_model.parameters())


class _ViewNet(torch.nn.Module):
    """Reshapes activations with ``view``, which channels-last activations do not allow."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, sigma=None):
        y = self.conv(x)
        return x - y.view(y.shape[0], -1).view_as(y)


def test_channels_last_falls_back_to_the_plain_layout_for_contiguous_only_code(noisy):
    config = AdaptConfig(steps=4, lr=1e-3)
    eager_losses, eager_model, _ = run_updates(FusedAdamRunner, _ViewNet(), [noisy], config, steps=4)
    with pytest.warns(UserWarning, match="channels-last layout not used"):
        losses, model, runner = run_updates(ChannelsLastRunner, _ViewNet(), [noisy], config, steps=4)
    assert runner.name == FusedAdamRunner.name  # the same update as FusedAdamRunner's
    assert losses == eager_losses
    assert max_diff(params_of(model), params_of(eager_model)) == 0.0


def test_fused_update_matches_eager_with_a_schedule(tiny_dncnn, noisy):
    """FastRunner without graphs (CPU: fp32, fused Adam, channels-last) computes the eager update."""
    config = AdaptConfig(steps=6, lr=1e-3, schedule="cosine", warmup=2)
    start = params_of(tiny_dncnn(3))
    eager_losses, eager_model, _ = run_updates(EagerRunner, tiny_dncnn(3), [noisy], config)
    fast_losses, fast_model, runner = run_updates(FastRunner, tiny_dncnn(3), [noisy], config, graphs=False)
    assert runner.name == "fused-eager+fp32+channels-last"
    assert fast_losses == pytest.approx(eager_losses, rel=1e-5)
    assert relative_gap(params_of(fast_model), params_of(eager_model), start) < 1e-2
    assert all(p.is_contiguous() and p.grad is None for p in fast_model.parameters())


@pytest.mark.parametrize("term_cls", [Recorruption, SureLoss])
def test_every_runner_computes_the_noisy_input_term_alike(tiny_dncnn, noisy, term_cls):
    """The recorrupted pair and the SURE probe are drawn and scored identically by the eager,
    channels-last and fused runners (patches cut from the noisy image where the pseudo-clean ones are cut)."""
    config = AdaptConfig(steps=5, lr=1e-3, batch=2, patch=16, warmup=2)
    start = params_of(tiny_dncnn(3))
    offsets = [(1, 2), (4, 0)]
    term = term_cls([noisy], level=25 / 255, weight=1.0)
    args = ([noisy * 0.9], config, GaussianNoise(25 / 255), 5, offsets)
    plain, _, _ = run_updates(EagerRunner, tiny_dncnn(3), *args)
    eager_losses, eager_model, _ = run_updates(EagerRunner, tiny_dncnn(3), *args, noisy_term=term)
    assert all(a != b for a, b in zip(eager_losses, plain, strict=True))  # the term is in the loss
    for cls, kw in ((ChannelsLastRunner, {}), (FastRunner, {"graphs": False})):
        losses, model, _ = run_updates(cls, tiny_dncnn(3), *args, noisy_term=term, **kw)
        assert losses == pytest.approx(eager_losses, rel=1e-5), cls.__name__
        assert relative_gap(params_of(model), params_of(eager_model), start) < 1e-2, cls.__name__


def test_warm_up_updates_are_undone_exactly(tiny_dncnn, noisy):
    """What the graph runner does before capture: updates, then restore, must leave no trace."""
    config = AdaptConfig(steps=5, lr=1e-3, warmup=2)
    reference, _, _ = run_updates(FastRunner, tiny_dncnn(3), [noisy], config, steps=5, graphs=False)

    model = copy.deepcopy(tiny_dncnn(3)).train()
    generator = torch.Generator().manual_seed(3)
    runner = FastRunner(
        UpdateContext(model, [noisy], UniformSigmaGaussianNoise(), config, generator), graphs=False
    )
    snapshot = UpdateSnapshot(model, runner.optimizer, generator, None)
    before = params_of(model)
    for _ in range(3):  # creates Adam's state lazily and moves the weights and the generator
        runner._update(noisy.contiguous(memory_format=torch.channels_last))
    assert max_diff(params_of(model), before) > 0
    snapshot.restore()
    assert max_diff(params_of(model), before) == 0.0
    assert all(float(s["step"]) == 0 for s in runner.optimizer.state.values())
    losses = [float(runner.step(0, KS[i], None)) for i in range(5)]
    assert losses == reference


def test_device_learning_rates_follow_the_host_schedule():
    layer = torch.nn.Linear(2, 2)
    config = AdaptConfig(steps=6, lr=1e-2, schedule="cosine", warmup=2)
    optimizer, scheduler = make_optimizer(layer, config)
    lrs = DeviceLearningRates(optimizer, torch.device("cpu"))
    with lrs.installed():
        assert optimizer.param_groups[0]["lr"] is lrs.tensors[0]
    assert isinstance(optimizer.param_groups[0]["lr"], float)
    refills = 0
    for _ in range(6):
        optimizer.step()  # no gradients: a no-op, in the order the runners call them
        scheduler.step()
        refills += lrs.sync()
        assert float(lrs.tensors[0]) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)
    assert 0 < refills <= 6
    # a constant schedule without warm-up never refills
    optimizer, scheduler = make_optimizer(layer, AdaptConfig(lr=1e-2, warmup=0))
    lrs = DeviceLearningRates(optimizer, torch.device("cpu"))
    optimizer.step()
    scheduler.step()
    assert lrs.sync() == 0


def test_training_shapes_cover_every_transform_and_patch(noisy):
    shapes = training_shapes([noisy], batch=2, patch=None)
    assert set(shapes) == {(2, 3, 24, 20), (2, 3, 20, 24)}
    for shape, (_index, k, offsets) in shapes.items():
        assert tuple(clean_batch(noisy, k, offsets, 2, None).shape) == shape
    for k in range(DIHEDRAL):
        assert tuple(clean_batch(noisy, k, None, 2, None).shape) in shapes
    square = torch.rand(1, 3, 16, 16)
    assert len(training_shapes([square, square.clone()], batch=1, patch=None)) == 1
    assert list(training_shapes([noisy, square], batch=3, patch=8)) == [(3, 3, 8, 8)]


def test_clean_batch_cuts_patches_then_transforms(noisy):
    offsets = [(2, 3), (5, 0)]
    batch = clean_batch(noisy, 5, offsets, batch=2, patch=8)
    expected = dihedral(torch.cat([noisy[..., 2:10, 3:11], noisy[..., 5:13, 0:8]]), 5)
    assert torch.equal(batch, expected)
    assert torch.equal(clean_batch(noisy, 0, None, 3, None), noisy.expand(3, -1, -1, -1))


def test_graph_runner_falls_back_on_cpu_and_leaves_the_model_alone(tiny_dncnn, noisy):
    model = tiny_dncnn(3)
    before = params_of(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = try_graph_runner(
            UpdateContext(model, [noisy], GaussianNoise(25 / 255), AdaptConfig(), torch.Generator())
        )
    assert runner is None
    assert len(caught) == 1 and "CUDA graphs not used" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    assert max_diff(params_of(model), before) == 0.0
    assert all(p.is_contiguous() for p in model.parameters())
    with pytest.raises(CaptureError, match="need CUDA tensors"):
        FastRunner(
            UpdateContext(model, [noisy], GaussianNoise(25 / 255), AdaptConfig(), torch.Generator()),
            graphs=True,
        )


def test_precision_is_fp32_off_the_gpu():
    for amp in ("auto", "bf16", "fp16", "off"):
        assert resolve_precision(amp, torch.device("cpu")) == "fp32"
