"""Issue 13: the official kernels' BiWKV semantics in the model, in checkpoints and in .lalic
headers; official raw strings; float64 models; ``lalic check-checkpoint``.

All on the "tiny" preset at 64x64 (y 4x4: every BiWKV call has T <= 32, where the official
semantics differ most from the formula).
"""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lalic_core import cli, codec, layers
from lalic_core.check_checkpoint import check_checkpoint, infer_quality, published_point
from lalic_core.codec import LalicFile
from lalic_core.models import LALIC, LALICConfig
from lalic_core.models.factory import load_checkpoint
from lalic_core.ops.biwkv import biwkv_reference

SEMANTICS = ("formula", "official32", "official64")


def _tiny(semantics="formula", seed=0):
    torch.manual_seed(seed)
    model = LALIC.from_preset("tiny", biwkv_semantics=semantics).eval()
    model.update(force=True)
    return model


def _image(h=64, w=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    return (torch.round(x * 255) / 255).to(dtype)


def _write_png(path, h=64, w=64, seed=0):
    x = _image(h, w, seed)
    Image.fromarray(codec.to_uint8(x).numpy()).save(path)
    return path


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, layers.BiRWKVBlock)]


@pytest.fixture(scope="module")
def tiny32():
    return _tiny("official32")


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
def test_config_and_setter():
    with pytest.raises(ValueError, match="biwkv_semantics"):
        LALICConfig(biwkv_semantics="official16")
    model = LALIC.from_preset("tiny", biwkv_semantics="official64")
    blocks = _blocks(model)
    ctx = [b for b in model.latent_codec.modules() if isinstance(b, layers.BiRWKVBlock)]
    assert ctx and len(blocks) > len(ctx)  # transforms and the SCCTX channel contexts
    assert {b.biwkv_semantics for b in blocks} == {"official64"}
    assert model.biwkv_semantics == model.config.biwkv_semantics == "official64"
    keys = set(model.state_dict())
    assert model.set_biwkv_semantics("formula") is model
    assert {b.biwkv_semantics for b in blocks} == {"formula"}
    assert set(model.state_dict()) == keys  # not a parameter or buffer
    with pytest.raises(ValueError, match="biwkv_semantics"):
        model.set_biwkv_semantics("Official64")
    assert "official32" in repr(LALIC.from_preset("tiny", biwkv_semantics="official32"))


@pytest.mark.parametrize("semantics", ["official32", "official64"])
def test_model_computes_the_reference_semantics(semantics, monkeypatch):
    """Every BiWKV of the model (training path and the CPU inference path) gets the model's
    semantics, and the model output equals the one with the float64 reference of those
    semantics in every call with T <= 64 (the 4x4 latents, the channel contexts, h_a, h_s,
    where the semantics differ most)."""
    model = _tiny(semantics)
    x = _image(seed=1)
    calls = []
    real = layers.biwkv

    def spy(w, u, k, v, *args, **kwargs):
        calls.append(kwargs.get("semantics"))
        return real(w, u, k, v, *args, **kwargs)

    monkeypatch.setattr(layers, "biwkv", spy)
    with torch.no_grad():  # the chunked CPU inference path of the blocks
        y = model.g_a(x)
        x_hat = model(x)["x_hat"]
    n_inference = len(calls)
    with torch.enable_grad():  # the plain training formulas
        model.g_a(x).sum().backward()
    assert n_inference and len(calls) > n_inference and set(calls) == {semantics}
    n_transform = len(_blocks(model.g_a)) + len(_blocks(model.g_s)) + 2 * len(_blocks(model.h_a))
    assert n_inference >= n_transform + len(_blocks(model.g_a))

    def reference(w, u, k, v, *args, semantics="formula", **kwargs):
        if k.shape[1] > 64:  # the O(T^2) reference is slow; the kernels' own tests cover it
            return real(w, u, k, v, *args, semantics=semantics, **kwargs)
        return biwkv_reference(w, u, k, v, semantics).to(k.dtype)

    monkeypatch.setattr(layers, "biwkv", reference)
    with torch.no_grad():
        y_ref = model.g_a(x)
        x_hat_ref = model(x)["x_hat"]
    assert (y - y_ref).abs().max() <= 1e-4 * y_ref.abs().max()
    assert (x_hat - x_hat_ref).abs().max() <= 1e-4 * x_hat_ref.abs().max()

    monkeypatch.setattr(layers, "biwkv", real)
    with torch.no_grad():
        x_hat_formula = model.set_biwkv_semantics("formula")(x)["x_hat"]
    assert (x_hat_formula - x_hat).abs().max() > 1e-3  # the semantics matter here


def test_official_strings_need_the_matching_semantics(tiny32):
    """Strings of an official32 model (raw CompressAI strings, no header) decode under
    official32 to its reconstruction, and differently under the formula: the semantics
    reach the transforms and the entropy parameters (channel context)."""
    x = _image(seed=2)
    out = tiny32.compress(x)
    x_hat = tiny32.decompress(out["strings"], (1, 1))["x_hat"]
    with torch.no_grad():
        forward = tiny32(x)["x_hat"].clamp(0, 1)
    assert (x_hat - forward).abs().max() <= 1e-4
    formula = copy.deepcopy(tiny32).set_biwkv_semantics("formula")  # the same weights
    y_hat32 = out["y_hat"]
    with torch.inference_mode():
        y_hat_formula = formula.latent_codec.decompress(out["strings"], formula.latent_shape((1, 1)))["y_hat"]
    assert not torch.equal(y_hat_formula, y_hat32)  # entropy parameters differ: wrong symbols
    x_hat_formula = formula.decompress(out["strings"], (1, 1))["x_hat"]
    assert (x_hat_formula - x_hat).abs().max() > 1e-2


def test_float64_round_trip():
    model = _tiny("official64").double()
    x = _image(seed=3, dtype=torch.float64)
    assert torch.get_default_dtype() == torch.float32
    out = model.compress(x)
    x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
    assert x_hat.dtype == torch.float64 and torch.get_default_dtype() == torch.float32
    with torch.no_grad():
        forward = model(x)["x_hat"].clamp(0, 1)
    assert (x_hat - forward).abs().max() <= 1e-8
    data = codec.encode_image(x, model)  # through the container too
    assert (codec.decode_image(data, model) - x_hat.float()).abs().max() <= 1e-6


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def test_checkpoint_semantics(tmp_path):
    sd = _tiny().state_dict()
    official = tmp_path / "official.pth"
    torch.save({"epoch": 3, "state_dict": sd, "loss": 1.0}, official)  # like official train.py
    assert load_checkpoint(official).biwkv_semantics == "formula"
    assert load_checkpoint(official, biwkv_semantics="official64").biwkv_semantics == "official64"
    ours = tmp_path / "ours.pt"
    torch.save({"format": "lalic-train-1", "state_dict": sd,
                "config": {"model": "tiny", "biwkv_semantics": "official32"},
                "biwkv_semantics": "official32"}, ours)
    model = load_checkpoint(ours)
    assert model.biwkv_semantics == "official32"
    assert {b.biwkv_semantics for b in _blocks(model)} == {"official32"}
    assert load_checkpoint(ours, biwkv_semantics="formula").biwkv_semantics == "formula"
    with pytest.raises(ValueError, match="biwkv_semantics"):
        load_checkpoint(official, biwkv_semantics="fast")
    assert LALIC.from_state_dict(sd, biwkv_semantics="official64").biwkv_semantics == "official64"
    assert codec.resolve_model(ours).model.biwkv_semantics == "official32"
    resolved = codec.resolve_model(official, biwkv_semantics="official64")
    assert codec.model_biwkv_semantics(resolved) == "official64"


def test_trainer_config_records_semantics():
    from lalic_core.training.args import config_from_args
    from lalic_core.training.config import TrainConfig

    cfg = TrainConfig(train_dir="x", biwkv_semantics="official64")
    assert cfg.as_dict()["biwkv_semantics"] == "official64"
    with pytest.raises(ValueError, match="biwkv_semantics"):
        TrainConfig(train_dir="x", biwkv_semantics="x")
    args = cli.build_parser().parse_args(["train", "d", "--biwkv-semantics", "official32"])
    assert config_from_args(args).biwkv_semantics == "official32"


# --------------------------------------------------------------------------------------------
# .lalic header
# --------------------------------------------------------------------------------------------
def test_header_records_and_decoder_uses_the_files_semantics(tiny32):
    x = _image(seed=4)
    data = codec.encode_image(x, tiny32)
    header = LalicFile.from_bytes(data)
    assert header.version == codec.FORMAT_VERSION == 2
    assert header.biwkv_semantics == "official32"
    expected = codec.decode_image(data, tiny32)
    formula = copy.deepcopy(tiny32).set_biwkv_semantics("formula")  # the file's wins
    assert torch.equal(codec.decode_image(data, formula), expected)
    assert formula.biwkv_semantics == "formula"  # restored
    with pytest.raises(ValueError, match="encoded with BiWKV semantics 'official32'"):
        codec.decode_image(data, formula, biwkv_semantics="formula")
    assert torch.equal(codec.decode_image(data, formula, biwkv_semantics="official32"), expected)


def test_version_1_files_decode_as_formula():
    model = _tiny("formula")
    x = _image(seed=5)
    v2 = LalicFile.from_bytes(codec.encode_image(x, model))
    v1 = LalicFile(identity=v2.identity, fingerprint=v2.fingerprint, width=v2.width,
                   height=v2.height, pad_multiple=v2.pad_multiple, shape=v2.shape,
                   strings=v2.strings, version=1)
    data = v1.to_bytes()
    assert data[4] == 1 and len(data) == len(v2.to_bytes()) - 1
    header = LalicFile.from_bytes(data)
    assert header.version == 1 and header.biwkv_semantics == "formula"
    model32 = _tiny("official32")
    assert torch.equal(codec.decode_image(data, model32), codec.decode_image(v2, model))
    with pytest.raises(ValueError, match="version 1 cannot record"):
        LalicFile(identity=v2.identity, fingerprint=v2.fingerprint, width=64, height=64,
                  pad_multiple=64, shape=v2.shape, strings=v2.strings, version=1,
                  biwkv_semantics="official64").to_bytes()


def test_unknown_semantics_code_is_a_format_error():
    import struct
    import zlib

    model = _tiny()
    data = bytearray(codec.encode_image(_image(), model))
    # version 2 custom identity: magic 4, version 1, kind 1, name (1 + len), fingerprint 4
    pos = 4 + 1 + 1 + 1 + len(type(model).__name__) + 4
    assert data[pos] == 0
    data[pos] = 7
    body = bytes(data[:-4])
    damaged = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(codec.LalicFormatError, match="unknown BiWKV semantics code 7"):
        LalicFile.from_bytes(damaged)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_semantics_flags(tmp_path, capsys):
    src = _write_png(tmp_path / "in.png")
    dst = tmp_path / "in.lalic"
    status, out, err = _run(capsys, "compress", src, dst, "--model", "tiny",
                            "--biwkv-semantics", "official32")
    assert status == 0, err
    assert "BiWKV official32" in out
    assert codec.read_header(dst).biwkv_semantics == "official32"

    status, out, _ = _run(capsys, "info", dst)
    assert status == 0 and "BiWKV semantics      official32" in out
    status, out, _ = _run(capsys, "info", dst, "--json")
    assert '"biwkv_semantics": "official32"' in out

    status, out, err = _run(capsys, "decompress", dst, tmp_path / "out.png")
    assert status == 0, err
    assert "BiWKV official32" in out
    status, _, err = _run(capsys, "decompress", dst, tmp_path / "bad.png",
                          "--biwkv-semantics", "formula")
    assert status == 1
    assert "encoded with BiWKV semantics 'official32'" in err and "Traceback" not in err
    assert not (tmp_path / "bad.png").exists()
    status, _, err = _run(capsys, "decompress", dst, tmp_path / "ok.png",
                          "--biwkv-semantics", "official32")
    assert status == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ok.png")),
                          np.asarray(Image.open(tmp_path / "out.png")))
    with pytest.raises(SystemExit):
        cli.main(["compress", str(src), str(dst), "--model", "tiny", "--biwkv-semantics", "x"])

    folder = tmp_path / "images"
    folder.mkdir()
    _write_png(folder / "a.png")
    status, out, err = _run(capsys, "eval", folder, "--model", "tiny", "--biwkv-semantics",
                            "official64", "--quiet", "-o", tmp_path / "rd.json")
    assert status == 0, err
    report = json.loads((tmp_path / "rd.json").read_text())
    assert report["model"]["biwkv_semantics"] == "official64"
    assert "BiWKV semantics official64" in report["description"]


# --------------------------------------------------------------------------------------------
# check-checkpoint
# --------------------------------------------------------------------------------------------
def test_quality_and_published_point():
    assert infer_quality("lalic-mse-q6.pth") == 6
    assert infer_quality("/a/b/0.0483checkpoint_best_loss.pth.tar") is None
    assert infer_quality("runs/q3/best.pt") is None  # only the file name
    point = published_point(6)
    assert point["psnr"] > 37 and 0.7 < point["bpp"] < 1.0
    with pytest.raises(ValueError, match="quality"):
        published_point(7)


def test_check_checkpoint(tmp_path, capsys):
    images = tmp_path / "kodak"
    images.mkdir()
    for i in range(3):
        _write_png(images / f"im{i}.png", seed=i)
    ckpt = tmp_path / "lalic-mse-q6.pth"
    torch.save({"epoch": 0, "state_dict": _tiny().state_dict(), "loss": 0.0}, ckpt)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no LalicWarning: a checkpoint, not a preset
        report = check_checkpoint(ckpt, kodak=images, subset=2)
    assert report.quality == 6 and report.biwkv_semantics == "official64"
    assert len(report.images) == 2 and not report.full
    assert report.far  # random weights: nowhere near 37.9 dB
    assert any("official_cuda" in c or "Hopper" in c for c in report.causes)
    assert "FAR" in report.format()

    status, out, err = _run(capsys, "check-checkpoint", ckpt, "--kodak", images, "--full",
                            "--biwkv-semantics", "formula", "--quality", "2", "--quiet")
    assert status == cli.EXIT_FAR, err
    assert "BiWKV semantics  formula" in out and "q2" in out and "all 3" in out
    assert "try --biwkv-semantics official64" in out

    nameless = tmp_path / "weights.pth"
    nameless.write_bytes(ckpt.read_bytes())
    status, _, err = _run(capsys, "check-checkpoint", nameless, "--kodak", images)
    assert status == 1 and "--quality" in err


# --------------------------------------------------------------------------------------------
# notebook 01 helpers
# --------------------------------------------------------------------------------------------
def test_coefficient_matrices_show_the_chunks():
    from lalic_core.analysis.biwkv_semantics import coefficient_matrices

    w, T = 0.1, 96  # official32: chunks of 3 tokens
    mats = coefficient_matrices(T, w, 0.5, ("formula", "official32"))
    ratio = mats["official32"] / mats["formula"]
    t, i = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    same_chunk = (t // 3 == i // 3) & (i <= t)
    assert np.allclose(ratio[~same_chunk], np.exp(-w))  # one decay step off outside
    assert not np.allclose(ratio[same_chunk & (i > 0) & (i % 3 > 0)], np.exp(-w))
    with pytest.raises(ValueError, match="T must be"):
        coefficient_matrices(0)


def test_semantics_difference():
    from lalic_core.analysis.biwkv_semantics import (
        format_semantics_difference,
        semantics_difference,
    )

    model = _tiny("official64")
    rows = semantics_difference(model, _image(seed=6), ("official32",))
    assert model.biwkv_semantics == "official64"  # restored
    (row,) = rows
    assert row["semantics"] == "official32" and row["reference"] == "formula"
    assert 0 < row["y_rel"] < 1 and row["x_hat_rel"] > 0 and row["bpp"] > 0
    assert "official32" in format_semantics_difference(rows)
    with pytest.raises(ValueError, match="LALIC"):
        semantics_difference(torch.nn.Linear(2, 2), _image())
