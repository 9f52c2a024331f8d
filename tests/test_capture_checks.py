"""Checks made before a CUDA-graph capture: version logic, refusals, RNG use (CPU generators)."""

from __future__ import annotations

import warnings

import pytest
import torch

from rfr_deploy.adaptation.capture_checks import (
    capture_blockers,
    default_generator_backup_needed,
    draws_only_from,
    generator_registration,
    no_host_syncs,
    register_generator,
    rng_moved,
    rng_position,
)
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise


def test_generator_registration_is_decided_by_the_torch_version():
    assert generator_registration("2.13.0+cpu", has_method=True) == "explicit"
    assert generator_registration("2.11.0+cu130", has_method=True) == "explicit"
    assert generator_registration("2.3.1", has_method=False) == "unsupported"
    # 2.14 registers on first draw: the method's presence (or absence, once removed) does not matter
    assert generator_registration("2.14.0", has_method=True) == "automatic"
    assert generator_registration("2.16.1+cu131", has_method=False) == "automatic"
    # a 2.14 pre-release is still explicit (its deprecation warning is silenced by register_generator)
    assert generator_registration("2.14.0a0+git1234", has_method=True) == "explicit"


class _Graph:
    """Stands in for torch.cuda.CUDAGraph: records registrations, warns like torch 2.14 does."""

    def __init__(self):
        self.registered = []

    def register_generator_state(self, generator):
        warnings.warn("register_generator_state is deprecated", FutureWarning, stacklevel=2)
        self.registered.append(generator)


def test_register_generator_calls_torch_only_where_needed_and_silences_the_deprecation():
    generator = torch.Generator()
    graph = _Graph()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_generator(graph, generator, "explicit")
    assert graph.registered == [generator]
    graph = _Graph()
    register_generator(graph, generator, "automatic")
    register_generator(graph, generator, "unsupported")
    assert graph.registered == []


def test_the_default_generator_is_saved_around_a_capture_only_before_2_13():
    assert default_generator_backup_needed("2.11.0+cu130")
    assert default_generator_backup_needed("2.12.1")
    assert not default_generator_backup_needed("2.13.0")
    assert not default_generator_backup_needed("2.14.1+cu130")


def test_radam_with_fp16_is_refused_before_capture():
    radam = AdaptConfig(optimizer="radam")
    (reason,) = capture_blockers(radam, "fp16", shapes=1, max_graphs=8, registration="explicit")
    assert "RAdam" in reason and "host" in reason
    # RAdam captures in bf16 / fp32 (no gradient scaler), Adam in fp16 (fused kernel reads found_inf)
    assert capture_blockers(radam, "bf16", 1, 8, "explicit") == []
    assert capture_blockers(radam, "fp32", 1, 8, "automatic") == []
    assert capture_blockers(AdaptConfig(), "fp16", 1, 8, "explicit") == []


def test_other_known_capture_breakers_are_listed_together():
    reasons = capture_blockers(AdaptConfig(optimizer="radam"), "fp16", 9, 8, "unsupported")
    assert len(reasons) == 3
    assert "cannot replay a custom generator" in reasons[0]
    assert "9 distinct training shapes (at most 8" in reasons[2]


class _HostSigma(torch.nn.Module):
    """Draws its noise level on the host (torch's default CPU generator)."""

    def forward(self, x, generator=None):
        s = torch.full((x.shape[0],), float(torch.rand(1)) * 0.1)
        return x + s.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=generator), s


class _NoDraw(torch.nn.Module):
    """Adds a fixed pattern: nothing random at all."""

    def forward(self, x, generator=None):
        return x + 0.01, torch.zeros(x.shape[0])


def test_zero_level_noise_draws_from_the_generator_and_passes():
    x = torch.rand(2, 3, 8, 8)
    for noise in (GaussianNoise(0.0), GaussianNoise(25 / 255), UniformSigmaGaussianNoise()):
        generator = torch.Generator().manual_seed(0)
        assert draws_only_from(generator, lambda n=noise, g=generator: n(x, g)) is None


def test_host_drawn_levels_and_missing_draws_are_caught():
    x = torch.rand(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    problem = draws_only_from(generator, lambda: _HostSigma()(x, generator))
    assert problem is not None and "on the host" in problem
    problem = draws_only_from(generator, lambda: _NoDraw()(x, generator))
    assert problem is not None and "draws nothing" in problem


def test_rng_position_of_a_cpu_generator_is_its_state():
    generator = torch.Generator().manual_seed(5)
    before = rng_position(generator)
    assert not rng_moved(generator, before)
    torch.rand(3, generator=generator)
    assert rng_moved(generator, before)


def test_host_sync_check_is_a_no_op_off_the_gpu():
    with no_host_syncs(torch.device("cpu")):
        value = float(torch.ones(1).sum())  # a host read, harmless on the CPU
    assert value == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_sync_check_raises_on_an_item_read_cuda():
    x = torch.ones(4, device="cuda")
    with pytest.raises(RuntimeError), no_host_syncs(x.device):
        x.sum().item()
    assert torch.cuda.get_sync_debug_mode() == 0
