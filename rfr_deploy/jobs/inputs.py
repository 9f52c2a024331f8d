"""What a job reads before any long work: the images, the pre-trained models they need, and σ.

The order is the user's: cheap checks that can fail (images, weights, output folder) come first;
the σ estimate (an eigen-decomposition over patches, seconds on large images) runs only for the
images and networks that use it, and never when ``--sigma`` gives the level.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rfr_deploy.errors import ImageError, ModelError
from rfr_deploy.images import Image, read_image
from rfr_deploy.inference import to_tensor
from rfr_deploy.noise.channels import ChannelNoise, per_channel_level, read_channel_noise, shares_noise
from rfr_deploy.noise.chroma import find_subsampled_chroma
from rfr_deploy.noise.jpeg import JpegTables
from rfr_deploy.noise.level import ChromaStorage, NoiseLevel, chroma_storage, estimate_noise_level
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.units import grey_levels


@dataclass(frozen=True)
class ImageInfo:
    """What a job keeps of an image between its reads: its size, channels and bit depth."""

    height: int
    width: int
    channels: int
    bit_depth: int
    chroma_subsampling: tuple[int, int] | None = (1, 1)
    """A colour JPEG's chroma subsampling; None where the format does not say
    (:attr:`rfr_deploy.images.Image.chroma_subsampling`)."""
    jpeg_tables: tuple[tuple[int, ...], ...] | None = None
    """A JPEG's quantization tables (:attr:`rfr_deploy.images.Image.jpeg_tables`)."""
    stored_channels: int | None = None
    """The channels the file stores where they are not ``channels``: 3 for a grey image stored as RGB and
    taken as the gray image it is (:attr:`ImageJob.networks`), whose outputs are written as RGB again."""
    per_channel: bool = False
    """A colour image given to the gray network run on each channel alone (:attr:`ImageJob.per_channel`)."""


class GrayNetworks(Protocol):
    """What a job asks of its networks while it reads an image (:class:`~rfr_deploy.jobs.model_cache.ModelCache`)."""

    def takes_gray(self) -> bool:
        """Whether there are gray weights for the network."""

    def per_channel_suits(self, image: Image, reading: ChannelNoise) -> bool:
        """Whether the colour ``image``, whose noise reads as ``reading``, goes to the gray network run on
        each channel alone."""


@dataclass(eq=False)  # jobs are compared by identity: their pixels come and go
class ImageJob:
    """One input prepared for denoising or adaptation. Its pixels (``image``, and ``noisy`` on the
    device) are held only between :meth:`load` and :meth:`release`, so that a folder of thousands of
    images is never in memory at once; ``info`` stays."""

    path: Path
    info: ImageInfo | None = None
    image: Image | None = None
    noisy: torch.Tensor | None = None
    sigma_estimate: float | None = None
    """σ estimated from the image ([0, 1] units); None where nothing uses it."""
    sigma_used: float | None = None
    """σ given to noise-map networks ([0, 1] units): the known level, else the estimate."""
    chroma_found: tuple[int, int] | None = None
    """The chroma subsampling the pixels of a colour image whose file does not say show
    (:func:`read_chroma_traces`); None until read."""
    channel_reading: ChannelNoise | None = None
    """What :func:`~rfr_deploy.noise.channels.read_channel_noise` read of a colour image's noise; None until
    read (:func:`~rfr_deploy.jobs.channel_noise.read_channel_readings`), or where it cannot be."""
    manifest: dict[str, Any] = field(default_factory=dict)
    networks: GrayNetworks | None = field(default=None, repr=False)
    """The job's networks, asked whether there are gray weights (:meth:`GrayNetworks.takes_gray`) only of a
    grey image stored as RGB, which is then taken as the gray image it is (a colour network leaves most of
    its noise, whose three channels are one), and which network suits a colour image (:attr:`per_channel`);
    None: never asked, the image stays RGB."""
    per_channel: str = "off"
    """Whether a colour image goes to the gray network run on each channel alone, where there are gray
    weights: 'auto' where its noise reads as white in space and SURE expects that network to do better
    (:meth:`GrayNetworks.per_channel_suits`; not JPEGs, whose noise their own model describes), 'on'
    always, 'off' never. Read once, on the first load."""

    def load(self, device: torch.device) -> ImageJob:
        """Decode the image (again) onto ``device``; :class:`ImageError` if it changed since it was first read."""
        if self.noisy is None:
            image, stored = read_image(self.path), None
            grey = self.networks is not None and image.grey_rgb
            per_channel = (
                self.info.per_channel if self.info is not None else self._reads_per_channel(image, grey)
            )
            if grey and not per_channel and self.networks.takes_gray():
                image, stored = image.to_gray(), 3
            info = ImageInfo(
                image.height,
                image.width,
                image.channels,
                image.bit_depth,
                image.chroma_subsampling,
                image.jpeg_tables,
                stored,
                per_channel,
            )
            if self.info is not None and info != self.info:
                raise ImageError(
                    f"{self.path}: the image changed while the job ran ({self.info} before, {info} now)"
                )
            if self.info is None:
                _warn_transparent(image)
                if grey and stored is None and not per_channel:
                    warn_grey_rgb(image.path.name, "give gray weights (--gray-weights) to denoise it as gray")
            self.info, self.image, self.noisy = info, image, to_tensor(image.pixels, device)
        return self

    def _reads_per_channel(self, image: Image, grey: bool) -> bool:
        """Whether the colour ``image`` goes to the gray network run per channel (:attr:`per_channel`; a grey
        one ``grey`` only with 'on', else it is taken as gray)."""
        mode, networks = self.per_channel, self.networks
        asked = mode != "off" and networks is not None and image.channels == 3 and (mode == "on" or not grey)
        if not asked or (mode == "auto" and image.jpeg_tables is not None):
            return False
        if mode == "on":
            if networks.takes_gray():
                return True
            raise ModelError(
                f"{image.path}: --per-channel on needs gray weights for the network (--gray-weights)"
            )
        reading = self.channel_reading = read_channel_noise(torch.from_numpy(image.pixels).permute(2, 0, 1))
        if reading is None or not reading.white:
            return False
        if networks.takes_gray():
            return networks.per_channel_suits(image, reading)
        if reading.shared:
            remedy = (
                "adapt it on noise shared alike (adapt-and-export --noise-channels auto, the default), or"
            )
            warn_shared_noise(
                image.path.name,
                f"{remedy} give gray weights (--gray-weights) to denoise each channel alone",
                6,
            )
        return False

    def release(self) -> None:
        self.image = self.noisy = None

    def chroma_subsampling(self, pixels: bool = True) -> tuple[int, int]:
        """How the image's chroma was stored before its noise reached the file: as its JPEG header says,
        else (with ``pixels``) as its pixels show, else full."""
        said = self.info.chroma_subsampling
        if self.info.per_channel:  # each channel alone holds white noise
            return (1, 1)
        return said if said is not None else (self.chroma_found if pixels else None) or (1, 1)

    def chroma_storage(self) -> ChromaStorage:
        """How the file stored its chroma, as its header says (:data:`~rfr_deploy.noise.level.ChromaStorage`)."""
        return chroma_storage(self.chroma_subsampling(pixels=False), jpeg=self.info.jpeg_tables is not None)


TRANSPARENT_SHARE = 0.01
"""Above this share of fully transparent pixels, an image comes with a warning: their colour (often flat)
counts in what is read off the pixels like any other pixel's."""


def _warn_transparent(image: Image) -> None:
    alpha = image.extras.alpha
    share = float((alpha.values == 0).mean()) if alpha is not None else 0.0
    if share > TRANSPARENT_SHARE:
        warnings.warn(
            f"{image.path.name}: {share:.0%} of its pixels are fully transparent; what is read off its pixels "
            "(the noise level, subsampled chroma) counts their colour as well: give --sigma and --noise-chroma "
            "where they are known",
            UserWarning,
            stacklevel=4,
        )


def channel_record(job: ImageJob) -> dict[str, Any]:
    """``{"stored_channels": 3}`` for a grey image stored as RGB and taken as gray, ``{"per_channel": True}``
    for a colour image given to the gray network per channel (records), else nothing."""
    stored = job.info.stored_channels
    if job.info.per_channel:
        return {"per_channel": True}
    return {} if stored is None else {"stored_channels": stored}


def warn_grey_rgb(name: str, remedy: str) -> None:
    """The image ``name``, grey but stored as RGB, goes to a colour network (there is no gray one): what that
    costs, and ``remedy``."""
    warnings.warn(
        f"{name}: a grey image stored as RGB, denoised by a colour network, which leaves most of its noise "
        f"(its three channels are one); {remedy}",
        UserWarning,
        stacklevel=4,
    )


def reads_shared_noise(image: Image) -> bool:
    """Whether the noise of the colour ``image`` reads as shared by its channels
    (:func:`~rfr_deploy.noise.channels.shares_noise`)."""
    return shares_noise(torch.from_numpy(image.pixels).permute(2, 0, 1))


def warn_shared_noise(name: str, remedy: str, stacklevel: int = 4) -> None:
    """The colour image ``name``, whose noise its channels share (:func:`~rfr_deploy.noise.channels.shares_noise`),
    goes to a colour network: what that costs, and ``remedy``."""
    warnings.warn(
        f"{name}: its noise is nearly the same in its three channels, which a colour network leaves in "
        f"place; {remedy}",
        UserWarning,
        stacklevel=stacklevel,
    )


def read_jobs(
    paths: list[Path],
    device: torch.device,
    visit: Callable[[ImageJob], None] | None = None,
    reporter: Reporter = QUIET,
    networks: GrayNetworks | None = None,
    per_channel: str = "off",
) -> list[ImageJob]:
    """A job for each path: every image is decoded now, handed to ``visit`` while its pixels are held
    (e.g. to estimate σ), and let go. Unreadable images fail before any long work, all of them named in
    one :class:`ImageError` (one rerun finds them all). A folder's pass shows a progress bar. A grey image
    stored as RGB is taken as gray where ``networks`` have gray weights (:attr:`ImageJob.networks`), and a
    colour image goes to the gray network per channel where they suit it (:attr:`ImageJob.per_channel`)."""
    jobs, unreadable = [], []
    with reporter.bar(len(paths) if len(paths) > 1 else 0, f"checking {len(paths)} inputs") as update:
        for done, path in enumerate(paths, 1):
            try:
                job = ImageJob(path, networks=networks, per_channel=per_channel).load(device)
            except ImageError as exc:
                unreadable.append(exc)
                continue
            try:
                if visit is not None and not unreadable:
                    visit(job)
            finally:
                job.release()
            jobs.append(job)
            update(done, None)
    if len(unreadable) == 1:
        raise unreadable[0]
    if unreadable:
        shown = "; ".join(str(e) for e in unreadable[:3]) + ("; …" if len(unreadable) > 3 else "")
        raise ImageError(f"{len(unreadable)} inputs cannot be read: {shown}")
    return jobs


@contextlib.contextmanager
def loaded(jobs: list[ImageJob], device: torch.device) -> Iterator[list[ImageJob]]:
    """``jobs`` with their pixels held for the duration of the block."""
    try:
        yield [job.load(device) for job in jobs]
    finally:
        for job in jobs:
            job.release()


def set_sigma_levels(jobs: list[ImageJob], sigma: float | None, model: nn.Module, estimate: bool) -> None:
    """Fill in each job's σ ([0, 1] units) for ``model``: the known ``sigma``, or (with ``estimate``) the
    level estimated from the image (the one to tell a noise-map network, see
    :func:`~rfr_deploy.noise.level.estimate_noise_level`; once per job)."""
    for job in jobs:
        if estimate and sigma is None and job.sigma_estimate is None:
            job.sigma_estimate = read_level(job, model.meta.noise_map).sigma
            _warn_untrained_level(job, model)
        job.sigma_used = sigma if sigma is not None else job.sigma_estimate


def read_level(job: ImageJob, noise_map: bool) -> NoiseLevel:
    """The noise level read off ``job``'s image (loaded): each channel's, where a gray network denoises them
    one by one (:func:`~rfr_deploy.noise.channels.per_channel_level`), else as
    :func:`~rfr_deploy.noise.level.estimate_noise_level` reads it for the file's chroma."""
    if job.info.per_channel:
        return per_channel_level(job.noisy, noise_map)
    return estimate_noise_level(job.noisy, noise_map, job.chroma_storage())


UNTRAINED_MARGIN = 1.1
"""An estimated σ above this many times the top of the levels a Gaussian network was trained on comes with
a warning."""


def _warn_untrained_level(job: ImageJob, model: nn.Module) -> None:
    top = model.meta.sigma_range[1]
    if model.meta.noise == "gaussian" and job.sigma_estimate > UNTRAINED_MARGIN * top:
        warnings.warn(
            f"{job.path.name}: its estimated noise level σ {grey_levels(job.sigma_estimate, 1):g} is above the "
            f"levels the network was trained on (up to {grey_levels(top, 1):g}), beyond which it denoises less "
            "well: weights trained for such levels (--weights) suit it better",
            UserWarning,
            stacklevel=4,
        )


def check_estimated_level(group: list[ImageJob]) -> float:
    """The median estimated σ of ``group``, which adaptation will draw its noise at; 0 is an error."""
    level = statistics.median(j.sigma_estimate or 0.0 for j in group)
    if level <= 0.0:
        names = ", ".join(str(j.path) for j in group if not j.sigma_estimate)
        raise ImageError(
            f"{names}: no noise level can be estimated from the image (estimated σ = 0: it is flat or too "
            "small for 7×7 patches); give the noise level with --sigma"
        )
    return level


def model_sigma(model: nn.Module, job: ImageJob) -> float | None:
    """σ for noise-map networks (known σ, else the estimate); None for blind networks."""
    return job.sigma_used if model.meta.noise_map and job.sigma_used is not None else None


def set_sigma(model: nn.Module, group: list[ImageJob]) -> float | None:
    """The noise-map σ of one network adapted to a group: the median level (one image's own)."""
    if not model.meta.noise_map:
        return None
    return statistics.median(j.sigma_used for j in group)


def read_chroma_traces(jobs: list[ImageJob]) -> None:
    """For each colour image (loaded) whose file does not say how it stored the chroma, what its pixels
    show at its level (:func:`~rfr_deploy.noise.chroma.find_subsampled_chroma`); once per job."""
    for job in jobs:
        unread = job.info.chroma_subsampling is None and not job.info.per_channel and job.chroma_found is None
        if unread and job.noisy is not None:
            job.chroma_found = find_subsampled_chroma(job.noisy, job.sigma_used)


def noise_chroma(settings, group: list[ImageJob], pixels: bool = True) -> tuple[int, int]:
    """The chroma subsampling the group's synthetic noise copies (one for all: a set whose images differ
    keeps white noise): as its JPEGs' headers say, and (with ``pixels``) as the pixels of its other
    colour images show; (1, 1) where the job's ``noise_chroma`` is 'off'."""
    factors = {j.chroma_subsampling(pixels) for j in group}
    return factors.pop() if settings.noise_chroma == "auto" and len(factors) == 1 else (1, 1)


def noise_jpeg(settings, group: list[ImageJob]) -> JpegTables | None:
    """The quantization tables of the group's JPEGs (one set for all: a gray file's luma table, a colour
    file's luma and chroma tables), which the synthetic noise is compressed with
    (:func:`~rfr_deploy.noise.build.build_noise_from`); None where the job's ``noise_jpeg`` is 'off' or the
    group holds other files or other tables."""
    tables = {j.info.jpeg_tables for j in group}
    if settings.noise_jpeg != "auto" or len(tables) != 1:
        return None
    found = tables.pop()
    tables_for = {1: 1, 3: 2}  # a gray file has one table, a colour file two
    fits = found and all(tables_for.get(j.info.channels) == len(found) for j in group)
    return JpegTables(*found) if fits else None


def chroma_source(group: list[ImageJob]) -> str:
    """Where the group's chroma subsampling was read: its files' headers, or its pixels."""
    return "pixels" if any(j.info.chroma_subsampling is None for j in group) else "header"
