import json

import numpy as np
import pytest
import torch

from rfr_deploy.errors import WeightsError
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.registry import WeightsMeta
from rfr_deploy.models.weights import ChannelsError, read_weights_meta, save_weights
from tests.cli_helpers import run


def _same_output(a, b, channels=1):
    x = torch.rand(1, channels, 24, 24)
    with torch.no_grad():
        return torch.allclose(a(x, 0.1), b(x, 0.1), atol=1e-6)


def test_safetensors_round_trip_keeps_metadata(tmp_path, tiny_dncnn):
    model = tiny_dncnn(3)
    sha = save_weights(tmp_path / "w.safetensors", model.net, model.meta, extra={"note": "x"})
    loaded = create_model("dncnn", weights=str(tmp_path / "w.safetensors"))
    assert loaded.meta.arch_kwargs == {"depth": 3, "features": 8}
    assert loaded.channels == 3
    assert loaded.weights_sha256 == sha and len(sha) == 64
    assert _same_output(model, loaded, 3)
    meta, extra = read_weights_meta(tmp_path / "w.safetensors")
    assert meta == loaded.meta and extra == {"note": "x"}


def test_half_precision_files_are_half_the_size_and_load_as_float32(tmp_path, tiny_dncnn):
    model = tiny_dncnn(3)
    save_weights(tmp_path / "full.safetensors", model.net, model.meta)
    save_weights(tmp_path / "half.safetensors", model.net, model.meta, dtype=torch.float16)
    full, half = (
        (tmp_path / "full.safetensors").stat().st_size,
        (tmp_path / "half.safetensors").stat().st_size,
    )
    assert half < 0.6 * full
    loaded = create_model("dncnn", weights=str(tmp_path / "half.safetensors")).eval()
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, 0.1), loaded(x, 0.1), atol=2e-3)


def test_kair_state_dict_infers_the_architecture(tmp_path, tiny_dncnn):
    model = tiny_dncnn(1)
    torch.save({k: v for k, v in model.net.state_dict().items()}, tmp_path / "dncnn_15.pth")
    loaded = create_model("dncnn", weights=str(tmp_path / "dncnn_15.pth"))
    assert loaded.meta.arch_kwargs == {"depth": 3, "features": 8}
    assert loaded.meta.sigma_range == (15 / 255, 15 / 255)
    assert _same_output(model, loaded)


def test_wrapped_and_data_parallel_state_dicts_load(tmp_path, tiny_dncnn):
    model = tiny_dncnn(1)
    torch.save({"params": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, tmp_path / "w.pth")
    assert _same_output(model, create_model("dncnn", weights=str(tmp_path / "w.pth")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"not a pickle at all", "not a plain state dict: it cannot be read as a PyTorch file"),
    ],
)
def test_unreadable_weights_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as info:
        create_model("dncnn", weights=str(path))
    assert "\n" not in str(info.value)


def test_mismatched_architecture_is_rejected(tmp_path, tiny_dncnn):
    torch.save(tiny_dncnn(1).net.state_dict(), tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="do not match the 'ffdnet' architecture"):
        create_model("ffdnet", weights=str(tmp_path / "w.pth"))


def test_weights_for_another_model_are_rejected(tmp_path, tiny_dncnn):
    model = tiny_dncnn(1)
    save_weights(tmp_path / "w.safetensors", model.net, model.meta)
    with pytest.raises(WeightsError, match="for model 'dncnn', not 'fdncnn'"):
        create_model("fdncnn", weights=str(tmp_path / "w.safetensors"))


def test_channel_mismatch_is_reported(tmp_path, tiny_dncnn):
    torch.save(tiny_dncnn(3).net.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ChannelsError, match="3-channel images, but the input has 1"):
        create_model("dncnn", weights=str(tmp_path / "w.pth"), channels=1)
    # Only this error is about the input (a caller may name the image); the others are about the file alone.
    with pytest.raises(WeightsError, match=r"nofile\.pth: weights file not found$") as info:
        create_model("dncnn", weights=str(tmp_path / "nofile.pth"), channels=1)
    assert not isinstance(info.value, ChannelsError)


def with_metadata(path, **changes):
    """``path``, a safetensors file written by rfr-deploy, rewritten with ``changes`` to its metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        metadata, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    metadata["rfr_deploy"] = json.dumps({**json.loads(metadata["rfr_deploy"]), **changes})
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"arch_kwargs": {"depth": -3}},
            "invalid architecture settings for 'dncnn' (depth=-3): depth must be at",
        ),
        (
            {"arch_kwargs": {"depth": 3, "width": 8}},
            "invalid architecture settings for 'dncnn' (depth=3, width=8)",
        ),
        ({"output": "weird"}, 'invalid metadata: output is "weird", not "residual" or "direct"'),
        ({"noise": 3}, "invalid metadata: noise is 3, not a noise model's name"),
        (
            {"output": "direct"},
            'invalid metadata: output is "direct", but \'dncnn\' predicts the noise ("residual")',
        ),
        ({"noise_map": "yes"}, 'invalid metadata: noise_map is "yes", not true or false'),
        (
            {"noise_map": True},
            "invalid metadata: noise_map is true, but 'dncnn' does not take a noise-level map",
        ),
        ({"channels": 0}, "invalid metadata: channels must be a positive whole number"),
        ({"sigma_range": 5}, "unreadable rfr-deploy metadata"),
    ],
)
def test_metadata_with_invalid_values_is_a_one_line_error(tmp_path, weights_file, changes, message):
    with_metadata(weights_file, **changes)
    with pytest.raises(WeightsError) as info:
        create_model("dncnn", weights=str(weights_file))
    assert str(info.value).startswith(f"{weights_file}: {message}") and "\n" not in str(info.value)


def test_invalid_metadata_is_refused_where_it_is_read_on_its_own(weights_file):
    with pytest.raises(WeightsError, match='output is "weird"'):
        read_weights_meta(with_metadata(weights_file, output="weird"))


def test_a_torchscript_export_is_named_in_one_line_without_torch_warning(tmp_path, tiny_dncnn, image_file):
    net = tiny_dncnn(3).net.eval()
    exported = tmp_path / "out" / "noisy_rfr.pt"
    exported.parent.mkdir()
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 8, 8)), str(exported))
    result = run("denoise", image_file, "--weights", exported, "-o", tmp_path / "o")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(
        f"error: {exported}: a TorchScript export (a traced network, not weights)"
    )
    assert "pass the .safetensors weights that adapt-and-export writes beside it" in result.output
    save_weights(exported.with_suffix(".safetensors"), net, tiny_dncnn(3).meta)  # as adapt-and-export does
    with pytest.raises(WeightsError, match=f"pass {exported.with_suffix('.safetensors')} instead"):
        create_model("dncnn", weights=str(exported))


def test_non_finite_weights_are_rejected(tmp_path, tiny_dncnn):
    state = tiny_dncnn(1).net.state_dict()
    state["model.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="non-finite"):
        create_model("dncnn", weights=str(tmp_path / "w.pth"))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.complex64])
def test_weights_that_are_not_real_numbers_are_rejected(tmp_path, tiny_dncnn, dtype):
    """load_state_dict would cast them (bool weights to 0/1, complex ones to their real part)."""
    state = {k: v.to(dtype) for k, v in tiny_dncnn(1).net.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=f"model.0.weight holds {dtype}, not torch.float32"):
        create_model("dncnn", weights=str(tmp_path / "w.pth"))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model.0.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as info:
        create_model("dncnn", weights=str(tmp_path / "evil.pth"))
    message = str(info.value)
    assert "holds Python objects besides tensors" in message and "torch.save(model.state_dict()" in message
    assert "weights_only" not in message and "\n" not in message  # never torch's advice to unpickle it


def test_a_file_of_other_objects_says_what_it_must_hold(tmp_path):
    torch.save({"epoch": 3, "weights": [1.0]}, tmp_path / "run.pth")
    with pytest.raises(WeightsError, match="not a plain state dict; the file must hold a dict of parameter"):
        create_model("dncnn", weights=str(tmp_path / "run.pth"))


@pytest.mark.parametrize(
    ("pth", "mat"),
    [
        ("dncnn/dncnn_25.pth", "dncnn/matconvnet/sigma=25.mat"),
        ("dncnn/dncnn_color_blind.pth", "dncnn/matconvnet/GD_Color_Blind.mat"),
    ],
)
def test_matconvnet_release_equals_kair_conversion(shared, pth, mat):
    a = create_model("dncnn", weights=str(shared("weights", pth)))
    b = create_model("dncnn", weights=str(shared("weights", mat)))
    assert a.meta.arch_kwargs == b.meta.arch_kwargs
    x = torch.rand(1, a.channels, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def _write_matconvnet_v5(path, net):
    """``net``'s convolutions as a MatConvNet simplenn release saved by MATLAB v5 (filters H×W×in×out)."""
    import scipy.io

    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    layers = []
    for i, conv in enumerate(convs):
        weights = np.empty((1, 2), dtype=object)
        weights[0, 0] = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        weights[0, 1] = conv.bias.detach().numpy().reshape(-1, 1)
        layers += [{"type": "conv", "weights": weights}] + ([{"type": "relu"}] if i < len(convs) - 1 else [])
    cells = np.empty((1, len(layers)), dtype=object)
    cells[0, :] = layers
    scipy.io.savemat(path, {"net": {"layers": cells}})


@pytest.mark.parametrize("channels", [1, 3])
def test_matconvnet_v5_files_load_gray_and_colour(tmp_path, tiny_dncnn, channels):
    """A gray first layer is H×W×1×F: its input axis must survive reading."""
    model = tiny_dncnn(channels)
    _write_matconvnet_v5(tmp_path / "w.mat", model.net)
    loaded = create_model("dncnn", weights=str(tmp_path / "w.mat"))
    assert loaded.meta.channels == channels and _same_output(model, loaded, channels)


@pytest.mark.parametrize(
    ("name", "file", "channels", "depth"),
    [
        ("dncnn", "dncnn/dncnn_gray_blind.pth", 1, 20),
        ("dncnn", "dncnn/dncnn_50.pth", 1, 17),
        ("fdncnn", "dncnn/fdncnn_gray.pth", 1, 20),
        ("ffdnet", "ffdnet/ffdnet_color.pth", 3, 12),
    ],
)
def test_official_weights_load_with_inferred_architecture(shared, name, file, channels, depth):
    model = create_model(name, weights=str(shared("weights", file)))
    assert model.channels == channels and model.meta.arch_kwargs["depth"] == depth
    clean = torch.full((1, channels, 40, 40), 0.5)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(noisy, 0.1)
    assert float(((out - clean) ** 2).mean()) < 0.2 * float(((noisy - clean) ** 2).mean())


def test_shipped_weights_metadata_is_complete():
    for channels in (1, 3):
        model = create_model("dncnn", channels=channels)
        assert model.meta.channels == channels
        assert model.meta.source in ("rfr-deploy pretrain", "rfr-deploy benchmarks/train_gpu.py")
        assert model.meta.sigma_range == (0.0, 50 / 255)
        assert np.isfinite(sum(float(p.detach().sum()) for p in model.parameters()))


def test_weights_files_store_the_sigma_range_in_grey_levels_and_load_it_in_unit_range():
    meta = WeightsMeta(arch="dncnn", channels=3, sigma_range=(5 / 255, 55 / 255))
    stored = json.loads(meta.to_json())
    assert stored["sigma_range"] == [5.0, 55.0]
    assert WeightsMeta.from_json(meta.to_json()) == meta


def test_a_weights_file_brings_its_architecture_without_model(tmp_path, image_file):
    """--model defaults to dncnn; the file's metadata, or the network its tensors fit, decide otherwise."""
    from rfr_deploy.models.factory import model_for_weights

    ffdnet = create_model("ffdnet", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "any.safetensors", ffdnet.net, ffdnet.meta)
    torch.save(ffdnet.net.state_dict(), tmp_path / "ffdnet_mine.pth")  # its tensors also fit an FDnCNN
    fdncnn = create_model("fdncnn", weights=None, channels=1, depth=3, features=8)
    torch.save(fdncnn.net.state_dict(), tmp_path / "plain.pth")
    assert model_for_weights(None, str(tmp_path / "any.safetensors")) == "ffdnet"
    assert model_for_weights(None, str(tmp_path / "ffdnet_mine.pth")) == "ffdnet"
    assert model_for_weights(None, str(tmp_path / "plain.pth")) == "fdncnn"
    assert model_for_weights("rdn", str(tmp_path / "plain.pth")) == "rdn"  # --model given: taken
    assert model_for_weights(None, str(tmp_path / "missing.pth")) == "dncnn"  # loading it says why
    result = run(
        "denoise", image_file, "--weights", tmp_path / "ffdnet_mine.pth", "-o", tmp_path / "o", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["model"] == "ffdnet"
