"""Portable bitstreams: coder tables that are the same everywhere, a decoding fingerprint that
is the same on every machine, files made before stored tables, deterministic coding under
other numeric regimes (threads, oneDNN, memory layout, float64), and the GPU."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lalic_core import codec, zoo
from lalic_core.codec import LalicFormatError, ModelMismatchError
from lalic_core.codec.determinism import deterministic_coding, entropy_parameter_modules
from lalic_core.coder_tables import (
    TABLE_NAMES,
    bottleneck_tables,
    coder_modules,
    fresh_table_state,
    update_coder_tables,
)

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
#: Files made by the code at commit 38523cf (before stored tables) from legacy_crop.png, and
#: the SHA-256 of their 8-bit decodes there.
LEGACY = {
    "legacy_lalic-tiny-3.lalic": "5a708e6042bee1a0c794e7fce8b594377928f34ba363c0ff384bccc6e7846f96",
    "legacy_tiny-preset.lalic": "f916460dee953e7a6e08182d3045e64889a00993d6b93dcc53c1fdb300e528af",
}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def _u8_sha(x: torch.Tensor) -> str:
    return hashlib.sha256(codec.to_uint8(x).numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny3():
    return codec.resolve_model("lalic-tiny:3")


@pytest.fixture(scope="module")
def image():
    return codec.read_image(DATA / "legacy_crop.png")  # 128x96


# --------------------------------------------------------------------------------------------
# Coder tables
# --------------------------------------------------------------------------------------------
def test_shipped_tables_equal_a_fresh_deterministic_computation():
    entries = zoo.available(zoo.packaged_dir())
    assert len(entries) == 7
    for name, quality in entries:
        model = zoo.load(name, quality, weights_dir=zoo.packaged_dir())
        stored = {k: v for k, v in model.state_dict().items()
                  if k.rsplit(".", 1)[-1] in (*TABLE_NAMES, "scale_table")}
        fresh = fresh_table_state(model)
        assert set(fresh) == set(stored), (name, quality)
        for key, value in fresh.items():
            assert value.dtype == stored[key].dtype and torch.equal(value, stored[key]), key


def test_stored_tables_are_used_never_recomputed(monkeypatch):
    import lalic_core.coder_tables as ct

    def fail(*args, **kwargs):
        raise AssertionError("tables recomputed")

    monkeypatch.setattr(ct, "bottleneck_tables", fail)
    monkeypatch.setattr(ct, "gaussian_tables", fail)
    monkeypatch.setattr(ct, "_GAUSSIAN_CACHE", {})
    model = zoo.load("lalic-tiny", 3)
    assert ct.has_coder_tables(model)


_CHILD = """
import json, sys, torch
from lalic_core import zoo
from lalic_core.coder_tables import bottleneck_tables, coder_modules
torch.set_num_threads(int(sys.argv[1]))
model = zoo.load("lalic-tiny", 3).to(dtype=getattr(torch, sys.argv[2]))
eb = [m for _, m in coder_modules(model) if type(m).__name__ == "EntropyBottleneck"][0]
t = bottleneck_tables(eb)
print(json.dumps({k: v.tolist() for k, v in t.items()}))
"""


@pytest.mark.parametrize("threads,dtype", [(1, "float32"), (2, "float64")])
def test_tables_recomputed_in_another_process_equal_the_stored(tiny3, threads, dtype):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(threads), dtype], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    child = json.loads(out.stdout.strip().splitlines()[-1])
    eb = tiny3.model.latent_codec.hyper.entropy_bottleneck
    for key in TABLE_NAMES:
        assert child[key] == getattr(eb, key).tolist(), key


def test_tables_do_not_depend_on_device_dtype_or_threads(tiny3):
    eb = tiny3.model.latent_codec.hyper.entropy_bottleneck
    reference = bottleneck_tables(eb)
    import copy

    for dtype in (torch.float64, torch.bfloat16):
        other = copy.deepcopy(eb).to(dtype)
        if dtype == torch.bfloat16:  # other weights: the tables must differ, not crash
            assert bottleneck_tables(other)["_quantized_cdf"].shape[0] == 48
            continue
        for key, value in bottleneck_tables(other).items():
            assert torch.equal(value, reference[key]), key


def test_update_fills_only_missing_tables():
    from lalic_core.models.factory import build_model

    model = build_model("tiny", seed=0)
    assert update_coder_tables(model) is True
    assert update_coder_tables(model) is False  # present: kept
    eb = model.latent_codec.hyper.entropy_bottleneck
    eb._quantized_cdf[0, 1] += 1
    assert update_coder_tables(model) is False and eb._quantized_cdf[0, 1] != \
        bottleneck_tables(eb)["_quantized_cdf"][0, 1]
    assert model.update(force=True) is True
    assert torch.equal(eb._quantized_cdf, bottleneck_tables(eb)["_quantized_cdf"])


# --------------------------------------------------------------------------------------------
# Fingerprint and files made before stored tables
# --------------------------------------------------------------------------------------------
def test_fingerprint_same_for_every_device_dtype_and_layout(tiny3):
    import copy

    fp = codec.model_fingerprint(tiny3.model)
    other = copy.deepcopy(tiny3.model).to(memory_format=torch.channels_last)
    assert codec.model_fingerprint(other) == fp
    assert tiny3.fingerprint == fp
    with deterministic_coding(tiny3.model, entropy_float64=True):
        assert tiny3.fingerprint == fp  # computed once, outside any coding regime
    assert codec.model_fingerprint(tiny3.model) == fp  # and the model restored
    covered = codec.decoding_state(tiny3.model)
    assert not any(k.startswith(("g_a.", "h_a.")) or ".h_a." in k for k in covered)
    assert any(k.endswith("entropy_bottleneck._quantized_cdf") for k in covered)
    lines = codec.fingerprint_coverage(tiny3.model)
    assert any(line.startswith("g_s") for line in lines) and "not covered" in lines[-1]


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_files_made_before_stored_tables_decode_bit_identically(name):
    x_hat = codec.decode_file(DATA / name)
    assert _u8_sha(x_hat) == LEGACY[name]


def test_files_made_before_stored_tables_on_another_machine_are_refused(monkeypatch):
    """A pre-table file whose hyperprior tables were recomputed differently (another
    machine): the legacy fingerprint does not match, and the message says why."""
    import lalic_core.coder_tables as ct

    original = ct.compressai_tables

    def other_machine(model):
        tables = original(model)
        for name, t in tables.items():
            if name.endswith("entropy_bottleneck"):
                t["_quantized_cdf"] = t["_quantized_cdf"].clone()
                t["_quantized_cdf"][3, 5] += 1  # one entry differs, as measured in issue 16
        return tables

    monkeypatch.setattr(ct, "compressai_tables", other_machine)
    with pytest.raises(ModelMismatchError) as info:
        codec.decode_file(DATA / "legacy_lalic-tiny-3.lalic")
    text = str(info.value)
    assert "\n" not in text and "re-encode" in text and "ee5f6eb1" in text


def test_new_files_carry_the_portable_fingerprint(tiny3, image):
    header = codec.LalicFile.from_bytes(codec.encode_image(image, tiny3))
    assert header.fingerprint == tiny3.fingerprint != tiny3.legacy_fingerprint
    assert tiny3.entropy_path_of(header.fingerprint) == "float64"  # the default
    assert header.version == codec.FORMAT_VERSION  # the byte layout is unchanged


def test_the_decoder_uses_the_precision_the_file_was_coded_with(tiny3, image):
    data = codec.encode_image(image, tiny3, entropy_float64=False)
    fp = codec.LalicFile.from_bytes(data).fingerprint
    assert fp == tiny3.fingerprint_for("float32") != tiny3.fingerprint
    assert tiny3.entropy_path_of(fp) == "float32"
    auto = codec.decode_image(data)  # the model the file names, fresh
    assert torch.equal(auto, codec.decode_image(data, tiny3, entropy_float64=False))


def test_a_table_mismatch_is_one_line_naming_the_coder(image):
    """A model whose tables differ from the encoder's while its fingerprint was taken before
    (the worst case): the decoder names the coder that failed, never a silent wrong image."""
    model = codec.resolve_model("lalic-tiny:3")
    data = codec.encode_image(image, model)
    eb = model.model.latent_codec.hyper.entropy_bottleneck
    eb._quantized_cdf = eb._quantized_cdf.flip(0).contiguous()  # other tables, same fingerprint
    with pytest.raises(LalicFormatError) as info:
        codec.decode_image(data, model)
    text = str(info.value)
    assert "\n" not in text and "EntropyBottleneck" in text and "coder tables" in text


# --------------------------------------------------------------------------------------------
# Numeric regimes
# --------------------------------------------------------------------------------------------
def _encode_under(regime: str, model, image) -> bytes:
    if regime == "threads1":
        return _with_threads(1, lambda: codec.encode_image(image, model))
    if regime == "threads2":
        return _with_threads(2, lambda: codec.encode_image(image, model))
    if regime == "mkldnn_off":
        with torch.backends.mkldnn.flags(enabled=False):
            return codec.encode_image(image, model)
    if regime == "channels_last":
        model.model.to(memory_format=torch.channels_last)
        try:
            return codec.encode_image(image.to(memory_format=torch.channels_last), model)
        finally:
            model.model.to(memory_format=torch.contiguous_format)
    if regime == "float32":
        return codec.encode_image(image, model, entropy_float64=False)
    return codec.encode_image(image, model)


def _decode_under(regime: str, data: bytes, model) -> torch.Tensor:
    if regime == "threads1":
        return _with_threads(1, lambda: codec.decode_image(data, model))
    if regime == "threads2":
        return _with_threads(2, lambda: codec.decode_image(data, model))
    if regime == "mkldnn_off":
        with torch.backends.mkldnn.flags(enabled=False):
            return codec.decode_image(data, model)
    if regime == "channels_last":
        model.model.to(memory_format=torch.channels_last)
        try:
            return codec.decode_image(data, model)
        finally:
            model.model.to(memory_format=torch.contiguous_format)
    if regime in ("float32", "float64"):  # forced, whatever the file says
        return codec.decode_image(data, model, entropy_float64=regime == "float64")
    return codec.decode_image(data, model)


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("enc,dec", [
    ("threads1", "threads2"), ("threads2", "threads1"),
    ("default", "mkldnn_off"), ("mkldnn_off", "default"),
    ("channels_last", "default"), ("default", "channels_last"),
    ("float32", "float64"), ("default", "float32"),
])
def test_files_decode_under_another_numeric_regime(tiny3, image, enc, dec):
    data = _encode_under(enc, tiny3, image)
    same = _decode_under(enc, data, tiny3)
    other = _decode_under(dec, data, tiny3)
    assert _u8_sha(other) == _u8_sha(same)
    assert (other - same).abs().max().item() < 1e-3  # float64 means: last-bit differences only


def test_deterministic_coding_restores_the_user_settings(tiny3):
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision())
    matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = \
        True, True, False, True
    torch.set_float32_matmul_precision("medium")
    model = tiny3.model
    _, module = entropy_parameter_modules(model)[0]
    weight = next(p for p in model.g_s.parameters() if p.dim() == 4)
    weight.data = weight.data.to(memory_format=torch.channels_last)
    try:
        with deterministic_coding(model, entropy_float64=True):
            assert not matmul.allow_tf32 and not cudnn.allow_tf32
            assert cudnn.deterministic and not cudnn.benchmark
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.get_float32_matmul_precision() == "highest"
            assert weight.is_contiguous()
            assert next(module.parameters()).dtype == torch.float64
        assert (matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark) == \
            (True, True, False, True)
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.get_float32_matmul_precision() == "medium"
        assert not weight.is_contiguous()  # the user's layout is back
        assert next(module.parameters()).dtype == torch.float32
    finally:
        weight.data = weight.data.contiguous()
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = before[:4]
        torch.use_deterministic_algorithms(before[4])
        torch.set_float32_matmul_precision(before[5])
    names = [n for n, _ in entropy_parameter_modules(model)]
    assert "hyper.h_s" in names and any("channel_context" in n for n in names)
    assert any(n.endswith("entropy_parameters") for n in names)


def test_coder_modules_are_listed_once(tiny3):
    names = [n for n, _ in coder_modules(tiny3.model)]
    assert len(names) == len(set(names)) == 1 + len(tiny3.model.groups)


# --------------------------------------------------------------------------------------------
# GPU (skipped without CUDA)
# --------------------------------------------------------------------------------------------
@CUDA
def test_round_trip_on_the_gpu(image):
    model = codec.resolve_model("lalic-tiny:3", device="cuda")
    data = codec.encode_image(image, model)
    x_hat = codec.decode_image(data, model, device="cuda")
    assert codec.LalicFile.from_bytes(data).fingerprint == model.fingerprint
    assert x_hat.shape == image.shape


@CUDA
@pytest.mark.parametrize("enc,dec", [("cuda", "cpu"), ("cpu", "cuda")])
def test_files_travel_between_gpu_and_cpu(image, enc, dec):
    encoder = codec.resolve_model("lalic-tiny:3", device=enc)
    decoder = codec.resolve_model("lalic-tiny:3", device=dec)
    assert encoder.fingerprint == decoder.fingerprint
    data = codec.encode_image(image, encoder)
    same = codec.decode_image(data, encoder, device=enc)
    other = codec.decode_image(data, decoder, device=dec)
    assert (same - other).abs().max().item() < 2e-3
