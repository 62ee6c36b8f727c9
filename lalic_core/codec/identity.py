"""Which model made (and can decode) a ``.lalic`` file: :class:`ModelIdentity` (preset, zoo
entry, checkpoint, custom), :class:`CodecModel` (a model ready for coding with its identity
and weights fingerprint) and :func:`resolve_model`, the one way from a name (preset,
``NAME:QUALITY`` or checkpoint path) to a model ready for coding.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from lalic_core import zoo
from lalic_core.errors import LalicWarning, ModelMismatchError
from lalic_core.models.factory import build_model, load_checkpoint, preset_names

__all__ = [
    "CHECKPOINT_HASH_BYTES",
    "FINGERPRINT_BYTES",
    "IDENTITY_KINDS",
    "RANDOM_INIT_SEED",
    "CodecModel",
    "ModelIdentity",
    "as_codec_model",
    "file_sha256",
    "model_fingerprint",
    "model_for_file",
    "resolve_model",
]

FINGERPRINT_BYTES = 4
CHECKPOINT_HASH_BYTES = 8
RANDOM_INIT_SEED = 0  # presets without weights are built under this torch seed
#: Identity kinds, in the order of their code in the file header.
IDENTITY_KINDS = ("preset", "zoo", "checkpoint", "custom")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a file was made with: a preset, a zoo entry, a checkpoint file or a model
    given programmatically ("custom", which needs the model again to decode)."""

    kind: str
    name: str = ""
    quality: int | None = None
    checkpoint_sha256: bytes | None = None  # first CHECKPOINT_HASH_BYTES bytes

    def __post_init__(self) -> None:
        if self.kind not in IDENTITY_KINDS:
            raise ValueError(f"kind must be one of {IDENTITY_KINDS}, got {self.kind!r}")
        if self.kind == "checkpoint":
            if self.checkpoint_sha256 is None or len(self.checkpoint_sha256) != CHECKPOINT_HASH_BYTES:
                raise ValueError(f"a checkpoint identity needs {CHECKPOINT_HASH_BYTES} hash bytes")
        elif not self.name:
            raise ValueError(f"a {self.kind} identity needs a name")
        if self.kind == "zoo" and (self.quality is None or self.quality < 0):
            raise ValueError("a zoo identity needs a quality >= 0")

    @property
    def spec(self) -> str:
        """How to ask for this model with ``--model`` (checkpoints: by path only)."""
        if self.kind == "zoo":
            return f"{self.name}:{self.quality}"
        if self.kind == "checkpoint":
            return f"checkpoint sha256:{self.checkpoint_sha256.hex()}"
        return self.name

    def describe(self) -> str:
        if self.kind == "preset":
            return f"preset {self.name!r} (random-initialised weights, seed {RANDOM_INIT_SEED})"
        if self.kind == "zoo":
            return f"zoo model {self.name!r}, quality {self.quality}"
        if self.kind == "checkpoint":
            return f"checkpoint with SHA-256 {self.checkpoint_sha256.hex()}..."
        return f"custom model {self.name!r}"


class CodecModel:
    """A CompressAI-style model (``compress``/``decompress``, ``update()`` done) with its
    identity; the weights fingerprint is computed once, so the model must not change after."""

    def __init__(self, model: nn.Module, identity: ModelIdentity, *, random_init: bool = False):
        for method in ("compress", "decompress"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model must have a {method}() method (CompressAI convention)")
        _apply_masks(model)
        self.model = model
        self.identity = identity
        self.random_init = random_init

    @cached_property
    def fingerprint(self) -> bytes:
        return model_fingerprint(self.model)

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.model.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters (float32 unless converted, e.g. double())."""
        floats = (p.dtype for p in self.model.parameters() if p.is_floating_point())
        return next(floats, torch.float32)

    @property
    def downsampling_factor(self) -> int:
        """The smallest image-size multiple the model codes exactly (64 when not declared)."""
        factor = getattr(self.model, "downsampling_factor", 64)
        return int(factor) if isinstance(factor, int) and factor > 0 else 64

    def __repr__(self) -> str:
        return f"CodecModel({type(self.model).__name__}, {self.identity.describe()})"


def _apply_masks(model: nn.Module) -> None:
    """Zero the masked weights of CompressAI's masked (checkerboard) convolutions, as their
    first forward pass does in place, so the weights and their fingerprint do not change when
    a freshly initialised model is first used."""
    from compressai.layers import MaskedConv2d

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MaskedConv2d):
                module.weight.mul_(module.mask)


def as_codec_model(model: CodecModel | nn.Module, name: str | None = None) -> CodecModel:
    """Wrap a bare model as a "custom" :class:`CodecModel` (decoding needs it again)."""
    if isinstance(model, CodecModel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a CodecModel or an nn.Module, got {type(model).__name__}")
    return CodecModel(model, ModelIdentity("custom", name or type(model).__name__))


def model_fingerprint(model: nn.Module) -> bytes:
    """First 4 bytes of the SHA-256 of ``model.state_dict()`` (names, dtypes, shapes, values).

    It covers the entropy coder's CDF tables too, so two models that would decode a bitstream
    differently (other weights, or CDFs recomputed differently) never share a fingerprint.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tensor.numel()};".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.digest()[:FINGERPRINT_BYTES]


def file_sha256(path: str | os.PathLike) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _zoo_entries() -> list[tuple[str, int]]:
    return [(str(n), int(q)) for n, q in zoo.available()]


def _prepare(model: nn.Module, device: str | torch.device) -> nn.Module:
    model = model.to(device).eval()
    update = getattr(model, "update", None)
    if callable(update):
        update()  # no-op when the CDF tables are already there (checkpoints, zoo)
    return model


def _load_checkpoint(path: Path, device, biwkv_semantics: str | None = None) -> CodecModel:
    identity = ModelIdentity("checkpoint", checkpoint_sha256=file_sha256(path)[:CHECKPOINT_HASH_BYTES])
    model = load_checkpoint(path, biwkv_semantics=biwkv_semantics)
    return CodecModel(_prepare(model, device), identity)


def _with_semantics(codec_model: CodecModel, biwkv_semantics: str | None) -> CodecModel:
    if biwkv_semantics is None:
        return codec_model
    setter = getattr(codec_model.model, "set_biwkv_semantics", None)
    if callable(setter):
        setter(biwkv_semantics)
    elif biwkv_semantics != "formula":
        raise ValueError(f"biwkv_semantics={biwkv_semantics!r} needs a LALIC model, got "
                         f"{type(codec_model.model).__name__}")
    return codec_model


def _load_zoo(name: str, quality: int, device) -> CodecModel:
    entries = _zoo_entries()
    if (name, quality) not in entries:
        known = ", ".join(f"{n}:{q}" for n, q in entries) or "none installed"
        raise ValueError(f"model: unknown zoo entry '{name}:{quality}' (available: {known})")
    return CodecModel(_prepare(zoo.load(name, quality), device), ModelIdentity("zoo", name, quality))


def _load_preset(name: str, device, warn_random: bool) -> CodecModel:
    model = build_model(name, seed=RANDOM_INIT_SEED)
    if warn_random:
        warnings.warn(
            f"preset {name!r} has random-initialised weights (seed {RANDOM_INIT_SEED}): the "
            "bitstream is real but the reconstruction is meaningless; use a zoo entry "
            "NAME:QUALITY or a checkpoint file for real compression",
            LalicWarning, stacklevel=3,
        )
    return CodecModel(_prepare(model, device), ModelIdentity("preset", name), random_init=True)


def resolve_model(spec: str | os.PathLike, *, device: str | torch.device = "cpu",
                  warn_random: bool = True, biwkv_semantics: str | None = None) -> CodecModel:
    """The model named by ``spec``, ready for coding (eval mode, ``update()`` done):

    - a checkpoint file path -> :func:`lalic_core.models.factory.load_checkpoint`, identified by
      the file's SHA-256;
    - ``NAME:QUALITY`` -> the zoo entry (:func:`lalic_core.zoo.load`);
    - a preset name -> ``LALIC.from_preset(name)`` with random weights (seed 0, the same in
      every process, so files still decode), with a :class:`LalicWarning`.

    ``biwkv_semantics`` ("formula", "official32", "official64"): what the model's BiWKV
    computes; None keeps the default (zoo, presets: "formula"; checkpoints: what the file
    records, else "formula"; official checkpoints were trained with "official64").
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str) or not text:
        raise ValueError(f"model must be a preset, NAME:QUALITY or a checkpoint path, got {spec!r}")
    path = Path(text)
    if path.is_file():
        return _load_checkpoint(path, device, biwkv_semantics)
    if path.is_dir():
        raise ValueError(f"model: {text!r} is a folder, not a checkpoint file")
    name, sep, quality = text.rpartition(":")
    if sep and name and quality.isdigit():
        return _with_semantics(_load_zoo(name, int(quality), device), biwkv_semantics)
    presets = preset_names()
    if text in presets:
        return _with_semantics(_load_preset(text, device, warn_random), biwkv_semantics)
    if any(c in text for c in "/\\") or path.suffix in {".pt", ".pth", ".tar", ".ckpt"}:
        raise FileNotFoundError(f"checkpoint file not found: {text}")
    zoo_names = ", ".join(f"{n}:{q}" for n, q in _zoo_entries()) or "none installed"
    raise ValueError(
        f"model: {text!r} is not a checkpoint file, a zoo entry NAME:QUALITY ({zoo_names}) "
        f"or a preset ({', '.join(presets)})"
    )


def model_for_file(header, model: CodecModel | nn.Module | str | None,
                    device: str | torch.device) -> CodecModel:
    """The model that decodes ``header``: the given one (a model, a spec for
    :func:`resolve_model`), or, for None, the preset or zoo entry its identity names; raises
    :class:`ModelMismatchError` when its weights fingerprint is not the file's."""
    ident = header.identity
    if model is None:
        if ident.kind == "checkpoint":
            raise ModelMismatchError(
                f"this file was made with a checkpoint (SHA-256 {ident.checkpoint_sha256.hex()}...); "
                "pass that checkpoint file with --model"
            )
        if ident.kind == "custom":
            raise ModelMismatchError(
                f"this file was made with a custom model ({ident.name!r}); pass that model to decode it"
            )
        if ident.kind == "zoo":  # by kind, never by re-reading the name as a --model spec
            entries = _zoo_entries()
            if (ident.name, ident.quality) not in entries:
                known = ", ".join(f"{n}:{q}" for n, q in entries) or "none installed"
                raise ModelMismatchError(f"this file was made with {ident.describe()}, which is "
                                         f"not installed here (available: {known})")
            codec_model = _load_zoo(ident.name, ident.quality, device)
        elif ident.name in preset_names():
            codec_model = _load_preset(ident.name, device, warn_random=False)
        else:
            raise ModelMismatchError(f"this file names an unknown preset {ident.name!r} "
                                     f"(known: {', '.join(preset_names())})")
    elif isinstance(model, (str, os.PathLike)):
        codec_model = resolve_model(model, device=device, warn_random=False)
    else:
        codec_model = as_codec_model(model)

    given = codec_model.identity
    if ident.kind == "checkpoint" and given.kind == "checkpoint" \
            and given.checkpoint_sha256 != ident.checkpoint_sha256:
        raise ModelMismatchError(
            f"wrong checkpoint: the file was made with SHA-256 {ident.checkpoint_sha256.hex()}..., "
            f"the given checkpoint has {given.checkpoint_sha256.hex()}..."
        )
    if codec_model.fingerprint != header.fingerprint:
        raise ModelMismatchError(
            f"this file was made by another model: it needs {ident.describe()} with weights "
            f"fingerprint {header.fingerprint.hex()}, the model given is {given.describe()} with "
            f"fingerprint {codec_model.fingerprint.hex()}"
        )
    return codec_model
