"""LALIC Workbench core: Bi-RWKV linear-attention learned image compression.

Feng et al., "Linear Attention Modeling for Learned Image Compression" (LALIC), CVPR 2025,
arXiv 2502.05741.

Public names are imported lazily so that light modules (``lalic_core.data``,
``lalic_core.metrics``) load without compiling kernels:

    from lalic_core import biwkv, LALIC, load_checkpoint
"""
from __future__ import annotations

import importlib
import warnings

__version__ = "0.1.0"

# CompressAI (imported by the models, the entropy models and the codec) imports
# torch_geometric, whose import calls `torch.jit.script`, which torch >= 2.10 reports as a
# FutureWarning; notebooks showed it in every set-up cell. It is about third-party code the
# student cannot change, so exactly that message is hidden (category and text matched).
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

_EXPORTS = {
    "biwkv": "lalic_core.ops.biwkv",
    "LALIC": "lalic_core.models.lalic",
    "load_checkpoint": "lalic_core.models.factory",
    "bd_rate": "lalic_core.metrics",
    "psnr": "lalic_core.metrics",
    "ms_ssim": "lalic_core.metrics",
}
_SUBMODULES = {"analysis", "baseline_layers", "checkpoint", "codec", "complexity", "data", "errors", "images",
               "layers", "metrics", "models", "ops", "rd", "train", "training", "zoo",
               "entropy_models", "figures"}

__all__ = ["LALIC", "__version__", "bd_rate", "biwkv", "load_checkpoint", "ms_ssim", "psnr"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"lalic_core.{name}")
    raise AttributeError(f"module 'lalic_core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
