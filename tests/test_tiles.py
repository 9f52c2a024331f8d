import copy
import json

import numpy as np
import pytest
import torch
from cli_helpers import run

import rfr_deploy.adaptation.targets as targets_module
import rfr_deploy.adaptation.update as update_module
from rfr_deploy import AdaptConfig, GaussianNoise, adapt
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.adaptation.tiles import SMALLEST_CORE, tile_margin
from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
from rfr_deploy.images import read_image, write_image
from rfr_deploy.memory import bytes_per_pixel
from rfr_deploy.models.factory import create_model, get_entry
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
    margin = tile_margin(model)  # the tiny DnCNN's reach: its 3 layers of 3×3
    assert margin == model.reach == 3
    loss, whole = _gradient(model, target, None, k)
    for tile in (2 * margin + 6, 2 * margin + 36):  # tiles' cores of 6 and 36 pixels within the margins
        tiled_loss, tiled = _gradient(model, target, tile, k)
        assert tiled_loss == pytest.approx(loss, rel=1e-5)
        assert torch.allclose(tiled, whole, rtol=1e-4, atol=1e-7)
    # the margin is what makes it exact
    monkeypatch.setattr(update_module, "tile_margin", lambda model: margin - 1)
    assert not torch.allclose(_gradient(model, target, 32, k)[1], whole, rtol=1e-4, atol=1e-7)


def test_tiles_of_a_network_reaching_beyond_32_pixels_give_its_gradient(monkeypatch):
    """CBDNet's U-Net reaches 48 pixels through its quarter-resolution layers: read with the network's
    reach, its tiles give the one-pass gradient; read with 32 pixels, as before, they did not."""
    torch.manual_seed(0)
    model = create_model("cbdnet", weights=None, channels=3, **get_entry("cbdnet").test_kwargs)
    with torch.no_grad():
        for p in model.parameters():  # weights large enough for the far pixels to count
            p.add_(0.1 * torch.randn_like(p))
    target = torch.rand(1, 3, 300, 280, generator=torch.Generator().manual_seed(4))
    loss, whole = _gradient(model, target, None, 0)

    def errors(tile: int) -> tuple[float, float]:
        """The relative errors of the tiled update's loss and gradient."""
        tiled_loss, tiled = _gradient(model, target, tile, 0)
        return abs(tiled_loss / loss - 1), float((tiled - whole).norm() / whole.norm())

    assert max(errors(SMALLEST_CORE + 2 * tile_margin(model))) < 1e-5  # 264: cores of 64 in margins of 100
    monkeypatch.setattr(update_module, "tile_margin", lambda model: 32)
    assert min(errors(SMALLEST_CORE + 2 * 32)) > 5e-6


@pytest.mark.parametrize("term", [Recorruption, SureLoss])
def test_a_term_on_the_noisy_input_adds_the_same_gradient_in_tiles(tiny_dncnn, term):
    model, target = tiny_dncnn(3), torch.rand(1, 3, 90, 130)
    noisy = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    made = term([noisy], level=0.1, weight=0.5)
    loss, whole = _gradient(model, target, None, 1, made)
    without_term = _gradient(model, target, None, 1)[1]
    assert not torch.allclose(whole, without_term, rtol=1e-3, atol=1e-6)  # the term is in the gradient
    tiled_loss, tiled = _gradient(model, target, 2 * tile_margin(model) + 6, 1, made)
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
    assert "updating in 96² tiles" in stages  # what the progress bar shows: 100² to a multiple of 8
    assert roomy.tile is None and roomy.patch is None
    assert short.tile == 96 and short.patch is None  # the whole image, in 3 × 3 tiles of cores of 90
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
    margin = tile_margin(
        create_model("dncnn", weights=weights_file)
    )  # the step fits no pixel: the smallest tile
    assert outputs["roomy"][1] is None and outputs["short"][1] == SMALLEST_CORE + 2 * margin
    assert np.abs(outputs["roomy"][0] - outputs["short"][0]).max() <= 1 / 255 + 1e-6
