"""The .lalic file format, image conversion, padding, model identity and bounded rANS decoding.

Generic behaviour is tested on two small random-initialised CompressAI models (ELIC's
channel-group + checkerboard latent codec, the structure LALIC uses, and the factorized
prior, the simplest structure); LALIC itself ("tiny" preset) is tested where it matters:
decoding equals the eval-mode forward pass.
"""
from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lalic_core import codec
from lalic_core.codec import LalicFile, LalicFormatError, LalicWarning, ModelIdentity, container


def _elic(seed: int = 0):
    from compressai.models import Elic2022Official

    torch.manual_seed(seed)
    model = Elic2022Official(N=16, M=64, groups=[8, 8, 16, 16, 16]).eval()
    model.update()
    return model


@pytest.fixture(scope="module")
def elic():
    return codec.CodecModel(_elic(), ModelIdentity("custom", "elic-test"))


@pytest.fixture(scope="module")
def factorized():
    from compressai.models import FactorizedPrior

    torch.manual_seed(1)
    model = FactorizedPrior(N=8, M=8).eval()
    model.update()
    return codec.CodecModel(model, ModelIdentity("custom", "factorized-test"))


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth 8-bit test image (1, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(h // 8, 1) + 1, max(w // 8, 1) + 1, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.round(x * 255) / 255


def _reference_decode(model, x, multiple):
    with torch.no_grad():
        out = model.compress(codec.pad_center(x, multiple))
        x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
    return codec.crop_center(x_hat, x.shape[-2], x.shape[-1], multiple).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(70, 100), (1, 1)])
def test_round_trip_equals_compressai_decode(elic, size):
    x = _image(*size)
    data = codec.encode_image(x, elic)
    x_hat = codec.decode_image(data, elic)
    assert x_hat.shape == x.shape
    torch.testing.assert_close(x_hat, _reference_decode(elic.model, x, 64), rtol=0, atol=0)


def test_round_trip_generic_structure(factorized):
    x = _image(40, 24)
    data = codec.encode_image(x, factorized)
    header = LalicFile.from_bytes(data)
    assert header.pad_multiple == 16  # FactorizedPrior.downsampling_factor
    assert header.padded_size == (48, 32)
    assert isinstance(header.shape, torch.Size) and tuple(header.shape) == (3, 2)
    x_hat = codec.decode_image(data, factorized)
    torch.testing.assert_close(x_hat, _reference_decode(factorized.model, x, 16), rtol=0, atol=0)


def test_encode_file_decode_file(elic, tmp_path):
    x = _image(50, 40)
    Image.fromarray(codec.to_uint8(x).numpy()).save(tmp_path / "in.png")
    header = codec.encode_file(tmp_path / "in.png", tmp_path / "in.lalic", elic)
    assert header.file_bytes == (tmp_path / "in.lalic").stat().st_size
    x_hat = codec.decode_file(tmp_path / "in.lalic", tmp_path / "out.png", elic)
    assert torch.equal(torch.from_numpy(np.asarray(Image.open(tmp_path / "out.png"))),
                       codec.to_uint8(x_hat))
    torch.testing.assert_close(x_hat, _reference_decode(elic.model, x, 64), rtol=0, atol=0)


def test_pad_multiple_128_and_validation(elic):
    x = _image(70, 100)
    data = codec.encode_image(x, elic, pad_multiple=128)
    header = LalicFile.from_bytes(data)
    assert header.padded_size == (128, 128) and header.pad_multiple == 128
    torch.testing.assert_close(codec.decode_image(data, elic), _reference_decode(elic.model, x, 128))
    with pytest.raises(ValueError, match="pad_multiple"):
        codec.encode_image(x, elic, pad_multiple=96)


def test_header_fields_and_strings(elic):
    x = _image(70, 100)
    data = codec.encode_image(x, elic)
    header = LalicFile.from_bytes(data)
    with torch.no_grad():
        out = elic.model.compress(codec.pad_center(x, 64))
    assert header.identity == ModelIdentity("custom", "elic-test")
    assert header.fingerprint == elic.fingerprint
    assert (header.width, header.height, header.pad_multiple) == (100, 70, 64)
    assert header.shape == out["shape"]
    assert type(header.shape["y"][0]) is torch.Size
    assert header.strings == out["strings"]
    assert header.payload_bytes == sum(len(s[0]) for s in out["strings"])
    assert header.file_bytes == len(data)
    assert codec.step_labels(header)[:2] == ["y group 0 anchor", "y group 0 non-anchor"]
    assert codec.step_labels(header)[-1] == "z" and len(codec.step_labels(header)) == 11
    # The container (magic, identity, fingerprint, sizes, latent shape, 11 lengths, CRC) is
    # small: 27 bytes of fixed fields, name and sizes; the shape tree 33, the lengths 23.
    assert header.header_bytes <= 84, header.header_bytes


@pytest.mark.parametrize("identity", [
    ModelIdentity("preset", "tiny"),
    ModelIdentity("zoo", "lalic-tiny", 3),
    ModelIdentity("checkpoint", checkpoint_sha256=bytes(range(8))),
    ModelIdentity("custom", "ünïcode name"),
])
def test_file_round_trip_of_trees_and_identities(identity):
    shape = {"y": [torch.Size([16, 4, 6]), (1, 2)], "hyper": torch.Size([1, 2]), "n": 7,
             "nested": {"k": [3, (4, [5])]}}
    strings = [[b"abc"], [b""], [b"x" * 300, b"yz"], (b"tuple",), b"bare"]
    record = LalicFile(identity, b"\x01\x02\x03\x04", 1000, 3, 256, shape, strings)
    parsed = LalicFile.from_bytes(record.to_bytes())
    assert parsed == record
    assert type(parsed.shape["hyper"]) is torch.Size and type(parsed.shape["y"][1]) is tuple
    assert parsed.string_list() == [b"abc", b"", b"x" * 300, b"yz", b"tuple", b"bare"]


def test_varint_sizes():
    out = bytearray()
    for value in (0, 127, 128, 300, 2**40):
        container._put_varint(out, value)
    reader = container._Reader(bytes(out), len(out))
    assert [reader.varint("v", 2**41) for _ in range(5)] == [0, 127, 128, 300, 2**40]
    assert len(out) == 1 + 1 + 2 + 2 + 6


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------
def test_pad_center_matches_official_convention():
    x = torch.rand(1, 3, 70, 101)
    padded = codec.pad_center(x, 64)
    assert padded.shape[-2:] == (128, 128)
    # official: left = (W' - W) // 2, right = the rest (likewise top / bottom)
    assert torch.equal(padded[..., 29:99, 13:114], x)
    assert padded[..., :29, :].abs().sum() == 0 and padded[..., 99:, :].abs().sum() == 0
    assert padded[..., :, :13].abs().sum() == 0 and padded[..., :, 114:].abs().sum() == 0
    assert torch.equal(codec.crop_center(padded, 70, 101, 64), x)
    assert codec.pad_center(torch.rand(1, 3, 128, 64), 64).shape[-2:] == (128, 64)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def valid_file(elic):
    return codec.encode_image(_image(64, 64), elic)


def test_rejects_damaged_files(elic, valid_file):
    data = valid_file
    cases = {
        "empty file": b"",
        "not a .lalic file": b"\x89PNG\r\n\x1a\n" + data[8:],
        "truncated": data[:6],
        "unsupported .lalic format version 3": data[:4] + b"\x03" + data[5:],
        "checksum mismatch": data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],
        "checksum mismatch ": data[:-10],  # truncated mid-payload
        "header announces": _reseal(data[:-8]),  # payload shorter than the lengths say
    }
    for expected, damaged in cases.items():
        with pytest.raises(LalicFormatError, match=expected.strip()):
            codec.decode_image(damaged, elic)


def test_rejects_other_model(valid_file):
    other = codec.CodecModel(_elic(seed=1), ModelIdentity("custom", "elic-test"))
    with pytest.raises(codec.ModelMismatchError, match="made by another model"):
        codec.decode_image(valid_file, other)
    with pytest.raises(codec.ModelMismatchError, match="custom model"):
        codec.decode_image(valid_file)  # a custom model cannot be rebuilt from the file


def test_rejects_damaged_strings_with_valid_checksum(elic, valid_file):
    header = LalicFile.from_bytes(valid_file)
    body = bytearray(valid_file[:-4])
    body[header.header_bytes - 4 + 5] ^= 0x40  # inside the first string (y group 0 anchor)
    with pytest.raises(LalicFormatError, match="damaged bitstream|does not decode"):
        codec.decode_image(_reseal(bytes(body)), elic)


def test_rejects_implausible_shape(elic):
    record = LalicFile(ModelIdentity("custom", "elic-test"), elic.fingerprint, 64, 64, 64,
                       {"y": [torch.Size([64, 4000, 4000])], "hyper": torch.Size([1, 1])},
                       [[b"\0" * 8], [b"\0" * 8]])
    with pytest.raises(LalicFormatError, match="too large"):
        codec.decode_image(record.to_bytes(), elic)


# --------------------------------------------------------------------------------------------
# Bounds-checked rANS
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian():
    from compressai.entropy_models import GaussianConditional

    gc = GaussianConditional(None)
    gc.update_scale_table(torch.exp(torch.linspace(np.log(0.11), np.log(256), 64)))
    gc.update()
    return gc


def _coder_args(gc, n, seed):
    g = torch.Generator().manual_seed(seed)
    indexes = torch.randint(0, 64, (n,), generator=g).int()
    symbols = torch.randint(-20, 21, (n,), generator=g).int()
    # far outside the tables: bypass-coded (CompressAI's encoder loops forever on |values|
    # needing 8 bypass digits, >= 2**27, so stay below)
    outliers = torch.tensor([5000, -70000, 2**26, -(2**26), 300], dtype=torch.int32)
    symbols[: min(n, 5)] = outliers[: min(n, 5)]
    return (symbols.tolist(), indexes.tolist(), gc._quantized_cdf.tolist(),
            gc._cdf_length.tolist(), gc._offset.tolist())


@pytest.mark.parametrize("n", [1, 17, 5000])  # (CompressAI's encoder crashes on n = 0)
def test_rans64_decode_matches_compressai(gaussian, n):
    from compressai import ans

    symbols, indexes, cdfs, lengths, offsets = _coder_args(gaussian, n, seed=n)
    encoded = ans.RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
    ours = codec.rans64_decode(encoded, indexes, cdfs, lengths, offsets).tolist()
    assert ours == ans.RansDecoder().decode_with_indexes(encoded, indexes, cdfs, lengths, offsets)
    assert ours == symbols  # escapes (bypass coding) included
    for bad in (encoded[:-4], encoded + b"\0\0\0\0", encoded[:-1], b""):
        with pytest.raises(LalicFormatError, match="damaged bitstream"):
            codec.rans64_decode(bad, indexes, cdfs, lengths, offsets)


def test_rans64_decode_empty_string(gaussian):
    _, _, cdfs, lengths, offsets = _coder_args(gaussian, 1, seed=0)
    initial_state = struct.pack("<Q", 1 << 31)  # what the encoder flushes for no symbols
    assert codec.rans64_decode(initial_state, [], cdfs, lengths, offsets).tolist() == []
    with pytest.raises(LalicFormatError):
        codec.rans64_decode(struct.pack("<Q", 1 << 32), [], cdfs, lengths, offsets)


def test_rans64_decode_rejects_garbage(gaussian):
    _, indexes, cdfs, lengths, offsets = _coder_args(gaussian, 3000, seed=1)
    rng = np.random.default_rng(0)
    rejected = 0
    for trial in range(200):
        garbage = rng.integers(0, 256, 4 * int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        if trial % 4 == 0:
            garbage = b"\xff" * len(garbage)  # runs of escape codes
        try:
            codec.rans64_decode(garbage, indexes, cdfs, lengths, offsets)
        except LalicFormatError:
            rejected += 1
    assert rejected == 200  # the end-state check catches every random string


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def _png16(path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG (gray, gray+alpha, RGB or RGBA) by hand: PIL cannot."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(
            ">I", zlib.crc32(tag + payload))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16,
                     color_type, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_read_image_rgb_without_warning(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = codec.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(codec.to_uint8(x), torch.from_numpy(rgb))


@pytest.mark.parametrize("mode,expect", [
    ("L", "grayscale"), ("LA", "alpha channel dropped"), ("P", "palette"),
    ("RGBA", "alpha channel dropped"), ("I;16", "16-bit"),
])
def test_read_image_converts_with_warning(tmp_path, mode, expect):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode == "P":
        image = Image.fromarray(np.stack([gray] * 3, -1)).convert("P")
    else:
        image = Image.fromarray(gray).convert(mode)
    image.save(tmp_path / "im.png")
    with pytest.warns(LalicWarning, match=expect):
        x = codec.read_image(tmp_path / "im.png")
    assert x.shape == (1, 3, 6, 4)
    expected = np.asarray(Image.open(tmp_path / "im.png").convert("RGB")) if mode == "P" \
        else np.stack([gray] * 3, -1)
    assert torch.equal(codec.to_uint8(x), torch.from_numpy(expected))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_read_16_bit_png_rounds(tmp_path, channels):
    wide = np.random.default_rng(channels).integers(0, 65536, (3, 5, channels)).astype(np.uint16)
    wide[0, 0] = 65535
    _png16(tmp_path / "w.png", wide)
    with pytest.warns(LalicWarning, match="16-bit PNG rounded"):
        x = codec.read_image(tmp_path / "w.png")
    colour = wide[..., : 3 if channels >= 3 else 1].astype(np.float64)
    expected = np.round(colour / 257).astype(np.uint8)
    expected = np.repeat(expected, 3, axis=2) if expected.shape[2] == 1 else expected
    assert torch.equal(codec.to_uint8(x), torch.from_numpy(expected))
    assert codec.to_uint8(x)[0, 0].tolist() == [255, 255, 255]


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        codec.read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        codec.read_image(tmp_path / "text.png")
    with pytest.raises(IsADirectoryError):
        codec.read_image(tmp_path)


def test_encode_rejects_bad_tensors(elic):
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        codec.encode_image(torch.rand(1, 1, 8, 8), elic)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        codec.encode_image(torch.rand(1, 3, 8, 8) * 2, elic)


# --------------------------------------------------------------------------------------------
# Model identity
# --------------------------------------------------------------------------------------------
def test_fingerprint_tracks_weights():
    a, b = _elic(), _elic()
    assert codec.model_fingerprint(a) == codec.model_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert codec.model_fingerprint(a) != codec.model_fingerprint(b)


def test_resolve_model_errors(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint file, a zoo entry"):
        codec.resolve_model("no-such-model")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        codec.resolve_model(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown zoo entry"):
        codec.resolve_model("no-such-zoo-model:3")
    with pytest.raises(ValueError, match="folder"):
        codec.resolve_model(str(tmp_path))


# --------------------------------------------------------------------------------------------
# LALIC
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lalic_tiny():
    with pytest.warns(LalicWarning, match="random-initialised"):
        return codec.resolve_model("tiny")


def test_lalic_decode_equals_forward(lalic_tiny):
    x = _image(96, 80, seed=3)
    data = codec.encode_image(x, lalic_tiny)
    x_hat = codec.decode_image(data, lalic_tiny)  # (rebuilt from the identity: test_cli)
    with torch.inference_mode():
        forward = lalic_tiny.model(codec.pad_center(x, 64))["x_hat"]
    forward = codec.crop_center(forward, 96, 80, 64).clamp(0, 1)
    assert (x_hat - forward).abs().max().item() <= 1e-4
    header = LalicFile.from_bytes(data)
    assert header.identity == ModelIdentity("preset", "tiny")
    n_groups = len(lalic_tiny.model.groups)
    assert len(header.string_list()) == 2 * n_groups + 1  # (group, checkerboard pass), then z
    assert codec.step_labels(header)[-2:] == [f"y group {n_groups - 1} non-anchor", "z"]


def test_lalic_preset_is_reproducible(lalic_tiny):
    again = codec.resolve_model("tiny", warn_random=False)
    assert again.fingerprint == lalic_tiny.fingerprint
