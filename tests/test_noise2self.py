"""Noise2Self: J-invariant masking and the self-supervised pre-training objective."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.images import write_image
from rfr_deploy.jobs.noise2self import Noise2SelfObjective
from rfr_deploy.jobs.pretrain import PretrainConfig, pretrain
from rfr_deploy.models.weights import read_weights_meta


def test_grid_mask_holds_one_pixel_per_cell_at_a_random_phase():
    objective = Noise2SelfObjective(grid=4)
    x = torch.rand(8, 1, 16, 20)
    mask = objective.make_mask(x, torch.Generator().manual_seed(0))
    assert mask.shape == (8, 1, 16, 20)
    cells = mask.reshape(8, 4, 4, 5, 4).sum(dim=(2, 4))
    assert torch.all(cells == 1)
    phases = {tuple(torch.nonzero(m[0])[0].tolist()) for m in mask}
    assert len(phases) > 1


def test_random_mask_has_the_grid_density():
    objective = Noise2SelfObjective(grid=4, mask="random")
    mask = objective.make_mask(torch.rand(4, 3, 64, 64), torch.Generator().manual_seed(0))
    assert abs(float(mask.mean()) - 1 / 16) < 0.01


@pytest.mark.parametrize("mask", ["grid", "random"])
@pytest.mark.parametrize("replace", ["interpolate", "neighbor"])
def test_masked_input_never_sees_the_masked_pixels(mask, replace):
    objective = Noise2SelfObjective(grid=3, mask=mask, replace=replace)
    x = torch.rand(2, 3, 15, 14)
    m = objective.make_mask(x, torch.Generator().manual_seed(1))
    a = objective.masked_input(x, m, torch.Generator().manual_seed(2))
    changed = x + 10.0 * m  # different values at the masked pixels only
    b = objective.masked_input(changed, m, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert torch.equal(a * (1 - m), x * (1 - m))  # unmasked pixels are passed through


def test_loss_scores_the_masked_pixels_only():
    objective = Noise2SelfObjective(torch.nn.functional.mse_loss, grid=4)
    x = torch.rand(2, 1, 16, 16)

    def copy_model(noisy, sigma):
        return noisy

    loss = objective(copy_model, x, None, torch.Generator().manual_seed(0))
    mask = objective.make_mask(x, torch.Generator().manual_seed(0))
    filled = objective.masked_input(x, mask, torch.Generator().manual_seed(0))
    expected = ((filled - x) ** 2)[mask.bool()].mean()
    assert torch.allclose(loss, expected, rtol=1e-5)

    def unmasked_garbage(noisy, sigma):  # changes only pixels outside the (known) mask
        return noisy + 5.0 * (1 - mask)

    assert torch.allclose(objective(unmasked_garbage, x, None, torch.Generator().manual_seed(0)), loss)


def test_pretrain_with_noise2self_writes_self_supervised_weights(tmp_path, rng):
    data = tmp_path / "clean"
    for i in range(2):
        write_image(data / f"{i}.png", rng.random((40, 40, 1)).astype(np.float32))
    config = PretrainConfig(
        model="dncnn_n2s",
        channels=1,
        data=(str(data),),
        out=str(tmp_path / "run"),
        steps=2,
        batch=2,
        patch=16,
        objective="noise2self",
        arch_kwargs={"depth": 3, "features": 8},
    )
    final = pretrain(config)
    meta, extra = read_weights_meta(final)
    assert meta.noise == "self-supervised"
    assert "Noise2Self" in meta.notes
    assert extra["training"]["config"]["objective"] == "noise2self"
    with pytest.raises(ConfigError, match="predicts the clean image"):
        pretrain(dataclasses.replace(config, model="dncnn", out=str(tmp_path / "residual")))


def test_j_invariant_denoise_takes_each_pixel_from_its_masked_pass():
    objective = Noise2SelfObjective(grid=2)
    x = torch.rand(1, 1, 6, 8)

    def copy_model(noisy, sigma):
        return noisy

    out = objective.j_invariant_denoise(copy_model, x)
    mean_of_neighbours = torch.zeros_like(x)
    for phase in range(4):
        mask = torch.zeros_like(x)
        mask[..., phase // 2 :: 2, phase % 2 :: 2] = 1
        mean_of_neighbours += objective.masked_input(x, mask) * mask
    assert torch.allclose(out, mean_of_neighbours)
    changed = x.clone()
    changed[0, 0, 2, 3] += 1.0
    assert objective.j_invariant_denoise(copy_model, changed)[0, 0, 2, 3] == out[0, 0, 2, 3]
