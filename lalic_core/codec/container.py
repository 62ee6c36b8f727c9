"""The ``.lalic`` file format: real bitstreams of LALIC (and any CompressAI-style model).

A ``.lalic`` file holds what ``model.compress(x)`` returns for one image (the rANS strings,
one per (channel group, checkerboard pass) of y plus one for z in LALIC, Feng et al., CVPR
2025, arXiv 2502.05741; and the latent ``shape`` that ``model.decompress`` needs), together
with what is needed to decode it and to refuse what cannot be decoded: the model's identity,
a fingerprint of its weights, the original image size and the padding, and a checksum.

Byte layout (format version 2; version 1, the same without the BiWKV semantics byte, is
still read, as "formula"). ``varint`` is an unsigned LEB128 integer (7 bits per byte,
low bits first, high bit set on all but the last byte), so small numbers take one byte:

==========================  ==============  ===============================================
field                       size (bytes)    meaning
==========================  ==============  ===============================================
magic                       4               ``b"LALC"``
version                     1               format version (2)
identity kind               1               0 preset, 1 zoo, 2 checkpoint, 3 custom
identity                    variable        preset / custom: varint length + UTF-8 name;
                                            zoo: name as above + varint quality;
                                            checkpoint: first 8 bytes of the file's SHA-256
weights fingerprint         4               first 4 bytes of the SHA-256 of the model's
                                            state dict (names, dtypes, sizes, values,
                                            entropy-coder CDF tables included)
BiWKV semantics             1               (version >= 2 only) what the model's BiWKV
                                            computed: 0 "formula", 1 "official32", 2
                                            "official64" (lalic_core.ops.biwkv); the file
                                            decodes only under the same semantics
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

Overhead. Magic, version, identity, fingerprint, semantics, sizes and CRC take 30 bytes for the preset
"paper" on a 768x512 image (a zoo name such as "lalic-tiny:3" adds 6). The latent shape
takes 3 bytes when the model can rebuild CompressAI's full shape dict from the z size
(``model.latent_shape``, as LALIC does; the file then stores just (h, w) of z), about 35
bytes otherwise. The strings' lengths take 1 byte plus 2 (strings < 2 KiB) or 3 bytes each.
Measured (version 1; version 2 adds one byte): 60 bytes in all for the "paper" preset (11
strings) on kodim23 (768x512), i.e. 0.0012 bpp; 47 bytes for "tiny" (9 strings) at 384x256. ``lalic info`` shows it per file.

Padding and decoding are described in :mod:`lalic_core.codec`; this module only reads and
writes the bytes (every length and count bounds-checked, every failure a
:class:`~lalic_core.errors.LalicFormatError`).
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lalic_core.codec.identity import (
    CHECKPOINT_HASH_BYTES,
    FINGERPRINT_BYTES,
    IDENTITY_KINDS,
    ModelIdentity,
)
from lalic_core.errors import LalicFormatError
from lalic_core.images import MAX_SIDE, center_padding, padded_size

__all__ = ["BIWKV_SEMANTICS_CODES", "CRC_BYTES", "FORMAT_VERSION", "MAGIC", "MAX_PAD_MULTIPLE",
           "READ_VERSIONS", "LalicFile", "read_file_bytes", "read_header", "step_labels"]

MAGIC = b"LALC"
FORMAT_VERSION = 2
#: Versions this module reads (version 1 has no BiWKV semantics byte: "formula").
READ_VERSIONS = (1, 2)
#: BiWKV semantics in the order of their code in a version-2 header.
BIWKV_SEMANTICS_CODES = ("formula", "official32", "official64")
CRC_BYTES = 4
MAX_PAD_MULTIPLE = 4096

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
    biwkv_semantics: str = "formula"  # what the encoder's BiWKV computed (version >= 2)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(height, width) that the model coded."""
        return padded_size(self.height, self.width, self.pad_multiple)

    @property
    def padding(self) -> dict[str, int]:
        left, right, top, bottom = center_padding(self.height, self.width, self.pad_multiple)
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
        if self.version not in READ_VERSIONS:
            raise ValueError(f"cannot write .lalic format version {self.version} "
                             f"(known: {READ_VERSIONS})")
        if self.biwkv_semantics not in BIWKV_SEMANTICS_CODES:
            raise ValueError(f"biwkv_semantics must be one of {BIWKV_SEMANTICS_CODES}, got "
                             f"{self.biwkv_semantics!r}")
        if self.version == 1 and self.biwkv_semantics != "formula":
            raise ValueError("format version 1 cannot record biwkv_semantics "
                             f"{self.biwkv_semantics!r} (only 'formula'); use version 2")
        out = bytearray(MAGIC)
        out.append(self.version)
        ident = self.identity
        out.append(IDENTITY_KINDS.index(ident.kind))
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
        if self.version >= 2:
            out.append(BIWKV_SEMANTICS_CODES.index(self.biwkv_semantics))
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
        if version not in READ_VERSIONS:
            raise LalicFormatError(
                f"unsupported .lalic format version {version} (this lalic reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}); was the file made by a newer lalic?"
            )
        body_end = len(data) - CRC_BYTES
        (stored_crc,) = struct.unpack("<I", data[body_end:])
        if zlib.crc32(data[:body_end]) != stored_crc:
            raise LalicFormatError("corrupt or truncated .lalic file: checksum mismatch")

        reader = _Reader(data, body_end)
        reader.pos = len(MAGIC) + 1
        kind_code = reader.take(1, "identity kind")[0]
        if kind_code >= len(IDENTITY_KINDS):
            raise LalicFormatError(f"corrupt .lalic header: unknown model identity kind {kind_code}")
        kind = IDENTITY_KINDS[kind_code]
        if kind == "checkpoint":
            identity = ModelIdentity(kind, checkpoint_sha256=reader.take(CHECKPOINT_HASH_BYTES, "checkpoint hash"))
        else:
            name = reader.text("model name")
            quality = reader.varint("quality", 1 << 16) if kind == "zoo" else None
            if not name:
                raise LalicFormatError("corrupt .lalic header: empty model name")
            identity = ModelIdentity(kind, name, quality)
        fingerprint = reader.take(FINGERPRINT_BYTES, "fingerprint")
        semantics = "formula"
        if version >= 2:
            code = reader.take(1, "BiWKV semantics")[0]
            if code >= len(BIWKV_SEMANTICS_CODES):
                raise LalicFormatError(f"corrupt .lalic header: unknown BiWKV semantics code "
                                       f"{code}")
            semantics = BIWKV_SEMANTICS_CODES[code]
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
            version=version, header_bytes=header_end + CRC_BYTES, biwkv_semantics=semantics,
        )

    def check_decodable(self, model=None) -> None:
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
    return LalicFile.from_bytes(read_file_bytes(source))


def read_file_bytes(path: str | os.PathLike) -> bytes:
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
