"""Settings of an adaptation run (:class:`AdaptConfig`) and their defaults (those that depend on the noise and
the images are filled in by :func:`rfr_deploy.adaptation.defaults.resolve_defaults`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from rfr_deploy.adaptation.plan import SMALLEST_PATCH
from rfr_deploy.adaptation.scoring_windows import SCORE_PIXELS
from rfr_deploy.adaptation.tuning import LAYER_LR_CHOICES, TUNE_CHOICES, LayerLr, Tune
from rfr_deploy.devices import seed_field

LossKind = Literal["mse", "l1"]
FastMode = Literal["auto", "on", "off"]
AmpMode = Literal["auto", "bf16", "fp16", "off"]
Schedule = Literal["constant", "cosine"]
Select = Literal["sure", "off"]

GAUSSIAN_STEPS = 640
"""Default M for Gaussian noise on the CPU, where SURE chooses how far to move from the pre-trained
weights: updates on random :data:`GAUSSIAN_PATCH`² patches with the weights averaged
(:data:`GAUSSIAN_EMA`), the pixel work of the paper's M = 40 whole-image updates at 256². At that cost
it gained more than 40 whole-image updates on every set measured (256² crops, σ = 25: McMaster +0.239
instead of +0.135 dB, Set12 +0.124 instead of +0.086; benchmarks/README.md "Patches instead of whole
images"), and its cost no longer grows with the image."""
GAUSSIAN_PATCH = 64
"""Side of the training patches of the CPU's default Gaussian budget (:data:`GAUSSIAN_STEPS`)."""
GAUSSIAN_EMA = 0.95
"""Weight averaging of the CPU's default Gaussian budget (:data:`GAUSSIAN_STEPS`): single 64² patches
make noisy updates, and averaging the iterates removes most of that noise."""
FIXED_INTERPOLATION = 0.5
"""Default interpolation where no scorer chooses it (``select='off'``, camera noise at a given or random
level), and for camera noise aimed at the pre-trained residual the largest one its guard, coloured SURE,
may keep (:mod:`rfr_deploy.adaptation.coloured_sure`)."""
SUBSAMPLED_CHROMA_INTERPOLATION = 1.0
"""Default interpolation for white Gaussian noise whose chroma is subsampled like a JPEG's
(:mod:`rfr_deploy.noise.chroma`), which no scorer models: the adapted network itself
(benchmarks/README.md, "JPEGs with subsampled chroma: the noise they hold"); also for noise correlated
between the channels (:mod:`rfr_deploy.noise.correlated`) where SURE does not choose (``select='off'``)."""
ESTIMATED_GRAY_INTERPOLATION = 0.25
"""Default interpolation for gray images with an estimated σ where SURE does not choose it: a network
whose residual implies no level, or ``select='off'``
(:func:`rfr_deploy.adaptation.scoring.gray_with_estimated_level`, :mod:`rfr_deploy.adaptation.implied_level`)."""
CUDA_GAUSSIAN_STEPS = 400
"""Default M for Gaussian noise on a CUDA device, where an update of DnCNN at 256² costs about a
millisecond by its FLOP count: the gain keeps growing well past M = 40 (benchmarks/results/budget_*)
and the checkpoint rule keeps the best network along the way."""
WHOLE_IMAGE_PIXELS = 1 << 19
"""The largest image (pixels) whole-image updates take whole; larger ones train on random patches of
about this many pixels (:func:`~rfr_deploy.adaptation.targets.training_layout`), not of whatever size the
memory free allows, which made results differ between machines (benchmarks/README.md, stop 52)."""
LARGE_IMAGE_PATCH = 720
"""The patch side of whole-image updates on images over :data:`WHOLE_IMAGE_PIXELS`: its square root,
rounded down to a multiple of 8."""
CHECKPOINTS = 4
"""Default number of scored checkpoints per run (``checkpoint_every`` None: every M/4 updates)."""
CAMERA_STEPS = 10
"""Default M for camera noise (signal dependent and correlated; at an unknown level coloured SURE may only
step back from the fixed interpolation). In sixteen of the eighteen real-noise rows of
benchmarks/results/real_noise_* the mean gain at M = 10 was at least that at M = 40, and whole
photographs lost ground between M = 20 and 40."""


@dataclasses.dataclass
class AdaptConfig:
    """Settings of one adaptation run. Every field maps to a CLI option of the same name."""

    steps: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": f"Number of fine-tuning updates M [default: for Gaussian noise {GAUSSIAN_STEPS} on "
            f"{GAUSSIAN_PATCH}² patches with --ema {GAUSSIAN_EMA:g} on the CPU, {CUDA_GAUSSIAN_STEPS} on CUDA; "
            f"{CAMERA_STEPS} for camera noise]. Given M, updates take whole images unless --patch says otherwise.",
            "min": 0,
        },
    )
    """Number of updates M (over the whole set when several images share one network). None: the
    default budget of the noise and the device (:func:`resolve_defaults`): on the CPU for Gaussian
    noise :data:`GAUSSIAN_STEPS` updates on :data:`GAUSSIAN_PATCH`² patches with weight averaging
    :data:`GAUSSIAN_EMA`, on CUDA :data:`CUDA_GAUSSIAN_STEPS` whole-image updates, for the camera noise
    model :data:`CAMERA_STEPS`. A given M trains on whole images unless ``patch`` is set."""
    lr: float = dataclasses.field(default=1e-5, metadata={"help": "Adam learning rate."})
    loss: LossKind = "mse"
    batch: int = dataclasses.field(default=1, metadata={"help": "Noise realisations per update.", "min": 1})
    """Noise realisations (and patches, when training on patches) per update."""
    patch: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": f"Train on random square patches of this side [default: {GAUSSIAN_PATCH} with the CPU's "
            f"default Gaussian budget, else the whole image up to {WHOLE_IMAGE_PIXELS:,} pixels (larger ones: "
            f"{LARGE_IMAGE_PATCH}² patches)]. Where an update does not fit in memory it runs in tiles.",
            "min": SMALLEST_PATCH,
        },
    )
    """Side of random square training patches; None: :data:`GAUSSIAN_PATCH` with the CPU's default Gaussian
    budget (``steps`` None too), else the whole image up to :data:`WHOLE_IMAGE_PIXELS` and patches of about
    that many pixels on larger ones; at least :data:`SMALLEST_PATCH`. A training step that would not fit in
    memory runs in tiles (:func:`~rfr_deploy.adaptation.targets.training_layout`, :mod:`~rfr_deploy.adaptation.tiles`)."""
    schedule: Schedule = "constant"
    warmup: int = dataclasses.field(default=10, metadata={"help": "Learning-rate ramp-up updates.", "min": 0})
    """Updates over which the learning rate ramps up linearly, at most a quarter of them (a run of 4 went
    without ever reaching its rate): Adam's first, unnormalised updates otherwise cost up to 0.2 dB."""
    target_ensemble: bool = dataclasses.field(
        default=False, metadata={"help": "×8 self-ensemble for the pseudo-clean target."}
    )
    """Average the 8 dihedral transforms for the pseudo-clean target (8× one forward pass)."""
    refresh_every: int = dataclasses.field(
        default=0,
        metadata={
            "help": "Recompute the pseudo-clean targets with the adapted network every N updates (0: never).",
            "min": 0,
        },
    )
    """Iterated restore-from-restored: recompute the pseudo-clean targets with the adapted network
    every this many updates (0: never)."""
    rounds: int = dataclasses.field(
        default=1,
        metadata={
            "help": "Split the M updates into this many restore-from-restored rounds: each round after the "
            "first recomputes the pseudo-clean targets with the network the previous round returned (after "
            "SURE's choice) and adapts that network.",
            "min": 1,
        },
    )
    """Restore-from-restored rounds sharing the M updates (M / rounds each). Round r + 1 starts from
    the network round r returned (its checkpoint and interpolation chosen as usual), recomputes the
    pseudo-clean targets with it and draws fresh noise (seed + r); given ``targets`` are kept in every
    round. Unlike ``refresh_every``, the new target comes from the *selected* network, and round r + 1
    may step back to it (α = 0 is a candidate again). Measured in benchmarks/README.md,
    "Layer-relative learning rates and rounds"."""
    ema: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Average the weights over the updates (0: last weights only) [default: "
            f"{GAUSSIAN_EMA:g} with the CPU's default Gaussian budget, else 0].",
            "min": 0.0,
            "max": 1.0,
            "max_open": True,
        },
    )
    """Average the weights over the updates: each update moves the average towards the current
    weights by max(1 − ema, 1/t); 0 keeps only the last weights, values near 1 average every iterate.
    None: :data:`GAUSSIAN_EMA` with the CPU's default Gaussian budget, else 0."""
    interpolation: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Result = pre-trained + this × (adapted − pre-trained) in weight space, where SURE does "
            "not choose it; for camera noise at an unknown level the largest weight its guard may keep "
            f"[default: {ESTIMATED_GRAY_INTERPOLATION:g} for gray images with an estimated σ, "
            f"else {FIXED_INTERPOLATION:g}].",
            "min": 0.0,
            "max": 1.5,
            "min_open": True,
        },
    )
    """Weight-space interpolation of the result where SURE does not choose it: pre-trained +
    interpolation × (adapted − pre-trained); for camera noise aimed at the pre-trained residual the
    largest weight coloured SURE may keep (:mod:`rfr_deploy.adaptation.coloured_sure`). Values below 1 keep
    part of the pre-trained network, which removes most losses on images with little self-similarity (see
    benchmarks/results/study_*). None: :data:`ESTIMATED_GRAY_INTERPOLATION` for gray images with an
    estimated σ, :data:`FIXED_INTERPOLATION` otherwise."""
    select: Select = dataclasses.field(
        default="sure",
        metadata={
            "help": "Choose the interpolation per image by Stein's unbiased risk estimate (Gaussian noise; "
            "generalised cross-validation where an estimated σ is uncertain; for camera noise at an unknown "
            "level SURE with probes coloured like the residual, up to --interpolation); 'off' uses "
            "--interpolation."
        },
    )
    """'sure': choose the interpolation per image among 0 (pre-trained), 0.25, …, 1.25 by Stein's
    unbiased risk estimate on the noisy input (Gaussian noise only; see :mod:`rfr_deploy.adaptation.sure`),
    or by generalised cross-validation where σ is estimated and uncertain (:mod:`rfr_deploy.adaptation.scoring`).
    α = 0 is a candidate, so losses are rare on images of 256² and more; SURE's own noise still lets
    some small images lose up to 0.1 dB (benchmarks/results/table2_*crop128*). Camera noise aimed at
    the pre-trained residual (its level unknown): SURE with probes coloured like that residual chooses
    among 0, 0.25, … up to ``interpolation`` (:mod:`rfr_deploy.adaptation.coloured_sure`). 'off', other
    camera noise, or gray images with an estimated σ: use ``interpolation``."""
    recorrupted: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "Weight of the recorrupted-to-recorrupted term (pairs drawn from the noisy input itself, "
            "Gaussian noise only; 0: restore-from-restored pairs alone).",
            "min": 0.0,
        },
    )
    """Weight of a recorrupted-to-recorrupted term added to the loss (pairs Y + a·z → Y − z/a drawn
    from the noisy input itself, unbiased for the clean image; Gaussian noise of one level only, see
    :mod:`rfr_deploy.adaptation.recorrupt`). 0 (default) trains on restore-from-restored pairs alone: the term
    helped gray images a little, not colour ones, and biases the SURE selection towards large steps.
    Costs a second forward and backward pass per update."""
    sure_loss: float = dataclasses.field(
        default=0.0,
        metadata={
            "help": "Weight of Stein's unbiased risk estimate on the noisy input as a loss term (Gaussian "
            "noise only; not with --recorrupted; 0: restore-from-restored pairs alone).",
            "min": 0.0,
        },
    )
    """Weight of Stein's unbiased risk estimate of the network on the noisy input, added to the loss
    (an unbiased estimate of the error against the clean image, GainTuning-style; Gaussian noise of
    one level only, see :mod:`rfr_deploy.adaptation.sure_loss`). Costs two more forward and backward
    passes per update. Exclusive with ``recorrupted``."""
    tune: Tune = dataclasses.field(
        default="all",
        metadata={
            "help": "What the updates change: every weight ('all'), a per-channel gain and shift after every "
            "layer ('affine', folded into the weights afterwards), or both."
        },
    )
    """What the updates change: 'all' weights (at ``lr``), 'affine' (a per-output-channel gain and
    shift after every layer, at ``affine_lr``, weights frozen; see :mod:`rfr_deploy.adaptation.tuning`) or
    'all+affine' (both, each at its own rate). The affine maps are folded into the weights before
    the network is returned: adapted networks have the pre-trained network's parameters and names."""
    affine_lr: float = dataclasses.field(
        default=1e-3,
        metadata={
            "help": "Adam learning rate of the per-channel gains and shifts (--tune affine, all+affine)."
        },
    )
    """Adam learning rate of the per-channel gains and shifts (``tune`` 'affine' or 'all+affine')."""
    layer_lr: LayerLr = dataclasses.field(
        default="uniform",
        metadata={
            "help": "Learning rate per weight tensor: 'uniform' (--lr everywhere) or 'relative' (--lr scaled "
            "by the layer's weight RMS over the median layer's: equal relative steps)."
        },
    )
    """'uniform': every weight at ``lr``; 'relative': each weight tensor at ``lr`` × its RMS / the median
    RMS, equal steps relative to each layer's scale (:func:`~rfr_deploy.adaptation.tuning.parameter_groups`;
    measured in benchmarks/README.md, "Layer-relative learning rates and rounds")."""
    checkpoint_every: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Score the network by SURE every N updates; the best and the last compete, each at its "
            f"own interpolation (Gaussian noise; 0: the last only) [default: steps / {CHECKPOINTS}].",
            "min": 0,
        },
    )
    """Score the network by SURE every this many updates and keep the best (Gaussian noise, where
    SURE applies; see :mod:`rfr_deploy.adaptation.checkpoints`); the interpolation is then chosen between the
    pre-trained network and that checkpoint, and between it and the last update's network, and SURE keeps
    the better of the two. 0: only the last update's network is considered.
    None: M / :data:`CHECKPOINTS`. With bf16 updates on the CPU and an fp32 tail (``fp32_tail``), the
    checkpoints of the bf16 part are skipped: they are fitted to bf16 arithmetic and score poorly in fp32."""
    score_pixels: int = dataclasses.field(
        default=SCORE_PIXELS,
        metadata={
            "help": "Score images larger than this many pixels on windows spread over them that cover about "
            "this many, instead of whole (0: always whole).",
            "min": 0,
        },
    )
    """Images with more pixels than this are scored (SURE, GCV, coloured SURE: checkpoints and
    interpolation) on windows covering about this many, one per cell of a grid over the image, instead of
    whole: each score costs 1 + probes forward passes, which on photographs of several megapixels cost far
    more than the updates (:mod:`rfr_deploy.adaptation.scoring_windows`). 0: whole images always."""
    optimizer: Literal["adam", "radam"] = "adam"
    """Adam, or RAdam (Adam with the variance of its first steps rectified)."""
    seed: int = seed_field()
    fast: FastMode = dataclasses.field(
        default="auto", metadata={"help": "CUDA-graph + mixed-precision updates on GPU."}
    )
    """Fast step runner: 'auto' uses CUDA graphs on CUDA (eager when capture fails) and channels-last
    weights on CPU; 'on' requires CUDA graphs; 'off' runs the plain eager loop."""
    amp: AmpMode = dataclasses.field(
        default="auto",
        metadata={
            "help": "Mixed precision of the update. GPU: bf16 where supported, else fp16 with a gradient "
            "scaler. CPU: bf16 convolutions with fp32 weights and Adam ('bf16': CPUs with AVX512-BF16 or "
            "AMX only)."
        },
    )
    """Mixed precision of the fast path: bf16 where supported, else fp16 with a gradient scaler. CPU:
    bf16 convolutions (fp32 weights and Adam) on request ('bf16', native bf16 CPUs only), and for
    'auto' on the CPUs :data:`rfr_deploy.adaptation.cpu_runners.CPU_BF16_AUTO` names (AMX, AMD's
    AVX512-BF16)."""

    fp32_tail: int = dataclasses.field(
        default=160,
        metadata={
            "help": "CPU bf16 updates only: the last this many updates of each round run their forward pass "
            "in fp32 (all of a shorter round; backward: --tail-backward); bf16 alone leaves the weights "
            "fitted to bf16 arithmetic."
        },
    )
    """With bf16 updates on a CPU (:class:`~rfr_deploy.adaptation.cpu_runners.Bf16Runner`): how many of
    each round's last updates run in fp32 (a round of at most this many runs in fp32 throughout; since
    stop 45 their convolution + ReLU pairs compute the gradients in bf16, ``tail_backward``). Updates
    in bf16 alone fit the weights to bf16 arithmetic, and the fp32 network they return denoises worse
    (CDnCNN-B, 4 CBSD68 crops, 640 updates: -0.105 dB against fp32's -0.016); the last 160 in fp32 bring
    it back (-0.018; ``benchmarks/results/bf16_tail_CBSD68_s25_crop256.md``). Two fp32 updates after
    eight in bf16 did not (the camera default of 10 updates, SIDD crops: +0.377 against +0.398,
    ``real_noise_cbdnet_crop128_guard_sidd_bf16share.md``): the refit needs a number of updates, not a
    share of the run. 0: bf16 to the end."""

    tail_backward: Literal["bf16", "fp32"] = dataclasses.field(
        default="bf16",
        metadata={
            "help": "CPU bf16 updates only: the precision of the fp32 tail's backward convolutions (each "
            "convolution + ReLU pair's); its forward pass, which the returned weights fit, stays fp32."
        },
    )
    """The dtype of the backward convolutions of the ``fp32_tail`` updates (those of the convolution + ReLU
    pairs :mod:`~rfr_deploy.adaptation.fused_conv_relu` runs as one call; other layers stay fp32). The
    tail's forward pass is what refits the weights to fp32 arithmetic: with bf16 gradients the last 160 of
    640 updates bring CDnCNN-B on 4 CBSD68 crops to -0.016 dB against -0.019 with fp32 ones
    (``benchmarks/results/bf16_tail_backward_CBSD68_s25_crop256.md``), the CLI defaults' gains on stop 38's
    crops stay within 0.0023 dB (``table{2,3}_*_tailbwd_*``), and a tail update on a 64² patch takes 39
    instead of 60 ms on an AMX CPU (``tail_backward_cpu_amx.md``). 'fp32': the whole tail in fp32."""

    keep_memory: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "CPU: keep the memory an update frees in the process (glibc), so the next update does "
            "not page-fault it back in; the process keeps its peak size until it exits."
        },
    )
    """On the CPU, :func:`rfr_deploy.heap.keep_freed_memory` as a job, an adaptation or an update runner
    starts (:func:`rfr_deploy.heap.keep_freed_memory_on`): glibc stops unmapping and trimming freed blocks, process-wide and
    for the rest of the process. DnCNN's bf16 update at 512² went from 1,260 to 662 ms
    (``benchmarks/results/freed_memory_cpu_amx.md``)."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr:g}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.patch is not None and self.patch < SMALLEST_PATCH:
            raise ValueError(f"patch must be at least {SMALLEST_PATCH} pixels, got {self.patch}")
        if self.ema is not None and not (0.0 <= self.ema < 1.0):
            raise ValueError(f"ema must be in [0, 1), got {self.ema:g}")
        if self.interpolation is not None and not (0.0 < self.interpolation <= 1.5):
            raise ValueError(f"interpolation must be in (0, 1.5], got {self.interpolation:g}")
        if not (self.recorrupted >= 0.0 and math.isfinite(self.recorrupted)):
            raise ValueError(f"recorrupted must be a finite number >= 0, got {self.recorrupted:g}")
        if not (self.sure_loss >= 0.0 and math.isfinite(self.sure_loss)):
            raise ValueError(f"sure_loss must be a finite number >= 0, got {self.sure_loss:g}")
        if self.recorrupted > 0 and self.sure_loss > 0:
            raise ValueError("recorrupted and sure_loss are exclusive: set one of them")
        if not (self.affine_lr > 0 and math.isfinite(self.affine_lr)):
            raise ValueError(f"affine_lr must be a positive number, got {self.affine_lr:g}")
        if self.tune not in TUNE_CHOICES:
            raise ValueError(f"tune must be one of {', '.join(TUNE_CHOICES)}, not {self.tune!r}")
        if self.layer_lr not in LAYER_LR_CHOICES:
            raise ValueError(f"layer_lr must be one of {', '.join(LAYER_LR_CHOICES)}, not {self.layer_lr!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.score_pixels < 0:
            raise ValueError(f"score_pixels must be >= 0, got {self.score_pixels}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.fp32_tail < 0:
            raise ValueError(f"fp32_tail must be >= 0, got {self.fp32_tail}")
        if self.tail_backward not in ("bf16", "fp32"):
            raise ValueError(f"tail_backward must be 'bf16' or 'fp32', not {self.tail_backward!r}")
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0, got {self.refresh_every}")
        if self.select not in ("sure", "off"):
            raise ValueError(f"select must be 'sure' or 'off', not {self.select!r}")
        if self.optimizer not in ("adam", "radam"):
            raise ValueError(f"optimizer must be 'adam' or 'radam', not {self.optimizer!r}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', not {self.loss!r}")
