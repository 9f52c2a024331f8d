import pytest
import torch

from rfr_deploy.errors import ModelError
from rfr_deploy.models.factory import create_model, get_entry, list_models
from rfr_deploy.models.registry import ModelEntry, register_model


def test_list_models_holds_the_dncnn_family():
    names = list_models()
    assert {"dncnn", "fdncnn", "ffdnet"} <= set(names)
    assert names == sorted(names)


def test_register_model_rejects_duplicates():
    entry = get_entry("dncnn")
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelEntry(name="dncnn", build=entry.build, output="residual", description="dup"))
    with pytest.raises(ValueError, match="model names are lower case: register 'dncnn', not 'DnCNN'"):
        register_model(ModelEntry(name="DnCNN", build=entry.build, output="residual", description="dup"))
    assert get_entry("DnCNN") is entry  # looked up in any case


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        create_model("nope", weights=None, channels=1)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_denoises_any_size(name, channels):
    torch.manual_seed(0)
    model = create_model(name, weights=None, channels=channels, **get_entry(name).test_kwargs).eval()
    x = torch.rand(2, channels, 33, 27)
    with torch.no_grad():
        out = model(x, torch.tensor([0.1, 0.2]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


PUBLISHED = [name for name in list_models() if get_entry(name).paper_params is not None]


def test_the_published_parameter_counts_cover_the_papers_networks():
    assert set(PUBLISHED) >= {"dncnn", "ffdnet", "rdn", "ridnet", "cbdnet", "mirnet"}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_counts_match_the_papers(name):
    entry = get_entry(name)
    kwargs = dict(entry.paper_kwargs)
    channels = kwargs.pop("channels", 1)
    model = create_model(name, weights=None, channels=channels, **kwargs)
    count = model.parameter_count()
    assert abs(count - entry.paper_params) / entry.paper_params < 0.05, (count, entry.paper_params)


def test_default_weights_need_matching_channels():
    entry = get_entry("fdncnn")
    assert not entry.default_weights
    with pytest.raises(ModelError, match="ships no default weights"):
        create_model("fdncnn", channels=1)


PACKAGED = [(name, c) for name in list_models() for c in sorted(get_entry(name).default_weights)]


@pytest.mark.parametrize(("name", "channels"), PACKAGED)
def test_packaged_weights_match_their_entry_and_denoise(name, channels):
    model = create_model(name, channels=channels).eval()
    assert model.meta.arch == name and model.meta.channels == channels
    # trained here (the CLI's pretrain, or the GPU check's training script), never a random initialisation
    assert model.meta.source in ("rfr-deploy pretrain", "rfr-deploy benchmarks/train_gpu.py")
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.8, 48)
    clean = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(1, channels, 48, 48)
    noisy = clean + 15 / 255 * torch.randn(clean.shape, generator=generator)
    with torch.no_grad():
        out = model(noisy, torch.tensor([15 / 255]))
    assert torch.isfinite(out).all()
    assert torch.mean((out - clean) ** 2) < 0.5 * torch.mean((noisy - clean) ** 2)
