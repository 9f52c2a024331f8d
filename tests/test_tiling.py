"""The one tiler (rfr_deploy/inference.py), used by PyTorch inference and ONNX Runtime alike: tiles aligned
to the network's padding multiple, equal to a whole-image run where the overlap covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.inference import GLOBAL_OVERLAP, denoise, plan_tiles, run_tiled, tile_overlap
from rfr_deploy.models.factory import create_model, get_entry, list_models


def tiny(name: str):
    torch.manual_seed(0)
    return create_model(name, weights=None, channels=3, depth=3, features=8).eval()


@pytest.fixture
def noisy():
    torch.manual_seed(1)
    return torch.rand(1, 3, 37, 45)


@pytest.mark.parametrize("name, sigma", [("dncnn", None), ("ffdnet", 25 / 255)])
def test_an_image_within_one_tile_is_one_pass(name, sigma, noisy):
    model = tiny(name)
    with torch.no_grad():
        whole = model(noisy, sigma)
    default_layout = denoise(model, noisy, sigma=sigma, channels_last=False)
    assert torch.equal(default_layout, whole)
    assert torch.equal(denoise(model, noisy, sigma=sigma, tile=45, channels_last=False), whole)  # one tile
    assert torch.equal(denoise(model, noisy, sigma=sigma, tile=45), denoise(model, noisy, sigma=sigma))


@pytest.mark.parametrize("name, sigma", [("dncnn", None), ("ffdnet", 25 / 255)])
def test_tiles_equal_the_whole_image(name, sigma, noisy):
    model = tiny(name)
    whole = denoise(model, noisy, sigma=sigma)
    tiled = denoise(model, noisy, sigma=sigma, tile=24, overlap=8)
    assert len(plan_tiles(37, 45, 24, 8, model.entry.pad_multiple)) > 4
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_tiles_of_a_strided_network_must_be_aligned(noisy):
    """FFDNet works on 2×2 pixel blocks: tiles starting at odd offsets see another grid."""
    model = tiny("ffdnet")
    assert model.entry.pad_multiple == 2
    whole = denoise(model, noisy, sigma=0.1)
    with torch.no_grad():
        unaligned = run_tiled(lambda t: model(t, 0.1), noisy, tile=23, overlap=7, align=1)
    assert float((unaligned - whole).abs().max()) > 1e-4
    for t in plan_tiles(37, 45, 23, 7, align=2):
        assert t.read[0].start % 2 == 0 and t.read[1].start % 2 == 0


def test_the_tiler_takes_arrays_and_tensors_alike():
    x = np.arange(2 * 1 * 9 * 13, dtype=np.float32).reshape(2, 1, 9, 13)
    from_array = run_tiled(lambda t: t * 2, x, tile=6, overlap=1, align=2)
    from_tensor = run_tiled(lambda t: t * 2, torch.from_numpy(x), tile=6, overlap=1, align=2)
    assert isinstance(from_array, np.ndarray) and isinstance(from_tensor, torch.Tensor)
    assert np.array_equal(from_array, x * 2) and np.array_equal(from_tensor.numpy(), x * 2)
    with pytest.raises(ConfigError, match="give a tile of at least 7 or a smaller overlap"):
        plan_tiles(9, 13, 6, 3)


def test_memory_per_pixel_is_measured_once_per_network_structure(tiny_dncnn):
    from rfr_deploy import memory

    memory._MEASURED.clear()
    passes = []

    def counted(channels: int = 3, features: int = 8):
        torch.manual_seed(0)
        model = create_model("dncnn", weights=None, channels=channels, depth=3, features=features)
        model.register_forward_pre_hook(lambda *_: passes.append(1))
        return model

    first = memory.bytes_per_pixel(counted(), 3, training=False)
    assert first > 0 and len(passes) == 1
    other_weights = counted()
    with torch.no_grad():
        for p in other_weights.parameters():
            p.mul_(2.0)
    assert memory.bytes_per_pixel(other_weights, 3, training=False) == first and len(passes) == 1
    wider = memory.bytes_per_pixel(counted(features=16), 3, training=False)  # another structure
    assert len(passes) == 2 and wider == pytest.approx(2 * first)
    trained = memory.bytes_per_pixel(counted(), 3, training=True)
    frozen = counted()
    next(frozen.parameters()).requires_grad_(False)  # what autograd saves may change: measured again
    assert memory.bytes_per_pixel(frozen, 3, training=True) <= trained and len(passes) == 4


def test_a_training_step_counts_each_saved_tensor_once():
    from rfr_deploy import memory

    class Square(torch.nn.Module):  # y = w·x saves x; y·y saves y twice, one storage
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, sigma=None):
            y = x * self.w
            return y * y

    # x and y (counting each save: x, y, y), 4 bytes a pixel each, and the gradients at the peak of backward
    assert memory.bytes_per_pixel(Square(), 1, training=True) == memory.SAVED_TO_PEAK * (4 + 4)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_tiled_pass_reports_each_tile(noisy, ensemble):
    model, heard = tiny("dncnn"), []
    tiled = denoise(model, noisy, tile=24, overlap=8, ensemble=ensemble, on_tile=lambda *a: heard.append(a))
    total = len(plan_tiles(37, 45, 24, 8))
    passes = 8 if ensemble else 1
    assert len(heard) == passes * total > passes  # transposed passes tile the transposed image: same count
    assert heard[:total] == [(done, total) for done in range(1, total + 1)]
    assert torch.equal(tiled, denoise(model, noisy, tile=24, overlap=8, ensemble=ensemble))
    heard.clear()
    denoise(model, noisy, on_tile=lambda *a: heard.append(a))  # one pass: nothing to report
    assert heard == []


def _measured_reach(model, side: int) -> int:
    """The farthest input pixel (rows or columns from the centre) the centre output pixel depends on."""
    probe = torch.rand(1, model.channels, side, side, requires_grad=True)
    model(probe, 0.1 if model.needs_sigma else None)[0, :, side // 2, side // 2].sum().backward()
    used = torch.nonzero(probe.grad[0].abs().sum(0))
    return int((used - side // 2).abs().max())


@pytest.mark.parametrize("name", [n for n in list_models() if not get_entry(n).global_statistics])
def test_tiles_of_every_local_network_overlap_by_its_reach_and_equal_the_whole_image(name):
    """The reach counted off the layers bounds what autograd measures (DnCNN's chain: equal), and tiles
    overlapping by it give the whole image's output."""
    entry = get_entry(name)
    torch.manual_seed(0)
    model = create_model(name, weights=None, channels=1 if name == "dncnn_n2s" else 3, **entry.test_kwargs)
    model.eval()
    overlap = tile_overlap(model)
    assert overlap == model.reach and _measured_reach(model, 2 * overlap + 9) <= overlap
    if name == "dncnn":
        assert overlap == len([m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)])
    grid = entry.pad_multiple
    margins = 2 * (-(-overlap // grid) * grid)
    tile = 2 * margins + 8 * grid  # a core of margins + 8 * grid: two tiles a side on an image past one
    torch.manual_seed(1)
    noisy = torch.rand(1, model.channels, tile + 8 * grid, tile + 4 * grid)
    sigma = 0.1 if model.needs_sigma else None
    assert len(plan_tiles(*noisy.shape[-2:], tile, overlap, grid)) == 4
    torch.testing.assert_close(
        denoise(model, noisy, sigma, tile=tile), denoise(model, noisy, sigma), atol=1e-5, rtol=0
    )


def test_networks_with_whole_image_statistics_keep_the_default_overlap():
    for name in ("ridnet", "mirnet"):
        entry = get_entry(name)
        model = create_model(name, weights=None, channels=3, **entry.test_kwargs)
        assert entry.global_statistics and tile_overlap(model) == GLOBAL_OVERLAP != model.reach
