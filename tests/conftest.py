"""Shared fixtures: tiny images, tiny models, and the optional ../shared data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.images import write_image
from rfr_deploy.inference import to_tensor
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import save_weights
from rfr_deploy.shared import ENV_VAR, shared_available, shared_path, shared_root

# Unit tests use tiny tensors: one thread avoids oversubscription overhead (several x faster on small CPUs).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def own_cache_folder(tmp_path_factory, monkeypatch):
    """Every test gets its own empty ``$XDG_CACHE_HOME``: nothing is written to the user's caches (ONNX
    graphs, TensorRT timings), and no test sees a graph an earlier test cached."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    for variable in ("RFR_DEPLOY_CACHE_DIR", "RFR_DEPLOY_CACHE_SIZE"):  # the user's own settings
        monkeypatch.delenv(variable, raising=False)
    return folder


@pytest.fixture
def shared():
    """Path helper into the shared data; skips the test where the folder is absent."""
    if not shared_available():
        pytest.skip(f"shared data not found at {shared_root()} (set {ENV_VAR})")
    return shared_path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def job(tmp_path, rng):
    """A folder ``in`` of two 20×24 RGB images (a, b) and a tiny network's weights ``tiny.safetensors``."""
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    save_weights(tmp_path / "tiny.safetensors", model.net, model.meta)
    for name in ("a", "b"):
        write_image(tmp_path / "in" / f"{name}.png", rng.random((20, 24, 3)).astype(np.float32))
    return tmp_path


@pytest.fixture
def smooth_image(rng):
    """A 32×40 RGB image with structure (gradients and a repeated pattern), float32 in [0, 1]."""
    y, x = np.mgrid[0:32, 0:40].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(x / 3.0) * np.cos(y / 4.0)
    img = np.stack([base, 0.8 * base + 0.1, 1.0 - base], axis=2)
    return np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1).astype(np.float32)


@pytest.fixture
def tiny_dncnn():
    """A 3-layer, 8-feature DnCNN with random weights (fast enough for unit tests)."""

    def make(channels: int = 3):
        torch.manual_seed(0)
        return create_model("dncnn", weights=None, channels=channels, depth=3, features=8)

    return make


@pytest.fixture
def image_file(tmp_path, smooth_image, rng):
    """A noisy 8-bit PNG of ``smooth_image`` (σ ≈ 25), at tmp_path/in/noisy.png."""
    from rfr_deploy.images import write_image

    noisy = np.clip(smooth_image + 0.1 * rng.standard_normal(smooth_image.shape), 0, 1)
    return write_image(tmp_path / "in" / "noisy.png", noisy)


def _tiny_weights_file(path, model):
    from rfr_deploy.models.weights import save_weights

    save_weights(path, model.net, model.meta)
    return path


@pytest.fixture
def weights_file(tmp_path, tiny_dncnn):
    """The tiny colour DnCNN as a safetensors file written by rfr-deploy."""
    return _tiny_weights_file(tmp_path / "tiny.safetensors", tiny_dncnn(3))


@pytest.fixture
def gray_weights_file(tmp_path, tiny_dncnn):
    """The tiny gray DnCNN as a safetensors file written by rfr-deploy."""
    return _tiny_weights_file(tmp_path / "gray.safetensors", tiny_dncnn(1))


@pytest.fixture
def pair(smooth_image):
    """(clean, noisy, σ): ``smooth_image`` with white Gaussian noise of level 20/255."""
    clean = to_tensor(smooth_image)
    sigma = 20 / 255
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    return clean, noisy, sigma


@pytest.fixture
def captures(monkeypatch):
    """Counts the graphs captured from a network (``torch.onnx.export`` runs)."""
    import exporters.onnx_export as onnx_export

    calls = []
    capture = onnx_export._export_graph

    def counted(*args, **kwargs):
        calls.append(args)
        return capture(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_export_graph", counted)
    return calls
