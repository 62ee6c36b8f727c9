"""The training loop of ``lalic train`` (see :mod:`lalic_core.train` for the user's view).

Pieces usable on their own (the benchmark and the zoo export use them):

- :func:`split_parameters` (CompressAI's rule: names ending in ``.quantiles`` belong to the
  auxiliary optimizer), :func:`train_step` (forward, backward, clip, both optimizer steps),
  :func:`evaluate` (validation sums over whole or cropped images);
- :class:`Trainer`: the loop with checkpoints, exact resume, logging, Ctrl-C and DDP;
  :func:`train` runs it.

Models come from :func:`lalic_core.models.factory.build_model`, the loss from
:mod:`.loss`, process plumbing from :mod:`.runtime`.
"""
from __future__ import annotations

import dataclasses
import platform
import random
import time
import warnings
from bisect import bisect_right
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lalic_core.images import crop_center, list_images, pad_center
from lalic_core.models.factory import build_model
from lalic_core.models.state_dict import load_state_dict_strict, read_state_dict
from lalic_core.training.checkpoints import (
    FORMAT,
    capture_rng,
    load_training_checkpoint,
    restore_rng,
    save_atomic,
)
from lalic_core.training.config import TrainConfig, TrainResult
from lalic_core.training.data import (
    TRAIN_SUFFIXES,
    RandomCrops,
    StepBatches,
    load_validation_images,
)
from lalic_core.training.loss import RateDistortionLoss, psnr_from_mse
from lalic_core.training.runtime import (
    Distributed,
    Log,
    StopRequest,
    bare_model,
    git_commit,
    ignore_sigint,
    package_version,
    parameter_digest,
)

__all__ = [
    "RateDistortionLoss",
    "Trainer",
    "build_model",
    "evaluate",
    "parameter_digest",
    "split_parameters",
    "train",
    "train_step",
]


#: Fields of a run that a resumed run must share with its checkpoint.
RESUME_MUST_MATCH = ("model", "lambda", "metric", "crop", "batch_size", "seed")


# --------------------------------------------------------------------------------------------
# Models and losses
# --------------------------------------------------------------------------------------------
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


def train_step(model: nn.Module, x: torch.Tensor, criterion: RateDistortionLoss,
               optimizer: torch.optim.Optimizer, aux_optimizer: torch.optim.Optimizer | None,
               clip_max_norm: float = 1.0, *, distributed: bool = False) -> dict[str, float]:
    """One optimizer step: forward, RD loss, backward, gradient clipping, Adam step, then the
    auxiliary loss and its step. ``model`` may be wrapped in DDP (then ``distributed=True``
    averages the auxiliary parameters' gradients across ranks, as DDP does not own them).

    Raises FloatingPointError, before changing any weight, when the loss is not finite
    (agreed on by all ranks)."""
    bare = bare_model(model)
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
    bare = bare_model(model)
    was_training = bare.training
    bare.eval()
    factor = model_factor(bare)
    sums = {k: 0.0 for k in ("loss", "bpp", "mse", "psnr", "ms_ssim")}
    try:
        for image in images:
            x = image.to(device)
            H, W = x.shape[-2:]
            out = bare(pad_center(x, factor))
            x_hat = crop_center(out["x_hat"], H, W, factor).clamp(0, 1)
            rd = criterion({"x_hat": x_hat, "likelihoods": out["likelihoods"]}, x,
                           num_pixels=H * W)
            for k, v in rd.items():
                sums[k] += float(v)
            sums["psnr"] += psnr_from_mse(float(rd["mse"]))
    finally:
        bare.train(was_training)
    sums["count"] = float(len(images))
    return sums


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
        self.dist = Distributed(self.config.device)
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
        saved_sem = saved.get("biwkv_semantics", "formula")  # older runs: the formula
        if saved_sem != now["biwkv_semantics"]:
            diffs.append(f"biwkv_semantics: checkpoint {saved_sem!r}, now "
                         f"{now['biwkv_semantics']!r}")
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
            "biwkv_semantics": self.config.biwkv_semantics,
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
        if callable(getattr(model, "set_biwkv_semantics", None)):
            model.set_biwkv_semantics(cfg.biwkv_semantics)
        elif cfg.biwkv_semantics != "formula":
            raise ValueError(f"biwkv_semantics={cfg.biwkv_semantics!r} needs a LALIC model, "
                             f"got {type(model).__name__} for {cfg.model!r}")
        factor = model_factor(model)
        if cfg.crop % factor:
            raise ValueError(f"crop must be a multiple of {factor} for model {cfg.model!r}, "
                             f"got {cfg.crop}")
        if ckpt is None and cfg.init is not None:
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
        val_files = (list_images(cfg.val_dir, "val_dir", suffixes=TRAIN_SUFFIXES)
                     if cfg.val_dir is not None else [])
        val_images = load_validation_images(cfg.val_dir, cfg.val_crop,
                                            val_files[D.rank::D.world]) if val_files else []

        step, self.elapsed, self.best_val, self.last_val = 0, 0.0, None, None
        if ckpt is not None:
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
            "compressai": package_version("compressai"),
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
            log = Log(self.out_dir, step if ckpt is not None else None, cfg.tensorboard)
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
            worker_init_fn=ignore_sigint if cfg.workers else None,
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
            with StopRequest(self.say) as stop:
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


def train(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None
          ) -> TrainResult:
    """Run (or resume) a training run; see the module docstring.

    ``on_step(step, metrics)`` is called after every optimizer step (on every rank) with the
    step's loss, bpp, mse, psnr, aux_loss and lr.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: expected a TrainConfig, got {type(config).__name__}")
    return Trainer(config, on_step=on_step).run()
