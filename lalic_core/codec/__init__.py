"""The ``.lalic`` file format: real bitstreams of LALIC (and any CompressAI-style model).

A ``.lalic`` file holds what ``model.compress(x)`` returns for one image (the rANS strings,
one per (channel group, checkerboard pass) of y plus one for z in LALIC, Feng et al., CVPR
2025, arXiv 2502.05741; and the latent ``shape`` that ``model.decompress`` needs), together
with what is needed to decode it and to refuse what cannot be decoded: the model's identity,
a fingerprint of its weights, the original image size and the padding, and a checksum.

BiWKV semantics. A LALIC model computes BiWKV as the paper's formula or as the official
chunked CUDA kernels do ("official32" / "official64", :mod:`lalic_core.ops.biwkv`); the
entropy parameters depend on it, so a bitstream decodes correctly only under the semantics
it was encoded with. The encoder records its model's semantics in the header (format
version 2) and the decoder always uses the file's (version-1 files: "formula"), whatever
the model it is given was set to.

The byte layout (format version 2) is documented in :mod:`.container`; the model identity
and weights fingerprint in :mod:`.identity`; the bounds-checked rANS decoder in :mod:`.rans`.
Images are read and written by :mod:`lalic_core.images`.

Padding. LALIC downsamples by 16 in g_a and by 4 more in h_a, so it decodes exactly for any
height and width that are multiples of 64 (y is then a multiple of 4 in each direction,
z = y / 4 exactly, and h_s(z) matches y). The default pad multiple is therefore the model's
``downsampling_factor`` (64 for LALIC and ELIC), not the 128 of the official evaluation
script: padding beyond 64 only adds coded zeros. ``pad_multiple=128`` reproduces the
official protocol; for Kodak (768x512) both give no padding at all.

Decoding untrusted files: every length in the header is bounds-checked, and the rANS
strings decode with a bounds-checked decoder (:func:`.rans.checked_rans_decoding`): a
damaged file raises :class:`LalicFormatError`, never decodes to garbage or crashes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lalic_core.codec.container import (
    BIWKV_SEMANTICS_CODES,
    CRC_BYTES,
    FORMAT_VERSION,
    MAGIC,
    MAX_PAD_MULTIPLE,
    LalicFile,
    read_file_bytes,
    read_header,
    step_labels,
)
from lalic_core.codec.identity import (
    RANDOM_INIT_SEED,
    CodecModel,
    ModelIdentity,
    as_codec_model,
    file_sha256,
    model_fingerprint,
    model_for_file,
    resolve_model,
)
from lalic_core.codec.rans import checked_rans_decoding, rans64_decode
from lalic_core.errors import LalicFormatError, LalicWarning, ModelMismatchError
from lalic_core.images import (
    as_image_batch,
    check_image_path,
    crop_center,
    pad_center,
    padded_size,
    read_image,
    save_image,
    to_uint8,
)

__all__ = [
    "BIWKV_SEMANTICS_CODES",
    "CRC_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "RANDOM_INIT_SEED",
    "CodecModel",
    "LalicFile",
    "LalicFormatError",
    "LalicWarning",
    "ModelIdentity",
    "ModelMismatchError",
    "as_codec_model",
    "biwkv_semantics_of",
    "check_biwkv_semantics",
    "check_image_path",
    "checked_rans_decoding",
    "crop_center",
    "decode_file",
    "decode_image",
    "encode_file",
    "encode_image",
    "file_sha256",
    "model_biwkv_semantics",
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


def model_biwkv_semantics(model: CodecModel | nn.Module) -> str:
    """The BiWKV semantics a model computes ("formula" for models without the setting)."""
    model = model.model if isinstance(model, CodecModel) else model
    semantics = getattr(model, "biwkv_semantics", "formula")
    return semantics if isinstance(semantics, str) else "formula"


@contextmanager
def biwkv_semantics_of(model: CodecModel | nn.Module, semantics: str):
    """Run the block with ``model`` computing BiWKV as ``semantics`` (restored after);
    :class:`ModelMismatchError` when the model cannot (no ``set_biwkv_semantics``)."""
    bare = model.model if isinstance(model, CodecModel) else model
    before = model_biwkv_semantics(bare)
    setter = getattr(bare, "set_biwkv_semantics", None)
    if before == semantics:
        yield model
        return
    if not callable(setter):
        raise ModelMismatchError(f"the file was encoded with BiWKV semantics {semantics!r}; "
                                 f"{type(bare).__name__} has no BiWKV semantics setting")
    setter(semantics)
    try:
        yield model
    finally:
        setter(before)


def check_biwkv_semantics(header: LalicFile, biwkv_semantics: str | None) -> None:
    """ValueError when an explicit ``biwkv_semantics`` contradicts the file's (None: fine)."""
    if biwkv_semantics is not None and biwkv_semantics != header.biwkv_semantics:
        raise ValueError(
            f"this file was encoded with BiWKV semantics {header.biwkv_semantics!r} and "
            f"decodes only under it, not under {biwkv_semantics!r} (leave the semantics "
            "unset to use the file's)"
        )


def encode_image(image, model: CodecModel | nn.Module, *, pad_multiple: int | None = None) -> bytes:
    """Compress one image to the bytes of a ``.lalic`` file.

    ``image``: path, PIL image, (3, H, W) uint8 or (1, 3, H, W) float tensor in [0, 1].
    ``model``: a :class:`CodecModel` (from :func:`resolve_model`) or a bare CompressAI-style
    model (then a "custom" identity: decoding needs the same model object again).
    ``pad_multiple``: defaults to the model's downsampling factor (64 for LALIC); it must be a
    multiple of it.
    """
    codec_model = as_codec_model(model)
    x = as_image_batch(image)
    factor = codec_model.downsampling_factor
    multiple = factor if pad_multiple is None else int(pad_multiple)
    if multiple < 1 or multiple % factor or multiple > MAX_PAD_MULTIPLE:
        raise ValueError(f"pad_multiple must be a multiple of the model's downsampling factor "
                         f"{factor} and at most {MAX_PAD_MULTIPLE}, got {pad_multiple}")
    height, width = x.shape[-2:]
    with torch.no_grad():
        x = pad_center(x, multiple).to(codec_model.device, codec_model.dtype)
        out = codec_model.model.compress(x)
    if not isinstance(out, dict) or "strings" not in out or "shape" not in out:
        raise TypeError("model.compress() must return a dict with 'strings' and 'shape'")
    record = LalicFile(
        identity=codec_model.identity, fingerprint=codec_model.fingerprint, width=int(width),
        height=int(height), pad_multiple=multiple, shape=_compact_shape(codec_model.model, out["shape"]),
        strings=out["strings"], biwkv_semantics=model_biwkv_semantics(codec_model),
    )
    return record.to_bytes()


def decode_image(data: bytes | LalicFile, model: CodecModel | nn.Module | str | None = None, *,
                 device: str | torch.device = "cpu",
                 biwkv_semantics: str | None = None) -> torch.Tensor:
    """Decode the bytes of a ``.lalic`` file to a (1, 3, H, W) float image in [0, 1].

    ``model``: None to build the model the file names (preset or zoo entry), a spec for
    :func:`resolve_model` (needed for checkpoints), or a model object. Its weights fingerprint
    must match the file's. The result is the model's reconstruction, clamped, cropped, not
    rounded (see :func:`to_uint8` / :func:`save_image`). The model decodes under the BiWKV
    semantics the file records (``biwkv_semantics``, when given, must be that one: a
    ValueError otherwise).
    """
    header = data if isinstance(data, LalicFile) else LalicFile.from_bytes(data)
    check_biwkv_semantics(header, biwkv_semantics)
    header.check_decodable()
    codec_model = model_for_file(header, model, device)
    header.check_decodable(codec_model)
    hp, wp = header.padded_size
    try:
        with torch.no_grad(), checked_rans_decoding(codec_model.model), \
                biwkv_semantics_of(codec_model, header.biwkv_semantics):
            x_hat = codec_model.model.decompress(header.strings, header.shape)["x_hat"]
    except (LalicFormatError, ModelMismatchError):
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
                device: str | torch.device = "cpu",
                biwkv_semantics: str | None = None) -> torch.Tensor:
    """Decode the ``.lalic`` file ``src`` (to the image file ``dst`` when given); returns the
    (1, 3, H, W) reconstruction in [0, 1]."""
    x_hat = decode_image(read_file_bytes(src), model, device=device,
                         biwkv_semantics=biwkv_semantics)
    if dst is not None:
        save_image(dst, x_hat)
    return x_hat
