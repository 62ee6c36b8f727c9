"""The training loop of ``lalic train`` (see :mod:`lalic_core.train` for the user's view).

Pieces usable on their own (the benchmark and the zoo use them):

- :func:`build_model` (preset name or ``module:factory``), :func:`split_parameters`
  (CompressAI's rule: names ending in ``.quantiles`` belong to the auxiliary optimizer),
- :class:`RateDistortionLoss`, :func:`train_step` (forward, backward, clip, both optimizer
  steps), :func:`evaluate` (validation sums over whole or cropped images),
- :class:`Trainer`: the loop with checkpoints, exact resume, logging, Ctrl-C and DDP.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import math
import os
import platform
import random
import signal
import subprocess
import threading
import time
import warnings
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lalic_core.train import TrainConfig, TrainResult
from lalic_core.training.checkpoints import (
    FORMAT,
    capture_rng,
    load_training_checkpoint,
    restore_rng,
    save_atomic,
)
from lalic_core.training.data import (
    RandomCrops,
    StepBatches,
    find_images,
    load_validation_images,
    pad_to_multiple,
)

__all__ = [
    "RateDistortionLoss",
    "Trainer",
    "build_model",
    "evaluate",
    "parameter_digest",
    "split_parameters",
    "train_step",
]

#: Fields of a run that a resumed run must share with its checkpoint.
RESUME_MUST_MATCH = ("model", "lambda", "metric", "crop", "batch_size", "seed")
LOG_FIELDS = ("step", "split", "loss", "bpp", "mse", "psnr", "ms_ssim", "aux_loss", "lr",
              "images_per_s", "elapsed_s")


# --------------------------------------------------------------------------------------------
# Models and losses
# --------------------------------------------------------------------------------------------
def build_model(spec: str) -> nn.Module:
    """A randomly initialised model from ``spec``: a LALIC preset name (``LALIC.PRESETS``) or
    ``"package.module:factory"`` (a callable returning a CompressAI-style model)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model: expected a preset name or 'module:factory', got {spec!r}")
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model: cannot import {spec!r} ({exc})") from None
        model = factory()
    else:
        from lalic_core.models.lalic import LALIC, PRESETS

        if spec not in PRESETS:
            raise ValueError(f"model: unknown LALIC preset {spec!r}; choose one of "
                             f"{', '.join(PRESETS)} or give 'module:factory'")
        model = LALIC.from_preset(spec)
    if not isinstance(model, nn.Module) or not callable(getattr(model, "aux_loss", None)):
        raise TypeError(f"model: {spec!r} did not build a CompressAI-style model (an "
                         "nn.Module with aux_loss() whose forward returns x_hat and "
                         "likelihoods)")
    return model


def model_factor(model: nn.Module) -> int:
    """Image sides must be multiples of this (LALIC: 64)."""
    return int(getattr(model, "downsampling_factor", 64))


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter],
                                                list[str]]:
    """(main parameters, auxiliary parameters, auxiliary names): CompressAI's rule, the
    entropy bottleneck's ``.quantiles`` go to the auxiliary optimizer; frozen parameters
    (e.g. LALIC's collapsed Omni-Shift kernels) to neither."""
    main, aux, aux_names = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(".quantiles"):
            aux.append(p)
            aux_names.append(name)
        else:
            main.append(p)
    if not main:
        raise ValueError("model: it has no trainable parameters")
    return main, aux, aux_names


class RateDistortionLoss(nn.Module):
    """``lambda * 255^2 * MSE + bpp`` (``metric="mse"``) or ``lambda * (1 - MS-SSIM) + bpp``,
    bpp = ``-sum(log2 likelihoods) / (B * H * W)`` over all latents (y and z); CompressAI's
    convention, the official LALIC training loss.

    ``forward(output, target)``: output ``{"x_hat": (B, 3, H, W), "likelihoods": {...}}``,
    target (B, 3, H, W) -> dict of 0-d tensors ``loss``, ``bpp``, ``mse`` (and ``ms_ssim``).
    """

    def __init__(self, lmbda: float, metric: str = "mse"):
        super().__init__()
        if metric not in ("mse", "ms-ssim"):
            raise ValueError(f"metric must be 'mse' or 'ms-ssim', got {metric!r}")
        self.lmbda, self.metric = float(lmbda), metric

    def forward(self, output: dict, target: torch.Tensor, num_pixels: int | None = None
                ) -> dict[str, torch.Tensor]:
        if num_pixels is None:
            num_pixels = target.shape[0] * target.shape[-2] * target.shape[-1]
        bpp = sum(torch.log(lk).sum() for lk in output["likelihoods"].values()) \
            / (-math.log(2) * num_pixels)
        x_hat = output["x_hat"]
        out = {"bpp": bpp, "mse": nn.functional.mse_loss(x_hat, target)}
        if self.metric == "mse":
            out["loss"] = self.lmbda * 255**2 * out["mse"] + bpp
        else:
            from pytorch_msssim import ms_ssim

            out["ms_ssim"] = ms_ssim(x_hat, target, data_range=1.0)
            out["loss"] = self.lmbda * (1 - out["ms_ssim"]) + bpp
        return out


def psnr_from_mse(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train_step(model: nn.Module, x: torch.Tensor, criterion: RateDistortionLoss,
               optimizer: torch.optim.Optimizer, aux_optimizer: torch.optim.Optimizer | None,
               clip_max_norm: float = 1.0, *, distributed: bool = False) -> dict[str, float]:
    """One optimizer step: forward, RD loss, backward, gradient clipping, Adam step, then the
    auxiliary loss and its step. ``model`` may be wrapped in DDP (then ``distributed=True``
    averages the auxiliary parameters' gradients across ranks, as DDP does not own them).

    Raises FloatingPointError, before changing any weight, when the loss is not finite
    (agreed on by all ranks)."""
    bare = _bare(model)
    optimizer.zero_grad(set_to_none=True)
    if aux_optimizer is not None:
        aux_optimizer.zero_grad(set_to_none=True)
    out = criterion(model(x), x)
    finite = torch.isfinite(out["loss"].detach()).float()
    if distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() == 0:
        raise FloatingPointError(
            f"training loss is not finite ({out['loss'].item()}); the weights were not "
            "changed (lower the learning rate or check the images)")
    out["loss"].backward()
    main_params = [p for g in optimizer.param_groups for p in g["params"]]
    nn.utils.clip_grad_norm_(main_params, clip_max_norm)
    optimizer.step()
    aux_loss = bare.aux_loss()
    if aux_optimizer is not None:
        aux_loss.backward()
        if distributed:
            _average_gradients([p for g in aux_optimizer.param_groups for p in g["params"]])
        aux_optimizer.step()
    metrics = {k: float(v.detach()) for k, v in out.items()}
    metrics["aux_loss"] = float(aux_loss.detach())
    metrics["psnr"] = psnr_from_mse(metrics["mse"])
    return metrics


def _average_gradients(params: Sequence[nn.Parameter]) -> None:
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


@torch.no_grad()
def evaluate(model: nn.Module, images: Sequence[torch.Tensor], criterion: RateDistortionLoss,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Sums over ``images`` ((1, 3, H, W) each) of loss, bpp, mse, psnr (and ms_ssim), plus
    ``count``: each image is zero-padded (centred) to the model's factor, bpp counts the
    padded latents over the original pixels, distortion is measured on the original region
    of ``x_hat`` clamped to [0, 1]. The model is put in eval mode and back."""
    bare = _bare(model)
    was_training = bare.training
    bare.eval()
    factor = model_factor(bare)
    sums = {k: 0.0 for k in ("loss", "bpp", "mse", "psnr", "ms_ssim")}
    try:
        for image in images:
            x = image.to(device)
            H, W = x.shape[-2:]
            padded, (top, left) = pad_to_multiple(x, factor)
            out = bare(padded)
            x_hat = out["x_hat"][..., top:top + H, left:left + W].clamp(0, 1)
            rd = criterion({"x_hat": x_hat, "likelihoods": out["likelihoods"]}, x,
                           num_pixels=H * W)
            for k, v in rd.items():
                sums[k] += float(v)
            sums["psnr"] += psnr_from_mse(float(rd["mse"]))
    finally:
        bare.train(was_training)
    sums["count"] = float(len(images))
    return sums


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 over all parameters and buffers (name order): equal iff the replicas are."""
    h = hashlib.sha256()
    for name, t in sorted(_bare(model).state_dict().items()):
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
class _Distributed:
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


class _StopRequest:
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


def _ignore_sigint(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------
class _Log:
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
class Trainer:
    """One training run: ``Trainer(config).run() -> TrainResult``."""

    def __init__(self, config: TrainConfig, on_step: Callable[[int, dict], None] | None = None):
        self.config = dataclasses.replace(config)  # resuming may fill in milestones
        self.on_step = on_step
        self.out_dir = Path(config.out_dir)
        self._bar = None

    # -- messages (rank 0 only; through tqdm so the bar stays intact)
    def say(self, text: str) -> None:
        if not self.dist.is_main:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def run(self) -> TrainResult:
        self.dist = _Distributed(self.config.device)
        try:
            return self._run()
        finally:
            self.dist.close()

    # -- checkpoints
    def _resume_path(self) -> Path | None:
        cfg, last, best = self.config, self.out_dir / "last.pt", self.out_dir / "best.pt"
        if cfg.resume is None or (cfg.resume == "auto" and not last.exists()):
            existing = [p.name for p in (last, best) if p.exists()]
            if existing:  # never start over a run's checkpoints
                how = ("continue it with resume='auto' (--resume)" if last.exists() else
                       f"continue from best.pt with resume='{best}'")
                raise ValueError(f"out_dir {self.out_dir} already holds a run "
                                 f"({', '.join(existing)}); {how} or choose another out_dir")
            return None
        return last if cfg.resume == "auto" else Path(cfg.resume)

    def _check_resumable(self, ckpt: dict, path: Path) -> None:
        saved, now = ckpt["config"], self.config.as_dict()
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
                 for k in RESUME_MUST_MATCH if saved.get(k) != now[k]]
        if diffs:
            raise ValueError(f"resume: {path} belongs to another run (" + "; ".join(diffs)
                             + "); use the same settings, or init= to start a new run from "
                             "its weights")
        if ckpt["step"] > self.config.steps:
            raise ValueError(f"resume: {path} is at step {ckpt['step']}, beyond steps = "
                             f"{self.config.steps}")

    def _save(self, name: str, step: int) -> Path | None:
        """Gather every rank's RNG state; rank 0 writes ``out_dir/name`` atomically."""
        rng = self.dist.all_gather(capture_rng(self.dist.device))
        if not self.dist.is_main:
            return None
        ckpt = {
            "format": FORMAT,
            "state_dict": self.bare.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "rng": rng,
            "config": self.config_dict,
            "best_val": self.best_val,
            "last_val": self.last_val,
            "elapsed_s": self.elapsed,
            "meta": self.meta,
        }
        return save_atomic(ckpt, self.out_dir / name)

    # -- the run
    def _run(self) -> TrainResult:
        cfg, D = self.config, self.dist
        resume_path = self._resume_path()
        ckpt = load_training_checkpoint(resume_path) if resume_path is not None else None
        if ckpt is not None:
            self._check_resumable(ckpt, resume_path)
            if cfg.milestones is None:  # keep the run's schedule when extending steps
                cfg.milestones = tuple(ckpt["config"]["milestones"])
        self.config_dict = cfg.as_dict()
        milestones = cfg.resolved_milestones

        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.bare = model = build_model(cfg.model)
        factor = model_factor(model)
        if cfg.crop % factor:
            raise ValueError(f"crop must be a multiple of {factor} for model {cfg.model!r}, "
                             f"got {cfg.crop}")
        if ckpt is None and cfg.init is not None:
            from lalic_core.checkpoint import load_state_dict_strict, read_state_dict

            load_state_dict_strict(model, read_state_dict(cfg.init), source=f"init {cfg.init}")
        model.to(D.device).train()

        main_params, aux_params, aux_names = split_parameters(model)
        self.optimizer = torch.optim.Adam(main_params, lr=cfg.lr)
        self.aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cfg.lr_gamma ** bisect_right(milestones, s))
        criterion = RateDistortionLoss(cfg.lambda_, cfg.metric)

        # Data first: a bad folder fails before anything is written.
        dataset = RandomCrops(cfg.train_dir, cfg.crop, cfg.seed,
                              skip_small=cfg.skip_small_images)
        val_files = find_images(cfg.val_dir, "val_dir") if cfg.val_dir is not None else []
        val_images = load_validation_images(cfg.val_dir, cfg.val_crop,
                                            val_files[D.rank::D.world]) if val_files else []

        step, self.elapsed, self.best_val, self.last_val = 0, 0.0, None, None
        if ckpt is not None:
            from lalic_core.checkpoint import load_state_dict_strict

            load_state_dict_strict(model, ckpt["state_dict"], source=f"resume {resume_path}")
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.aux_optimizer is not None and ckpt["aux_optimizer"] is not None:
                self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            step, self.elapsed = ckpt["step"], ckpt["elapsed_s"]
            self.best_val, self.last_val = ckpt["best_val"], ckpt["last_val"]
            if len(ckpt["rng"]) != D.world:
                warnings.warn(f"resume: the checkpoint was written by {len(ckpt['rng'])} "
                              f"processes, now {D.world}: the data order and the noise differ "
                              "from an uninterrupted run", stacklevel=2)
            if D.rank < len(ckpt["rng"]):
                restore_rng(ckpt["rng"][D.rank], D.device)
            else:
                torch.manual_seed(int(np.random.SeedSequence([cfg.seed, D.rank, step])
                                      .generate_state(1)[0]))
        else:  # each rank its own quantisation noise
            seed = int(np.random.SeedSequence([cfg.seed, D.rank]).generate_state(1)[0])
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

        if D.enabled:
            # Omni-Shift's collapsed-kernel gradients have their own strides: DDP copies them
            # into its buckets (correct, slightly slower) and would warn on every rank.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, aux_names)
            for p in aux_params:  # DDP broadcasts only the parameters it owns
                dist.broadcast(p.data, src=0)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[D.device.index] if D.device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused_parameters)

        self.meta = {
            "torch": str(torch.__version__),
            "compressai": _version("compressai"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": str(D.device) if D.device.type != "cuda"
            else torch.cuda.get_device_name(D.device),
            "world_size": D.world,
            "threads": torch.get_num_threads(),
            "git_commit": git_commit(),
            "train_images": len(dataset),
            "val_images": len(val_files),
            "parameters": sum(p.numel() for p in main_params) + sum(p.numel() for p in aux_params),
        }
        log = None
        if D.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log = _Log(self.out_dir, step if ckpt is not None else None, cfg.tensorboard)
        self.say(
            f"lalic train: model {cfg.model} ({self.meta['parameters'] / 1e6:.2f}M parameters), "
            f"lambda {cfg.lambda_:g} ({cfg.metric}), {len(dataset)} training images"
            + (f" ({len(dataset.skipped)} smaller than the crop skipped)" if dataset.skipped
               else "")
            + f", {len(val_files)} validation images, crop {cfg.crop}, batch {cfg.batch_size}"
            + (f" x {D.world} processes" if D.enabled else "")
            + f", device {D.device}; "
            + (f"resuming {resume_path} at step {step}" if ckpt is not None else "new run")
            + f" -> {self.out_dir}")
        if dataset.skipped:
            warnings.warn(f"train_dir: skipped {len(dataset.skipped)} images smaller than the "
                          "crop", stacklevel=2)

        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=StepBatches(cfg.batch_size, step, cfg.steps, D.rank, D.world),
            num_workers=cfg.workers, pin_memory=D.device.type == "cuda",
            worker_init_fn=_ignore_sigint if cfg.workers else None,
            generator=torch.Generator())  # its own: iter() must not draw from the global RNG

        interrupted, last_saved = False, None
        last_ckpt = best_ckpt = None
        if D.is_main and ckpt is not None and (self.out_dir / "best.pt").exists():
            best_ckpt = self.out_dir / "best.pt"
        self.train_avg: dict[str, float] = {}
        window: dict[str, float] = {}
        window_steps, window_images, window_time = 0, 0, 0.0

        if D.is_main and cfg.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.model}",
                             unit="step", dynamic_ncols=True)
        try:
            with _StopRequest(self.say) as stop:
                batches = iter(loader)
                while step < cfg.steps:
                    t0 = time.perf_counter()
                    x = next(batches).to(D.device, non_blocking=True)
                    metrics = train_step(model, x, criterion, self.optimizer,
                                         self.aux_optimizer, cfg.clip_max_norm,
                                         distributed=D.enabled)
                    self.scheduler.step()
                    step += 1
                    dt = time.perf_counter() - t0
                    self.elapsed += dt
                    metrics["lr"] = self.optimizer.param_groups[0]["lr"]
                    for k, v in metrics.items():
                        window[k] = window.get(k, 0.0) + v
                    window_steps += 1
                    window_images += x.shape[0] * D.world
                    window_time += dt
                    if self._bar is not None:
                        self._bar.update(1)
                        self._bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                                              bpp=f"{metrics['bpp']:.4f}",
                                              psnr=f"{metrics['psnr']:.2f}")
                    if self.on_step is not None:
                        self.on_step(step, dict(metrics))
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        avg = {k: v / window_steps for k, v in window.items()}
                        avg["psnr"] = psnr_from_mse(avg["mse"])
                        avg["lr"] = metrics["lr"]  # the current one, not the mean
                        avg["images_per_s"] = window_images / max(window_time, 1e-9)
                        avg["elapsed_s"] = self.elapsed
                        self.train_avg = avg
                        if log is not None:
                            log.write(step, "train", avg)
                        window, window_steps, window_images, window_time = {}, 0, 0, 0.0

                    stop_now = D.any(stop.requested)  # all ranks stop at the same step
                    due = step % cfg.val_every == 0 or step == cfg.steps
                    if due and val_files and self._validate(model, val_images, criterion,
                                                             step, log):
                        best_ckpt = self._save("best.pt", step) or best_ckpt
                    if due or stop_now:
                        self._check_replicas(model, step)
                        last_ckpt = self._save("last.pt", step) or last_ckpt
                        last_saved = step
                    if stop_now:
                        interrupted = step < cfg.steps
                        break
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if log is not None:
                log.close()
        if last_saved != step:  # nothing left to train when resuming: still report a file
            last_ckpt = self._save("last.pt", step) or last_ckpt
        if interrupted:
            self.say(f"interrupted at step {step}/{cfg.steps}: saved {self.out_dir / 'last.pt'}; "
                     "run the same command with --resume to continue")
        else:
            self.say(f"done: {step} steps in {self.elapsed:.0f} s of training; checkpoints in "
                     f"{self.out_dir}")
        return TrainResult(
            out_dir=self.out_dir, step=step, interrupted=interrupted,
            last_checkpoint=last_ckpt, best_checkpoint=best_ckpt,
            train=self.train_avg, val=self.last_val, best_val=self.best_val,
            elapsed_s=self.elapsed, parameter_digest=parameter_digest(model))

    def _validate(self, model, images, criterion, step, log) -> bool:
        sums = self.dist.sum(evaluate(model, images, criterion, self.dist.device))
        n = sums.pop("count")
        val = {k: v / n for k, v in sums.items()}
        if self.config.metric != "ms-ssim":
            val.pop("ms_ssim")
        val["step"] = step
        self.last_val = val
        improved = self.best_val is None or val["loss"] < self.best_val["loss"]
        if improved:
            self.best_val = dict(val)
        if log is not None:
            log.write(step, "val", {k: v for k, v in val.items() if k != "step"})
        self.say(f"step {step}: val loss {val['loss']:.4f}, bpp {val['bpp']:.4f}, "
                 f"PSNR {val['psnr']:.2f} dB ({int(n)} images)" + (" *best*" if improved else ""))
        return improved

    def _check_replicas(self, model, step) -> None:
        if not self.dist.enabled:
            return
        digests = self.dist.all_gather(parameter_digest(model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel replicas differ at step {step} (parameter "
                               f"digests {digests}); this is a bug, please report it")


def _version(package: str) -> str | None:
    try:
        return str(importlib.import_module(package).__version__)
    except (ImportError, AttributeError):
        return None
