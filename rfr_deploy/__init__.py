"""rfr-deploy: restore-from-restored test-time adaptation of pre-trained denoisers, and deployment.

Quick use::

    from rfr_deploy import create_model, adapt, AdaptConfig, GaussianNoise
    model = create_model("dncnn", channels=3)
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=20))  # σ in [0, 1] units
    clean = result.model(noisy)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rfr_deploy.version import __version__

_EXPORTS = {
    "AdaptConfig": "rfr_deploy.adaptation.config",
    "AdaptResult": "rfr_deploy.adaptation.loop",
    "adapt": "rfr_deploy.adaptation.loop",
    "ImageError": "rfr_deploy.errors",
    "RfrError": "rfr_deploy.errors",
    "WeightsError": "rfr_deploy.errors",
    "create_model": "rfr_deploy.models.factory",
    "list_models": "rfr_deploy.models.factory",
    "ModelEntry": "rfr_deploy.models.registry",
    "WeightsMeta": "rfr_deploy.models.registry",
    "register_model": "rfr_deploy.models.registry",
    "NoiseModel": "rfr_deploy.noise.base",
    "GaussianNoise": "rfr_deploy.noise.gaussian",
    "UniformSigmaGaussianNoise": "rfr_deploy.noise.gaussian",
    "NoiseLevel": "rfr_deploy.noise.level",
    "estimate_noise_level": "rfr_deploy.noise.level",
    "estimate_sigma": "rfr_deploy.noise.level",
    "register_noise": "rfr_deploy.noise.registry",
}
"""The public names and the modules that define them, imported on first use: ``import rfr_deploy`` (and
the command line, whose first second would otherwise be torch's import, where Ctrl-C showed a
traceback) costs nothing until one is used."""

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "GaussianNoise",
    "ImageError",
    "ModelEntry",
    "NoiseLevel",
    "NoiseModel",
    "RfrError",
    "UniformSigmaGaussianNoise",
    "WeightsError",
    "WeightsMeta",
    "__version__",
    "adapt",
    "create_model",
    "estimate_noise_level",
    "estimate_sigma",
    "list_models",
    "register_model",
    "register_noise",
]

if TYPE_CHECKING:
    from rfr_deploy.adaptation.config import AdaptConfig
    from rfr_deploy.adaptation.loop import AdaptResult, adapt
    from rfr_deploy.errors import ImageError, RfrError, WeightsError
    from rfr_deploy.models.factory import create_model, list_models
    from rfr_deploy.models.registry import ModelEntry, WeightsMeta, register_model
    from rfr_deploy.noise.base import NoiseModel
    from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
    from rfr_deploy.noise.level import NoiseLevel, estimate_noise_level, estimate_sigma
    from rfr_deploy.noise.registry import register_noise


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rfr_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
