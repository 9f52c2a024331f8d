"""Whether a group's synthetic noise is correlated between the colour channels like its images' noise.

A colour network adapted to an image whose noise its channels share (:mod:`rfr_deploy.noise.channels`)
draws noise correlated alike (:mod:`rfr_deploy.noise.correlated`), at the correlation the images' chroma
share implies (:func:`~rfr_deploy.noise.channels.implied_correlation`, which the α chooser's probes use
too), and, where the level is estimated, at the level each channel holds
(:func:`~rfr_deploy.jobs.noise_aim.aim_noise`): the estimate off the colour image reads low for such noise
(30.1–34.2 where each channel holds 50).

The correlation is not lowered by the bias the choice between the colour network and the gray one per
channel takes off it (:data:`~rfr_deploy.adaptation.channel_choice.CORRELATION_BIAS`): on six 128² crops
with noise correlated by 0.5, drawn and scored at ρ = 1 − share² (0.49–0.60) the adapted DnCNN reached
26.93 dB at σ = 25 and 23.13 at σ = 50, against 26.73 and 22.53 with the bias (0.34–0.45)
(benchmarks/README.md, "Shared noise: drawn at the correlation the chroma share implies, not lowered by the
bias").
"""

from __future__ import annotations

import statistics

from rfr_deploy.jobs.inputs import ImageJob
from rfr_deploy.noise.channels import ChannelNoise, implied_correlation, read_channel_noise

LEAST_LEVEL = 10 / 255
"""Below this level per channel ([0, 1] units) the synthetic noise stays white even where the noise reads as
shared. A textured crop's own detail passes for noise there: CBSD68 101085 at σ = 5 with white noise read
as shared (ρ 0.47, each channel 7.7), and the colour DnCNN adapted on noise correlated alike lost 3.29 dB
(37.72 → 34.43) where white noise gained 0.47, SURE with probes correlated alike choosing α = 1.25
(benchmarks/README.md, "A colour network on shared noise: adapt on noise shared like the image's"). Of 60
white-noise crops at σ = 5–50, that one read as shared at σ = 5, none at σ = 10–25
(benchmarks/results/luma_noise_readings.md)."""


def read_channel_readings(jobs: list[ImageJob]) -> None:
    """For each colour image (loaded) a colour network denoises, what its noise reads as between the
    channels (:attr:`~rfr_deploy.jobs.inputs.ImageJob.channel_reading`); once per job, a tenth of a second
    or so each."""
    for job in jobs:
        colour = job.info.channels == 3 and not job.info.per_channel
        if colour and job.channel_reading is None and job.noisy is not None:
            job.channel_reading = read_channel_noise(job.noisy)


def noise_correlation(settings, group: list[ImageJob]) -> float:
    """The correlation between the channels the group's synthetic noise is drawn with: the median over its
    images of what their chroma shares imply, where the job's ``noise_channels`` is 'auto' and every image
    is a colour one, denoised by a colour network, whose noise reads as shared by its channels
    (:attr:`~rfr_deploy.noise.channels.ChannelNoise.shared`) at :data:`LEAST_LEVEL` at least; 0 (white)
    otherwise."""
    readings = [j.channel_reading for j in group if not j.info.per_channel]
    if settings.noise_channels != "auto" or len(readings) != len(group):
        return 0.0
    if not all(_draws_correlated(r) for r in readings):
        return 0.0
    return statistics.median(implied_correlation(r.share) for r in readings)


def _draws_correlated(reading: ChannelNoise | None) -> bool:
    """Whether an image whose noise reads as ``reading`` may draw noise correlated between its channels."""
    return reading is not None and reading.shared and reading.level >= LEAST_LEVEL
