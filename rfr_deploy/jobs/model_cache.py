"""The pre-trained networks of a job, loaded once each: by channel count, the gray one run on each channel
of a colour image alone, and the gray weights named for a colour network (``--gray-weights``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from rfr_deploy.adaptation.channel_choice import per_channel_scores_better
from rfr_deploy.errors import ModelError, WeightsError
from rfr_deploy.inference import to_tensor
from rfr_deploy.models.denoiser import each_channel
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.weights import ChannelsError

if TYPE_CHECKING:
    from rfr_deploy.images import Image
    from rfr_deploy.jobs.inputs import ImageJob
    from rfr_deploy.noise.channels import ChannelNoise


class ModelCache:
    """Pre-trained models by channel count (``--model dncnn`` picks gray or color weights); ``gray_weights``
    (:attr:`~rfr_deploy.jobs.settings.JobSettings.gray_weights`) for the gray network where given."""

    def __init__(
        self, model: str, weights: str | None, device: torch.device, gray_weights: str | None = None
    ):
        self.model, self.weights, self.device, self.gray_weights = model, weights, device, gray_weights
        self._models: dict[tuple[int, bool], nn.Module] = {}
        self._gray: bool | None = None

    @classmethod
    def for_settings(cls, settings, device: torch.device) -> ModelCache:
        """The cache of a job's ``settings`` (:class:`~rfr_deploy.jobs.settings.JobSettings`)."""
        return cls(settings.model, settings.weights, device, settings.gray_weights)

    def get(self, channels: int, image: Path | None = None, per_channel: bool = False) -> nn.Module:
        """The network for images of ``channels`` channels (``per_channel``: the gray one, run on each
        channel alone), loaded on first use; weights for another channel count are a
        :class:`~rfr_deploy.models.weights.ChannelsError` that names ``image``, the input that needs them."""
        key = (channels, per_channel)
        if per_channel and key not in self._models:
            self._models[key] = each_channel(self.get(1, image), channels)
        if key not in self._models:
            self._models[key] = self._load(channels, image).eval()
        return self._models[key]

    def _load(self, channels: int, image: Path | None) -> nn.Module:
        """The network for ``channels`` channels from the weights named for it; an error names
        ``--gray-weights`` where those were the weights, else ``image`` where weights for another channel
        count were given."""
        if channels == 1 and self.gray_weights:
            try:
                return create_model(self.model, weights=self.gray_weights, channels=1, device=self.device)
            except (WeightsError, ModelError) as exc:
                raise type(exc)(f"--gray-weights: {exc}") from exc
        try:
            return create_model(
                self.model, weights=self.weights or "default", channels=channels, device=self.device
            )
        except ChannelsError as exc:
            if image is None:
                raise
            raise ChannelsError(f"{exc}: {image}") from exc

    def for_job(self, job: ImageJob) -> nn.Module:
        """The network for ``job``'s image (read)."""
        return self.get(job.info.channels, job.path, job.info.per_channel)

    def takes_gray(self) -> bool:
        """Whether there are gray weights for the network (``--model``'s packaged ones, ``--weights`` or
        ``--gray-weights``): loaded on the way, asked once. Gray weights named but unfit are an error."""
        if self._gray is None:
            try:
                self.get(1)
                self._gray = True
            except (ChannelsError, ModelError):
                if self.gray_weights:
                    raise
                self._gray = False
        return self._gray

    def per_channel_suits(self, image: Image, reading: ChannelNoise) -> bool:
        """Whether SURE expects the gray network run per channel to denoise the colour ``image``, whose noise
        reads as ``reading``, better than the colour network
        (:func:`~rfr_deploy.adaptation.channel_choice.per_channel_scores_better`); without colour weights,
        whether its noise is shared by its channels."""
        try:
            colour = self.get(3)
        except (ChannelsError, ModelError):
            return reading.shared
        noisy = to_tensor(image.pixels, self.device)
        per_channel = self.get(3, per_channel=True)
        return per_channel_scores_better(colour, per_channel, noisy, level=reading.level, share=reading.share)

    def check_gray_weights(self) -> None:
        """Load the gray weights named (``--gray-weights``), so that a bad file fails before any long work."""
        if self.gray_weights:
            self.takes_gray()

    def load_for(self, jobs: list[ImageJob]) -> None:
        """Load (and so check) the weights every job needs, before any long work."""
        for job in jobs:
            self.for_job(job)
