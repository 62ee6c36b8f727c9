"""Bounds-checked rANS decoding of CompressAI's Rans64 strings.

CompressAI's C++ rANS decoder does no bounds checking (a damaged string makes it read past
the end of its buffer). While decoding a ``.lalic`` file, :func:`checked_rans_decoding`
replaces it with :func:`rans64_decode`, a re-implementation of the same Rans64 format (32-bit
words, 16-bit precision, 4-bit bypass escapes) compiled with numba, which never reads
outside the string and verifies that it ends exactly in the coder's initial state: a damaged
string is reported as a :class:`~lalic_core.errors.LalicFormatError` instead of decoding to
garbage or crashing.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
from torch import nn

from lalic_core.errors import LalicFormatError

__all__ = ["checked_rans_decoding", "rans64_decode"]

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

    def __init__(self, inner, label: str = ""):
        self._inner = inner
        self.name = inner.name
        self.label = label

    def encode_with_indexes(self, *args, **kwargs):
        return self._inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, encoded, indexes, cdfs, cdf_lengths, offsets):
        try:
            return rans64_decode(encoded, indexes, cdfs, cdf_lengths, offsets)
        except LalicFormatError as exc:
            if not self.label:
                raise
            raise LalicFormatError(
                f"{exc} (the string coded by {self.label}; if the file is intact, this model's "
                f"coder tables or entropy parameters for it differ from the encoder's)") from None


@contextmanager
def checked_rans_decoding(model: nn.Module):
    """Within this block, every CompressAI entropy model of ``model`` that uses the rANS
    coder decodes with the bounds-checked :func:`rans64_decode`."""
    from compressai.entropy_models import EntropyModel

    swapped = []
    for name, module in model.named_modules():
        coder = getattr(module, "entropy_coder", None)
        if isinstance(module, EntropyModel) and getattr(coder, "name", None) == "ans":
            swapped.append((module, coder))
            module.entropy_coder = _CheckedCoder(coder, f"{type(module).__name__} {name}")
    try:
        yield model
    finally:
        for module, coder in swapped:
            module.entropy_coder = coder
