import math
import warnings

import pytest
import torch

import rfr_deploy.adaptation.targets as targets_module
from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH, WHOLE_IMAGE_PIXELS, AdaptConfig
from rfr_deploy.adaptation.targets import TrainingLayout, training_layout
from rfr_deploy.adaptation.tiles import SMALLEST_CORE, tile_margin
from rfr_deploy.memory import bytes_per_pixel


def _layout(model, height, width, free, monkeypatch, **config) -> TrainingLayout:
    monkeypatch.setattr(targets_module, "available_bytes", lambda device: free)
    target = torch.empty(1, 3, height, width)
    return training_layout(model, [target], AdaptConfig(steps=10, **config), passes=1)


def _patch(model, height, width, free, monkeypatch, **config) -> int | None:
    layout = _layout(model, height, width, free, monkeypatch, **config)
    assert layout.tile is None
    return layout.patch


@pytest.mark.parametrize("free", [1 << 40, 1 << 50])
@pytest.mark.filterwarnings("error")  # and without a warning
def test_whole_image_updates_take_the_same_patches_on_any_machine_with_the_memory(
    tiny_dncnn, monkeypatch, free
):
    model = tiny_dncnn(3)
    assert _patch(model, 512, 1024, free, monkeypatch) is None  # within the limit: the whole image
    assert _patch(model, 724, 724, free, monkeypatch) is None and WHOLE_IMAGE_PIXELS >= 724 * 724
    assert _patch(model, 3072, 4096, free, monkeypatch) == 720  # larger: 720² ≈ the limit, whatever is free
    assert LARGE_IMAGE_PATCH == 720 == math.isqrt(WHOLE_IMAGE_PIXELS) // 8 * 8
    assert _patch(model, 600, 4096, free, monkeypatch) == 600  # never more than the image's short side


def test_short_memory_splits_the_update_into_tiles_of_what_fits(tiny_dncnn, monkeypatch):
    model = tiny_dncnn(3)
    per_pixel = bytes_per_pixel(model, 3, training=True)
    free = int(2 * per_pixel * 400 * 400) + 64  # the step may use half of it: 400² pixels with the margins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        large = _layout(model, 3072, 4096, free, monkeypatch)
        whole = _layout(model, 512, 512, free, monkeypatch)
    assert large.patch == 720 and whole.patch is None  # the patch of any machine with the memory
    assert large.tile == whole.tile == 400  # tiles of 400² pixels with their margins
    tight = _layout(model, 512, 512, 1024, monkeypatch)  # nothing fits: the smallest tile
    assert tight == TrainingLayout(None, SMALLEST_CORE + 2 * tile_margin(model))


def test_a_given_patch_is_kept(tiny_dncnn, monkeypatch):
    assert _patch(tiny_dncnn(3), 3072, 4096, 1 << 40, monkeypatch, patch=96) == 96
    assert _layout(tiny_dncnn(3), 3072, 4096, 1024, monkeypatch, patch=96) == TrainingLayout(
        96, SMALLEST_CORE + 2 * tile_margin(tiny_dncnn(3))
    )


def test_images_smaller_than_the_smallest_patch_train_whole(tiny_dncnn, monkeypatch):
    assert _patch(tiny_dncnn(3), 7, 13, 1 << 40, monkeypatch, patch=8) is None  # no 8² patch fits in 7 rows
    assert _patch(tiny_dncnn(3), 8, 13, 1 << 40, monkeypatch, patch=64) == 8
