"""Shared fixtures: tiny images, tiny models, and the optional ../shared data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfr_deploy.registry import create_model
from rfr_deploy.shared import ENV_VAR, shared_available, shared_path, shared_root

# Unit tests use tiny tensors: one thread avoids oversubscription overhead (several x faster on small CPUs).
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_shared: test reads ../shared (skipped with a reason where absent)"
    )


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
