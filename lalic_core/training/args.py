"""The ``lalic train`` command line: arguments -> :class:`~lalic_core.training.config.
TrainConfig` -> :func:`~lalic_core.training.trainer.train`."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from lalic_core.training.config import LAMBDAS, LAMBDAS_MS_SSIM, METRICS, TrainConfig

__all__ = ["add_train_subcommand", "config_from_args", "run_train_cli"]


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
    p.add_argument("--biwkv-semantics", choices=("formula", "official32", "official64"),
                   default=d.biwkv_semantics,
                   help="what BiWKV computes: the paper's formula (default) or the official "
                        "chunked CUDA kernels' semantics (stored in the checkpoints)")
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
    from lalic_core.training.trainer import train  # the engine only when training runs

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
