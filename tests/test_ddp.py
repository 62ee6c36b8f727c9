"""Data-parallel training: 2 CPU processes with gloo (as under torchrun), replicas identical,
and rank 0's checkpoint resumes in a single process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lalic_core.train import TrainConfig, train
from lalic_core.training.checkpoints import load_training_checkpoint
from lalic_core.training.trainer import parameter_digest

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_folder

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    seen = []
    result = train(cfg, on_step=lambda step, m: seen.append(m["loss"]))
    Path(out, f"rank{rank}.txt").write_text(f"{result.parameter_digest} {seen}\n")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-data")
    return (make_folder(root / "train", [(80, 96), (72, 100), (96, 64), (64, 90)], seed=1),
            make_folder(root / "val", [(70, 90), (64, 64), (64, 80)], seed=2))


def test_two_gloo_processes_stay_identical_and_resume_alone(folders, tmp_path):
    train_dir, val_dir = folders
    cfg = TrainConfig(train_dir=str(train_dir), val_dir=str(val_dir), out_dir=str(tmp_path / "run"),
                      model="tiny", steps=3, batch_size=1, crop=64, val_every=3, log_every=1,
                      seed=5, progress=False, tensorboard=False, device="cpu")
    mp.spawn(_worker, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True)

    digests, losses = zip(*(Path(tmp_path, f"rank{r}.txt").read_text().split(" ", 1)
                            for r in range(2)))
    assert digests[0] == digests[1]  # the replicas ended identical
    assert losses[0] != losses[1]  # ... after training on different crops

    ckpt = load_training_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2 and ckpt["meta"]["world_size"] == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])

    # rank 0's checkpoint holds the common weights and resumes in one process
    model_digest = parameter_digest(_model_from(ckpt))
    assert model_digest == digests[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "written by 2 processes, now 1"
        resumed = train(TrainConfig(**{**cfg.__dict__, "steps": 4, "resume": "auto"}))
    assert resumed.step == 4 and not resumed.interrupted
    assert resumed.parameter_digest != digests[0]


def _model_from(ckpt):
    from lalic_core.checkpoint import load_state_dict_strict
    from lalic_core.training.trainer import build_model

    model = build_model("tiny")
    load_state_dict_strict(model, ckpt["state_dict"])
    return model


@pytest.mark.slow
def test_torchrun_cli(folders, tmp_path):
    """The same `lalic train` command line under torchrun (2 CPU processes)."""
    train_dir, val_dir = folders
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "lalic_core.train", str(train_dir), "--val-dir", str(val_dir),
           "-o", str(tmp_path), "--steps", "2", "--crop", "64", "-b", "1", "--val-every", "2",
           "--no-progress", "--no-tensorboard", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert load_training_checkpoint(tmp_path / "last.pt")["meta"]["world_size"] == 2
