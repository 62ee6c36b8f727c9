"""The zoo (lalic_core.zoo): export a freshly trained tiny model, list, load, compress; and the
shipped entries."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lalic_core import zoo
from lalic_core.train import TrainConfig, train
from lalic_core.training.export import export

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_folder

REQUIRED_TRAINING = ("lambda", "steps", "crop", "batch_size", "time_s", "git_commit",
                     "train_images")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    train_dir = make_folder(root / "train", [(80, 96), (72, 100), (96, 64)], seed=1)
    val_dir = make_folder(root / "val", [(70, 90), (64, 64)], seed=2)
    result = train(TrainConfig(train_dir=str(train_dir), val_dir=str(val_dir),
                               out_dir=str(root / "run"), model="tiny", quality=2, steps=2,
                               batch_size=1, crop=64, val_every=2, progress=False,
                               tensorboard=False))
    return result, root


@pytest.fixture(scope="module")
def exported(trained):
    result, root = trained
    weights = root / "weights"
    record = export(result.best_checkpoint, "lalic-test", 2, weights_dir=weights,
                        half=True, description="test entry")
    return weights, record


def test_export_writes_a_record_of_the_training(exported, trained):
    weights, record_path = exported
    record = json.loads(record_path.read_text())
    assert record["name"] == "lalic-test" and record["quality"] == 2
    assert record["model"] == "tiny" and record["architecture"] == "LALIC"
    for key in REQUIRED_TRAINING:
        assert key in record["training"], key
    assert record["training"]["lambda"] == 0.0035 and record["training"]["steps"] == 2
    assert record["storage_dtype"] == "float16"
    shipped, full = record["validation"]["shipped"], record["validation"]["float32"]
    assert shipped["images"] == 2 and shipped["bpp"] > 0
    assert abs(shipped["psnr"] - full["psnr"]) < 0.05  # float16 storage barely matters
    size = (weights / record["weights"]).stat().st_size
    assert size == record["weights_bytes"]
    n_params = record["parameters"]
    state = torch.load(weights / record["weights"], weights_only=True)["state_dict"]
    tables = 4 * sum({v.untyped_storage().data_ptr(): v.numel() for k, v in state.items()
                      if k.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length")
                      }.values())  # equal tables are stored once
    assert tables > 0 and record["coder_tables"].startswith("stored")
    assert 2 * n_params + tables < size < 2 * n_params + tables + 2_000_000  # float16 + tables


def test_available_info_load_compress(exported):
    weights, _ = exported
    assert zoo.available(weights) == [("lalic-test", 2)]
    assert zoo.info("lalic-test", 2, weights)["description"] == "test entry"
    model = zoo.load("lalic-test", 2, weights_dir=weights)
    assert not model.training
    x = torch.rand(1, 3, 64, 128)
    enc = model.compress(x)
    assert sum(len(s[0]) for s in enc["strings"]) > 0
    x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert x_hat.shape == x.shape
    # decoding with a second, independently loaded copy gives the same pixels
    again = zoo.load("lalic-test", 2, weights_dir=weights)
    assert torch.equal(again.decompress(enc["strings"], enc["shape"])["x_hat"], x_hat)


def test_env_var_registers_a_folder_for_the_cli(exported, tmp_path, monkeypatch):
    weights, _ = exported
    monkeypatch.setenv(zoo.ENV_VAR, str(weights))
    assert ("lalic-test", 2) in zoo.available()
    from PIL import Image

    from lalic_core.cli import main

    Image.new("RGB", (70, 50), (120, 80, 200)).save(tmp_path / "in.png")
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "out.lalic"),
                 "--model", "lalic-test:2"]) == 0
    assert main(["decompress", str(tmp_path / "out.lalic"), str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (70, 50)


def test_unknown_or_damaged_entries(exported, tmp_path):
    weights, record_path = exported
    with pytest.raises(ValueError, match="available: lalic-test:2"):
        zoo.load("lalic-test", 5, weights_dir=weights)
    with pytest.raises(TypeError, match="quality"):
        zoo.info("lalic-test", "2", weights)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / record_path.name).write_text(record_path.read_text())
    (damaged / "lalic-test-q2.pt").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ValueError, match="does not match its record"):
        zoo.load("lalic-test", 2, weights_dir=damaged)
    assert zoo.available(tmp_path / "nothing-here") == []


def test_shipped_entries_load_and_compress():
    entries = zoo.available(zoo.packaged_dir())
    assert entries, "no zoo entries in the package (lalic_core/zoo/weights)"
    x = torch.rand(1, 3, 64, 64)
    for name, quality in entries:
        record = zoo.info(name, quality, zoo.packaged_dir())
        for key in REQUIRED_TRAINING:
            assert key in record["training"], (name, quality, key)
        assert record["weights_bytes"] < 8_000_000
        model = zoo.load(name, quality, weights_dir=zoo.packaged_dir())
        enc = model.compress(x)
        assert model.decompress(enc["strings"], enc["shape"])["x_hat"].shape == x.shape


#: PSNR floors (dB) of the shipped models on the packaged half-size kodim15 (384x256), coded
#: to a real .lalic file and decoded to 8 bits: about 0.5 dB below what each measured when
#: it was exported (e.g. lalic-tiny:3 29.57 dB at 0.327 bpp). A new zoo entry needs a floor.
PSNR_FLOORS = {
    ("cnn-tiny", 3): 28.1, ("lalic-tiny", 1): 27.4, ("lalic-tiny", 2): 28.2,
    ("lalic-tiny", 3): 29.0, ("lalic-tiny", 4): 29.8, ("lalic-tiny-scratch", 3): 27.9,
    ("tcm-tiny", 3): 28.1,
}


@pytest.fixture(scope="module")
def shipped_results():
    from lalic_core import codec
    from lalic_core.data import demo_image_path
    from lalic_core.metrics import psnr

    x = codec.read_image(demo_image_path("kodim15"))
    results = {}
    for name, quality in zoo.available(zoo.packaged_dir()):
        model = codec.resolve_model(f"{name}:{quality}")
        data = codec.encode_image(x, model)
        x_hat = codec.to_uint8(codec.decode_image(data, model)).permute(2, 0, 1)[None] / 255
        results[(name, quality)] = (float(psnr(x_hat, x)), len(data) * 8 / x[0, 0].numel())
    return results


def test_every_shipped_model_has_a_psnr_floor_and_meets_it(shipped_results):
    assert set(shipped_results) == set(PSNR_FLOORS), "shipped entries and floors differ"
    low = {k: round(p, 3) for k, (p, _) in shipped_results.items() if p < PSNR_FLOORS[k]}
    assert not low, f"below their PSNR floor: {low}"
    assert all(0.05 < bpp < 1.0 for _, bpp in shipped_results.values()), shipped_results


def test_lalic_tiny_qualities_trade_rate_for_distortion(shipped_results):
    # an independent check of the family: higher quality = more bits and more PSNR
    family = sorted((q, r) for (n, q), r in shipped_results.items() if n == "lalic-tiny")
    assert [q for q, _ in family] == [1, 2, 3, 4]
    psnrs, bpps = [r[0] for _, r in family], [r[1] for _, r in family]
    assert psnrs == sorted(psnrs) and bpps == sorted(bpps), family
