"""The zoo: small trained models shipped inside the package, loadable offline.

    from lalic_core import zoo
    zoo.available()                  # [("lalic-tiny", 1), ("lalic-tiny", 2), ...]
    model = zoo.load("lalic-tiny", 3)  # eval mode, entropy-coder tables built: compress() away
    zoo.info("lalic-tiny", 3)        # how it was trained (JSON record)

On the command line a zoo entry is ``NAME:QUALITY``: ``lalic compress in.png out.lalic
--model lalic-tiny:3``.

Each entry is two files in ``lalic_core/zoo/weights/`` (package data): ``NAME-qQUALITY.json``,
the record (model spec for :func:`lalic_core.models.factory.build_model`, lambda, steps,
crop, batch, training time, validation bpp/PSNR, git commit, ...), and ``NAME-qQUALITY.pt``,
the weights (``torch.load(weights_only=True)``; trainable parameters stored in float16, other
tensors in float32 unless float16 holds them exactly) with the entropy-coder tables, computed
once by :func:`lalic_core.coder_tables.update_coder_tables` from the stored weights and used
as they are on load, never recomputed, so every machine codes with the same tables (entries
without tables, exported before, get them computed on load the same way). The record's
validation numbers are measured with the stored (rounded) weights, i.e. the model that
:func:`load` returns.

More folders are searched before the packaged one when listed in the environment variable
``LALIC_ZOO_PATH`` (``os.pathsep``-separated), or exclusively with ``weights_dir=``.
:func:`lalic_core.training.export.export` turns a training checkpoint of ``lalic train``
into a zoo entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import torch

from lalic_core.coder_tables import update_coder_tables
from lalic_core.models.factory import build_model
from lalic_core.models.state_dict import load_state_dict_strict

__all__ = ["ENV_VAR", "RECORD_FORMAT", "available", "info", "load", "packaged_dir"]

ENV_VAR = "LALIC_ZOO_PATH"
RECORD_FORMAT = "lalic-zoo-1"


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
    """The zoo model ``name`` at ``quality``, in eval mode with its stored coder tables
    (ready for ``compress``/``decompress``). Raises ValueError for unknown entries and for
    weights that do not match their record (e.g. a Git LFS pointer instead of the file)."""
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
    update_coder_tables(model)  # only tables the file does not store
    model = model.to(device).eval()
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model
