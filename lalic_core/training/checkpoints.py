"""Training checkpoints: atomic writes and the random-number-generator states.

A training checkpoint is a dict saved with ``torch.save`` and readable with
``torch.load(weights_only=True)``:

    format          "lalic-train-1"
    state_dict      the bare model's state dict (no "module." prefix) with the coder tables
                    computed for these weights (lalic_core.coder_tables), under the key that
                    lalic_core.models.factory.load_checkpoint and `lalic compress --model FILE`
                    read, so a training checkpoint is also a model checkpoint
    optimizer, aux_optimizer, scheduler   their state dicts
    step            optimizer steps done
    rng             one entry per data-parallel rank: {"torch", "cuda", "numpy", "python"}
    config          the run's TrainConfig as a dict (milestones and lambda resolved)
    best_val        {"loss", "bpp", "psnr", ..., "step"} of the best validation so far
    elapsed_s       training seconds so far (validation and checkpointing excluded)
    meta            versions, git commit, world size, device

Files are written to a temporary name in the same folder and moved over the old file with
``os.replace``, so a crash, a full disk or Ctrl-C while saving never leaves a broken file
under the checkpoint's name.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from lalic_core.atomic import atomic_path

__all__ = ["FORMAT", "capture_rng", "load_training_checkpoint", "restore_rng", "save_atomic"]

FORMAT = "lalic-train-1"


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``
    (:func:`lalic_core.atomic.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by the trainer (onto the CPU, ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or not a training checkpoint (e.g. weights only).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else
                      type(exc).__name__)
        raise ValueError(f"resume: cannot read {path} as a PyTorch checkpoint ({reason})") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is not a training checkpoint of `lalic train` (no "
                         f"format {FORMAT!r}); to start from its weights use init (--init)")
    return ckpt


def capture_rng(device: torch.device | None = None) -> dict:
    """The states of torch's CPU (and current CUDA) generator, numpy's and python's."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def restore_rng(state: dict, device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
