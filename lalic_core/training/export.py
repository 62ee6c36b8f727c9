"""Zoo entries from training checkpoints: :func:`export` turns a ``lalic train`` checkpoint
into the two files of a :mod:`lalic_core.zoo` entry (weights and JSON record), measuring the
shipped (possibly float16) weights on validation images."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from lalic_core.models.factory import build_model
from lalic_core.models.state_dict import load_state_dict_strict
from lalic_core.training.checkpoints import load_training_checkpoint, save_atomic
from lalic_core.training.data import load_validation_images
from lalic_core.training.loss import RateDistortionLoss
from lalic_core.training.trainer import evaluate
from lalic_core.zoo import RECORD_FORMAT, packaged_dir

__all__ = ["HALF_TOLERANCE", "export"]

#: Buffers CompressAI fills in update(); stored empty.
CODER_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")
#: export(half="auto") keeps float16 when validation moves by at most this much.
HALF_TOLERANCE = {"bpp_rel": 0.005, "psnr_db": 0.02}


def _storable(state: dict, parameters: set[str], half: bool) -> dict:
    """Parameters to float16 (``half``), other floats to float16 only when exact, coder
    tables emptied."""
    out, converted = {}, {}  # shared tensors (LALIC's h_a/h_s appear twice) stay shared
    for k, v in state.items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape), tuple(v.stride()))
        if v.numel() and key in converted:
            out[k] = converted[key]
            continue
        w = v.detach().cpu()
        if k.rsplit(".", 1)[-1] in CODER_TABLES:
            w = w.new_empty(0)
        elif half and w.is_floating_point() and w.dtype == torch.float32:
            h = w.half()
            if k in parameters:
                if not torch.isfinite(h).all():
                    raise ValueError(f"export: {k} overflows float16; use half=False")
                w = h
            elif torch.equal(h.float(), w):
                w = h
        out[k] = converted[key] = w.clone()
    return out


def export(checkpoint: str | os.PathLike, name: str, quality: int, *,
           weights_dir: str | os.PathLike | None = None, val_dir: str | os.PathLike | None = None,
           half: bool | str = "auto", description: str = "") -> Path:
    """Make a zoo entry ``name:quality`` from a ``lalic train`` checkpoint (``best.pt`` or
    ``last.pt``); returns the record's path.

    ``weights_dir``: target folder (default: the package's ``zoo/weights``). ``val_dir``:
    images to measure the shipped weights on (whole images, as training validates; default the
    run's own val_dir). ``half``: True stores parameters in float16, False in float32,
    "auto" float16 when validation bpp and PSNR move by at most :data:`HALF_TOLERANCE`.
    """
    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ValueError(f"export: `name` must be a non-empty string without ':' or '/', got "
                         f"{name!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or quality < 0:
        raise ValueError(f"export: `quality` must be an int >= 0, got {quality!r}")
    if half not in (True, False, "auto"):
        raise ValueError(f"export: `half` must be True, False or 'auto', got {half!r}")
    ckpt = load_training_checkpoint(checkpoint)
    cfg, meta = ckpt["config"], ckpt["meta"]
    if cfg.get("biwkv_semantics", "formula") != "formula":
        raise ValueError(f"export: {checkpoint} was trained with biwkv_semantics="
                         f"{cfg['biwkv_semantics']!r}; zoo entries compute the BiWKV formula "
                         "(use the checkpoint file itself with --model)")
    model = build_model(cfg["model"])
    load_state_dict_strict(model, ckpt["state_dict"], source=str(checkpoint))
    model.eval()
    parameters = {k for k, _ in model.named_parameters()}
    val_dir = val_dir if val_dir is not None else cfg.get("val_dir")
    images = load_validation_images(val_dir) if val_dir else []
    criterion = RateDistortionLoss(cfg["lambda"], cfg["metric"])

    def measure(state):
        if not images:
            return None
        probe = build_model(cfg["model"])
        load_state_dict_strict(probe, {k: v.float() if v.dtype == torch.float16 else v
                                       for k, v in state.items()})
        sums = evaluate(probe.eval(), images, criterion)
        n = sums.pop("count")
        return {k: round(v / n, 6) for k, v in sums.items()
                if k != "ms_ssim" or cfg["metric"] == "ms-ssim"} | {"images": int(n)}

    full = _storable(model.state_dict(), parameters, half=False)
    val_full = measure(full)
    stored, dtype = full, "float32"
    if half:
        rounded = _storable(model.state_dict(), parameters, half=True)
        val_half = measure(rounded)
        close = val_full is None or (
            abs(val_half["bpp"] - val_full["bpp"]) <= HALF_TOLERANCE["bpp_rel"] * val_full["bpp"]
            and abs(val_half["psnr"] - val_full["psnr"]) <= HALF_TOLERANCE["psnr_db"])
        if half is True or close:
            stored, dtype = rounded, "float16"
    val_stored = val_full if dtype == "float32" else val_half

    folder = Path(weights_dir) if weights_dir is not None else Path(str(packaged_dir()))
    stem = f"{name}-q{quality}"
    weights_path = save_atomic({"format": RECORD_FORMAT, "state_dict": stored},
                               folder / f"{stem}.pt")
    data = weights_path.read_bytes()
    record = {
        "format": RECORD_FORMAT,
        "name": name,
        "quality": quality,
        "description": description,
        "model": cfg["model"],
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "weights": weights_path.name,
        "weights_bytes": len(data),
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "storage_dtype": dtype,
        "training": {
            "lambda": cfg["lambda"],
            "metric": cfg["metric"],
            "quality_table": cfg["quality"] if cfg.get("lmbda") is None else None,
            "steps": ckpt["step"],
            "crop": cfg["crop"],
            "batch_size": cfg["batch_size"],
            "world_size": meta["world_size"],
            "lr": cfg["lr"],
            "aux_lr": cfg["aux_lr"],
            "milestones": cfg["milestones"],
            "lr_gamma": cfg["lr_gamma"],
            "clip_max_norm": cfg["clip_max_norm"],
            "seed": cfg["seed"],
            "init": cfg.get("init"),
            "train_dir": cfg["train_dir"],
            "train_images": meta["train_images"],
            "val_dir": cfg["val_dir"],
            "time_s": round(ckpt["elapsed_s"], 1),
            "device": meta["device"],
            "threads": meta["threads"],
            "torch": meta["torch"],
            "compressai": meta["compressai"],
            "git_commit": meta["git_commit"],
            "best_val_during_training": ckpt["best_val"],
        },
        "validation": {
            "what": "whole images zero-padded to multiples of 64; bpp estimated from the "
                    "likelihoods (eval mode), PSNR on [0, 1] RGB",
            "val_dir": str(val_dir) if val_dir else None,
            "shipped": val_stored,
            "float32": val_full,
        },
        "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
        "checkpoint": f"{Path(checkpoint).name} (step {ckpt['step']})",
    }
    record_path = folder / f"{stem}.json"
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path)
    return record_path
