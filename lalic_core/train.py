"""Training LALIC (or any CompressAI-style model) on CPUs or GPUs: ``lalic train``.

    lalic train TRAIN_DIR --val-dir VAL_DIR --model tiny --quality 3 --steps 2000 \\
        --crop 128 --batch-size 8 --out-dir runs/tiny-q3
    lalic train ... --resume                   # continue runs/tiny-q3/last.pt (exactly)
    torchrun --nproc-per-node 4 -m lalic_core.train TRAIN_DIR ...   # data-parallel (DDP)

From Python: ``lalic_core.train.train(TrainConfig(train_dir=..., model="tiny", ...))``.
The machinery is in :mod:`lalic_core.training` (config, args, trainer, loss, data, export).

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

from collections.abc import Sequence

from lalic_core.training.args import add_train_subcommand, config_from_args, run_train_cli
from lalic_core.training.config import (
    LAMBDAS,
    LAMBDAS_MS_SSIM,
    METRICS,
    TrainConfig,
    TrainResult,
)
from lalic_core.training.trainer import train

__all__ = [
    "LAMBDAS",
    "LAMBDAS_MS_SSIM",
    "METRICS",
    "TrainConfig",
    "TrainResult",
    "add_train_subcommand",
    "config_from_args",
    "main",
    "run_train_cli",
    "train",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lalic_core.train ...`` (and ``torchrun -m lalic_core.train ...``)."""
    import sys

    from lalic_core.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["train", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
