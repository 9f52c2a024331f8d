import math

import pytest
import torch

import rfr_deploy.adaptation.targets as targets_module
from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH, WHOLE_IMAGE_PIXELS, AdaptConfig
from rfr_deploy.adaptation.targets import training_patch
from rfr_deploy.memory import bytes_per_pixel


def _patch(model, height, width, free, monkeypatch, **config):
    monkeypatch.setattr(targets_module, "available_bytes", lambda device: free)
    target = torch.empty(1, 3, height, width)
    return training_patch(model, [target], AdaptConfig(steps=10, **config), passes=1)


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


def test_short_memory_still_shrinks_the_patch(tiny_dncnn, monkeypatch):
    model = tiny_dncnn(3)
    per_pixel = bytes_per_pixel(model, 3, training=True)
    free = int(2 * per_pixel * 400 * 400)  # the step may use half of it: 400² pixels
    with pytest.warns(UserWarning, match=r"the result depends on the memory free; --patch makes it"):
        side = _patch(model, 3072, 4096, free, monkeypatch)
    assert side is not None and 384 <= side <= 400 and side % 8 == 0
    with pytest.warns(UserWarning, match=rf"training on {side}² patches"):
        assert _patch(model, 512, 512, free, monkeypatch) == side


def test_a_given_patch_is_kept(tiny_dncnn, monkeypatch):
    assert _patch(tiny_dncnn(3), 3072, 4096, 1 << 40, monkeypatch, patch=96) == 96
