"""The zoo: small trained models shipped inside the package, loadable offline.

    from lalic_core import zoo
    zoo.available()                  # [("lalic-tiny", 1), ("lalic-tiny", 2), ...]
    model = zoo.load("lalic-tiny", 3)  # eval mode, entropy-coder tables built: compress() away
    zoo.info("lalic-tiny", 3)        # how it was trained (JSON record)

On the command line a zoo entry is ``NAME:QUALITY``: ``lalic compress in.png out.lalic
--model lalic-tiny:3``.

Each entry is two files in ``lalic_core/zoo/weights/`` (package data): ``NAME-qQUALITY.json``,
the record (model spec for :func:`lalic_core.training.trainer.build_model`, lambda, steps,
crop, batch, training time, validation bpp/PSNR, git commit, ...), and ``NAME-qQUALITY.pt``,
the weights (``torch.load(weights_only=True)``; trainable parameters stored in float16, other
tensors in float32 unless float16 holds them exactly; the entropy-coder tables are not stored
but rebuilt by ``update(force=True)`` on load, as CompressAI's evaluation does). The record's
validation numbers are measured with the stored (rounded) weights, i.e. the model that
:func:`load` returns.

More folders are searched before the packaged one when listed in the environment variable
``LALIC_ZOO_PATH`` (``os.pathsep``-separated), or exclusively with ``weights_dir=``.
:func:`export` turns a training checkpoint of ``lalic train`` into a zoo entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["ENV_VAR", "available", "export", "info", "load"]

ENV_VAR = "LALIC_ZOO_PATH"
RECORD_FORMAT = "lalic-zoo-1"
#: Buffers CompressAI fills in update(); stored empty.
_CODER_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")
#: export(half="auto") keeps float16 when validation moves by at most this much.
HALF_TOLERANCE = {"bpp_rel": 0.005, "psnr_db": 0.02}


def packaged_dir() -> Traversable:
    """The zoo folder inside the installed package."""
    return resources.files("lalic_core.zoo") / "weights"


def _search_dirs(weights_dir) -> list:
    if weights_dir is not None:
        return [Path(weights_dir)]
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [*extra, packaged_dir()]


def _entries(weights_dir=None) -> dict[tuple[str, int], tuple[dict, Traversable]]:
    """(name, quality) -> (record, weights file); the first folder that has an entry wins."""
    found: dict[tuple[str, int], tuple[dict, Traversable]] = {}
    for folder in _search_dirs(weights_dir):
        if not folder.is_dir():
            continue
        for item in sorted(folder.iterdir(), key=lambda t: t.name):
            if not item.name.endswith(".json"):
                continue
            try:
                record = json.loads(item.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
                continue
            key = (str(record["name"]), int(record["quality"]))
            weights = folder / record["weights"]
            if key not in found and weights.is_file():
                found[key] = (record, weights)
    return found


def available(weights_dir: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """The zoo's (name, quality) pairs, sorted."""
    return sorted(_entries(weights_dir))


def _lookup(name: str, quality: int, weights_dir) -> tuple[dict, Traversable]:
    entries = _entries(weights_dir)
    if isinstance(quality, bool) or not isinstance(quality, int):
        raise TypeError(f"zoo: `quality` must be an int, got {quality!r}")
    if (name, quality) not in entries:
        listing = ", ".join(f"{n}:{q}" for n, q in sorted(entries)) or "none installed"
        raise ValueError(f"zoo: no entry {name!r} with quality {quality} (available: "
                         f"{listing})")
    return entries[(name, quality)]


def info(name: str, quality: int, weights_dir: str | os.PathLike | None = None) -> dict:
    """The training record of a zoo entry (a copy of its JSON)."""
    record, _ = _lookup(name, quality, weights_dir)
    return json.loads(json.dumps(record))


def load(name: str, quality: int, *, weights_dir: str | os.PathLike | None = None,
         device: str = "cpu"):
    """The zoo model ``name`` at ``quality``, in eval mode with ``update(force=True)`` done
    (ready for ``compress``/``decompress``). Raises ValueError for unknown entries and for
    weights that do not match their record (e.g. a Git LFS pointer instead of the file)."""
    import torch

    from lalic_core.checkpoint import load_state_dict_strict
    from lalic_core.training.trainer import build_model

    record, weights = _lookup(name, quality, weights_dir)
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["weights_sha256"]:
        raise ValueError(f"zoo: {weights.name} does not match its record (sha256 {digest[:12]}, "
                         f"expected {record['weights_sha256'][:12]}); the file is damaged or "
                         "not fetched (Git LFS?)")
    with resources.as_file(weights) as path:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v.float() if v.dtype == torch.float16 else v
             for k, v in blob["state_dict"].items()}
    model = build_model(record["model"])
    load_state_dict_strict(model, state, source=f"zoo {name}:{quality}")
    model = model.to(device).eval()
    model.update(force=True)
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def _storable(state: dict, parameters: set[str], half: bool) -> dict:
    """Parameters to float16 (``half``), other floats to float16 only when exact, coder
    tables emptied."""
    import torch

    out, converted = {}, {}  # shared tensors (LALIC's h_a/h_s appear twice) stay shared
    for k, v in state.items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape), tuple(v.stride()))
        if v.numel() and key in converted:
            out[k] = converted[key]
            continue
        w = v.detach().cpu()
        if k.rsplit(".", 1)[-1] in _CODER_TABLES:
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
    import torch

    from lalic_core.checkpoint import load_state_dict_strict
    from lalic_core.training.checkpoints import load_training_checkpoint, save_atomic
    from lalic_core.training.data import load_validation_images
    from lalic_core.training.trainer import RateDistortionLoss, build_model, evaluate

    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ValueError(f"export: `name` must be a non-empty string without ':' or '/', got "
                         f"{name!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or quality < 0:
        raise ValueError(f"export: `quality` must be an int >= 0, got {quality!r}")
    if half not in (True, False, "auto"):
        raise ValueError(f"export: `half` must be True, False or 'auto', got {half!r}")
    ckpt = load_training_checkpoint(checkpoint)
    cfg, meta = ckpt["config"], ckpt["meta"]
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

    folder = Path(weights_dir) if weights_dir is not None else Path(__file__).parent / "weights"
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
