"""Check a LALIC checkpoint against the published results (``lalic check-checkpoint``).

:func:`check_checkpoint` loads a checkpoint (official ``lalic-mse-qN.pth`` or ours) under a
BiWKV semantics, codes Kodak images for real (``.lalic`` bytes, rANS strings; by default an
evenly spaced subset of 4 images, all 24 with ``full=True``) and compares the mean bpp of the
strings and PSNR with the published LALIC point of that quality (Feng et al., CVPR 2025,
packaged RD data ``kodak-lalic.json``; qualities 1..6 = lambdas 0.0018 .. 0.0483). A result
far from it is flagged with the likely causes, e.g. the 6.67 dB at 27.8 bpp that official
users report from a q6 checkpoint.

Tolerances: within ``tolerance_db`` of the published PSNR and within a factor
``tolerance_bpp`` of its bpp (looser on a subset, whose images differ from the Kodak mean).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CheckpointReport",
    "check_checkpoint",
    "infer_quality",
    "published_point",
    "stale_coder_tables",
]

#: Images of the default subset (evenly spaced over the sorted folder).
SUBSET_IMAGES = 4
#: (PSNR dB, bpp factor) tolerances: all 24 Kodak images, and a subset.
TOLERANCES = {"full": (1.0, 1.5), "subset": (2.0, 2.0)}
#: Below this PSNR (dB) or above this many times the published bpp, the model is broken,
#: not merely mistrained.
BROKEN_PSNR_DB = 20.0
BROKEN_BPP_FACTOR = 4.0


def infer_quality(path: str | os.PathLike) -> int | None:
    """The quality named in a checkpoint file name (``lalic-mse-q6.pth`` -> 6), else None."""
    found = re.findall(r"(?:^|[^a-z])q(\d+)(?![0-9])", Path(path).name.lower())
    return int(found[-1]) if found else None


def published_point(quality: int, rd_dir: str | os.PathLike | None = None) -> dict:
    """The published LALIC Kodak point of ``quality`` (1..6): ``{"quality", "bpp", "psnr"}``,
    from the packaged RD data (:func:`lalic_core.rd.published_rd_dir`)."""
    from lalic_core.rd import load_rd, published_rd_dir

    curve = load_rd(Path(rd_dir or published_rd_dir()) / "kodak-lalic.json")
    n = len(curve.bpp)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= n:
        raise ValueError(f"quality must be an int in 1..{n} (the published LALIC points), "
                         f"got {quality!r}")
    return {"quality": quality, "bpp": curve.bpp[quality - 1],
            "psnr": float(curve.quality("psnr")[quality - 1])}


def _published_curve() -> tuple[np.ndarray, np.ndarray]:
    from lalic_core.rd import load_rd, published_rd_dir

    curve = load_rd(Path(published_rd_dir()) / "kodak-lalic.json")
    return np.asarray(curve.bpp), curve.quality("psnr")


def stale_coder_tables(model: torch.nn.Module, state_dict) -> list[str]:
    """Names of the entropy-coder tables (``_quantized_cdf``, ``_cdf_length``, ``_offset``)
    stored in ``state_dict`` that differ from the ones ``model`` (loaded from it, then
    ``update(force=True)``) computes: stored tables that the weights no longer give."""
    current = model.state_dict()
    stale = []
    for key, stored in state_dict.items():
        if not key.endswith(("_quantized_cdf", "_cdf_length", "_offset")) or not stored.numel():
            continue
        now = current.get(key)
        if now is not None and (now.shape != stored.shape or not torch.equal(now.cpu(), stored)):
            stale.append(key)
    return stale


@dataclass
class CheckpointReport:
    """Result of :func:`check_checkpoint` (``format()`` gives the text ``lalic`` prints)."""

    path: str
    quality: int
    biwkv_semantics: str
    images: list[dict]
    bpp: float
    psnr: float
    published: dict
    full: bool
    psnr_gap_at_bpp: float | None  # measured PSNR - published curve at the measured bpp
    nearest_quality: int
    far: bool
    causes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        pub = self.published
        which = "all" if self.full else "subset of"
        lines = [
            f"checkpoint       {self.path}",
            (f"quality          q{self.quality} (published LALIC, Kodak: {pub['bpp']:.4f} bpp, "
            f"{pub['psnr']:.3f} dB)"),
            f"BiWKV semantics  {self.biwkv_semantics}",
            f"images           {which} {len(self.images)} Kodak images, real coding",
            (f"measured         {self.bpp:.4f} bpp (strings), {self.psnr:.3f} dB PSNR "
            f"({self.psnr - pub['psnr']:+.3f} dB, bpp x{self.bpp / pub['bpp']:.2f} against "
            "the published point)"),
        ]
        if self.psnr_gap_at_bpp is not None:
            lines.append(f"against curve    {self.psnr_gap_at_bpp:+.3f} dB from the published "
                         "LALIC curve at the measured bpp")
        lines += [f"note             {n}" for n in self.notes]
        if not self.far:
            lines.append("result           OK: close to the published point")
            return "\n".join(lines)
        lines.append("result           FAR from the published point; likely causes:")
        lines += [f"  - {c}" for c in self.causes]
        return "\n".join(lines)


def _likely_causes(report: CheckpointReport, float16: bool, stale: list[str]) -> list[str]:
    pub, causes = report.published, []
    broken = report.psnr < BROKEN_PSNR_DB or report.bpp > BROKEN_BPP_FACTOR * pub["bpp"]
    if stale:
        causes.append(f"entropy-coder tables: the checkpoint's stored CDF tables ({len(stale)} "
                      "buffers) are not the ones its weights give; code only after "
                      "model.update(force=True) (done here), never with the stored ones")
    if broken:
        causes.append("the model does not compute what it was trained with: on a Hopper GPU "
                      "(H100/H200, sm_90) the official BiWKV CUDA kernel is undefined "
                      "behaviour (15-33% off, see the official_cuda README); evaluate here, "
                      "where every semantics is computed exactly on any device")
        causes.append("entropy-coder tables not updated after loading (call "
                      "model.update(force=True) before compress/decompress), or encoder and "
                      "decoder on different devices or precisions")
        causes.append("half precision (the official eval.py --half): run in float32")
        causes.append("wrong weights or architecture (a training checkpoint of another run, "
                      "a different preset), or images not RGB in [0, 1]")
    if report.nearest_quality != report.quality:
        causes.append(f"wrong quality/lambda: the result lies nearest the published q"
                      f"{report.nearest_quality} point; is this the q{report.quality} "
                      "checkpoint (lambdas 0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)?")
    if report.biwkv_semantics != "official64":
        causes.append(f"BiWKV semantics {report.biwkv_semantics!r}: the official checkpoints "
                      "were trained with the 64-chunk kernel; try --biwkv-semantics official64")
    else:
        causes.append("BiWKV semantics: our own checkpoints record theirs; a checkpoint "
                      "trained with the formula wants --biwkv-semantics formula")
    if float16:
        causes.append("the checkpoint holds float16 tensors (rounded weights)")
    if not report.full:
        causes.append("a subset of Kodak only: run with --full for the mean over all 24")
    return causes


def check_checkpoint(
    path: str | os.PathLike,
    *,
    quality: int | None = None,
    full: bool = False,
    biwkv_semantics: str | None = None,
    kodak: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    subset: int = SUBSET_IMAGES,
    progress: bool = False,
) -> CheckpointReport:
    """Evaluate a checkpoint on Kodak with real coding and compare it with the published
    LALIC point of its quality.

    Args:
        path: checkpoint file (official: the state dict, optionally under "state_dict").
        quality: 1..6; None: what a trainer checkpoint records, else the file name's
            ``qN`` (``lalic-mse-q6.pth``).
        full: all images of the folder (24 for Kodak) instead of an evenly spaced subset of
            ``subset`` images.
        biwkv_semantics: "formula", "official32" or "official64"; None: what the checkpoint
            records (our trainer's do), else "official64" (what the official checkpoints,
            which record nothing, were trained with).
        kodak: folder of images; None: :func:`lalic_core.data.find_kodak`.

    Returns:
        :class:`CheckpointReport` (``far`` True when outside the tolerances).
    """
    from lalic_core import codec
    from lalic_core.codec.evaluation import evaluate
    from lalic_core.codec.identity import CHECKPOINT_HASH_BYTES
    from lalic_core.data import find_kodak
    from lalic_core.images import list_images
    from lalic_core.models.factory import load_checkpoint
    from lalic_core.models.state_dict import (
        read_checkpoint_object,
        stored_biwkv_semantics,
        unwrap_state_dict,
    )
    from lalic_core.paper import LAMBDAS

    path = Path(path)
    obj = read_checkpoint_object(path)
    state_dict = unwrap_state_dict(obj, str(path))
    notes = []
    if quality is None and isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        cfg = obj["config"]
        lam = cfg.get("lambda")
        quality = next((q for q, v in LAMBDAS.items() if lam is not None and
                        math.isclose(v, lam, rel_tol=1e-6)), None)
        if quality is not None:
            notes.append(f"quality q{quality} from the checkpoint's lambda {lam}")
    if quality is None:
        quality = infer_quality(path)
        if quality is not None:
            notes.append(f"quality q{quality} from the file name")
    if quality is None:
        raise ValueError(f"check-checkpoint: cannot tell the quality of {path.name} (no "
                         "'qN' in its name); pass --quality 1..6")
    published = published_point(quality)

    if kodak is None:
        kodak = find_kodak()
        if kodak is None:
            raise FileNotFoundError("Kodak not found; run 'lalic download-kodak' or pass "
                                    "--kodak DIR")
    paths = list_images(kodak, "Kodak folder")
    if not full and len(paths) > subset:
        step = len(paths) / subset
        paths = [paths[int(i * step)] for i in range(subset)]

    semantics = biwkv_semantics if biwkv_semantics is not None else (
        stored_biwkv_semantics(obj) or "official64")
    model = load_checkpoint(obj, device=device, update=False, biwkv_semantics=semantics)
    model.update(force=True)
    stale = stale_coder_tables(model, state_dict)
    float16 = any(t.dtype == torch.float16 for t in state_dict.values())
    identity = codec.ModelIdentity(
        "checkpoint", checkpoint_sha256=codec.file_sha256(path)[:CHECKPOINT_HASH_BYTES])
    result = evaluate(paths, codec.CodecModel(model, identity), progress=progress)

    bpp = result["results"]["bpp-strings"][0]
    psnr = result["results"]["psnr"][0]
    curve_bpp, curve_psnr = _published_curve()
    gap = None
    if bpp > 0 and curve_bpp[0] / 2 <= bpp <= 2 * curve_bpp[-1]:
        gap = psnr - float(np.interp(math.log(bpp), np.log(curve_bpp), curve_psnr,
                                     left=np.nan, right=np.nan))
        gap = None if math.isnan(gap) else gap
    nearest = 1 + int(np.argmin(np.abs(np.log(curve_bpp) - math.log(max(bpp, 1e-9)))))
    tol_db, tol_bpp = TOLERANCES["full" if full else "subset"]
    ratio = bpp / published["bpp"]
    far = (abs(psnr - published["psnr"]) > tol_db or not 1 / tol_bpp <= ratio <= tol_bpp
           or abs(nearest - quality) > 1)
    report = CheckpointReport(
        path=str(path), quality=quality, biwkv_semantics=semantics, images=result["images"],
        bpp=bpp, psnr=psnr, published=published, full=full, psnr_gap_at_bpp=gap,
        nearest_quality=nearest, far=far, notes=notes,
    )
    if stale:
        report.notes.append(f"{len(stale)} stored entropy-coder table(s) differ from the "
                            "weights' (rebuilt with update(force=True) for this check)")
    if far:
        report.causes = _likely_causes(report, float16, stale)
    return report
