"""rfr-deploy: restore-from-restored test-time adaptation of pre-trained denoisers, and deployment.

Quick use::

    from rfr_deploy import create_model, adapt, AdaptConfig, GaussianNoise
    model = create_model("dncnn", channels=3)
    result = adapt(model, noisy, GaussianNoise(25 / 255), AdaptConfig(steps=20))  # σ in [0, 1] units
    clean = result.model(noisy)
"""

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import AdaptResult, adapt
from rfr_deploy.errors import ImageError, RfrError, WeightsError
from rfr_deploy.models.factory import create_model, list_models
from rfr_deploy.models.registry import ModelEntry, WeightsMeta, register_model
from rfr_deploy.noise.base import NoiseModel
from rfr_deploy.noise.gaussian import GaussianNoise, UniformSigmaGaussianNoise
from rfr_deploy.noise.level import NoiseLevel, estimate_noise_level, estimate_sigma
from rfr_deploy.noise.registry import register_noise
from rfr_deploy.version import __version__

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "GaussianNoise",
    "ImageError",
    "ModelEntry",
    "NoiseModel",
    "RfrError",
    "UniformSigmaGaussianNoise",
    "WeightsError",
    "WeightsMeta",
    "__version__",
    "adapt",
    "create_model",
    "estimate_sigma",
    "estimate_noise_level",
    "NoiseLevel",
    "list_models",
    "register_model",
    "register_noise",
]
