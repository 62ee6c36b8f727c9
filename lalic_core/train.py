"""Training LALIC (or any CompressAI-style model) on CPUs or GPUs: ``lalic train``.

    lalic train TRAIN_DIR --val-dir VAL_DIR --model tiny --quality 3 --steps 2000 \\
        --crop 128 --batch-size 8 --out-dir runs/tiny-q3
    lalic train ... --resume                   # continue runs/tiny-q3/last.pt (exactly)
    torchrun --nproc-per-node 4 -m lalic_core.train TRAIN_DIR ...   # data-parallel (DDP)

From Python: ``lalic_core.train.train(TrainConfig(train_dir=..., model="tiny", ...))``.

What it does (the official LALIC recipe, in steps rather than epochs):

- loss ``lambda * 255^2 * MSE + bpp`` (CompressAI's convention; ``metric="ms-ssim"``:
  ``lambda * (1 - MS-SSIM) + bpp``), bpp from the likelihoods of y and z;
- Adam (lr 1e-4) on all parameters except the entropy bottleneck's ``.quantiles``, which a
  second Adam (lr 1e-3) fits to CompressAI's auxiliary loss; gradient norm clipped at 1.0;
  the main learning rate drops 10x at the milestones (default: at 90% of the steps, as the
  paper's drop at epoch 36 of 40);
- named qualities q1..q6 = the official lambdas :data:`LAMBDAS`;
- random ``crop`` x ``crop`` crops from any folder of PNG/JPEG images (recursive); the data
  order is a pure function of the seed and the step (:mod:`lalic_core.training.data`);
- validation every ``val_every`` steps on a second folder: whole images zero-padded (centred)
  to multiples of 64 with bpp counted over the original pixels, or centre crops with
  ``val_crop``; bpp is the likelihood estimate of eval mode (no entropy coding);
- a tqdm bar with loss, bpp and PSNR; ``log.csv`` (and TensorBoard when installed) in
  ``out_dir``; checkpoints ``last.pt`` (every validation and at the end) and ``best.pt``
  (lowest validation loss), written atomically; ``resume`` restores model, both optimizers,
  scheduler, step, the RNG states of torch, numpy and python (per rank) and the data
  position, so an interrupted run ends with the same weights as an uninterrupted one;
- Ctrl-C (SIGINT) or SIGTERM: the current step finishes, ``last.pt`` is saved, and training
  stops cleanly (a second Ctrl-C aborts at once);
- data-parallel under ``torchrun``: DistributedDataParallel (NCCL on GPUs, gloo on CPUs),
  every rank draws its own crops of the same stream; the entropy bottleneck's quantiles are
  kept out of DDP (their auxiliary loss is computed outside ``forward``) and their gradients
  averaged by hand, so the replicas stay identical (checked at every validation); only rank 0
  writes files. ``batch_size`` is per process.

Models: a LALIC preset name (``"tiny"``, ``"small"``, ``"paper"``, ...) or ``"module:factory"``
naming a function that returns a CompressAI-style model (``forward(x) -> {"x_hat",
"likelihoods"}``, ``aux_loss()``), e.g. the baseline codecs of the controlled comparison.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LAMBDAS",
    "LAMBDAS_MS_SSIM",
    "TrainConfig",
    "TrainResult",
    "add_train_subcommand",
    "main",
    "run_train_cli",
    "train",
]

#: The official LALIC lambdas (MSE models), quality 1..6.
LAMBDAS: dict[int, float] = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483}
#: CompressAI's lambdas for MS-SSIM models, quality 1..6.
LAMBDAS_MS_SSIM: dict[int, float] = {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50}
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


def train(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None
          ) -> TrainResult:
    """Run (or resume) a training run; see the module docstring.

    ``on_step(step, metrics)`` is called after every optimizer step (on every rank) with the
    step's loss, bpp, mse, psnr, aux_loss and lr.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: expected a TrainConfig, got {type(config).__name__}")
    from lalic_core.training.trainer import Trainer

    return Trainer(config, on_step=on_step).run()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(train_dir="-")
    p.add_argument("train_dir", help="folder of training images (PNG/JPEG, recursive)")
    p.add_argument("--val-dir", default=None, help="folder of validation images (never Kodak)")
    p.add_argument("--out-dir", "-o", default=d.out_dir,
                   help=f"run folder: checkpoints, log.csv (default {d.out_dir})")
    p.add_argument("--model", "-m", default=d.model,
                   help="LALIC preset (tiny, small, paper, ...) or module:factory "
                        f"(default {d.model})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quality", "-q", type=int, default=d.quality,
                   help="official lambda q1..q6 = " + ", ".join(map(str, LAMBDAS.values()))
                        + f" (MS-SSIM: {', '.join(map(str, LAMBDAS_MS_SSIM.values()))}); "
                        f"default {d.quality}")
    g.add_argument("--lambda", dest="lmbda", type=float, default=None, help="explicit lambda")
    p.add_argument("--metric", choices=METRICS, default=d.metric, help="distortion (default mse)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps ({d.steps})")
    p.add_argument("--batch-size", "-b", type=int, default=d.batch_size,
                   help=f"crops per step and process ({d.batch_size})")
    p.add_argument("--crop", type=int, default=d.crop,
                   help=f"training crop side, a multiple of 64 ({d.crop})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr})")
    p.add_argument("--aux-lr", type=float, default=d.aux_lr,
                   help=f"learning rate of the auxiliary (quantiles) Adam ({d.aux_lr})")
    p.add_argument("--milestones", type=int, nargs="+", default=None,
                   help="steps where the lr is multiplied by --lr-gamma (default: 90%% of "
                        "--steps)")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma, help=f"({d.lr_gamma})")
    p.add_argument("--clip-max-norm", type=float, default=d.clip_max_norm,
                   help=f"gradient-norm clipping ({d.clip_max_norm})")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help=f"validate and save last.pt every N steps ({d.val_every})")
    p.add_argument("--val-crop", type=int, default=None,
                   help="validate on centre crops of this side (default: whole images, padded)")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help=f"log.csv row every N steps ({d.log_every})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"({d.seed})")
    p.add_argument("--device", default=d.device,
                   help="auto (CUDA when available; cuda:LOCAL_RANK under torchrun), cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"DataLoader worker processes ({d.workers})")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="continue OUT_DIR/last.pt when it exists (no value), or CHECKPOINT")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start a new run from these weights (same model)")
    p.add_argument("--skip-small-images", action="store_true",
                   help="leave out training images smaller than the crop instead of failing")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard events even when tensorboard is installed")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    p.add_argument("--ddp-find-unused-parameters", action="store_true",
                   help="for models with parameters unused in some forward passes")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if values.get("lmbda") is not None:
        values["quality"] = None
    if values.get("milestones") is not None:
        values["milestones"] = tuple(values["milestones"])
    return TrainConfig(**values)


def run_train_cli(args: argparse.Namespace) -> int:
    """``lalic train``: returns 0 when training finished, 130 when it was interrupted (a
    resumable ``last.pt`` was saved)."""
    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = train(config_from_args(args))
    return 130 if result.interrupted else 0


def add_train_subcommand(subparsers, parents: Sequence[argparse.ArgumentParser] = ()
                         ) -> argparse.ArgumentParser:
    """Register ``train`` on an argparse sub-parser collection (``lalic`` uses this)."""
    p = subparsers.add_parser(
        "train", parents=list(parents), help="train a model (runs under torchrun too)",
        description="Train LALIC or any CompressAI-style model with the official recipe; "
                    "see `python -c 'import lalic_core.train as t; help(t)'`.")
    _add_arguments(p)
    p.set_defaults(func=run_train_cli)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lalic_core.train ...`` (and ``torchrun -m lalic_core.train ...``)."""
    import sys

    from lalic_core.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["train", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
