"""Configuration of a training run: :class:`TrainConfig`, what :func:`~lalic_core.training.
trainer.train` returns (:class:`TrainResult`), and the official lambdas (:data:`LAMBDAS`).
The user's view of training is in :mod:`lalic_core.train`."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from lalic_core.paper import LAMBDAS, LAMBDAS_MS_SSIM

__all__ = ["LAMBDAS", "LAMBDAS_MS_SSIM", "METRICS", "TrainConfig", "TrainResult"]

METRICS = ("mse", "ms-ssim")


@dataclass
class TrainConfig:
    """Everything that defines a training run (see the module docstring).

    ``quality`` picks lambda from :data:`LAMBDAS` (or :data:`LAMBDAS_MS_SSIM`); ``lmbda``
    overrides it. ``milestones`` None = one 10x drop at 90% of ``steps``. ``val_crop`` None =
    whole validation images. ``resume``: None starts a new run (and refuses an ``out_dir``
    that already holds ``last.pt``), ``"auto"`` continues ``out_dir/last.pt`` when it exists,
    a path continues that checkpoint. ``init``: weights (any checkpoint of the same model) a
    new run starts from; ignored when resuming. ``batch_size`` is per process.
    """

    train_dir: str
    val_dir: str | None = None
    out_dir: str = "runs/train"
    model: str = "tiny"
    quality: int | None = 3
    lmbda: float | None = None
    metric: str = "mse"
    steps: int = 10_000
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-4
    aux_lr: float = 1e-3
    milestones: tuple[int, ...] | None = None
    lr_gamma: float = 0.1
    clip_max_norm: float = 1.0
    val_every: int = 500
    val_crop: int | None = None
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    resume: str | None = None
    init: str | None = None
    skip_small_images: bool = False
    tensorboard: bool = True
    progress: bool = True
    ddp_find_unused_parameters: bool = False
    biwkv_semantics: str = "formula"

    def __post_init__(self):
        def need(cond, name, expected, value):
            if not cond:
                raise ValueError(f"TrainConfig: `{name}` must be {expected}, got {value!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("train_dir", "out_dir", "model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, name, value)
            need(isinstance(value, str) and value, name, "a non-empty string", value)
        for name in ("val_dir", "resume", "init"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        need(self.metric in METRICS, "metric", f"one of {METRICS}", self.metric)
        from lalic_core.ops.biwkv import SEMANTICS

        need(self.biwkv_semantics in SEMANTICS, "biwkv_semantics", f"one of {SEMANTICS}",
             self.biwkv_semantics)
        if self.lmbda is None:
            table = LAMBDAS if self.metric == "mse" else LAMBDAS_MS_SSIM
            need(self.quality in table, "quality",
                 f"one of {sorted(table)} (or give lmbda)", self.quality)
        else:
            need(isinstance(self.lmbda, (int, float)) and self.lmbda > 0, "lmbda",
                 "a positive number", self.lmbda)
        for name in ("steps", "batch_size", "crop", "val_every", "log_every"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name,
                 "a positive int", getattr(self, name))
        need(is_int(self.seed) and self.seed >= 0, "seed", "a non-negative int", self.seed)
        need(is_int(self.workers) and self.workers >= 0, "workers", "a non-negative int",
             self.workers)
        for name in ("lr", "aux_lr", "clip_max_norm"):
            need(isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0,
                 name, "a positive number", getattr(self, name))
        need(isinstance(self.lr_gamma, (int, float)) and 0 < self.lr_gamma <= 1, "lr_gamma",
             "a number in (0, 1]", self.lr_gamma)
        if self.milestones is not None:
            ms = tuple(self.milestones)
            need(all(is_int(m) and m >= 1 for m in ms) and list(ms) == sorted(set(ms)),
                 "milestones", "increasing positive step numbers", self.milestones)
            self.milestones = ms
        if self.val_crop is not None:
            need(is_int(self.val_crop) and self.val_crop >= 1, "val_crop",
                 "None (whole images) or a positive int", self.val_crop)
        if self.metric == "ms-ssim":
            need(self.crop > 160, "crop", "> 160 for metric 'ms-ssim' (5-scale MS-SSIM with "
                 "an 11x11 window)", self.crop)
            if self.val_crop is not None:
                need(self.val_crop > 160, "val_crop", "> 160 for metric 'ms-ssim'",
                     self.val_crop)

    @property
    def lambda_(self) -> float:
        """The rate-distortion trade-off in use: ``lmbda``, or the table entry of ``quality``."""
        if self.lmbda is not None:
            return float(self.lmbda)
        return (LAMBDAS if self.metric == "mse" else LAMBDAS_MS_SSIM)[self.quality]

    @property
    def resolved_milestones(self) -> tuple[int, ...]:
        if self.milestones is not None:
            return self.milestones
        return (max(1, round(0.9 * self.steps)),)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.resolved_milestones)
        d["lambda"] = self.lambda_
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns (checkpoint paths are None on ranks other than 0)."""

    out_dir: Path
    step: int
    interrupted: bool
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    train: dict = field(default_factory=dict)  # averages since the last log line
    val: dict | None = None  # the last validation
    best_val: dict | None = None
    elapsed_s: float = 0.0  # training time (validation and checkpoints excluded)
    parameter_digest: str = ""  # SHA-256 of the parameters (equal on all ranks)
