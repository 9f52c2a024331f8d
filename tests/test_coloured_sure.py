"""SURE with probes coloured like the pre-trained residual: the guard for camera noise."""

import pytest
import torch
from torch import nn

from rfr_deploy.adaptation.blending import interpolated
from rfr_deploy.adaptation.coloured_sure import ColouredSureScorer, residual_probes
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.scoring import make_scorer
from rfr_deploy.adaptation.sure import choose_interpolation
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.noise.base import QuantizedNoise, aims_at_residual
from rfr_deploy.noise.build import build_noise
from rfr_deploy.noise.camera import CameraNoise, CameraResponses


def horizontal_blur(x: torch.Tensor, width: int = 3) -> torch.Tensor:
    padded = nn.functional.pad(x, (width // 2, width // 2, 0, 0), mode="replicate")
    return nn.functional.avg_pool2d(padded, (1, width), stride=1)


class Smoother(nn.Module):
    """(1 − w)·y + w·(5-wide horizontal blur of y): weight 0 keeps the noise, 1 removes most of it."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))

    def forward(self, x, sigma=None):
        return torch.lerp(x, horizontal_blur(x, 5), self.weight)


def correlated_noise(shape, level: float, seed: int) -> torch.Tensor:
    """Noise correlated along rows and identical in every channel, like demosaicked camera noise."""
    white = torch.randn((1, 1, *shape[-2:]), generator=torch.Generator().manual_seed(seed))
    field = horizontal_blur(white)
    return (level * field / field.std()).expand(shape)


@pytest.fixture
def camera_pair():
    rows = torch.arange(48.0).view(48, 1).expand(48, 64)
    clean = (0.5 + 0.2 * torch.sin(rows / 9.0)).expand(1, 3, 48, 64).contiguous()  # constant along rows
    noisy = clean + correlated_noise(clean.shape, 12 / 255, 1)
    return clean, noisy


def lag_correlation(t: torch.Tensor, dim: int) -> float:
    t = t - t.mean()
    return float((t * t.roll(1, dims=dim)).mean() / t.pow(2).mean())


def test_probes_take_the_residuals_level_and_correlations(camera_pair):
    clean, noisy = camera_pair
    level, probes = residual_probes(noisy, clean, 3, torch.Generator().manual_seed(0))
    assert level == pytest.approx(float((noisy - clean).pow(2).mean().sqrt()), rel=0.01)
    assert len(probes) == 3 and all(p.shape == noisy.shape for p in probes)
    for p in probes:
        assert float(p.pow(2).mean()) == pytest.approx(1.0, rel=1e-5)
        assert torch.allclose(p[:, 0], p[:, 1], atol=1e-5)  # the channels' correlation is kept
        assert lag_correlation(p, -1) > 0.4  # correlated along rows, as the residual is
        assert abs(lag_correlation(p, -2)) < 0.15  # not down the columns
    assert residual_probes(clean, clean, 3, torch.Generator()) == (0.0, [])


def test_the_guard_steps_back_only_where_the_adapted_network_is_worse(camera_pair):
    clean, noisy = camera_pair
    pseudo_clean = denoise(Smoother(1.0), noisy)
    scorer = ColouredSureScorer.create([noisy], [pseudo_clean], None, seed=0)
    candidates = scorer.candidates(0.5)
    assert candidates == (0.0, 0.25, 0.5)

    def choose(start: float, end: float) -> float:
        origin, adapted = Smoother(start), Smoother(end)
        origin_weights = [p.detach().clone() for p in origin.parameters()]
        true = {
            a: float((denoise(interpolated(adapted, origin_weights, a), noisy) - clean).pow(2).mean())
            for a in candidates
        }
        best = min(candidates, key=true.get)
        choice = choose_interpolation(lambda a: interpolated(adapted, origin_weights, a), scorer, candidates)
        return best, choice.interpolation

    assert choose(1.0, -1.0) == (0.0, 0.0)  # adapting towards keeping the noise: back to the pre-trained one
    assert choose(0.0, 2.0) == (0.5, 0.5)  # adapting towards removing it: the whole fixed step


def test_the_candidates_end_at_the_fixed_interpolation():
    scorer = ColouredSureScorer([torch.zeros(1, 3, 4, 4)], 0.1, None, 0, draws=[[torch.ones(1, 3, 4, 4)]])
    assert scorer.candidates(0.6) == (0.0, 0.25, 0.5, 0.6)
    assert scorer.candidates(1.5) == (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    assert scorer.candidates(0.1) == (0.0, 0.1)


def test_only_camera_noise_aimed_at_the_residual_is_scored_by_coloured_sure(camera_pair):
    clean, noisy = camera_pair
    aimed = CameraNoise(CameraResponses.parametric(), level=0.05, level_from_residual=True)
    assert aimed.aims_at_residual() and aims_at_residual(QuantizedNoise(aimed))
    assert isinstance(make_scorer(QuantizedNoise(aimed), [noisy], [clean], None, 0), ColouredSureScorer)
    assert make_scorer(aimed, [noisy], [noisy], None, 0) is None  # no residual: the fixed interpolation
    # random levels, or a given level: the residual is not a picture of the noise
    for other in (
        CameraNoise(CameraResponses.parametric()),
        CameraNoise(CameraResponses.parametric(), level=0.05),
    ):
        assert not aims_at_residual(other) and make_scorer(other, [noisy], [clean], None, 0) is None


def test_the_camera_builder_says_where_its_level_came_from(monkeypatch):
    monkeypatch.setattr(CameraResponses, "default", classmethod(lambda cls: CameraResponses.parametric()))
    assert aims_at_residual(build_noise("camera", None, "estimate", [0.02], bit_depth=8))
    assert not aims_at_residual(build_noise("camera", 0.02, "estimate", [0.01]))  # a given level
    assert not aims_at_residual(build_noise("camera", None, "uniform", [0.02]))  # CBDNet's random levels
    assert not aims_at_residual(build_noise("gaussian", None, "estimate", [0.02]))


def test_adapt_with_camera_noise_chooses_only_the_interpolation(tiny_dncnn, smooth_image):
    noisy = to_tensor(smooth_image)
    camera = CameraNoise(CameraResponses.parametric(), level=0.03, level_from_residual=True)
    result = adapt(tiny_dncnn(3), noisy, camera, AdaptConfig(steps=2, lr=1e-3, checkpoint_every=1))
    assert result.selected_by == "coloured-sure"
    assert set(result.sure_db) == {0.0, 0.25, 0.5} and result.interpolation in result.sure_db
    assert result.checkpoint_db == {} and result.checkpoint_step is None  # no checkpoints scored
    fixed = adapt(tiny_dncnn(3), noisy, camera, AdaptConfig(steps=2, lr=1e-3, select="off"))
    assert fixed.selected_by is None and fixed.interpolation == 0.5
