"""Building a job's synthetic noise from its choices: the noise model by name, quantised like the input.

The built-in models register themselves when their modules are imported here; a new model is one
module that calls :func:`~rfr_deploy.noise.registry.register_noise`, and its import below (or, outside
the package, anywhere before the job runs).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

# isort: off
# The order of registration is the order of the command line's --noise choices.
from rfr_deploy.noise import gaussian  # noqa: F401  (registers "gaussian")
from rfr_deploy.noise import camera  # noqa: F401  (registers "camera")

# isort: on
from rfr_deploy.errors import ConfigError
from rfr_deploy.noise.base import QuantizedNoise, gaussian_level_of
from rfr_deploy.noise.chroma import ChromaSubsampledNoise
from rfr_deploy.noise.correlated import ChannelCorrelatedNoise
from rfr_deploy.noise.jpeg import JpegStoredNoise, JpegTables
from rfr_deploy.noise.registry import NoiseSettings, UnknownSigma, get_noise_builder, list_noise_models

AUTO = "auto"
"""The --noise choice that follows what the weights were trained on."""
SELF_SUPERVISED = "self-supervised"
"""What weights trained without clean images record as their noise (they saw Gaussian noise)."""


def list_noise_choices(auto: bool = True) -> tuple[str, ...]:
    """The values ``--noise`` accepts: 'auto' (unless ``auto=False``), then every registered noise model."""
    return ((AUTO,) if auto else ()) + list_noise_models()


def resolve_noise_kind(choice: str, trained_on: str) -> str:
    """The adaptation noise for ``choice``: 'auto' follows what the weights were trained on.

    Weights trained with a registered noise model (``WeightsMeta.noise``, e.g. CBDNet's in-camera model
    'camera') adapt with it; self-supervised weights (trained on Gaussian noise) with Gaussian noise.
    ConfigError for weights trained with a noise model not registered in this process.
    """
    if choice != AUTO:
        return choice
    if trained_on == SELF_SUPERVISED:
        return "gaussian"
    if trained_on not in list_noise_models():
        raise ConfigError(
            f"the weights were trained with noise {trained_on!r}, which is not registered here "
            f"(registered: {', '.join(list_noise_models())}); import the module that registers it, "
            "or choose the noise with --noise"
        )
    return trained_on


def build_noise(
    kind: str,
    sigma: float | None,
    unknown_sigma: UnknownSigma,
    sigma_estimates: Sequence[float],
    sigma_range: tuple[float, float] = (0.0, 50 / 255),
    bit_depth: int | None = None,
    chroma: tuple[int, int] = (1, 1),
    jpeg: JpegTables | None = None,
    correlation: float = 0.0,
) -> nn.Module:
    """The synthetic noise adaptation draws from: the registered model ``kind`` built from the choices
    (σ in [0, 1] units: known ``sigma``, else the estimates or random levels in ``sigma_range``, see
    :class:`~rfr_deploy.noise.registry.NoiseSettings`). With ``bit_depth`` the synthetic noisy images
    are clipped and quantized like the input file, with ``chroma`` their chroma subsampled like the
    input JPEG's, with ``jpeg`` compressed like it, with ``correlation`` correlated between the channels
    (see :func:`build_noise_from`).
    """
    settings = NoiseSettings(sigma, unknown_sigma, tuple(sigma_estimates), tuple(sigma_range))
    return build_noise_from(kind, settings, bit_depth, chroma, jpeg, correlation)


def build_noise_from(
    kind: str,
    settings: NoiseSettings,
    bit_depth: int | None = None,
    chroma: tuple[int, int] = (1, 1),
    jpeg: JpegTables | None = None,
    correlation: float = 0.0,
) -> nn.Module:
    """:func:`build_noise` from the job's :class:`~rfr_deploy.noise.registry.NoiseSettings` as they are
    (their ``tolerance`` included). White Gaussian noise is stored as the input JPEG stored its noise:
    with ``jpeg``, the file's quantization tables, compressed as it was, its chroma subsampled by
    ``chroma``'s (vertical, horizontal) factors (:mod:`rfr_deploy.noise.jpeg`); without, its chroma
    only subsampled (:mod:`rfr_deploy.noise.chroma`); with full chroma and a ``correlation`` above 0,
    correlated by it between the channels (:mod:`rfr_deploy.noise.correlated`). Other noise models
    describe their own processing."""
    if kind == AUTO:
        raise ValueError(f"build_noise needs a resolved noise kind, got {kind!r} (see resolve_noise_kind)")
    noise = get_noise_builder(kind)(settings)
    if gaussian_level_of(noise) is not None:
        if jpeg is not None:
            noise = JpegStoredNoise(noise, jpeg, chroma)
        elif tuple(chroma) != (1, 1):
            noise = ChromaSubsampledNoise(noise, chroma)
        elif correlation > 0.0:
            noise = ChannelCorrelatedNoise(noise, correlation)
    return QuantizedNoise(noise, bit_depth) if bit_depth else noise
