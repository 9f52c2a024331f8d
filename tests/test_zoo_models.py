"""The trained-here zoo (RDN, RIDNet, CBDNet, MIRNet): training hooks, weights files, adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.adaptation.config import CAMERA_STEPS, GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.images import write_image
from rfr_deploy.jobs.pretrain import PretrainConfig, pretrain
from rfr_deploy.models.factory import create_model, get_entry
from rfr_deploy.models.weights import read_weights_meta
from rfr_deploy.models.zoo.cbdnet import cbdnet_loss
from rfr_deploy.models.zoo.mirnet import _from_official
from rfr_deploy.noise.camera import CameraNoise, CameraResponses

ZOO = ["rdn", "ridnet", "cbdnet", "mirnet"]


def _small(name: str, channels: int = 3):
    torch.manual_seed(0)
    model = create_model(name, weights=None, channels=channels, **get_entry(name).test_kwargs)
    with torch.no_grad():  # leave the near-identity initialisation so outputs depend on the weights
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", ZOO)
def test_pretrain_with_camera_noise_then_reload_and_adapt(name, tmp_path, rng):
    data = tmp_path / "clean"
    for i in range(2):
        write_image(data / f"{i}.png", rng.random((36, 40, 3)).astype(np.float32))
    config = PretrainConfig(
        model=name,
        channels=3,
        data=(str(data),),
        out=str(tmp_path / "run"),
        steps=2,
        batch=2,
        patch=16,
        noise="camera",
        arch_kwargs=dict(get_entry(name).test_kwargs),
    )
    final = pretrain(config)
    meta, _ = read_weights_meta(final)
    assert meta.arch == name and meta.noise == "camera"
    assert meta.sigma_range == pytest.approx((0.0, np.hypot(0.16, 0.06)))  # the raw std's, not Gaussian σ's
    model = create_model(name, weights=str(final))
    assert model.meta.arch_kwargs == config.arch_kwargs
    noisy = torch.rand(1, 3, 19, 22)
    result = adapt(model, noisy, CameraNoise(CameraResponses.parametric()), AdaptConfig(steps=2, lr=1e-4))
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    with torch.no_grad():
        assert result.model(noisy).shape == noisy.shape


@pytest.mark.parametrize("name", ZOO)
def test_plain_state_dicts_load_with_inferred_architecture(name, tmp_path):
    model = _small(name, channels=1)
    path = tmp_path / f"{name}.pth"
    torch.save(model.net.state_dict(), path)
    loaded = create_model(name, weights=str(path)).eval()
    assert loaded.meta.channels == 1
    for key, value in get_entry(name).test_kwargs.items():
        assert loaded.meta.arch_kwargs.get(key, value) == value, key  # MIRNet's width is not in the tensors
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_mirnet_loads_state_dicts_in_the_official_layout(tmp_path):
    model = _small("mirnet")
    official = {}
    for key, value in model.net.state_dict().items():
        parts = key.split(".blocks.")
        if len(parts) == 2:  # the official code lists the shared DAU once per column
            stream, rest = parts[1].split(".", 1)
            for column in range(2):
                official[f"{parts[0]}.blocks.{stream}.{column}.{rest}"] = value
        else:
            official[key] = value
    official["body.0.body.0.down.8_2.body.0.bot.0.filt"] = torch.full((8, 1, 3, 3), 1 / 16)
    assert set(_from_official(official)) == set(model.net.state_dict())
    path = tmp_path / "mirnet_official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    loaded = create_model("mirnet", weights=str(path), channels=3).eval()
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_cbdnet_loss_penalises_underestimated_noise_more():
    model = _small("cbdnet")
    noisy, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    truth = torch.full_like(noisy, 0.1)

    def no_reconstruction(out, target):
        return torch.zeros(())

    losses = {}
    for case, level in (("under", 0.05), ("over", 0.15)):
        model.net.estimate_noise = lambda x, level=level: torch.full_like(x, level)  # flat: no TV term
        losses[case] = float(cbdnet_loss(model, noisy, clean, truth, no_reconstruction))
    assert losses["under"] == pytest.approx(0.5 * 0.7 * 0.05**2, rel=1e-4)
    assert losses["over"] == pytest.approx(0.5 * 0.3 * 0.05**2, rel=1e-4)
    bumpy = torch.rand(2, 3, 16, 16) * 0.2
    model.net.estimate_noise = lambda x: bumpy
    tv = float(cbdnet_loss(model, noisy, clean, bumpy, no_reconstruction))  # exact estimate: TV only
    expected = 0.05 * (
        (bumpy[..., 1:, :] - bumpy[..., :-1, :]).square().mean()
        + (bumpy[..., 1:] - bumpy[..., :-1]).square().mean()
    )
    assert tv == pytest.approx(float(expected), rel=1e-4)


def test_cbdnet_pretraining_uses_its_noise_estimation_loss():
    entry = get_entry("cbdnet")
    assert entry.train_loss is cbdnet_loss
    model = _small("cbdnet").train()
    noise = CameraNoise(CameraResponses.parametric())
    clean = torch.rand(2, 3, 16, 16)
    sample = noise.sample(clean, torch.Generator().manual_seed(0))
    loss = entry.train_loss(model, sample.noisy, clean, sample.sigma_map, torch.nn.functional.l1_loss)
    loss.backward()
    assert model.net.estimator[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("noise", "expected"), [("camera", "camera"), ("gaussian", "gaussian")])
def test_adapt_and_export_follows_the_noise_the_weights_were_trained_on(noise, expected, tmp_path, rng):
    from rfr_deploy.jobs.adapt_export import adapt_and_export
    from rfr_deploy.jobs.settings import JobSettings

    data = tmp_path / "clean"
    write_image(data / "0.png", rng.random((36, 40, 3)).astype(np.float32))
    kwargs = dict(get_entry("ridnet").test_kwargs)
    config = PretrainConfig(
        model="ridnet", channels=3, data=(str(data),), out=str(tmp_path / "run"), steps=1, batch=1,
        patch=16, noise=noise, arch_kwargs=kwargs,
    )  # fmt: skip
    final = pretrain(config)
    image = tmp_path / "noisy.png"
    write_image(image, rng.random((20, 24, 3)).astype(np.float32))
    settings = JobSettings(model="ridnet", weights=str(final), device="cpu", output_dir=str(tmp_path / "out"))
    assert settings.noise == "auto"
    (manifest,) = adapt_and_export([image], settings, AdaptConfig(lr=1e-4))  # default M for that noise
    assert manifest["noise"]["kind"] == expected
    default_steps = CAMERA_STEPS if expected == "camera" else GAUSSIAN_STEPS
    assert manifest["adaptation"]["steps"] == default_steps == len(manifest["losses"])
