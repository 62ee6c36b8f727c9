"""Evaluation through real bitstreams: every image compressed to ``.lalic`` bytes, decoded,
and measured (bpp of the whole file and of the strings, PSNR and MS-SSIM on 8-bit images,
encode/decode times), reported in the RD JSON schema of :mod:`lalic_core.rd`."""
from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

from lalic_core import codec

__all__ = ["evaluate"]


def _mean(values):
    """Mean of the finite values; None unless every image has a value (MS-SSIM needs images
    larger than 160 pixels on each side)."""
    if any(v is None for v in values):
        return None
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def evaluate(paths, model, *, pad_multiple: int | None = None, progress: bool = True,
             name: str | None = None, description: str = "") -> dict:
    """Compress and decompress each image through real ``.lalic`` bytes and measure it.

    Returns a dict in the RD JSON schema of ``lalic_core.rd`` (``results`` holds one point:
    the means over all images) plus ``images`` (per-image detail). ``model``: a
    :class:`~lalic_core.codec.CodecModel` or a bare model. bpp counts the whole file; ``bpp-strings``
    only the entropy-coded strings, as the paper does. PSNR and MS-SSIM compare the decoded
    8-bit image with the 8-bit original (MS-SSIM only for images larger than 160 pixels on
    each side). Times are wall-clock seconds of encode (padding, ``compress``, packing) and
    decode (parsing, ``decompress``, cropping), after one untimed round trip of the first image.
    """
    from tqdm import tqdm

    from lalic_core.metrics import ms_ssim, psnr

    model = codec.as_codec_model(model)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no images to evaluate")
    multiple = pad_multiple or model.downsampling_factor
    with warnings.catch_warnings():  # warm-up (kernel loading, allocator): the first image
        warnings.simplefilter("ignore", codec.LalicWarning)  # it warns again when measured
        codec.decode_image(codec.encode_image(codec.read_image(paths[0]), model,
                                              pad_multiple=pad_multiple), model)

    images = []
    for path in tqdm(paths, desc="eval", unit="img", disable=None if progress else True,
                     file=sys.stderr):
        x = codec.read_image(path)
        start = time.perf_counter()
        data = codec.encode_image(x, model, pad_multiple=pad_multiple)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        x_hat = codec.decode_image(data, model)
        decode_s = time.perf_counter() - start

        header = codec.LalicFile.from_bytes(data)
        pixels = header.num_pixels
        x8 = codec.to_uint8(x).permute(2, 0, 1)[None].double() / 255
        x_hat8 = codec.to_uint8(x_hat).permute(2, 0, 1)[None].double() / 255
        msssim = ms_ssim(x8, x_hat8) if min(header.width, header.height) > 160 else None
        images.append({
            "image": path.name,
            "width": header.width,
            "height": header.height,
            "bytes": len(data),
            "strings_bytes": header.payload_bytes,
            "bpp": 8 * len(data) / pixels,
            "bpp-strings": 8 * header.payload_bytes / pixels,
            "psnr": psnr(x8, x_hat8),
            "ms-ssim": msssim,
            "ms-ssim-db": None if msssim is None else
            (math.inf if msssim >= 1 else -10 * math.log10(1 - msssim)),
            "encoding_time": encode_s,
            "decoding_time": decode_s,
        })

    results = {}
    for key in ("bpp", "bpp-strings", "psnr", "ms-ssim", "ms-ssim-db", "encoding_time",
                "decoding_time"):
        value = _mean([im[key] for im in images])
        if value is not None:
            results[key] = [value]
    return {
        "name": name or model.identity.spec,
        "description": description,
        "results": results,
        "model": {"kind": model.identity.kind, "spec": model.identity.spec,
                  "description": model.identity.describe(),
                  "weights_fingerprint": model.fingerprint.hex(),
                  "biwkv_semantics": codec.model_biwkv_semantics(model)},
        "pad_multiple": multiple,
        "images": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in im.items()} for im in images],
    }
