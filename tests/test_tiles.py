import copy
import json

import numpy as np
import pytest
import torch
from cli_helpers import run

import rfr_deploy.adaptation.targets as targets_module
import rfr_deploy.adaptation.tiles as tiles_module
from rfr_deploy import AdaptConfig, GaussianNoise, adapt
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.scoring_windows import MARGIN
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.adaptation.tiles import SMALLEST_CORE
from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
from rfr_deploy.images import read_image, write_image
from rfr_deploy.memory import bytes_per_pixel
from rfr_deploy.transforms import dihedral


def _gradient(model, target, tile, k, term=None):
    model = copy.deepcopy(model)
    config = AdaptConfig(steps=1, warmup=0, lr=1e-30)  # the gradient, not the step
    context = UpdateContext(
        model, [target], GaussianNoise(0.1), config, torch.Generator().manual_seed(1), term, tile
    )
    loss = EagerRunner(context).step(0, k, None)
    return float(loss), torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("k", [0, 1])  # k = 1 transposes the batch: its own grid
def test_tiled_update_has_the_whole_batch_gradient(tiny_dncnn, k, monkeypatch):
    model, target = tiny_dncnn(3), torch.rand(1, 3, 90, 130)
    loss, whole = _gradient(model, target, None, k)
    for tile in (70, 100):  # tiles' cores of 6 and 36 pixels within 32-pixel margins
        tiled_loss, tiled = _gradient(model, target, tile, k)
        assert tiled_loss == pytest.approx(loss, rel=1e-5)
        assert torch.allclose(tiled, whole, rtol=1e-4, atol=1e-7)
    # the margin (at least the tiny DnCNN's receptive radius, 3) is what makes it exact
    assert MARGIN >= 3
    monkeypatch.setattr(tiles_module, "MARGIN", 0)
    assert not torch.allclose(_gradient(model, target, 32, k)[1], whole, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("term", [Recorruption, SureLoss])
def test_a_term_on_the_noisy_input_adds_the_same_gradient_in_tiles(tiny_dncnn, term):
    model, target = tiny_dncnn(3), torch.rand(1, 3, 90, 130)
    noisy = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    made = term([noisy], level=0.1, weight=0.5)
    loss, whole = _gradient(model, target, None, 1, made)
    without_term = _gradient(model, target, None, 1)[1]
    assert not torch.allclose(whole, without_term, rtol=1e-3, atol=1e-6)  # the term is in the gradient
    tiled_loss, tiled = _gradient(model, target, 70, 1, made)
    assert tiled_loss == pytest.approx(loss, rel=1e-5)
    assert torch.allclose(tiled, whole, rtol=1e-4, atol=1e-7)
    # and the one-pass update's loss is the restore-from-restored loss plus the term's own
    assert loss == pytest.approx(
        _gradient(model, target, None, 1)[0] + _term_loss(model, made, noisy), rel=1e-5
    )


def _term_loss(model, term, noisy) -> float:
    """The term's loss as the update computed it: its draws follow the synthetic noise's in the generator."""
    generator = torch.Generator().manual_seed(1)
    GaussianNoise(0.1)(dihedral(noisy, 1), generator)
    with torch.no_grad():
        return float(term.loss(model, dihedral(noisy, 1), generator))


def test_an_update_short_of_memory_runs_in_tiles_and_trains_the_same_network(tiny_dncnn, monkeypatch):
    model, noisy = tiny_dncnn(3), torch.rand(1, 3, 256, 256)
    config = AdaptConfig(steps=4, select="off", fast="off")
    roomy = adapt(model, noisy, GaussianNoise(0.1), config)
    free = int(2 * bytes_per_pixel(model, 3, training=True) * 100 * 100)  # the step fits 100² pixels
    monkeypatch.setattr(targets_module, "available_bytes", lambda device: free)
    stages = []
    short = adapt(model, noisy, GaussianNoise(0.1), config, stage=lambda text, total: stages.append(text))
    assert "updating in 128² tiles" in stages  # what the progress bar shows
    assert roomy.tile is None and roomy.patch is None
    assert short.tile == SMALLEST_CORE + 2 * MARGIN and short.patch is None  # the whole image, in 4 × 4 tiles
    assert short.losses == pytest.approx(roomy.losses, rel=1e-5)
    for a, b in zip(short.model.parameters(), roomy.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)


def test_the_job_records_the_tiles_and_writes_the_same_output(tmp_path, weights_file, monkeypatch):
    rng = np.random.default_rng(0)
    noisy = write_image(tmp_path / "noisy.png", rng.uniform(0.2, 0.8, (160, 160, 3)).astype(np.float32))
    outputs = {}
    for name, free in (("roomy", 1 << 40), ("short", 1)):
        monkeypatch.setattr(targets_module, "available_bytes", lambda device, free=free: free)
        out = tmp_path / name
        args = ("adapt-and-export", noisy, "--weights", weights_file, "--sigma", 25, "--steps", 3, "-o", out)
        assert run(*args, "--quiet").exit_code == 0
        manifest = json.loads((out / "noisy.json").read_text())
        outputs[name] = (read_image(out / "noisy_rfr.png").pixels, manifest["adaptation"]["tile_used"])
    assert outputs["roomy"][1] is None and outputs["short"][1] == SMALLEST_CORE + 2 * MARGIN
    assert np.abs(outputs["roomy"][0] - outputs["short"][0]).max() <= 1 / 255 + 1e-6
