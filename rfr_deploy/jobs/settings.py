"""The settings of a denoise or adapt-and-export job that are not adaptation hyper-parameters.

The export formats and their settings are not here: the job takes exporter objects
(:mod:`rfr_deploy.export_protocol`), which the CLI builds from ``--format`` and their own options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rfr_deploy.devices import threads_field
from rfr_deploy.noise.build import list_noise_choices
from rfr_deploy.noise.registry import UnknownSigma
from rfr_deploy.units import check_levels


@dataclass
class JobSettings:
    """Everything of a job that is not an adaptation hyper-parameter; fields are CLI options."""

    model: str = "dncnn"
    weights: str | None = None
    """Weights file; None uses the packaged default for the image's channel count."""
    gray_weights: str | None = field(
        default=None,
        metadata={
            "help": "Gray weights of the same network, by name or file, for grey images stored as RGB and "
            "colour images whose noise their channels share (see --per-channel), where --weights is a "
            "colour network [default: the packaged gray weights without --weights, else none].",
            "file": "any",
        },
    )
    """Weights of the gray network (:meth:`~rfr_deploy.jobs.model_cache.ModelCache.takes_gray`) where ``weights``
    names a colour one; None: the packaged gray weights where ``weights`` is None, else ``weights`` itself
    where it is gray."""
    noise: str = field(
        default="auto",
        metadata={
            "help": "Synthetic noise model: Gaussian, or CBDNet's in-camera model for real photographs; "
            "'auto' uses what the weights were trained on.",
            "choices": list_noise_choices,
        },
    )
    """A registered noise model; 'auto': the one the weights were trained on (CBDNet's camera model),
    Gaussian otherwise."""
    sigma: float | None = field(
        default=None,
        metadata={"help": "Known noise level in grey levels (0-255). Omit when unknown.", "unit": "grey"},
    )
    """Known noise level, [0, 1] units (the command line's grey levels / 255); None means unknown."""
    unknown_sigma: UnknownSigma = field(
        default="estimate",
        metadata={
            "help": "Without --sigma: adapt at the estimated level (gray images with a blind network: the "
            "level its own output implies; with a noise-map network: the weak-texture estimate, also its "
            "map), or with σ uniform in [low, high] (camera noise: CBDNet's random training levels)."
        },
    )
    """With unknown σ: 'estimate' adapts with Gaussian noise at the estimated level,
    'uniform' with σ drawn uniformly from [sigma_low, sigma_high] (the paper's choice)."""
    sigma_low: float = field(
        default=0.0, metadata={"unit": "grey", "help": "Lowest σ of --unknown-sigma uniform, in grey levels."}
    )
    sigma_high: float = field(
        default=50 / 255,
        metadata={"unit": "grey", "help": "Highest σ of --unknown-sigma uniform, in grey levels."},
    )
    device: str = "auto"
    threads: int | None = threads_field()
    """PyTorch's CPU threads (:func:`rfr_deploy.devices.use_threads`); None keeps its default. Decides how
    the process runs, not what it writes (left out of the resume fingerprint)."""
    output_dir: str = field(default="rfr_out", metadata={"cli": ("-o", "--output-dir")})
    per_set: bool = field(
        default=False,
        metadata={"cli": "--per-set", "help": "Adapt one network on all inputs together and export it once."},
    )
    output_ensemble: bool = field(
        default=False,
        metadata={"help": "×8 self-ensemble for the written output (exported graphs compute it too)."},
    )
    noise_quantization: Literal["auto", "off"] = field(
        default="auto",
        metadata={
            "help": "'auto' clips and rounds the synthetic noisy images like the (8/16-bit) input file."
        },
    )
    """'auto': synthetic noisy images are clipped and rounded like the input file (8/16-bit inputs);
    'off': unclipped noise (right for float inputs that were never clipped)."""
    noise_chroma: Literal["auto", "off"] = field(
        default="auto",
        metadata={
            "help": "'auto' subsamples the synthetic Gaussian noise's chroma like the input's: as a JPEG's "
            "header says (4:2:0, 4:2:2), or as the pixels of another file (a PNG of a decoded JPEG) show; "
            "'off' keeps its chroma full (white, unless --noise-jpeg compresses it)."
        },
    )
    """'auto': where the input is a JPEG with subsampled chroma, or a file that does not say whose pixels
    show it (:func:`~rfr_deploy.noise.chroma.find_subsampled_chroma`), white Gaussian synthetic noise has
    its chroma subsampled alike (:mod:`rfr_deploy.noise.chroma`); 'off': full chroma whatever the file
    (white noise, unless ``noise_jpeg`` compresses a JPEG's)."""
    noise_jpeg: Literal["auto", "off"] = field(
        default="auto",
        metadata={
            "help": "'auto': a JPEG's synthetic noise is compressed as the file was (its quantization "
            "tables), gray or colour; 'off': not (a colour JPEG's chroma is still subsampled, see --noise-chroma)."
        },
    )
    """'auto': a JPEG's synthetic Gaussian noise is compressed with the file's quantization tables (and its
    chroma subsampled as ``noise_chroma`` says; :mod:`rfr_deploy.noise.jpeg`); 'off': not."""
    noise_channels: Literal["auto", "off"] = field(
        default="auto",
        metadata={
            "help": "'auto': where a colour image's noise reads as shared by its channels (monochromatic noise, "
            "film grain) and a colour network adapts to it, the synthetic Gaussian noise is correlated between "
            "the channels alike, at the level each channel holds; 'off': white."
        },
    )
    """'auto': where every image of a group reads as holding noise its channels share and white in space
    (:attr:`~rfr_deploy.noise.channels.ChannelNoise.shared`), and a colour network adapts to them, white
    Gaussian synthetic noise is drawn correlated between the channels like theirs
    (:mod:`rfr_deploy.noise.correlated`) at the level each channel holds (where it is estimated); not with
    a subsampled chroma or a JPEG's compression to copy, whose models describe the noise. 'off': white."""
    per_channel: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={
            "help": "'auto': a colour image (not a JPEG) whose noise is white in space goes to the gray network "
            "run on each channel alone where SURE expects it to do better (noise the channels share, such as "
            "monochromatic noise or film grain; colours the colour network fails on), where the weights have "
            "a gray one; 'on': every colour image; 'off': none."
        },
    )
    """Whether colour images go to the gray network run on each channel alone
    (:mod:`rfr_deploy.adaptation.channel_choice`, :attr:`~rfr_deploy.jobs.inputs.ImageJob.per_channel`); with ``per_set`` (one network for the set) only
    'on' applies, to every image of the set."""
    reference: str | None = field(
        default=None,
        metadata={
            "help": "Clean image to score the noisy, pre-trained and adapted results against (one input only).",
            "file": "existing",
        },
    )
    """Clean image to score against (PSNR/SSIM of noisy, pre-trained and adapted outputs); one input only."""

    def __post_init__(self) -> None:
        check_levels({"sigma": self.sigma, "sigma-low": self.sigma_low, "sigma-high": self.sigma_high})
