"""The ``lalic`` console script: compress / decompress / info / eval and its error handling.

Uses the LALIC "tiny" preset (random weights, seed 0) on images of 64x64 to 96x80 pixels.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lalic_core import cli, codec


def _write_png(path, h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
    image.convert(mode).save(path)
    return path


def _run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def compressed(workdir):
    """A 70x90 image compressed with the tiny preset through the CLI."""
    src = _write_png(workdir / "in.png", 70, 90)
    dst = workdir / "in.lalic"
    status = cli.main(["compress", str(src), str(dst), "--model", "tiny"])
    assert status == 0
    return src, dst


def test_compress_reports_and_warns(workdir, capsys):
    src = _write_png(workdir / "small.png", 64, 64, seed=1)
    status, out, err = _run(capsys, "compress", src, workdir / "small.lalic", "--model", "tiny")
    assert status == 0
    data = (workdir / "small.lalic").read_bytes()
    assert f"{len(data):,} bytes" in out and f"{8 * len(data) / 64**2:.4f} bpp" in out
    assert "lalic: warning: preset 'tiny' has random-initialised weights" in err
    assert "Traceback" not in err


def test_decompress_matches_library_and_fresh_process(compressed, workdir, capsys):
    _, lalic_file = compressed
    status, _, err = _run(capsys, "decompress", lalic_file, workdir / "out.png")
    assert status == 0, err
    decoded = np.asarray(Image.open(workdir / "out.png"))
    assert decoded.shape == (70, 90, 3)
    expected = codec.to_uint8(codec.decode_file(lalic_file)).numpy()
    np.testing.assert_array_equal(decoded, expected)

    # The same file decodes to the same pixels in a fresh process.
    proc = subprocess.run([sys.executable, "-m", "lalic_core.cli", "decompress", str(lalic_file),
                           str(workdir / "fresh.png")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(workdir / "fresh.png")), decoded)


def test_info(compressed, capsys):
    _, lalic_file = compressed
    status, out, _ = _run(capsys, "info", lalic_file)
    assert status == 0
    assert "preset 'tiny'" in out and "90x70" in out and "CRC-32 ok" in out
    assert "y group 0 anchor" in out and "\nz " in out
    status, out, _ = _run(capsys, "info", lalic_file, "--json")
    info = json.loads(out)
    header = codec.read_header(lalic_file)
    assert info["bytes"] == lalic_file.stat().st_size == header.file_bytes
    assert sum(s["bytes"] for s in info["steps"]) == info["strings_bytes"] == header.payload_bytes
    assert info["steps"][-1]["step"] == "z"
    assert info["padding"] == {"top": 29, "bottom": 29, "left": 19, "right": 19}
    assert info["container_bytes"] == header.header_bytes < 64


def test_checkpoint_identity(workdir, capsys):
    model = codec.resolve_model("tiny", warn_random=False).model
    torch.save(model.state_dict(), workdir / "tiny.pth")
    src = _write_png(workdir / "c.png", 64, 64, seed=2)
    status, _, err = _run(capsys, "compress", src, workdir / "c.lalic", "--model", workdir / "tiny.pth")
    assert status == 0, err
    assert "random-initialised" not in err
    header = codec.read_header(workdir / "c.lalic")
    assert header.identity.kind == "checkpoint"
    assert header.identity.checkpoint_sha256 == codec.file_sha256(workdir / "tiny.pth")[:8]

    status, _, err = _run(capsys, "decompress", workdir / "c.lalic", workdir / "c_out.png")
    assert status == 1 and "pass that checkpoint file with --model" in err
    status, _, err = _run(capsys, "decompress", workdir / "c.lalic", workdir / "c_out.png",
                          "--model", workdir / "tiny.pth")
    assert status == 0, err

    state = model.state_dict()
    state["g_a.0.bias"] = state["g_a.0.bias"] + 0.5
    torch.save(state, workdir / "other.pth")
    status, _, err = _run(capsys, "decompress", workdir / "c.lalic", workdir / "c_other.png",
                          "--model", workdir / "other.pth")
    assert status == 1 and "wrong checkpoint" in err and "Traceback" not in err


def test_zoo_identity(workdir, capsys, monkeypatch):
    """A zoo entry NAME:QUALITY is stored by name and rebuilt from it when decoding (the zoo
    is replaced by one entry backed by the tiny preset)."""
    from lalic_core import zoo

    def load(name, quality):
        assert (name, quality) == ("fake-zoo", 3)
        return codec.resolve_model("tiny", warn_random=False).model

    monkeypatch.setattr(zoo, "available", lambda *a, **k: [("fake-zoo", 3)])
    monkeypatch.setattr(zoo, "load", load)
    src = _write_png(workdir / "z.png", 64, 64, seed=5)
    status, _, err = _run(capsys, "compress", src, workdir / "z.lalic", "--model", "fake-zoo:3")
    assert status == 0, err
    assert "random-initialised" not in err
    header = codec.read_header(workdir / "z.lalic")
    assert header.identity == codec.ModelIdentity("zoo", "fake-zoo", 3)
    status, _, err = _run(capsys, "decompress", workdir / "z.lalic", workdir / "z_out.png")
    assert status == 0, err
    status, _, err = _run(capsys, "compress", src, workdir / "z4.lalic", "--model", "fake-zoo:4")
    assert status == 1 and "unknown zoo entry 'fake-zoo:4' (available: fake-zoo:3)" in err


def test_eval_writes_rd_json(workdir, capsys):
    from lalic_core.rd import load_rd

    folder = workdir / "images"
    folder.mkdir()
    _write_png(folder / "a.png", 64, 96, seed=3)
    _write_png(folder / "b.png", 80, 64, seed=4, mode="L")  # converted, with a warning
    status, _, err = _run(capsys, "eval", folder, "--model", "tiny", "--output",
                            workdir / "rd.json", "--name", "tiny-random")
    assert status == 0, err
    assert "b.png: grayscale copied to R, G, B" in err
    report = json.loads((workdir / "rd.json").read_text())
    assert report["name"] == "tiny-random" and "bpp-strings" in report["description"]
    res = report["results"]
    assert {"bpp", "bpp-strings", "psnr", "encoding_time", "decoding_time"} <= set(res)
    assert "ms-ssim" not in res  # both images are below MS-SSIM's 161-pixel minimum
    images = report["images"]
    assert [im["image"] for im in images] == ["a.png", "b.png"]
    for im in images:
        assert im["bpp"] == pytest.approx(8 * im["bytes"] / (im["width"] * im["height"]))
        assert im["bytes"] - im["strings_bytes"] < 64  # the container
        assert im["encoding_time"] > 0 and im["decoding_time"] > 0
    assert res["bpp"][0] == pytest.approx(np.mean([im["bpp"] for im in images]))
    assert res["psnr"][0] == pytest.approx(np.mean([im["psnr"] for im in images]))
    curve = load_rd(workdir / "rd.json")
    assert curve.name == "tiny-random" and curve.bpp == res["bpp"]


# --------------------------------------------------------------------------------------------
# Errors: a message, status 1, no traceback
# --------------------------------------------------------------------------------------------
def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture(scope="module")
def bad_inputs(workdir, compressed):
    _, good = compressed
    data = good.read_bytes()
    (workdir / "text.png").write_text("this is not an image")
    (workdir / "trunc.lalic").write_bytes(data[: len(data) // 2])
    (workdir / "version.lalic").write_bytes(data[:4] + b"\x09" + data[5:])
    (workdir / "flipped.lalic").write_bytes(data[:-9] + bytes([data[-9] ^ 4]) + data[-8:])
    foreign = codec.LalicFile.from_bytes(data)
    foreign.fingerprint = b"\0\0\0\0"  # "tiny" by name, but other weights
    (workdir / "foreign.lalic").write_bytes(foreign.to_bytes())
    (workdir / "empty_dir").mkdir()
    return workdir


def test_outputs_are_not_overwritten_without_force(compressed, workdir, capsys):
    src, lalic_file = compressed
    before = lalic_file.read_bytes()
    status, _, err = _run(capsys, "compress", src, lalic_file, "--model", "tiny")
    assert status == 1 and "exists; use --force" in err and "Traceback" not in err
    assert lalic_file.read_bytes() == before
    status, _, err = _run(capsys, "compress", src, lalic_file, "--model", "tiny", "--force")
    assert status == 0, err
    out_png = workdir / "force.png"
    out_png.write_bytes(b"keep me")
    status, _, err = _run(capsys, "decompress", lalic_file, out_png)
    assert status == 1 and "exists; use --force" in err and out_png.read_bytes() == b"keep me"
    status, _, err = _run(capsys, "decompress", lalic_file, out_png, "--force")
    assert status == 0 and Image.open(out_png).size == (90, 70)
    (workdir / "rd.json").write_text("{}")
    status, _, err = _run(capsys, "eval", workdir, "--model", "tiny", "-o", workdir / "rd.json")
    assert status == 1 and "exists; use --force" in err


def test_outputs_are_written_atomically(compressed, workdir, capsys, monkeypatch):
    """A crash between writing the temporary file and the rename leaves the old output
    intact and no temporary file behind."""
    import os

    from lalic_core import atomic

    src, lalic_file = compressed
    before = lalic_file.read_bytes()

    def crash(a, b):
        raise OSError(28, "No space left on device", str(b))

    monkeypatch.setattr(atomic.os, "replace", crash)
    for argv in (["compress", src, lalic_file, "--model", "tiny", "--force"],
                 ["decompress", lalic_file, workdir / "out.png", "--force"]):
        target = argv[2]
        old = target.read_bytes() if target.exists() else None
        status, _, err = _run(capsys, *argv)
        assert status == 1 and "No space left" in err, err
        assert (target.read_bytes() if target.exists() else None) == old
    assert lalic_file.read_bytes() == before
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]


def test_info_prints_the_fingerprint_and_what_it_covers(compressed, capsys):
    _, lalic_file = compressed
    status, out, _ = _run(capsys, "info", lalic_file)
    header = codec.read_header(lalic_file)
    assert status == 0 and header.fingerprint.hex() in out
    assert "fingerprint covers" in out and "coder tables" in out and "g_a, h_a" in out
    status, out, _ = _run(capsys, "info", lalic_file, "--json")
    assert "coder tables" in json.loads(out)["fingerprint_covers"]


@pytest.mark.parametrize("argv,message", [
    (["compress", "missing.png", "x.lalic", "--model", "tiny"], "image not found"),
    (["compress", "text.png", "x.lalic", "--model", "tiny"], "not an image"),
    (["compress", "in.png", "x.lalic", "--model", "no-such-model"], "not a checkpoint file"),
    (["compress", "in.png", "x.lalic", "--model", "nosuch.pth"], "checkpoint file not found"),
    (["compress", "in.png", "x.lalic", "--model", "tiny", "--pad-multiple", "96"], "pad_multiple"),
    (["compress", "in.png", "in.png", "--model", "tiny"], "overwrite the input"),
    (["decompress", "missing.lalic", "x.png"], "file not found"),
    (["decompress", "in.png", "x.png"], "not a .lalic file"),
    (["decompress", "trunc.lalic", "x.png"], "corrupt or truncated"),
    (["decompress", "version.lalic", "x.png"], "unsupported .lalic format version 9"),
    (["decompress", "flipped.lalic", "x.png"], "checksum mismatch"),
    (["decompress", "foreign.lalic", "x.png"], "made by another model"),
    (["decompress", "in.lalic", "x.unknownformat"], "cannot write"),
    (["info", "empty_dir"], "folder"),
    (["eval", "empty_dir", "--model", "tiny"], "no images"),
    (["eval", "missing_dir", "--model", "tiny"], "not found"),
])
def test_errors_are_clean(bad_inputs, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(bad_inputs)
    status, _, err = _run(capsys, *argv)
    assert status == 1
    assert err.strip().splitlines()[-1].startswith("lalic: error: ")
    assert message in err
    assert "Traceback" not in err


def test_debug_shows_traceback(bad_inputs, capsys, monkeypatch):
    monkeypatch.chdir(bad_inputs)
    status, _, err = _run(capsys, "--debug", "decompress", "trunc.lalic", "x.png")
    assert status == 1 and "Traceback" in err and "LalicFormatError" in err
    status, _, err = _run(capsys, "decompress", "trunc.lalic", "x.png", "--debug")
    assert status == 1 and "Traceback" in err


def test_usage_errors(capsys):
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["compress", "only-one-argument"])
    assert exc.value.code == 2


def test_all_subcommands_registered():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"compress", "decompress", "eval", "info", "models", "train"} <= set(commands)
