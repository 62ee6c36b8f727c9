"""The trainer (lalic_core.train): configuration, data, exact resume, Ctrl-C, bad input, CLI.

All runs use the "tiny" LALIC preset on 64x64 crops of a few synthetic images, batch 1, a
handful of steps (about a second per step on 2 cores).
"""
from __future__ import annotations

import csv
import hashlib
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lalic_core.images import crop_center, pad_center
from lalic_core.train import LAMBDAS, TrainConfig, train
from lalic_core.training.checkpoints import load_training_checkpoint
from lalic_core.training.data import (
    RandomCrops,
    StepBatches,
    find_images,
    load_validation_images,
)
from lalic_core.training.trainer import (
    RateDistortionLoss,
    build_model,
    split_parameters,
    train_step,
)


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random image with some texture (uint8 RGB)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)),
                     np.sin(4 * (xx + yy))], axis=-1)
    img = 127 + 90 * base + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(path: Path, sizes, seed=0, suffix=".png") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        sub = path / ("nested" if i % 2 else ".")  # recursive search
        sub.mkdir(exist_ok=True)
        Image.fromarray(_photo(rng, h, w)).save(sub / f"img{i:02d}{suffix}")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train_dir = make_folder(root / "train", [(80, 96), (72, 100), (96, 64), (64, 90)], seed=1)
    val_dir = make_folder(root / "val", [(70, 90), (64, 64)], seed=2)
    return train_dir, val_dir


def config(data, out_dir, **kw) -> TrainConfig:
    train_dir, val_dir = data
    base = {"train_dir": str(train_dir), "val_dir": str(val_dir), "out_dir": str(out_dir),
            "model": "tiny", "quality": 3, "steps": 4, "batch_size": 1, "crop": 64,
            "val_every": 2, "log_every": 1, "milestones": (3,), "seed": 7, "progress": False,
            "tensorboard": False}
    return TrainConfig(**{**base, **kw})


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """An uninterrupted 4-step run."""
    out = tmp_path_factory.mktemp("reference")
    return train(config(data, out))


# --------------------------------------------------------------------------------------------
# Configuration and data
# --------------------------------------------------------------------------------------------
def test_quality_names_the_official_lambdas():
    assert [TrainConfig(train_dir="x", quality=q).lambda_ for q in range(1, 7)] == \
        [0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483]
    assert TrainConfig(train_dir="x", lmbda=0.5).lambda_ == 0.5
    assert TrainConfig(train_dir="x", steps=1000).resolved_milestones == (900,)


@pytest.mark.parametrize("kw, name", [
    ({"quality": 7}, "quality"), ({"quality": None}, "quality"), ({"lmbda": -1.0}, "lmbda"),
    ({"metric": "ssim"}, "metric"), ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"),
    ({"milestones": (5, 3)}, "milestones"), ({"metric": "ms-ssim", "crop": 128}, "crop"),
    ({"lr": 0.0}, "lr"), ({"lr_gamma": 2.0}, "lr_gamma"),
])
def test_config_rejects_bad_values(kw, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(train_dir="x", **kw)


def test_crops_are_a_function_of_seed_and_position(data):
    train_dir, _ = data
    a, b = RandomCrops(train_dir, 64, seed=3), RandomCrops(train_dir, 64, seed=3)
    assert len(a) == 4 and len(find_images(train_dir)) == 4
    assert all(torch.equal(a[p], b[p]) for p in (0, 5, 11, 3))
    assert a[0].shape == (3, 64, 64) and a[0].dtype == torch.float32
    assert 0 <= a[0].min() and a[0].max() <= 1
    # every epoch visits every image once, in a seed-dependent order
    for epoch in range(3):
        assert sorted(a.locate(4 * epoch + i)[0] for i in range(4)) == [0, 1, 2, 3]
    c = RandomCrops(train_dir, 64, seed=4)
    assert [a.locate(p) for p in range(8)] != [c.locate(p) for p in range(8)]


def test_ranks_draw_disjoint_positions():
    ranks = [list(StepBatches(3, 2, 5, rank=r, world=2)) for r in range(2)]
    flat = [p for r in ranks for batch in r for p in batch]
    assert len(flat) == len(set(flat)) == 2 * 3 * 3
    assert sorted(flat) == list(range(2 * 2 * 3, 5 * 2 * 3))  # steps 2..4 of the stream


def test_bad_folders_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        RandomCrops(tmp_path / "missing", 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images \(.png, .jpg, .jpeg\)"):
        RandomCrops(tmp_path / "empty", 64)
    small = make_folder(tmp_path / "small", [(80, 80), (40, 100)])
    with pytest.raises(ValueError, match=r"smaller than the 64x64 crop: img01.png \(100x40\)"):
        RandomCrops(small, 64)
    kept = RandomCrops(small, 64, skip_small=True)
    assert len(kept) == 1 and [p.name for p in kept.skipped] == ["img01.png"]


def test_validation_images_whole_or_centre_crops(data):
    _, val_dir = data
    whole = load_validation_images(val_dir)
    assert sorted(tuple(x.shape[-2:]) for x in whole) == [(64, 64), (70, 90)]
    crops = load_validation_images(val_dir, crop=64)
    assert all(tuple(x.shape) == (1, 3, 64, 64) for x in crops)
    big = next(x for x in whole if x.shape[-1] == 90)
    assert torch.equal(next(c for c, w in zip(crops, whole) if w is big),
                       big[..., 3:67, 13:77])
    with pytest.raises(ValueError, match="smaller than the 65x65 validation crop"):
        load_validation_images(val_dir, crop=65)
    padded = pad_center(big, 64)  # centred: 29 rows above, 19 columns left (floor of half)
    assert padded.shape[-2:] == (128, 128)
    assert torch.equal(padded[..., 29:29 + 70, 19:19 + 90], big)
    assert padded[..., :29, :].abs().sum() == 0 and padded[..., :, :19].abs().sum() == 0
    assert torch.equal(crop_center(padded, 70, 90, 64), big)


# --------------------------------------------------------------------------------------------
# Training, checkpoints, exact resume
# --------------------------------------------------------------------------------------------
def test_run_writes_checkpoints_and_log(reference_run):
    r = reference_run
    assert r.step == 4 and not r.interrupted
    assert r.last_checkpoint.name == "last.pt" and r.best_checkpoint.name == "best.pt"
    ckpt = load_training_checkpoint(r.last_checkpoint)
    assert ckpt["step"] == 4 and ckpt["config"]["lambda"] == LAMBDAS[3]
    assert ckpt["config"]["milestones"] == [3] and len(ckpt["rng"]) == 1
    assert ckpt["scheduler"]["last_epoch"] == 4
    with open(r.out_dir / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(x["step"]) for x in rows if x["split"] == "train"] == [1, 2, 3, 4]
    assert [int(x["step"]) for x in rows if x["split"] == "val"] == [2, 4]
    lrs = [float(x["lr"]) for x in rows if x["split"] == "train"]
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5])  # the milestone at step 3
    for x in rows:
        assert np.isfinite(float(x["loss"])) and float(x["bpp"]) > 0
    assert r.best_val["loss"] == pytest.approx(
        min(float(x["loss"]) for x in rows if x["split"] == "val"), rel=1e-5)
    # the training checkpoint is also a model checkpoint for lalic compress / load_checkpoint
    from lalic_core.checkpoint import load_checkpoint

    model = load_checkpoint(r.last_checkpoint)
    assert not model.training


def test_resume_is_exact(data, tmp_path, reference_run):
    first = train(config(data, tmp_path, steps=2))
    assert first.step == 2
    resumed = train(config(data, tmp_path, steps=4, resume="auto"))
    assert resumed.step == 4
    assert resumed.parameter_digest == reference_run.parameter_digest
    with open(tmp_path / "log.csv") as fh:
        steps = [(int(x["step"]), x["split"]) for x in csv.DictReader(fh)]
    assert steps == [(1, "train"), (2, "train"), (2, "val"), (3, "train"), (4, "train"),
                     (4, "val")]


def test_ctrl_c_saves_a_resumable_checkpoint(data, tmp_path, reference_run):
    def press_ctrl_c(step, metrics):
        if step == 1:
            signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    stopped = train(config(data, tmp_path), on_step=press_ctrl_c)
    assert stopped.interrupted and stopped.step == 1
    assert load_training_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    resumed = train(config(data, tmp_path, resume="auto"))
    assert resumed.step == 4 and not resumed.interrupted
    assert resumed.parameter_digest == reference_run.parameter_digest


def test_never_overwrites_or_mixes_runs(data, tmp_path, reference_run):
    last = reference_run.out_dir / "last.pt"
    before = sha256(last)
    with pytest.raises(ValueError, match="already holds a run"):
        train(config(data, reference_run.out_dir))  # a new run over an old one
    with pytest.raises(ValueError, match="model: checkpoint 'tiny', now 'small'"):
        train(config(data, reference_run.out_dir, model="small", resume="auto", steps=6))
    with pytest.raises(ValueError, match="lambda"):
        train(config(data, reference_run.out_dir, quality=5, resume="auto", steps=6))
    assert sha256(last) == before
    # weights of another preset as init: a clear mismatch error, nothing written
    with pytest.raises(ValueError, match="does not match the model"):
        train(config(data, tmp_path / "other", model="small", init=str(last)))
    assert not (tmp_path / "other" / "last.pt").exists()
    with pytest.raises(ValueError, match="not a training checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "weights.pt")
        train(config(data, tmp_path / "x", resume=str(tmp_path / "weights.pt")))
    with pytest.raises(FileNotFoundError, match="train_dir"):
        train(config(data, tmp_path / "y", train_dir=str(tmp_path / "nothing")))
    assert not (tmp_path / "y").exists()


def test_init_starts_from_given_weights(data, tmp_path, reference_run):
    result = train(config(data, tmp_path, steps=1, init=str(reference_run.last_checkpoint)))
    ckpt = load_training_checkpoint(result.last_checkpoint)
    ref = load_training_checkpoint(reference_run.last_checkpoint)["state_dict"]
    # one small Adam step away from the init weights, far from a fresh model's
    fresh = build_model("tiny").state_dict()
    key = "g_a.0.weight"
    assert (ckpt["state_dict"][key] - ref[key]).abs().max() < 2e-4
    assert (fresh[key] - ref[key]).abs().max() > 1e-2


def test_non_finite_loss_changes_nothing():
    torch.manual_seed(0)
    model = build_model("tiny").train()
    main, aux, aux_names = split_parameters(model)
    assert aux_names == ["latent_codec.hyper.entropy_bottleneck.quantiles"]
    assert all(p.requires_grad for p in main)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))  # CompressAI's masked convolutions mask in place
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 64, 64)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        train_step(model, x, RateDistortionLoss(0.01), torch.optim.Adam(main),
                   torch.optim.Adam(aux))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_loss_matches_the_compressai_formula():
    x = torch.rand(2, 3, 64, 64)
    x_hat = x + 0.05 * torch.randn_like(x)
    lk = {"y": torch.rand(2, 8, 4, 4) * 0.9 + 0.05, "z": torch.rand(2, 4, 1, 1) * 0.9 + 0.05}
    out = RateDistortionLoss(0.0130)({"x_hat": x_hat, "likelihoods": lk}, x)
    bpp = -(lk["y"].log2().sum() + lk["z"].log2().sum()) / (2 * 64 * 64)
    mse = ((x_hat - x) ** 2).mean()
    assert out["bpp"].item() == pytest.approx(bpp.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.0130 * 255**2 * mse.item() + bpp.item(),
                                               rel=1e-5)


def factorized_prior():
    """A non-LALIC CompressAI model for the `module:factory` spec."""
    from compressai.models import FactorizedPrior

    return FactorizedPrior(8, 12)


def test_trains_any_compressai_model(data, tmp_path):
    result = train(config(data, tmp_path, model=f"{__name__}:factorized_prior", steps=2))
    assert result.step == 2 and np.isfinite(result.val["loss"])
    with pytest.raises(ValueError, match="cannot import"):
        build_model("no_such_module:f")
    with pytest.raises(ValueError, match="unknown LALIC preset"):
        build_model("huge")


def test_cli(data, tmp_path, capsys):
    from lalic_core.cli import main

    train_dir, val_dir = data
    argv = ["train", str(train_dir), "--val-dir", str(val_dir), "-o", str(tmp_path), "--crop",
            "64", "-b", "1", "--val-every", "2", "--no-progress", "--no-tensorboard"]
    assert main([*argv, "--steps", "2", "--threads", str(torch.get_num_threads())]) == 0
    assert (tmp_path / "last.pt").exists()
    out = capsys.readouterr().out
    assert "lalic train: model tiny" in out and "val loss" in out
    assert main([*argv, "--steps", "2"]) == 1  # a new run over an existing one
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--steps", "3", "--resume"]) == 0
    assert load_training_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert main(["train", str(tmp_path / "missing"), "-o", str(tmp_path / "m")]) == 1
    assert "image folder not found" in capsys.readouterr().err


_KILLED_CHILD = """
import os, signal, sys
from lalic_core import atomic
from lalic_core.train import TrainConfig, train

real_replace, saves = os.replace, []

def replace(src, dst):  # SIGKILL while the second last.pt is written (temp file complete)
    if str(dst).endswith("last.pt"):
        saves.append(dst)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

atomic.os.replace = replace
train(TrainConfig(**eval(sys.argv[1])))
"""


def test_a_run_killed_mid_save_resumes_from_its_last_complete_checkpoint(data, tmp_path,
                                                                        reference_run):
    import dataclasses
    import os
    import subprocess
    import sys

    cfg = dataclasses.asdict(config(data, tmp_path))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, repr(cfg)], cwd=root,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_training_checkpoint(tmp_path / "last.pt")["step"] == 2  # the complete one
    assert [p.name for p in tmp_path.glob(".last.pt.*.tmp")]  # killed mid-save
    resumed = train(config(data, tmp_path, resume="auto"))
    assert resumed.step == 4 and not resumed.interrupted
    assert resumed.parameter_digest == reference_run.parameter_digest


def test_checkpoints_store_coder_tables(reference_run):
    from lalic_core.codec import resolve_model
    from lalic_core.coder_tables import TABLE_NAMES, fresh_table_state

    ckpt = load_training_checkpoint(reference_run.last_checkpoint)
    tables = {k: v for k, v in ckpt["state_dict"].items() if k.rsplit(".", 1)[-1] in TABLE_NAMES}
    assert tables and all(v.numel() for v in tables.values())
    model = resolve_model(str(reference_run.last_checkpoint)).model
    for key, value in fresh_table_state(model).items():
        assert torch.equal(value, ckpt["state_dict"][key]), key
