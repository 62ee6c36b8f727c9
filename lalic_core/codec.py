"""The ``.lalic`` file format: real bitstreams of LALIC (and any CompressAI-style model).

A ``.lalic`` file holds what ``model.compress(x)`` returns for one image (the rANS strings,
one per (channel group, checkerboard pass) of y plus one for z in LALIC, Feng et al., CVPR
2025, arXiv 2502.05741; and the latent ``shape`` that ``model.decompress`` needs), together
with what is needed to decode it and to refuse what cannot be decoded: the model's identity,
a fingerprint of its weights, the original image size and the padding, and a checksum.

Byte layout (format version 1). ``varint`` is an unsigned LEB128 integer (7 bits per byte,
low bits first, high bit set on all but the last byte), so small numbers take one byte:

==========================  ==============  ===============================================
field                       size (bytes)    meaning
==========================  ==============  ===============================================
magic                       4               ``b"LALC"``
version                     1               format version (1)
identity kind               1               0 preset, 1 zoo, 2 checkpoint, 3 custom
identity                    variable        preset / custom: varint length + UTF-8 name;
                                            zoo: name as above + varint quality;
                                            checkpoint: first 8 bytes of the file's SHA-256
weights fingerprint         4               first 4 bytes of the SHA-256 of the model's
                                            state dict (names, dtypes, sizes, values,
                                            entropy-coder CDF tables included)
width, height               varint, varint  original image size in pixels
pad multiple                varint          m: the image was padded, centred, with zeros to
                                            ceil(H/m)*m x ceil(W/m)*m (top = pad_h // 2,
                                            left = pad_w // 2) and is cropped after decoding
shape tree                  variable        ``compress()["shape"]`` as a tree (see below),
                                            or only z's (h, w) for models with
                                            ``latent_shape`` (LALIC)
strings tree                variable        ``compress()["strings"]``: the nesting and the
                                            length of every string, not the bytes
payload                     sum of lengths  the strings' bytes, concatenated in tree order
crc32                       4               CRC-32 (zlib) of every byte before it,
                                            little-endian
==========================  ==============  ===============================================

Trees keep the exact Python structure that the model returned (nested lists, tuples,
``torch.Size``, dicts with string keys, ints, byte strings). Each node starts with one varint
``(n << 3) | tag``: tag 0 int (n is the value), 1 byte string (n is its length; the bytes are
in the payload), 2 a list holding exactly one byte string (CompressAI's batch of one; n is
the length), 3 list and 4 tuple (n children follow), 5 ``torch.Size`` (n plain varints
follow), 6 dict (n entries follow, each a varint length + UTF-8 key, then the value node),
7 UTF-8 string (n bytes follow).

Overhead. Magic, version, identity, fingerprint, sizes and CRC take 29 bytes for the preset
"paper" on a 768x512 image (a zoo name such as "lalic-tiny:3" adds 6). The latent shape
takes 3 bytes when the model can rebuild CompressAI's full shape dict from the z size
(``model.latent_shape``, as LALIC does; the file then stores just (h, w) of z), about 35
bytes otherwise. The strings' lengths take 1 byte plus 2 (strings < 2 KiB) or 3 bytes each.
Measured: 60 bytes in all for the "paper" preset (11 strings) on kodim23 (768x512), i.e.
0.0012 bpp; 47 bytes for "tiny" (9 strings) at 384x256. ``lalic info`` shows it per file.

Padding. LALIC downsamples by 16 in g_a and by 4 more in h_a, so it decodes exactly for any
height and width that are multiples of 64 (y is then a multiple of 4 in each direction,
z = y / 4 exactly, and h_s(z) matches y). The default pad multiple is therefore the model's
``downsampling_factor`` (64 for LALIC and ELIC), not the 128 of the official evaluation
script: padding beyond 64 only adds coded zeros. ``pad_multiple=128`` reproduces the
official protocol; for Kodak (768x512) both give no padding at all.

Decoding untrusted files. CompressAI's C++ rANS decoder does no bounds checking (a damaged
string makes it read past the end of its buffer). Decoding here replaces it, only while
decoding, with :func:`rans64_decode`, a bounds-checked re-implementation of the same Rans64
format (32-bit words, 16-bit precision, 4-bit bypass escapes) compiled with numba, which also
verifies that each string ends exactly in the coder's initial state: a damaged string is
reported as a :class:`LalicFormatError` instead of decoding to garbage or crashing.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PRESETS",
    "CodecModel",
    "LalicFile",
    "LalicFormatError",
    "LalicWarning",
    "ModelIdentity",
    "ModelMismatchError",
    "as_codec_model",
    "check_image_path",
    "checked_rans_decoding",
    "crop_center",
    "decode_file",
    "decode_image",
    "encode_file",
    "encode_image",
    "file_sha256",
    "model_fingerprint",
    "model_for_file",
    "pad_center",
    "padded_size",
    "rans64_decode",
    "read_header",
    "read_image",
    "resolve_model",
    "save_image",
    "step_labels",
    "to_uint8",
]

MAGIC = b"LALC"
FORMAT_VERSION = 1
CRC_BYTES = 4
FINGERPRINT_BYTES = 4
CHECKPOINT_HASH_BYTES = 8
MAX_SIDE = 65535  # largest width / height a file may declare
MAX_PAD_MULTIPLE = 4096
RANDOM_INIT_SEED = 0  # presets without weights are built under this torch seed

#: LALIC presets (``LALIC.from_preset``); the list the model exposes wins when it has one.
PRESETS = ("paper", "2222-conv", "2466-conv", "2466-convplus", "2466-rwkv", "tiny", "small")

_KINDS = ("preset", "zoo", "checkpoint", "custom")


class LalicFormatError(ValueError):
    """A ``.lalic`` file (or a bitstream inside it) is malformed, damaged or unsupported."""


class ModelMismatchError(LalicFormatError):
    """A ``.lalic`` file was made by a different model than the one asked to decode it."""


class LalicWarning(UserWarning):
    """Something was changed on the user's behalf (image converted, random weights, ...)."""


# --------------------------------------------------------------------------------------------
# Model identity and resolution
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelIdentity:
    """Which model a file was made with: a preset, a zoo entry, a checkpoint file or a model
    given programmatically ("custom", which needs the model again to decode)."""

    kind: str
    name: str = ""
    quality: int | None = None
    checkpoint_sha256: bytes | None = None  # first CHECKPOINT_HASH_BYTES bytes

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
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


def _preset_names() -> tuple[str, ...]:
    try:
        from lalic_core.models.lalic import LALIC
    except ImportError:
        return PRESETS
    names = getattr(LALIC, "PRESETS", None) or getattr(LALIC, "presets", None)
    if callable(names):
        names = names()
    return tuple(names) if names else PRESETS


def _zoo_entries() -> list[tuple[str, int]]:
    try:
        from lalic_core import zoo

        return [(str(n), int(q)) for n, q in zoo.available()]
    except Exception:  # noqa: BLE001 -- the zoo is optional: no entries when it cannot be listed
        return []


def _prepare(model: nn.Module, device: str | torch.device) -> nn.Module:
    model = model.to(device).eval()
    update = getattr(model, "update", None)
    if callable(update):
        update()  # no-op when the CDF tables are already there (checkpoints, zoo)
    return model


def _load_checkpoint(path: Path, device) -> CodecModel:
    from lalic_core.checkpoint import load_checkpoint

    identity = ModelIdentity("checkpoint", checkpoint_sha256=file_sha256(path)[:CHECKPOINT_HASH_BYTES])
    return CodecModel(_prepare(load_checkpoint(path), device), identity)


def _load_zoo(name: str, quality: int, device) -> CodecModel:
    entries = _zoo_entries()
    if (name, quality) not in entries:
        known = ", ".join(f"{n}:{q}" for n, q in entries) or "none installed"
        raise ValueError(f"model: unknown zoo entry '{name}:{quality}' (available: {known})")
    from lalic_core import zoo

    return CodecModel(_prepare(zoo.load(name, quality), device), ModelIdentity("zoo", name, quality))


def _load_preset(name: str, device, warn_random: bool) -> CodecModel:
    from lalic_core.models.lalic import LALIC

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = LALIC.from_preset(name)
    if warn_random:
        warnings.warn(
            f"preset {name!r} has random-initialised weights (seed {RANDOM_INIT_SEED}): the "
            "bitstream is real but the reconstruction is meaningless; use a zoo entry "
            "NAME:QUALITY or a checkpoint file for real compression",
            LalicWarning, stacklevel=3,
        )
    return CodecModel(_prepare(model, device), ModelIdentity("preset", name), random_init=True)


def resolve_model(spec: str | os.PathLike, *, device: str | torch.device = "cpu",
                  warn_random: bool = True) -> CodecModel:
    """The model named by ``spec``, ready for coding (eval mode, ``update()`` done):

    - a checkpoint file path -> :func:`lalic_core.checkpoint.load_checkpoint`, identified by
      the file's SHA-256;
    - ``NAME:QUALITY`` -> the zoo entry (:func:`lalic_core.zoo.load`);
    - a preset name -> ``LALIC.from_preset(name)`` with random weights (seed 0, the same in
      every process, so files still decode), with a :class:`LalicWarning`.
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str) or not text:
        raise ValueError(f"model must be a preset, NAME:QUALITY or a checkpoint path, got {spec!r}")
    path = Path(text)
    if path.is_file():
        return _load_checkpoint(path, device)
    if path.is_dir():
        raise ValueError(f"model: {text!r} is a folder, not a checkpoint file")
    name, sep, quality = text.rpartition(":")
    if sep and name and quality.isdigit():
        return _load_zoo(name, int(quality), device)
    presets = _preset_names()
    if text in presets:
        return _load_preset(text, device, warn_random)
    if any(c in text for c in "/\\") or path.suffix in {".pt", ".pth", ".tar", ".ckpt"}:
        raise FileNotFoundError(f"checkpoint file not found: {text}")
    zoo_names = ", ".join(f"{n}:{q}" for n, q in _zoo_entries()) or "none installed"
    raise ValueError(
        f"model: {text!r} is not a checkpoint file, a zoo entry NAME:QUALITY ({zoo_names}) "
        f"or a preset ({', '.join(presets)})"
    )


def model_for_file(header: LalicFile, model: CodecModel | nn.Module | str | None,
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
        elif ident.name in _preset_names():
            codec_model = _load_preset(ident.name, device, warn_random=False)
        else:
            raise ModelMismatchError(f"this file names an unknown preset {ident.name!r} "
                                     f"(known: {', '.join(_preset_names())})")
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


# --------------------------------------------------------------------------------------------
# Images: reading, conversion, padding
# --------------------------------------------------------------------------------------------
def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 25:
        return data[24]
    return None


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) float32 tensor in [0, 1] (8-bit RGB values).

    Grayscale, alpha, palette, CMYK and 16-bit images are converted to 8-bit RGB with a
    :class:`LalicWarning` saying what changed (16-bit values are rounded, v / 257; alpha is
    dropped; multi-frame images keep their first frame).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got a folder: {path}")
    data = path.read_bytes()

    if _png_bit_depth(data) == 16:
        from torchvision.io import ImageReadMode, decode_png

        try:
            wide = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                              mode=ImageReadMode.UNCHANGED)
        except RuntimeError as exc:
            raise ValueError(f"{path}: damaged 16-bit PNG ({exc})") from None
        channels = wide.shape[0]
        arr = torch.round(wide.to(torch.float32) / 257.0)  # 65535 -> 255 exactly
        notes = ["16-bit PNG rounded to 8 bits"]
        if channels in (2, 4):
            arr, notes = arr[: channels - 1], notes + ["alpha channel dropped"]
        if arr.shape[0] == 1:
            arr, notes = arr.expand(3, -1, -1), notes + ["grayscale copied to R, G, B"]
        warnings.warn(f"{path.name}: {', '.join(notes)}", LalicWarning, stacklevel=2)
        return (arr / 255.0).unsqueeze(0).contiguous()

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            notes = []
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"first of {im.n_frames} frames used")
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 257.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
                arr = np.clip(np.round(arr / scale), 0, 255)
                notes.append(f"{'16-bit ' if scale > 1 else ''}grayscale ({mode}) converted to 8-bit RGB")
                rgb = np.repeat(arr[..., None], 3, axis=2)
            else:
                if mode != "RGB":
                    what = {
                        "L": "grayscale copied to R, G, B", "1": "1-bit image converted to RGB",
                        "LA": "grayscale copied to R, G, B, alpha channel dropped",
                        "P": "palette image converted to RGB", "PA": "palette image converted "
                        "to RGB, alpha channel dropped", "RGBA": "alpha channel dropped",
                        "CMYK": "CMYK converted to RGB",
                    }.get(mode, f"mode {mode} converted to 8-bit RGB")
                    notes.append(what)
                rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    if notes:
        warnings.warn(f"{path.name}: {', '.join(notes)}", LalicWarning, stacklevel=2)
    return torch.from_numpy((rgb / 255.0).astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) or (3, H, W) floats in [0, 1] -> (H, W, 3) uint8 (rounded; NaN -> 0)."""
    x = x.detach().to("cpu", torch.float32)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (1, 3, H, W) or (3, H, W) image, got {tuple(x.shape)}")
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    return torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` if an image can be written there (a file name with a suffix PIL can write)."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output is a folder, expected a file name: {path}")
    if path.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"cannot write {path}: unknown image format {path.suffix!r} (use .png)")
    return path


def save_image(path: str | os.PathLike, x: torch.Tensor) -> None:
    """Write a (1, 3, H, W) image in [0, 1] as 8-bit RGB (format from the suffix; PNG is
    lossless)."""
    from PIL import Image

    path = check_image_path(path)
    Image.fromarray(to_uint8(x).numpy(), "RGB").save(path)


def _as_image_batch(image) -> torch.Tensor:
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, torch.Tensor):
        from PIL import Image

        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
        elif isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        else:
            raise TypeError(f"image must be a path, PIL image or tensor, got {type(image).__name__}")
    x = image
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"image must be (1, 3, H, W) or (3, H, W) RGB, got shape {tuple(image.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"image must be float in [0, 1] or uint8, got {x.dtype}")
    h, w = x.shape[-2:]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"image size {w}x{h} is outside 1..{MAX_SIDE}")
    if torch.isnan(x).any() or x.min() < 0 or x.max() > 1:
        raise ValueError("image values must lie in [0, 1]")
    return x.to(torch.float32)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    return (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)


def _padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that centres the image, as F.pad wants it."""
    hp, wp = padded_size(height, width, multiple)
    top, left = (hp - height) // 2, (wp - width) // 2
    return left, wp - width - left, top, hp - height - top


def pad_center(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) tensor, centred, to multiples of ``multiple`` (the official
    evaluation's convention: the extra row / column goes to the bottom / right)."""
    return F.pad(x, _padding(x.shape[-2], x.shape[-1], multiple), mode="constant", value=0.0)


def crop_center(x: torch.Tensor, height: int, width: int, multiple: int) -> torch.Tensor:
    """Undo :func:`pad_center` for an image whose original size was ``height`` x ``width``."""
    left, _, top, _ = _padding(height, width, multiple)
    return x[..., top: top + height, left: left + width]


# --------------------------------------------------------------------------------------------
# Serialisation: varints and trees
# --------------------------------------------------------------------------------------------
_T_INT, _T_BYTES, _T_ONE_BYTES, _T_LIST, _T_TUPLE, _T_SIZE, _T_DICT, _T_STR = range(8)
_MAX_TREE_DEPTH = 8
_MAX_TREE_NODES = 4096


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"cannot store the negative number {value}")
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def _put_tree(out: bytearray, payload: list[bytes], obj: Any, where: str) -> None:
    def head(n: int, tag: int) -> None:
        _put_varint(out, (n << 3) | tag)

    if isinstance(obj, bool) or obj is None:
        raise TypeError(f"model.compress() returned an unsupported {type(obj).__name__} in {where}")
    if isinstance(obj, int):
        head(obj, _T_INT)
    elif isinstance(obj, (bytes, bytearray)):
        head(len(obj), _T_BYTES)
        payload.append(bytes(obj))
    elif isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], (bytes, bytearray)):
        head(len(obj[0]), _T_ONE_BYTES)
        payload.append(bytes(obj[0]))
    elif isinstance(obj, torch.Size):
        head(len(obj), _T_SIZE)
        for v in obj:
            _put_varint(out, int(v))
    elif isinstance(obj, (list, tuple)):
        head(len(obj), _T_LIST if isinstance(obj, list) else _T_TUPLE)
        for item in obj:
            _put_tree(out, payload, item, where)
    elif isinstance(obj, dict):
        head(len(obj), _T_DICT)
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"model.compress() returned a dict key {key!r} in {where}")
            raw = key.encode()
            if len(raw) > 255:
                raise ValueError(f"dict key longer than 255 bytes in {where}: {key[:20]!r}...")
            _put_varint(out, len(raw))  # keys are always strings: no tag
            out += raw
            _put_tree(out, payload, value, where)
    elif isinstance(obj, str):
        raw = obj.encode()
        head(len(raw), _T_STR)
        out += raw
    else:
        raise TypeError(f"model.compress() returned an unsupported {type(obj).__name__} in {where}")


class _Reader:
    """Bounds-checked reading of a header; every failure is a :class:`LalicFormatError`."""

    def __init__(self, data: bytes, end: int):
        self.data, self.pos, self.end = data, 0, end
        self.nodes = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise LalicFormatError(f"corrupt .lalic header: {what} runs past the end of the header")
        chunk = self.data[self.pos: self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str, maximum: int = 1 << 40) -> int:
        value = shift = 0
        while True:
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise LalicFormatError(f"corrupt .lalic header: {what} is not a valid varint")
        if value > maximum:
            raise LalicFormatError(f"corrupt .lalic header: {what} = {value} exceeds {maximum}")
        return value

    def text(self, what: str) -> str:
        raw = self.take(self.varint(what, 255), what)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise LalicFormatError(f"corrupt .lalic header: {what} is not UTF-8") from None

    def tree(self, lengths: list[int], depth: int = 0) -> Any:
        self.nodes += 1
        if depth > _MAX_TREE_DEPTH or self.nodes > _MAX_TREE_NODES:
            raise LalicFormatError("corrupt .lalic header: stream structure too deep or too large")
        code = self.varint("structure")
        n, tag = code >> 3, code & 7
        if tag == _T_INT:
            return n
        if tag in (_T_BYTES, _T_ONE_BYTES):
            ref = _StringRef(len(lengths))
            lengths.append(n)
            return ref if tag == _T_BYTES else [ref]
        if tag == _T_STR:
            try:
                return self.take(n, "text").decode()
            except UnicodeDecodeError:
                raise LalicFormatError("corrupt .lalic header: text is not UTF-8") from None
        if n > self.end - self.pos:  # every child takes at least one byte
            raise LalicFormatError("corrupt .lalic header: stream structure runs past the header")
        if tag == _T_SIZE:
            return torch.Size([self.varint("shape", 1 << 31) for _ in range(n)])
        if tag in (_T_LIST, _T_TUPLE):
            items = [self.tree(lengths, depth + 1) for _ in range(n)]
            return items if tag == _T_LIST else tuple(items)
        result = {}
        for _ in range(n):
            key = self.text("key")
            result[key] = self.tree(lengths, depth + 1)
        return result


class _StringRef(int):
    """Index of a byte string in the payload, left in a tree by :meth:`_Reader.tree`."""


def _fill_strings(tree: Any, strings: list[bytes]) -> Any:
    """Replace the :class:`_StringRef` left in ``tree`` by the payload's byte strings."""
    if isinstance(tree, _StringRef):
        return strings[tree]
    if isinstance(tree, torch.Size):
        return tree
    if isinstance(tree, list):
        return [_fill_strings(t, strings) for t in tree]
    if isinstance(tree, tuple):
        return tuple(_fill_strings(t, strings) for t in tree)
    if isinstance(tree, dict):
        return {k: _fill_strings(v, strings) for k, v in tree.items()}
    return tree


def _leaves(tree: Any) -> Iterator[Any]:
    """Leaves of a tree in file order (the ints of a ``torch.Size`` are leaves too)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item)
    else:
        yield tree


def _latent_elements(shape: Any) -> int:
    """Number of latent elements a shape tree describes (product of each int sequence)."""
    if isinstance(shape, dict):
        return sum(_latent_elements(v) for v in shape.values())
    if isinstance(shape, (list, tuple)):
        if shape and all(isinstance(v, int) for v in shape):
            return math.prod(shape)
        return sum(_latent_elements(v) for v in shape)
    return shape if isinstance(shape, int) else 0


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------
@dataclass
class LalicFile:
    """One ``.lalic`` file: header fields, the latent shape and the strings (see the module
    docstring for the byte layout)."""

    identity: ModelIdentity
    fingerprint: bytes
    width: int
    height: int
    pad_multiple: int
    shape: Any
    strings: Any
    version: int = FORMAT_VERSION
    header_bytes: int = field(default=0, compare=False)  # everything but the strings' bytes

    @property
    def padded_size(self) -> tuple[int, int]:
        """(height, width) that the model coded."""
        return padded_size(self.height, self.width, self.pad_multiple)

    @property
    def padding(self) -> dict[str, int]:
        left, right, top, bottom = _padding(self.height, self.width, self.pad_multiple)
        return {"top": top, "bottom": bottom, "left": left, "right": right}

    @property
    def num_pixels(self) -> int:
        return self.width * self.height

    def string_list(self) -> list[bytes]:
        """The strings in file order (for LALIC: y group 0 anchor, non-anchor, ..., z)."""
        return [s for s in _leaves(self.strings) if isinstance(s, bytes)]

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for s in self.string_list())

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    def to_bytes(self) -> bytes:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} is outside 1..{MAX_SIDE}")
        if not 1 <= self.pad_multiple <= MAX_PAD_MULTIPLE:
            raise ValueError(f"pad_multiple must be in 1..{MAX_PAD_MULTIPLE}, got {self.pad_multiple}")
        out = bytearray(MAGIC)
        out.append(self.version)
        ident = self.identity
        out.append(_KINDS.index(ident.kind))
        if ident.kind == "checkpoint":
            out += ident.checkpoint_sha256
        else:
            name = ident.name.encode()
            if len(name) > 255:
                raise ValueError(f"model name is longer than 255 bytes: {ident.name!r}")
            _put_varint(out, len(name))
            out += name
            if ident.kind == "zoo":
                _put_varint(out, ident.quality)
        if len(self.fingerprint) != FINGERPRINT_BYTES:
            raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
        out += self.fingerprint
        for value in (self.width, self.height, self.pad_multiple):
            _put_varint(out, value)
        payload: list[bytes] = []
        _put_tree(out, [], self.shape, "'shape'")
        _put_tree(out, payload, self.strings, "'strings'")
        self.header_bytes = len(out) + CRC_BYTES
        out += b"".join(payload)
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> LalicFile:
        """Parse and verify a file (magic, version, checksum, every length); no decoding."""
        data = bytes(data)
        if not data:
            raise LalicFormatError("empty file, not a .lalic file")
        if data[: len(MAGIC)] != MAGIC[: len(data)]:
            raise LalicFormatError(
                f"not a .lalic file (starts with {data[:4]!r}, expected {MAGIC!r})"
            )
        if len(data) < len(MAGIC) + 1 + CRC_BYTES:
            raise LalicFormatError(f"truncated .lalic file ({len(data)} bytes)")
        version = data[len(MAGIC)]
        if version != FORMAT_VERSION:
            raise LalicFormatError(
                f"unsupported .lalic format version {version} (this lalic reads version "
                f"{FORMAT_VERSION}); was the file made by a newer lalic?"
            )
        body_end = len(data) - CRC_BYTES
        (stored_crc,) = struct.unpack("<I", data[body_end:])
        if zlib.crc32(data[:body_end]) != stored_crc:
            raise LalicFormatError("corrupt or truncated .lalic file: checksum mismatch")

        reader = _Reader(data, body_end)
        reader.pos = len(MAGIC) + 1
        kind_code = reader.take(1, "identity kind")[0]
        if kind_code >= len(_KINDS):
            raise LalicFormatError(f"corrupt .lalic header: unknown model identity kind {kind_code}")
        kind = _KINDS[kind_code]
        if kind == "checkpoint":
            identity = ModelIdentity(kind, checkpoint_sha256=reader.take(CHECKPOINT_HASH_BYTES, "checkpoint hash"))
        else:
            name = reader.text("model name")
            quality = reader.varint("quality", 1 << 16) if kind == "zoo" else None
            if not name:
                raise LalicFormatError("corrupt .lalic header: empty model name")
            identity = ModelIdentity(kind, name, quality)
        fingerprint = reader.take(FINGERPRINT_BYTES, "fingerprint")
        width = reader.varint("width", MAX_SIDE)
        height = reader.varint("height", MAX_SIDE)
        pad_multiple = reader.varint("pad multiple", MAX_PAD_MULTIPLE)
        if min(width, height, pad_multiple) < 1:
            raise LalicFormatError("corrupt .lalic header: zero image size or pad multiple")
        lengths: list[int] = []
        shape = reader.tree(lengths)
        if lengths:
            raise LalicFormatError("corrupt .lalic header: byte strings inside the latent shape")
        strings_tree = reader.tree(lengths)
        header_end = reader.pos
        if header_end + sum(lengths) != body_end:
            raise LalicFormatError(
                f"corrupt or truncated .lalic file: the header announces {sum(lengths)} bytes of "
                f"strings, the file holds {body_end - header_end}"
            )
        strings, pos = [], header_end
        for n in lengths:
            strings.append(data[pos: pos + n])
            pos += n
        return cls(
            identity=identity, fingerprint=fingerprint, width=width, height=height,
            pad_multiple=pad_multiple, shape=shape, strings=_fill_strings(strings_tree, strings),
            version=version, header_bytes=header_end + CRC_BYTES,
        )

    def check_decodable(self, model: CodecModel | None = None) -> None:
        """Reject latent shapes that no real encoding of this image could have produced (they
        would only make the decoder allocate and work without end). With ``model``, a compact
        shape is first expanded by ``model.latent_shape`` and the hyper-latent size is checked
        against the padded image size and the model's downsampling factor."""
        if not self.string_list():
            raise LalicFormatError("corrupt .lalic header: no strings")
        shape = self.shape
        expand = getattr(model.model, "latent_shape", None) if model is not None else None
        if callable(expand) and not isinstance(shape, dict):
            try:
                shape = expand(shape)
            except Exception as exc:  # noqa: BLE001 -- untrusted input
                raise LalicFormatError(f"corrupt .lalic header: bad latent shape {shape!r} "
                                       f"({exc})") from None
        hp, wp = self.padded_size
        leaves = list(_leaves(shape))
        if not leaves or not all(isinstance(v, int) and v >= 1 for v in leaves):
            raise LalicFormatError("corrupt .lalic header: the latent shape has zero or missing sizes")
        if _latent_elements(shape) > max(4 * hp * wp, 1 << 16):
            raise LalicFormatError(
                f"corrupt .lalic header: the latent shape {self.shape} is too large for a "
                f"{self.width}x{self.height} image"
            )
        factor = getattr(model.model, "downsampling_factor", None) if model is not None else None
        hyper = shape.get("hyper") if isinstance(shape, dict) else None
        if isinstance(factor, int) and isinstance(hyper, (tuple, list)) and len(hyper) == 2 \
                and tuple(hyper) != (hp // factor, wp // factor):
            raise LalicFormatError(
                f"corrupt .lalic header: hyper-latent size {tuple(hyper)} does not match the "
                f"{wp}x{hp} padded image (expected {(hp // factor, wp // factor)})"
            )


def read_header(source: str | os.PathLike | bytes) -> LalicFile:
    """Parse and verify a ``.lalic`` file (path or bytes) without decoding it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return LalicFile.from_bytes(bytes(source))
    return LalicFile.from_bytes(_read_file(source))


def _read_file(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a .lalic file, got a folder: {path}")
    return path.read_bytes()


def step_labels(f: LalicFile) -> list[str]:
    """A name for each string of ``f`` in file order: for LALIC (and ELIC-style channel-group
    codecs) "y group k anchor" / "y group k non-anchor" per checkerboard pass, then "z"."""
    n = len(f.string_list())
    shape = f.shape
    groups = shape.get("y") if isinstance(shape, dict) else None
    if isinstance(groups, (list, tuple)) and groups and not isinstance(groups, torch.Size):
        per_group, rest = divmod(n - 1, len(groups))
        if rest == 0 and per_group == 2:
            return [f"y group {g} {p}" for g in range(len(groups))
                    for p in ("anchor", "non-anchor")] + ["z"]
        if rest == 0 and per_group == 1:
            return [f"y group {g}" for g in range(len(groups))] + ["z"]
    if isinstance(shape, torch.Size) and len(shape) == 2 and n >= 3 and n % 2:
        # compact shape (the z size) of a channel-group + checkerboard model such as LALIC
        return [f"y group {g} {p}" for g in range(n // 2) for p in ("anchor", "non-anchor")] + ["z"]
    if n == 2:
        return ["y", "z"]
    return [f"string {i}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# Bounds-checked rANS decoding (CompressAI's Rans64 format)
# --------------------------------------------------------------------------------------------
_RANS_OK, _RANS_OVERRUN, _RANS_BAD_ESCAPE, _RANS_BAD_INDEX, _RANS_BAD_END = range(5)
_RANS_ERRORS = {
    _RANS_OVERRUN: "the rANS string ends before its last symbol",
    _RANS_BAD_ESCAPE: "invalid escape (bypass) code in the rANS string",
    _RANS_BAD_INDEX: "invalid CDF index",
    _RANS_BAD_END: "the rANS string does not end in the coder's initial state",
}


def _rans64_decode_kernel(words, indexes, cdfs, cdf_lengths, offsets, out):  # pragma: no cover
    """Decode ``indexes.size`` symbols from 32-bit ``words`` (numba-compiled; see
    :func:`rans64_decode`). Returns one of the ``_RANS_*`` status codes."""
    low = np.uint64(1 << 31)  # RANS64_L: the state stays in [low, 2**63)
    mask16 = np.uint64(0xFFFF)
    mask4 = np.uint64(15)
    n_words = words.shape[0]
    if n_words < 2:
        return 1
    x = np.uint64(words[0]) | (np.uint64(words[1]) << np.uint64(32))
    pos = 2
    for i in range(indexes.shape[0]):
        idx = indexes[i]
        if idx < 0 or idx >= cdfs.shape[0]:
            return 3
        length = cdf_lengths[idx]
        if length < 2 or length > cdfs.shape[1]:
            return 3
        cum = np.int64(x & mask16)
        lo, hi = 0, length - 1  # cdf[lo] <= cum < cdf[hi] = 2**16
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if cdfs[idx, mid] <= cum:
                lo = mid
            else:
                hi = mid
        start = np.uint64(cdfs[idx, lo])
        freq = np.uint64(cdfs[idx, lo + 1] - cdfs[idx, lo])
        x = freq * (x >> np.uint64(16)) + (x & mask16) - start
        if x < low:
            if pos >= n_words:
                return 1
            x = (x << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
        value = np.int64(lo)
        if lo == length - 2:  # escape symbol: the value follows in 4-bit bypass digits
            n_digits = np.int64(x & mask4)
            x = x >> np.uint64(4)
            if x < low:
                if pos >= n_words:
                    return 1
                x = (x << np.uint64(32)) | np.uint64(words[pos])
                pos += 1
            if n_digits > 8:  # a 32-bit raw value has at most 8 digits
                return 2
            raw = np.uint64(0)
            for j in range(n_digits):
                digit = x & mask4
                x = x >> np.uint64(4)
                if x < low:
                    if pos >= n_words:
                        return 1
                    x = (x << np.uint64(32)) | np.uint64(words[pos])
                    pos += 1
                raw = raw | (digit << np.uint64(4 * j))
            if raw >= np.uint64(1 << 31):
                return 2
            half = np.int64(raw >> np.uint64(1))
            if raw & np.uint64(1):
                value = -half - 1
            else:
                value = half + (length - 2)
        out[i] = value + offsets[idx]
    if pos != n_words or x != low:
        return 4
    return 0


_compiled_kernel: Callable | None = None


def _kernel() -> Callable:
    global _compiled_kernel
    if _compiled_kernel is None:
        import numba

        _compiled_kernel = numba.njit(cache=True, nogil=True)(_rans64_decode_kernel)
    return _compiled_kernel


def rans64_decode(encoded: bytes, indexes, cdfs, cdf_lengths, offsets) -> np.ndarray:
    """Decode one CompressAI rANS string (arguments as for
    ``compressai.ans.RansDecoder.decode_with_indexes``), never reading outside ``encoded``.

    Raises :class:`LalicFormatError` when the string is damaged: it ends early, holds an
    impossible escape code, or does not finish exactly at its end in the initial state.
    """
    if len(encoded) % 4:
        raise LalicFormatError(f"damaged bitstream: rANS string length {len(encoded)} is not a "
                               "multiple of 4")
    words = np.frombuffer(encoded, dtype="<u4").astype(np.uint32)
    index_arr = np.asarray(indexes, dtype=np.int64).reshape(-1)
    cdf_arr = np.asarray(cdfs, dtype=np.int64)
    if cdf_arr.ndim != 2:
        raise ValueError("cdfs must be a rectangular list of lists")
    out = np.empty(index_arr.shape[0], dtype=np.int64)
    status = _kernel()(words, index_arr, cdf_arr, np.asarray(cdf_lengths, dtype=np.int64),
                       np.asarray(offsets, dtype=np.int64), out)
    if status != _RANS_OK:
        raise LalicFormatError(f"damaged bitstream: {_RANS_ERRORS[int(status)]}")
    return out.astype(np.int32)


class _CheckedCoder:
    """Stands in for a CompressAI ``_EntropyCoder`` while decoding: encodes with it, decodes
    with :func:`rans64_decode`."""

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name

    def encode_with_indexes(self, *args, **kwargs):
        return self._inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, encoded, indexes, cdfs, cdf_lengths, offsets):
        return rans64_decode(encoded, indexes, cdfs, cdf_lengths, offsets)


@contextmanager
def checked_rans_decoding(model: nn.Module):
    """Within this block, every CompressAI entropy model of ``model`` that uses the rANS
    coder decodes with the bounds-checked :func:`rans64_decode`."""
    from compressai.entropy_models import EntropyModel

    swapped = []
    for module in model.modules():
        coder = getattr(module, "entropy_coder", None)
        if isinstance(module, EntropyModel) and getattr(coder, "name", None) == "ans":
            swapped.append((module, coder))
            module.entropy_coder = _CheckedCoder(coder)
    try:
        yield model
    finally:
        for module, coder in swapped:
            module.entropy_coder = coder


# --------------------------------------------------------------------------------------------
# Encoding and decoding
# --------------------------------------------------------------------------------------------
def _compact_shape(model: nn.Module, shape: Any) -> Any:
    """``shape`` reduced to the hyper-latent size (h, w) when the model rebuilds the full
    shape from it (``model.latent_shape``, as LALIC does) -- 3 bytes instead of ~35."""
    expand = getattr(model, "latent_shape", None)
    if callable(expand) and isinstance(shape, dict) and isinstance(shape.get("hyper"), tuple):
        compact = torch.Size(shape["hyper"])
        try:
            if expand(compact) == shape:
                return compact
        except Exception:  # noqa: BLE001, S110 -- the model cannot expand it: keep the full shape
            pass
    return shape


def encode_image(image, model: CodecModel | nn.Module, *, pad_multiple: int | None = None) -> bytes:
    """Compress one image to the bytes of a ``.lalic`` file.

    ``image``: path, PIL image, (3, H, W) uint8 or (1, 3, H, W) float tensor in [0, 1].
    ``model``: a :class:`CodecModel` (from :func:`resolve_model`) or a bare CompressAI-style
    model (then a "custom" identity: decoding needs the same model object again).
    ``pad_multiple``: defaults to the model's downsampling factor (64 for LALIC); it must be a
    multiple of it.
    """
    codec_model = as_codec_model(model)
    x = _as_image_batch(image)
    factor = codec_model.downsampling_factor
    multiple = factor if pad_multiple is None else int(pad_multiple)
    if multiple < 1 or multiple % factor or multiple > MAX_PAD_MULTIPLE:
        raise ValueError(f"pad_multiple must be a multiple of the model's downsampling factor "
                         f"{factor} and at most {MAX_PAD_MULTIPLE}, got {pad_multiple}")
    height, width = x.shape[-2:]
    with torch.no_grad():
        out = codec_model.model.compress(pad_center(x, multiple).to(codec_model.device))
    if not isinstance(out, dict) or "strings" not in out or "shape" not in out:
        raise TypeError("model.compress() must return a dict with 'strings' and 'shape'")
    record = LalicFile(
        identity=codec_model.identity, fingerprint=codec_model.fingerprint, width=int(width),
        height=int(height), pad_multiple=multiple, shape=_compact_shape(codec_model.model, out["shape"]),
        strings=out["strings"],
    )
    return record.to_bytes()


def decode_image(data: bytes | LalicFile, model: CodecModel | nn.Module | str | None = None, *,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """Decode the bytes of a ``.lalic`` file to a (1, 3, H, W) float image in [0, 1].

    ``model``: None to build the model the file names (preset or zoo entry), a spec for
    :func:`resolve_model` (needed for checkpoints), or a model object. Its weights fingerprint
    must match the file's. The result is the model's reconstruction, clamped, cropped, not
    rounded (see :func:`to_uint8` / :func:`save_image`).
    """
    header = data if isinstance(data, LalicFile) else LalicFile.from_bytes(data)
    header.check_decodable()
    codec_model = model_for_file(header, model, device)
    header.check_decodable(codec_model)
    hp, wp = header.padded_size
    try:
        with torch.no_grad(), checked_rans_decoding(codec_model.model):
            x_hat = codec_model.model.decompress(header.strings, header.shape)["x_hat"]
    except LalicFormatError:
        raise
    except Exception as exc:  # any failure on an untrusted bitstream is a damaged file
        raise LalicFormatError(
            f"the bitstream does not decode with this model ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(x_hat, torch.Tensor) or tuple(x_hat.shape) != (1, 3, hp, wp):
        got = tuple(x_hat.shape) if isinstance(x_hat, torch.Tensor) else type(x_hat).__name__
        raise LalicFormatError(f"the bitstream decodes to {got}, expected (1, 3, {hp}, {wp})")
    x_hat = crop_center(x_hat, header.height, header.width, header.pad_multiple)
    return torch.nan_to_num(x_hat.float(), nan=0.0).clamp(0, 1).cpu()


def encode_file(src: str | os.PathLike, dst: str | os.PathLike, model: CodecModel | nn.Module | str,
                *, pad_multiple: int | None = None) -> LalicFile:
    """Compress the image file ``src`` to the ``.lalic`` file ``dst``; returns its header."""
    codec_model = resolve_model(model) if isinstance(model, (str, os.PathLike)) else model
    x = read_image(src)
    data = encode_image(x, codec_model, pad_multiple=pad_multiple)
    dst = Path(dst)
    if dst.is_dir():
        raise IsADirectoryError(f"output is a folder, expected a file name: {dst}")
    dst.write_bytes(data)
    return LalicFile.from_bytes(data)


def decode_file(src: str | os.PathLike, dst: str | os.PathLike | None = None,
                model: CodecModel | nn.Module | str | None = None, *,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Decode the ``.lalic`` file ``src`` (to the image file ``dst`` when given); returns the
    (1, 3, H, W) reconstruction in [0, 1]."""
    x_hat = decode_image(_read_file(src), model, device=device)
    if dst is not None:
        save_image(dst, x_hat)
    return x_hat
