"""Settings of ``rfr-deploy bench`` (:class:`BenchSettings`) and its fixed choices: default models, σ, image size."""

from __future__ import annotations

from dataclasses import dataclass, field

from rfr_deploy.devices import MAX_THREADS, seed_field, threads_field
from rfr_deploy.errors import ConfigError

DEFAULT_MODELS = ("dncnn", "ridnet", "mirnet")
SIGMA = 25 / 255
"""Noise level ([0, 1] units: 25 grey levels) of the bench's generated image and of the timed updates' noise."""
PAPER_SIZE = 256
"""Side of the image the paper timed its updates on (Lee et al.): the bench's default size."""


@dataclass
class BenchSettings:
    """Settings of ``rfr-deploy bench``; every field is a CLI option, generated from the field
    (:func:`rfr_deploy.cli.options.field_option`) but for ``models`` and ``sizes`` (parsed from text)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    size: int = field(default=PAPER_SIZE, metadata={"min": 16})
    sizes: dict[str, int] = field(default_factory=dict)
    """Per-model image side overriding ``size`` (e.g. a heavy network on CPU)."""
    steps: int = field(default=10, metadata={"min": 1, "help": "Timed updates per repeat and mode."})
    repeats: int = field(default=5, metadata={"min": 1})
    warmup: int = field(
        default=2,
        metadata={
            "min": 0,
            "help": "Untimed updates per mode before its rounds (the first one's time is shown).",
        },
    )
    device: str = "auto"
    budget: float = field(
        default=300.0,
        metadata={"min": 1.0, "help": "Seconds per model, shared by its modes and the adapt-and-export job."},
    )
    job: bool = field(
        default=True, metadata={"help": "Also time a whole adapt-and-export of one generated image."}
    )
    job_steps: int = field(default=20, metadata={"min": 1})
    job_export: bool = field(
        default=True,
        metadata={"help": "Include the verified ONNX export in the job (where onnx is installed)."},
    )
    """Include the ONNX export (verified with ONNX Runtime) in the job, where onnx is installed."""
    fit_budget: bool = field(
        default=True,
        metadata={"help": "On CPU, shrink a model's image when its updates would not fit the budget."},
    )
    """On CPU, shrink the image of a model whose updates would not fit its budget (the size used is reported)."""
    compile: bool = field(
        default=False,
        metadata={"cli": "--compile", "help": "Also time torch.compile on CPU (compiling takes long)."},
    )
    """Also time ``torch.compile`` with channels-last (CPU only; compiling takes tens of seconds)."""
    unfused: bool = field(
        default=False,
        metadata={"help": "Also time the bf16 update without fusing each convolution with its ReLU (CPU)."},
    )
    """Also time the bf16 update with convolution and ReLU as separate oneDNN calls (what the fusion gains)."""
    limits: bool = field(
        default=True,
        metadata={
            "help": "Measure the device's conv rates (and CUDA copy bandwidth) and count FLOPs per update."
        },
    )
    """Measure the device's convolution rates (and CUDA copy bandwidth) at the start and the end of the
    run, and count each model's FLOPs per update (:mod:`rfr_deploy.bench.limits`)."""
    keep_memory: bool = field(
        default=True,
        metadata={"help": "CPU: keep the memory updates free in the process (glibc), as adapt does."},
    )
    """On the CPU, keep freed memory in the process from the start of the run (:mod:`rfr_deploy.heap`),
    as ``adapt`` does by default: every mode, limit and job is timed without re-faulting its tensors."""
    threads: int | None = threads_field()
    """CPU threads (:func:`rfr_deploy.devices.use_threads`); None keeps torch's default."""
    seed: int = seed_field()

    def __post_init__(self) -> None:
        self.models = tuple(dict.fromkeys(self.models))  # a model named twice is timed once, in its place
        if self.size < 16 or any(v < 16 for v in self.sizes.values()):
            raise ConfigError("image sizes must be at least 16 pixels")
        if self.steps < 1 or self.repeats < 1 or self.warmup < 0 or self.job_steps < 1:
            raise ConfigError("steps, repeats and job steps must be >= 1, warm-up >= 0")
        if not self.budget > 0:
            raise ConfigError("budget must be a positive number of seconds")
        if not self.models:
            raise ConfigError("no models to benchmark")
        if unused := sorted(set(self.sizes) - set(self.models)):
            raise ConfigError(f"a size is given for {', '.join(unused)}, which is not benchmarked")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"threads must be within [1, {MAX_THREADS}]")

    def size_of(self, model: str) -> int:
        return self.sizes.get(model, self.size)
