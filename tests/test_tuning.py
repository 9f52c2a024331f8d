"""What adaptation tunes (per-channel affine maps folded back into the weights) and the checkpoint rule."""

from __future__ import annotations

import copy

import pytest
import torch

from rfr_deploy.adaptation.config import (
    CHECKPOINTS,
    CUDA_GAUSSIAN_STEPS,
    GAUSSIAN_EMA,
    GAUSSIAN_PATCH,
    GAUSSIAN_STEPS,
    AdaptConfig,
)
from rfr_deploy.adaptation.defaults import resolve_defaults
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.sure import SureScorer
from rfr_deploy.adaptation.tuning import (
    add_affine,
    affine_parameters,
    fold_affine,
    parameter_groups,
    prepare_tuning,
)
from rfr_deploy.inference import to_tensor
from rfr_deploy.models.factory import create_model, get_entry, list_models
from rfr_deploy.noise.gaussian import GaussianNoise

SMALL = {name: {"depth": 3, "features": 8} for name in ("dncnn", "fdncnn", "ffdnet")}


def _small(name: str):
    torch.manual_seed(0)
    kwargs = SMALL.get(name, get_entry(name).test_kwargs)
    model = create_model(name, weights=None, channels=3, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _input(model, side: int = 32):
    torch.manual_seed(1)
    x = torch.rand(1, 3, side, side)
    return x, (0.1 if model.meta.noise_map else None)


@pytest.mark.parametrize("name", list_models())
def test_affine_maps_fold_into_the_same_parameters_and_outputs(name):
    model = _small(name)
    before = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    added = add_affine(model)
    assert added, "every zoo model has layers to give gains to"
    with torch.no_grad():
        for p in added:
            is_gain = bool((p == 1).all())  # gains start at one, shifts at zero
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if is_gain else 0.05 * torch.randn_like(p))
    x, sigma = _input(model)
    with torch.no_grad():
        tuned = model(x, sigma)
        fold_affine(model)
        folded = model(x, sigma)
    assert {k: (v.shape, v.dtype) for k, v in model.state_dict().items()} == before
    assert not affine_parameters(model)
    torch.testing.assert_close(folded, tuned, rtol=1e-4, atol=1e-5)


def test_identity_affine_maps_leave_the_network_unchanged(tiny_dncnn):
    model = tiny_dncnn()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)
        add_affine(model)
        torch.testing.assert_close(model(x), reference)


def test_affine_tuning_freezes_the_weights_and_gets_its_own_rate(tiny_dncnn):
    model = tiny_dncnn()
    frozen = prepare_tuning(model, "affine")
    assert frozen == [n for n, _ in tiny_dncnn().named_parameters()]
    groups = parameter_groups(model, lr=1e-5, affine_lr=1e-3)
    assert [g["lr"] for g in groups] == [1e-3]
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.endswith("original"))

    both = tiny_dncnn()
    assert prepare_tuning(both, "all+affine") == []
    groups = parameter_groups(both, lr=1e-5, affine_lr=1e-3)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    assert len(groups[1]["params"]) == 2 * 3  # a gain and a shift per convolution
    with pytest.raises(ValueError, match="tune must be one of"):
        prepare_tuning(tiny_dncnn(), "everything")


def test_relative_layer_rates_scale_each_weight_by_its_rms(tiny_dncnn):
    model = tiny_dncnn()
    with torch.no_grad():
        model.net.model[0].weight.mul_(4.0)  # one layer with a larger scale than the others
    weights = [p for p in model.parameters() if p.ndim > 1]
    rms = torch.tensor([float(p.detach().pow(2).mean().sqrt()) for p in weights])
    groups = parameter_groups(model, lr=1e-5, affine_lr=1e-3, layer_lr="relative")
    by_tensor = {id(g["params"][0]): g["lr"] for g in groups if len(g["params"]) == 1}
    expected = [1e-5 * float(r / rms.median()) for r in rms]
    assert [by_tensor[id(p)] for p in weights] == pytest.approx(expected)
    assert max(expected) > 1e-5 > min(expected)  # the scaled layer steps further, a small one less
    biases = groups[len(weights)]
    assert biases["lr"] == 1e-5 and {id(p) for p in biases["params"]} == {
        id(p) for p in model.parameters() if p.ndim == 1
    }
    both = tiny_dncnn()
    prepare_tuning(both, "all+affine")
    assert parameter_groups(both, lr=1e-5, affine_lr=1e-3, layer_lr="relative")[-1]["lr"] == 1e-3
    with pytest.raises(ValueError, match="layer_lr"):
        AdaptConfig(layer_lr="per-channel")


def test_affine_adaptation_only_rescales_and_shifts_output_channels(tiny_dncnn):
    model = tiny_dncnn()
    noisy = torch.rand(1, 3, 24, 24)
    config = AdaptConfig(steps=6, tune="affine", affine_lr=1e-2, warmup=0, select="off", interpolation=1.0)
    result = adapt(model, noisy, GaussianNoise(25 / 255), config)
    assert list(result.model.state_dict()) == list(model.state_dict())
    assert all(p.requires_grad for p in result.model.parameters())
    changed = False
    for (name, w0), w in zip(model.state_dict().items(), result.model.state_dict().values(), strict=True):
        if name.endswith("weight"):
            ratio = (w / w0).flatten(1)
            torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-5)
            changed |= not torch.allclose(ratio, torch.ones_like(ratio))
    assert changed


def test_all_plus_affine_moves_weights_beyond_a_channel_scaling(tiny_dncnn):
    model = tiny_dncnn()
    noisy = torch.rand(1, 3, 24, 24)
    config = AdaptConfig(steps=4, tune="all+affine", lr=1e-3, warmup=0, select="off", interpolation=1.0)
    result = adapt(model, noisy, GaussianNoise(25 / 255), config)
    w0, w = model.state_dict()["net.model.2.weight"], result.model.state_dict()["net.model.2.weight"]
    ratio = (w / w0).flatten(1)
    assert not torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-3)


def test_adapt_scores_checkpoints_and_reports_the_one_kept(tiny_dncnn, smooth_image):
    clean = to_tensor(smooth_image)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    config = AdaptConfig(steps=6, checkpoint_every=2, lr=1e-3, warmup=0)
    result = adapt(tiny_dncnn(), noisy, GaussianNoise(25.5 / 255), config)
    assert set(result.checkpoint_db) == {0, 2, 4, 6}
    assert result.checkpoint_step in result.checkpoint_db
    again = adapt(tiny_dncnn(), noisy, GaussianNoise(25.5 / 255), config)
    assert again.checkpoint_db == result.checkpoint_db
    for a, b in zip(result.model.parameters(), again.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    plain = AdaptConfig(steps=6, lr=1e-3, warmup=0, checkpoint_every=0)
    unscored = adapt(tiny_dncnn(), noisy, GaussianNoise(25.5 / 255), plain)
    assert unscored.checkpoint_step is None and unscored.checkpoint_db == {}


class _OnCuda:
    """Stands in for an image on a CUDA device (resolve_defaults reads only its device and shape)."""

    device = torch.device("cuda")
    shape = (1, 3, 8, 8)


def test_default_budget_and_checkpoints_follow_the_device():
    noise, on_cpu = GaussianNoise(25 / 255), [torch.zeros(1, 3, 8, 8)]
    cpu = resolve_defaults(AdaptConfig(), noise, on_cpu)
    assert (cpu.steps, cpu.checkpoint_every) == (GAUSSIAN_STEPS, GAUSSIAN_STEPS // CHECKPOINTS)
    assert (cpu.patch, cpu.ema) == (GAUSSIAN_PATCH, GAUSSIAN_EMA)  # the CPU's budget: many patch updates
    cuda = resolve_defaults(AdaptConfig(), noise, [_OnCuda()])
    assert (cuda.steps, cuda.checkpoint_every) == (CUDA_GAUSSIAN_STEPS, CUDA_GAUSSIAN_STEPS // CHECKPOINTS)
    assert (cuda.patch, cuda.ema) == (None, 0.0)  # whole images
    given = resolve_defaults(AdaptConfig(steps=8, checkpoint_every=0), noise, [_OnCuda()])
    assert (given.steps, given.checkpoint_every) == (8, 0)
    # a given M trains on whole images without averaging; given patch and ema are kept with the default M
    given_m = resolve_defaults(AdaptConfig(steps=8), noise, on_cpu)
    assert (given_m.patch, given_m.ema) == (None, 0.0)
    own = resolve_defaults(AdaptConfig(patch=32, ema=0.0), noise, on_cpu)
    assert (own.steps, own.patch, own.ema) == (GAUSSIAN_STEPS, 32, 0.0)


def test_affine_network_copies_keep_their_shared_gains(tiny_dncnn):
    model = tiny_dncnn()
    add_affine(model)
    twin = copy.deepcopy(model)
    conv = twin.net.model[0]
    assert conv.parametrizations.weight[0].gain is conv.parametrizations.bias[0].gain


def _adapt_and_export(tmp_path, image, weights, tune: str):
    from click.testing import CliRunner

    from rfr_deploy.cli import main

    out = tmp_path / tune
    args = [
        image,
        "--weights",
        weights,
        "--sigma",
        25,
        "--steps",
        3,
        "--tune",
        tune,
        "--format",
        "onnx",
        "-o",
        out,
    ]
    result = CliRunner().invoke(
        main, ["adapt-and-export", *map(str, args), "--quiet"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return out


def test_affine_tuning_exports_the_same_files_names_and_graph_as_plain_tuning(
    tmp_path, smooth_image, tiny_dncnn
):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from safetensors.torch import load_file

    from rfr_deploy.images import write_image
    from rfr_deploy.models.weights import save_weights

    model = tiny_dncnn(3)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, model.net, model.meta)
    image = write_image(tmp_path / "noisy.png", smooth_image)
    runs = {
        tune: _adapt_and_export(tmp_path, image, weights, tune) for tune in ("all", "affine", "all+affine")
    }
    plain = runs.pop("all")
    reference = {k: v.shape for k, v in load_file(plain / "noisy_rfr.safetensors").items()}
    graph = onnx.load(str(plain / "noisy_rfr.onnx")).graph
    for tune, out in runs.items():
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in plain.iterdir())
        adapted = load_file(out / "noisy_rfr.safetensors")
        assert {k: v.shape for k, v in adapted.items()} == reference
        exported = onnx.load(str(out / "noisy_rfr.onnx")).graph
        assert [i.name for i in exported.initializer] == [i.name for i in graph.initializer]
        assert [n.op_type for n in exported.node] == [n.op_type for n in graph.node]
        assert f'"tune": "{tune}"' in (out / "noisy.json").read_text()


def test_the_final_selection_does_not_score_the_pretrained_network_or_the_kept_checkpoint_again(
    tiny_dncnn, smooth_image, monkeypatch
):
    from rfr_deploy.adaptation.sure import CANDIDATES

    scored = []
    real = SureScorer.terms
    monkeypatch.setattr(SureScorer, "terms", lambda self, net: scored.append(1) or real(self, net))
    clean = to_tensor(smooth_image)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    adapt(
        tiny_dncnn(),
        noisy,
        GaussianNoise(25.5 / 255),
        AdaptConfig(steps=4, checkpoint_every=2, lr=1e-3, warmup=0),
    )
    # the pre-trained reference, checkpoints 2 and 4, then only the candidates strictly between the ends
    assert len(scored) == 1 + 2 + len([a for a in CANDIDATES if a not in (0.0, 1.0)])
