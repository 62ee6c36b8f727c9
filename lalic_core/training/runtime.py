"""Process plumbing of a training run: data-parallel setup (torchrun's environment),
Ctrl-C / SIGTERM handling, the log (tqdm line, ``log.csv``, TensorBoard), the source
commit and package versions recorded in checkpoints, the replica digest."""
from __future__ import annotations

import csv
import hashlib
import importlib
import os
import signal
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from lalic_core.coder_tables import TABLE_NAMES

#: Buffers computed from the weights (coder tables and the scale table), not digested.
DERIVED_TABLES = (*TABLE_NAMES, "scale_table")

__all__ = ["LOG_FIELDS", "Distributed", "Log", "StopRequest", "bare_model", "git_commit",
           "ignore_sigint", "package_version", "parameter_digest"]

LOG_FIELDS = ("step", "split", "loss", "bpp", "mse", "psnr", "ms_ssim", "aux_loss", "lr",
              "images_per_s", "elapsed_s")


def bare_model(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 over all parameters and buffers (name order) but the entropy coders' tables,
    which are derived from the weights (checkpoints store them, training replicas need none):
    equal iff the replicas are."""
    h = hashlib.sha256()
    for name, t in sorted(bare_model(model).state_dict().items()):
        if name.rsplit(".", 1)[-1] in DERIVED_TABLES:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def git_commit() -> str | None:
    """The source tree's commit, with "+dirty" when files differ from it (modified or new,
    ignored files aside), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status",
                                 "--porcelain"], check=False,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


# --------------------------------------------------------------------------------------------
# Distributed setup
# --------------------------------------------------------------------------------------------
class Distributed:
    """Rank, world size and device of this process (torchrun's environment variables)."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device: {device!r} requested but CUDA is not available")
            if dev.index is None:
                dev = torch.device("cuda", self.local_rank if self.world > 1 else 0)
            torch.cuda.set_device(dev)
        self.device = dev
        self.enabled = self.world > 1
        self.owns_group = False
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend)
            self.owns_group = True
        self.is_main = self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def all_gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))


class StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after the current step
    (it saves a checkpoint), a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, say: Callable[[str], None]):
        self.requested = False
        self.say = say
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.say(f"{signal.Signals(signum).name}: stopping after this step and saving a "
                 "resumable checkpoint (Ctrl-C again aborts without saving)")


def ignore_sigint(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------
class Log:
    """``log.csv`` (one row per log interval and per validation) and TensorBoard events."""

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool):
        self.path = out_dir / "log.csv"
        if resume_step is not None and self.path.exists():  # drop rows after the checkpoint
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        else:
            rows = []
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115 - open for the whole run
        self._writer = csv.DictWriter(self._fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
        self.tb = None
        if tensorboard:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tensorboard"),
                                        purge_step=resume_step + 1 if resume_step else None)
            except ImportError:
                self.tb = None

    def write(self, step: int, split: str, values: dict) -> None:
        row = {"step": step, "split": split}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self._writer.writerow(row)
        self._fh.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("step", "elapsed_s"):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def package_version(package: str) -> str | None:
    try:
        return str(importlib.import_module(package).__version__)
    except (ImportError, AttributeError):
        return None
