"""The CUDA-graph update path against the eager loop (skipped without a CUDA device)."""

from __future__ import annotations

import pytest
import torch
from runner_helpers import max_diff, params_of, relative_gap, run_updates

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.cuda_graphs import CaptureError, FastRunner, try_graph_runner
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
from rfr_deploy.noise.gaussian import GaussianNoise


@pytest.fixture
def noisy():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 24, 20, generator=g)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")


@pytest.fixture(autouse=True)
def _true_fp32_convolutions():
    """fp32 comparisons on the GPU: TF32 convolutions would differ between cuDNN algorithms by ~1e-3."""
    if not torch.cuda.is_available():
        yield
        return
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def _cuda_pair(tiny_dncnn, noisy, amp: str, steps: int = 6, **config_kwargs):
    device = torch.device("cuda")
    target = noisy.to(device)
    config = AdaptConfig(steps=steps, lr=1e-3, amp=amp, **config_kwargs)
    model = tiny_dncnn(3).to(device)
    offsets = [(1, 2)] * config.batch if config.patch else None
    eager = run_updates(EagerRunner, model, [target], config, steps=steps, offsets=offsets)
    graph = run_updates(FastRunner, model, [target], config, steps=steps, offsets=offsets, graphs=True)
    return eager, graph, params_of(model)


@needs_cuda
def test_cuda_graphs_in_fp32_match_the_eager_loop(tiny_dncnn, noisy):
    (e_losses, e_model, _), (g_losses, g_model, runner), start = _cuda_pair(tiny_dncnn, noisy, "off")
    assert runner.name.startswith("cuda-graph+fp32")
    assert len(runner.graphs) == 0  # released by finish()
    # same generator state: the replays draw the eager loop's noise
    assert g_losses == pytest.approx(e_losses, rel=1e-3)
    assert relative_gap(params_of(g_model), params_of(e_model), start) < 1e-2


@needs_cuda
def test_cuda_graphs_with_bf16_autocast_stay_close_to_fp32(tiny_dncnn, noisy):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bfloat16")
    (e_losses, _, _), (g_losses, _, runner), _ = _cuda_pair(tiny_dncnn, noisy, "bf16")
    assert "bf16" in runner.name
    assert g_losses == pytest.approx(e_losses, rel=5e-2)


@needs_cuda
def test_cuda_graphs_with_fp16_and_a_grad_scaler(tiny_dncnn, noisy):
    (e_losses, _, _), (g_losses, g_model, runner), start = _cuda_pair(tiny_dncnn, noisy, "fp16")
    assert "fp16" in runner.name
    # the first loss precedes any update; later ones may follow steps the scaler skipped on overflow
    assert g_losses[0] == pytest.approx(e_losses[0], rel=1e-2)
    assert all(torch.isfinite(p).all() for p in g_model.parameters())
    assert max_diff(params_of(g_model), start) > 0, "no update was applied"


@needs_cuda
def test_cuda_graphs_replay_the_recorrupted_term(tiny_dncnn, noisy):
    device = torch.device("cuda")
    target = noisy.to(device)
    config = AdaptConfig(steps=6, lr=1e-3, amp="off")
    term = Recorruption([target * 1.1], level=25 / 255, weight=1.0)
    model = tiny_dncnn(3).to(device)
    eager = run_updates(EagerRunner, model, [target], config, GaussianNoise(25 / 255), noisy_term=term)
    graph = run_updates(
        FastRunner, model, [target], config, GaussianNoise(25 / 255), graphs=True, noisy_term=term
    )
    assert graph[2].name.startswith("cuda-graph")
    assert graph[0] == pytest.approx(eager[0], rel=1e-3)
    assert relative_gap(params_of(graph[1]), params_of(eager[1]), params_of(model)) < 1e-2


@needs_cuda
def test_cuda_graphs_capture_patch_training_and_schedules(tiny_dncnn, noisy):
    kwargs = {"batch": 2, "patch": 16, "schedule": "cosine", "warmup": 2}
    (e_losses, _, _), (g_losses, _, _), _ = _cuda_pair(tiny_dncnn, noisy, "off", **kwargs)
    assert g_losses == pytest.approx(e_losses, rel=1e-3)


@needs_cuda
def test_adapt_uses_graphs_on_cuda_and_two_for_a_non_square_image(tiny_dncnn, noisy):
    result = adapt(tiny_dncnn(3), noisy.cuda(), GaussianNoise(25 / 255), AdaptConfig(steps=8, lr=1e-3))
    assert result.runner.startswith("cuda-graph")
    assert all(p.is_contiguous() for p in result.model.parameters())
    model = tiny_dncnn(3).cuda()
    runner = FastRunner(
        UpdateContext(model, [noisy.cuda()], GaussianNoise(25 / 255), AdaptConfig(), torch.Generator("cuda"))
    )
    assert len(runner.graphs) == 2
    runner.finish()


class _HostRandomNoise(torch.nn.Module):
    """Draws its noise level on the host: a CUDA graph would freeze it."""

    def forward(self, x, generator=None):
        s = torch.full((x.shape[0],), float(torch.rand(1)) * 0.1, device=x.device)
        return x + s.view(-1, 1, 1, 1) * torch.ones_like(x), s


@needs_cuda
def test_cuda_noise_frozen_by_capture_is_detected_and_falls_back(tiny_dncnn, noisy):
    model = tiny_dncnn(3).cuda()
    before = params_of(model)
    with pytest.warns(UserWarning, match="draws on the host"):
        runner = try_graph_runner(
            UpdateContext(model, [noisy.cuda()], _HostRandomNoise(), AdaptConfig(), torch.Generator("cuda"))
        )
    assert runner is None
    assert max_diff(params_of(model), before) == 0.0


@needs_cuda
def test_cuda_zero_level_noise_still_gets_graphs(tiny_dncnn, noisy):
    """σ = 0 draws (zero times fresh noise): the generator's offset advances, graphs are used."""
    model = tiny_dncnn(3).cuda()
    runner = try_graph_runner(
        UpdateContext(model, [noisy.cuda()], GaussianNoise(0.0), AdaptConfig(), torch.Generator("cuda"))
    )
    assert runner is not None and runner.name.startswith("cuda-graph")
    runner.finish()


@needs_cuda
def test_cuda_radam_with_fp16_is_refused_before_any_capture(tiny_dncnn, noisy):
    model = tiny_dncnn(3).cuda()
    before = params_of(model)
    config = AdaptConfig(optimizer="radam", amp="fp16")
    with pytest.raises(CaptureError, match="RAdam has no fused kernel"):
        FastRunner(
            UpdateContext(model, [noisy.cuda()], GaussianNoise(25 / 255), config, torch.Generator("cuda"))
        )
    assert max_diff(params_of(model), before) == 0.0
    # bf16 / fp32 RAdam is capturable (no gradient scaler)
    runner = FastRunner(
        UpdateContext(
            model,
            [noisy.cuda()],
            GaussianNoise(25 / 255),
            AdaptConfig(optimizer="radam", amp="off"),
            torch.Generator("cuda"),
        )
    )
    assert runner.name.startswith("cuda-graph")
    runner.finish()


class _SyncingNet(torch.nn.Module):
    """Reads a value on the host in its forward pass: a capture-breaker."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, sigma=None):
        scale = float(x.abs().max())
        return x - self.conv(x) / max(scale, 1.0)


@needs_cuda
def test_cuda_a_host_sync_in_the_update_is_found_before_capture(noisy):
    with pytest.warns(UserWarning, match="synchronises with the host"):
        runner = try_graph_runner(
            UpdateContext(
                _SyncingNet().cuda(),
                [noisy.cuda()],
                GaussianNoise(25 / 255),
                AdaptConfig(),
                torch.Generator("cuda"),
            )
        )
    assert runner is None
    assert torch.cuda.get_sync_debug_mode() == 0


@needs_cuda
def test_cuda_adapt_times_every_update_with_events(tiny_dncnn, noisy):
    result = adapt(tiny_dncnn(3), noisy.cuda(), GaussianNoise(25 / 255), AdaptConfig(steps=5, lr=1e-3))
    assert len(result.step_seconds) == 5 and all(s > 0 for s in result.step_seconds)
    assert sum(result.step_seconds) < result.total_seconds
