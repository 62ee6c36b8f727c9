"""Regenerate every figure of the workbench: ``python -m lalic_core.figures`` (= ``make figures``).

Each figure is a small function registered with :func:`figure`; it writes its files into the
output folder and returns their paths. Figures are made headlessly (Agg backend) from the
package, the shipped zoo and, where present, the project's shared data (published RD points).

    python -m lalic_core.figures                 # all figures into figures/
    python -m lalic_core.figures --list          # what exists and what it corresponds to
    python -m lalic_core.figures erf rd_kodak    # only some

Reproducible: a second run rewrites the same bytes (fixed seeds, one torch thread, SVGs with a
fixed ``svg.hashsalt`` and no date, PNGs without software/version metadata) and nothing timed is
drawn; timing plots are written by ``benchmarks/`` under ``build/``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    paper_ref: str  # the paper figure/table it corresponds to
    make: Callable[[Path], list[Path]]


REGISTRY: dict[str, FigureSpec] = {}


def figure(name: str, paper_ref: str):
    """Register ``fn(out_dir) -> list[Path]`` as figure ``name``."""

    def register(fn):
        REGISTRY[name] = FigureSpec(name, paper_ref, fn)
        return fn

    return register


def shared_data_dir() -> Path | None:
    """The project's shared data folder (../shared/data beside a clone), if present."""
    path = Path(os.environ.get("LALIC_SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"
    return path if path.is_dir() else None


#: savefig metadata that would change from run to run or machine to machine.
PNG_METADATA = {"Software": None}
SVG_METADATA = {"Date": None, "Creator": None}


def _save(fig, out_dir: Path, stem: str, svg: bool = False) -> list[Path]:
    """``stem.png`` (and ``stem.svg``) without varying metadata; closes ``fig``."""
    import matplotlib.pyplot as plt

    paths = [out_dir / f"{stem}.png"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata=PNG_METADATA)
    if svg:
        paths.append(out_dir / f"{stem}.svg")
        fig.savefig(paths[-1], bbox_inches="tight", metadata=SVG_METADATA)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- figures


# --------------------------------------------------------------------------- shared helpers
#: Settings of the measurements: "full" (``make figures-full``: all 24 Kodak images at
#: 512x768) and "fast" (what ``make figures`` computes when no full result is cached).
MODES = ("fast", "full")
_MODE = {"value": "fast", "recompute": False}
DATA_DIR_NAME = "data"


def _round(value, digits: int = 6):
    """Floats rounded to ``digits`` significant digits (NaN/inf -> None), recursively, so
    that JSON files are byte-identical across runs and platforms."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return _round(value.tolist(), digits)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}") if value else 0.0
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, data, digits: int = 6) -> Path:
    """``data`` as JSON with sorted keys and floats rounded to ``digits`` significant digits
    (reruns write the same bytes)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_round(data, digits), sort_keys=True, indent=1) + "\n")
    return path


def read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kodak_dir() -> Path | None:
    """The 24 Kodak images: ../shared/data/kodak, else :func:`lalic_core.data.find_kodak`."""
    from lalic_core.data import find_kodak

    shared = shared_data_dir()
    return find_kodak([shared / "kodak"] if shared else None)


def kodak_images(rotate_portrait: bool = True, names=None):
    """[(name, (1, 3, H, W) tensor, rotated)] of the Kodak images (all 24 by default);
    portrait images (512 wide, 768 high) are rotated by 90 degrees to 512x768 (H x W) when
    ``rotate_portrait``. Raises FileNotFoundError when Kodak is absent."""
    import torch

    from lalic_core.data import KODAK_NAMES
    from lalic_core.images import read_image

    folder = kodak_dir()
    if folder is None:
        raise FileNotFoundError("the 24 Kodak images were not found (../shared/data/kodak, "
                                "$LALIC_KODAK or `lalic download-kodak`)")
    out = []
    for name in names or KODAK_NAMES:
        x = read_image(folder / f"{name}.png")
        rotated = bool(rotate_portrait and x.shape[-2] > x.shape[-1])
        if rotated:
            x = torch.rot90(x, 1, dims=(-2, -1)).contiguous()
        out.append((name, x, rotated))
    return out


def _centre_crop(x, size: int):
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()


def _zoo_entry(names, quality: int = 3):
    """(name, record) of the first of ``names`` the zoo has at ``quality``, else None."""
    from lalic_core import zoo

    have = set(zoo.available())
    for name in names:
        if (name, quality) in have:
            return name, zoo.info(name, quality)
    return None


def _steps(record: dict) -> int | None:
    return (record or {}).get("total_steps") or ((record or {}).get("training") or {}).get("steps")


# --------------------------------------------------------------------------- ERF
#: Block kinds of the paper's ERF figure, their display names and "tiny" presets.
ERF_KINDS = ("birwkv", "tcm", "fat", "global", "cnn")
ERF_LABELS = {"birwkv": "Bi-RWKV", "tcm": "TCM-style", "fat": "FAT-style",
              "global": "global attention", "cnn": "CNN (ELIC-style)"}
ERF_PRESETS = {"birwkv": "tiny", "tcm": "tiny-tcm", "fat": "tiny-fat", "global": "tiny-global",
               "cnn": "tiny-cnn"}
#: Zoo names of the budget-matched (3,600 steps from scratch, batch 8, 128x128 crops, q3)
#: transform of each kind; the first name the zoo has is used.
ERF_ZOO = {"birwkv": ("lalic-tiny-scratch",), "tcm": ("tcm-tiny",),
           "fat": ("fat-tiny-scratch", "fat-tiny"),
           "global": ("global-tiny-scratch", "global-tiny"), "cnn": ("cnn-tiny",)}
ERF_METHOD = ("RepLKNet's ERF (positive input gradient of ReLU(centre output) summed over "
              "channels) of the whole analysis transform g_a, one map per image, summed; "
              "portrait images rotated to 512x768")
ERF_SCALING_WHY = (
    "One scaling for maps and numbers: contribution / peak, linear. The area ratio at t is "
    "the area of the smallest centred square holding more than t of the gradient mass "
    "(shares do not depend on the gradient's absolute size or on the number of images, and "
    "add over images, so the bootstrap over images is exact). The heat maps show the same "
    "map / peak on a log10 colour scale (5 decades, 8x8 block means) because the far field "
    "lies 4-5 decades below the peak. RepLKNet's log10(map + 1) / max is not used: it "
    "depends on the gradient's absolute size (near-linear for small maps, compressive for "
    "large ones), so two models with different gains are not comparable with it.")
ERF_NOTE = (
    "Can show: how far each trained tiny transform (one training run per kind, about 2.5M "
    "parameters, 3,600 steps at 128x128) lets the image reach one latent position at the "
    "paper's image size, and how much that depends on which Kodak images are used (95% "
    "bootstrap intervals over images). Cannot show: run-to-run training variance, the "
    "paper-size models' ERFs, or causation from ERF width to rate-distortion.")
GLOBAL_CROP = {"full": 256, "fast": 128}
FAST_IMAGES = 4
RESAMPLES = {"full": 2000, "fast": 500}
POOL = 8


def _train_command(kind: str) -> str:
    return (f"scripts/train_zoo.py --preset {ERF_PRESETS[kind]} --name {ERF_ZOO[kind][0]} "
            "--qualities 3 --steps 3600")


def _erf_row_spec(kind: str, trained: bool, mode: str):
    """(inputs fingerprint, model loader) of one ERF row, or (None, reason) when the trained
    transform is not in the zoo."""
    from lalic_core.data import KODAK_NAMES

    names = list(KODAK_NAMES) if mode == "full" else list(KODAK_NAMES[:FAST_IMAGES])
    crop = GLOBAL_CROP[mode] if kind == "global" else None
    inputs = {"images": names, "centre_crop": crop, "method": ERF_METHOD,
              "resamples": RESAMPLES[mode], "mode": mode}
    if trained:
        entry = _zoo_entry(ERF_ZOO[kind])
        if entry is None:
            return None, (f"no trained {ERF_LABELS[kind]} transform in the zoo: training one at "
                          "the controlled budget takes 1-2 hours on the shared 2-core machine "
                          f"and was not done; add it with `{_train_command(kind)}`, then run "
                          "`make figures-full` (only the new row is computed)")
        name, record = entry
        inputs.update(model=f"{name}:3", weights_sha256=record.get("weights_sha256"),
                      preset=record.get("model"), steps=_steps(record))

        def load():
            from lalic_core import zoo
            return zoo.load(name, 3)
    else:
        inputs.update(model=f"random init of preset {ERF_PRESETS[kind]!r}, seed 0",
                      preset=ERF_PRESETS[kind])

        def load():
            from lalic_core.models.factory import build_model
            return build_model(ERF_PRESETS[kind], seed=0).eval()
    return inputs, load


def _erf_row(kind: str, inputs: dict, load, log=print) -> dict:
    """Measure one row: model's g_a on the images of ``inputs``."""
    import time

    from lalic_core.analysis.erf import erf_study, measure_biwkv_floors, pool_map

    start = time.perf_counter()
    images = kodak_images(names=inputs["images"])
    crop = inputs["centre_crop"]
    tensors = [_centre_crop(x, crop) if crop else x for _, x, _ in images]
    model = load()
    study = erf_study(model.g_a, tensors, names=[n for n, _, _ in images],
                      resamples=inputs["resamples"], seed=0,
                      progress=lambda i, n: log(f"[figures] erf {kind} ({inputs['model']}): "
                                                f"image {i + 1}/{len(tensors)} {n}"))
    key = lambda t: f"{t:g}"
    row = {
        "inputs": inputs,
        "image_size": list(study.image_size),
        "n_images": len(study.names),
        "images": study.names,
        "rotated_portrait_images": [n for n, _, r in images if r],
        "area_ratio": {key(t): study.area_ratio[t] for t in study.thresholds},
        "area_ratio_ci": {key(t): list(study.area_ratio_ci[t]) for t in study.thresholds},
        "area_ratio_per_image": {key(t): study.per_image_ratio[t] for t in study.thresholds},
        "square_side_px": {key(t): study.side[t] for t in study.thresholds},
        "floor": study.floor, "floor_ci": list(study.floor_ci),
        "far_share": study.far_share, "far_share_ci": list(study.far_share_ci),
        "map_pool": POOL,
        "map": pool_map(study.normalised, POOL).div(pool_map(study.normalised, POOL).max()),
    }
    row["map"] = [[float(f"{v:.3g}") for v in r] for r in row["map"].tolist()]
    if kind == "birwkv":
        per_block: dict[str, dict] = {}
        for x in tensors:
            for b in measure_biwkv_floors(model.g_a, x):
                entry = per_block.setdefault(b["block"], {"hw": b["hw"], "T": b["T"],
                                                          "decay_abs_mean": b["decay_abs_mean"],
                                                          "predicted": b["predicted"],
                                                          "measured_per_image": []})
                entry["measured_per_image"].append(b["measured"]["floor"])
                entry.setdefault("measured_t_times_far_median_per_image", []).append(
                    b["measured"]["t_times_far_median"])
        from lalic_core.analysis.bootstrap import bootstrap_ci
        for entry in per_block.values():
            vals = entry["measured_per_image"]
            entry["measured"] = sum(vals) / len(vals)
            entry["measured_ci"] = [float(v) for v in bootstrap_ci(vals, seed=0)]
            tw = entry["measured_t_times_far_median_per_image"]
            entry["measured_t_times_far_median"] = sum(tw) / len(tw)
            entry["measured_t_times_far_median_ci"] = [float(v) for v in
                                                       bootstrap_ci(tw, seed=0)]
        row["biwkv_floor"] = per_block
    log(f"[figures] erf {kind} ({inputs['model']}): {time.perf_counter() - start:.0f} s")
    return row


def erf_comparison_data(mode: str = "fast", previous: dict | None = None,
                        recompute: bool = False, log=print) -> dict:
    """The numbers of the ``erf_comparison`` figure: {"trained": {kind: row}, "random":
    {kind: row}, "missing": {...}, ...}. Rows of ``previous`` (the last JSON) whose inputs
    (model, weights hash, images, method) match the wanted ones are reused, so adding a
    trained model later computes only its row; in "fast" mode a cached full-size row is
    preferred to recomputing a fast one."""
    previous = previous or {}
    data = {"trained": {}, "random": {}, "missing": {}}
    for section, trained in (("trained", True), ("random", False)):
        for kind in ERF_KINDS:
            wanted, load = _erf_row_spec(kind, trained, mode)
            if wanted is None:
                data["missing"][kind] = load
                continue
            old = (previous.get(section) or {}).get(kind)
            candidates = [wanted]
            if mode == "fast":
                candidates.insert(0, _erf_row_spec(kind, trained, "full")[0])
            if not recompute and old is not None and old.get("inputs") in (
                    _round(c) for c in candidates):
                data[section][kind] = old
                continue
            data[section][kind] = _erf_row(kind, wanted, load, log)
    data.update(
        thresholds=["0.2", "0.3", "0.5", "0.99"],
        scaling="contribution / peak (linear); maps: log10 colour scale, 5 decades",
        scaling_why=ERF_SCALING_WHY, method=ERF_METHOD, note=ERF_NOTE,
        interval=("95% percentile bootstrap over images (seed 0, 2000 resamples in full "
                  "mode): the images are resampled with replacement, their maps summed and "
                  "the ratios recomputed. The ratios are quantised (squares of odd side "
                  "2i+1), so an interval of zero width means every resample needed the same "
                  "square"),
        global_attention_size=(
            "the global-attention rows use centre crops (256x256 in full mode, 128x128 in fast "
            "mode): at 512x768 its first stage attends over 98,304 tokens (9.7e9 attention "
            "weights per head per image), measured 12 s per image at 256x256 on one CPU thread "
            "and about 100x more at full size; its area ratios are relative to the crop and "
            "so are not comparable with the full-size rows"),
        floor_prediction=(
            "Bi-RWKV floor: BiWKV with w = decay / T gives a token at sequence distance d the "
            "weight exp(-(d - 1) decay / T) / Z, so every token keeps a weight of order "
            "exp(-|decay|)/T. 'predicted' uses the trained decays with zero keys; 'measured' "
            "uses the keys the Kodak images produce in the trained g_a; floor = median "
            "far-field mixing weight / peak weight of the centre token's channel-mean "
            "mixing map (far field: Chebyshev distance > a quarter of the shorter side). The "
            "g_a's own normalised ERF floor (row 'floor') is far lower: the local paths "
            "(residual, Omni-Shift, convolutions) put most of the gradient on the centre, "
            "and their gain relative to BiWKV's is not set by the decays."),
    )
    return data


def _plot_erf_figure(data: dict):
    import numpy as np
    from matplotlib.figure import Figure

    decades = 5
    fig = Figure((17, 9.6), layout="constrained")
    grid = fig.add_gridspec(2, len(ERF_KINDS) + 1, width_ratios=[1] * len(ERF_KINDS) + [1.6])
    image = None
    for r, (section, title) in enumerate((("trained", "trained g_a (zoo, q3, 3.6k steps)"),
                                          ("random", "random-init g_a (seed 0)"))):
        rows = data[section]
        for c, kind in enumerate(ERF_KINDS):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            row = rows.get(kind)
            if row is None:
                ax.text(0.5, 0.5, f"{ERF_LABELS[kind]}:\nnot trained\n(1-2 h per model on\nthe "
                        "shared 2-core machine)\nsee JSON 'missing'", ha="center", va="center",
                        fontsize=8, color="0.35", transform=ax.transAxes)
                for side in ax.spines.values():
                    side.set_visible(False)
                continue
            m = np.asarray(row["map"], dtype=float)
            shown = (np.log10(np.clip(m, 10.0 ** -decades, None)) + decades) / decades
            image = ax.imshow(shown, cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
            h, w = row["image_size"]
            ar, ci = row["area_ratio"], row["area_ratio_ci"]
            ax.set_xlabel(f"{ERF_LABELS[kind]}  ({h}x{w}, N={row['n_images']})\n"
                          + "\n".join(f"t={t}: {ar[t]:.3f} [{ci[t][0]:.3f}, {ci[t][1]:.3f}]"
                                      for t in ("0.5", "0.99"))
                          + f"\nfloor {row['floor']:.1e}, far share {row['far_share']:.3f}",
                          fontsize=7.5)
            if c == 0:
                ax.set_ylabel(title, fontsize=9)
        ax = fig.add_subplot(grid[r, -1])
        present = [k for k in ERF_KINDS if k in rows]
        x = np.arange(len(present))
        width = 0.8 / 4
        for j, t in enumerate(("0.2", "0.3", "0.5", "0.99")):
            vals = np.array([rows[k]["area_ratio"][t] for k in present])
            lo = np.array([rows[k]["area_ratio_ci"][t][0] for k in present])
            hi = np.array([rows[k]["area_ratio_ci"][t][1] for k in present])
            ax.bar(x + (j - 1.5) * width, vals, width, color=f"C{j}", label=f"t = {t}",
                   yerr=np.vstack([vals - lo, hi - vals]), capsize=2, error_kw={"lw": 0.8})
        ax.set_xticks(x, [ERF_LABELS[k] + ("*" if k == "global" else "") for k in present],
                      rotation=25, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1.5)
        ax.set_ylabel("area ratio (log scale)", fontsize=8)
        ax.set_title(f"{title}: area ratios, 95% CI over images", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.grid(True, axis="y", alpha=0.3)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes[:-1], location="bottom", shrink=0.35, aspect=40)
        bar.set_ticks([i / decades for i in range(decades + 1)],
                      labels=[f"1e-{decades - i}" if i < decades else "1"
                              for i in range(decades + 1)])
        bar.set_label("contribution / peak (log colour scale; the numbers use the same map, "
                      "linear)")
    floor = (data["trained"].get("birwkv") or {}).get("biwkv_floor") or {}
    lines = [("Bi-RWKV floor of each Spatial Mix in the trained g_a (centre token's mixing "
              "weights, far-field median / peak; predicted from the decays with zero keys, "
              "measured with the Kodak images' keys; every token keeps ~1/T: T x weight ~ 1). "
              "The g_a's own ERF floor is lower: local paths dominate its peak.")]
    for name, b in floor.items():
        lines.append(f"  block {name}: T = {b['T']}, mean |decay| = {b['decay_abs_mean']:.2f}: "
                     f"predicted {b['predicted']['floor']:.3f} (bound exp(-|decay|/2) "
                     f"{b['predicted']['bound']:.3f}), measured {b['measured']:.3f} "
                     f"[{b['measured_ci'][0]:.3f}, {b['measured_ci'][1]:.3f}]; T x median "
                     f"far-field weight: predicted {b['predicted']['t_times_far_median']:.3f}"
                     + (f", measured {b['measured_t_times_far_median']:.3f} "
                        f"[{b['measured_t_times_far_median_ci'][0]:.3f}, "
                        f"{b['measured_t_times_far_median_ci'][1]:.3f}]"
                        if "measured_t_times_far_median" in b else ""))
    missing = ", ".join(ERF_LABELS[k] for k in data.get("missing", {}))
    caption = ("Effective receptive fields of the analysis transforms (RepLKNet's method) on "
               "Kodak. Scaling: contribution / peak for maps and numbers. "
               "* global attention on centre crops (full size is out of reach on CPU). "
               + (f"Missing trained rows: {missing} (not trained; see the JSON). " if missing
                  else "") + "\n" + ERF_NOTE)
    import textwrap

    text = "\n".join(textwrap.fill(part, 190) for part in caption.split("\n"))
    fig.suptitle(text + ("\n" + "\n".join(lines) if floor else ""), fontsize=8.5,
                 ha="left", x=0.01)
    return fig


@figure("erf_comparison", "The paper's ERF figure: Bi-RWKV vs TCM/FAT-style windows vs CNN vs "
        "global attention, trained (budget-matched zoo, q3) and random-init g_a, on Kodak")
def erf_comparison(out_dir: Path) -> list[Path]:
    path = out_dir / DATA_DIR_NAME / "erf_comparison.json"
    data = erf_comparison_data(_MODE["value"], read_json(path), _MODE["recompute"])
    write_json(path, data)
    return [*_save(_plot_erf_figure(read_json(path)), out_dir, "erf_comparison"), path]


# --------------------------------------------------------------------------- latent correlation
#: Trained models of the latent-correlation figure (q3): the budget-matched trio, the
#: warm-started lalic-tiny, and FAT-style / global attention when the zoo has them.
CORR_MODELS = (("lalic-tiny-scratch", "Bi-RWKV (3.6k steps, budget-matched)"),
               ("tcm-tiny", "TCM-style (3.6k steps, budget-matched)"),
               ("fat-tiny-scratch", "FAT-style (3.6k steps, budget-matched)"),
               ("global-tiny-scratch", "global attention (3.6k steps, budget-matched)"),
               ("cnn-tiny", "CNN (3.6k steps, budget-matched)"),
               ("lalic-tiny", "Bi-RWKV (9k steps, warm-started from q2)"))
CORR_K = 2
CORR_METHOD = ("Pearson correlation of each latent channel with its shift by (dy, dx) over "
               "the overlap, per image, averaged over channels; whole upright Kodak images "
               "(768x512 or 512x768, no padding needed), eval-mode forward; transpose test: "
               "the same on the transposed image")
CORR_NOTE = (
    "Can show: how much spatial correlation each trained tiny model leaves in its latent y "
    "and in the residual (y - mu) / sigma the entropy model codes, image by image, with 95% "
    "bootstrap intervals over the 24 Kodak images. Cannot show: whether lower correlation "
    "causes a lower rate (the entropy model's context also differs), or anything about "
    "other training runs or the paper-size models.")
ANISOTROPY_TEST = (
    "Transpose test for the anisotropy A (vertical minus horizontal lag-1 correlation of "
    "(y - mu)/sigma): each image is also fed transposed; the content part (A - A_T)/2 follows "
    "the image, the model-fixed part (A + A_T)/2 (scan order, checkerboard, stride phases, "
    "padding) stays with the model's axes. Images are measured upright (portrait images not "
    "rotated: their rows are the scene's horizontal, as in the landscape ones).")


def _anisotropy_finding(models: dict, demo: dict) -> str:
    """One data-driven paragraph: the split of the anisotropy per model and where the two
    images of the earlier figure (kodim15, kodim23) rank."""
    parts = []
    for name, e in models.items():
        r = e["residual"]
        if "anisotropy_content" not in r:
            continue
        d = demo.get(name, {})
        ranks = ", ".join(f"{img} {v['anisotropy']:+.3f} (rank {v['rank']}/{v['of']})"
                          for img, v in d.items() if img.startswith("kodim"))
        parts.append(
            f"{name}: A = {r['anisotropy']:+.3f} [{r['anisotropy_ci'][0]:+.3f}, "
            f"{r['anisotropy_ci'][1]:+.3f}], content {r['anisotropy_content']:+.3f} "
            f"[{r['anisotropy_content_ci'][0]:+.3f}, {r['anisotropy_content_ci'][1]:+.3f}], "
            f"model-fixed {r['anisotropy_model_fixed']:+.3f} "
            f"[{r['anisotropy_model_fixed_ci'][0]:+.3f}, "
            f"{r['anisotropy_model_fixed_ci'][1]:+.3f}]; {ranks}")
    text = ("Anisotropy of (y - mu)/sigma over the measured images, 95% CI: "
            + "; ".join(parts) + ". The earlier figure measured only kodim15 and kodim23 "
            "(half size).")
    ranks = [v["rank"] for d in demo.values() for k, v in d.items() if k.startswith("kodim")]
    others = [d.get("mean_of_the_others") for d in demo.values()]
    fixed = [abs(e["residual"].get("anisotropy_model_fixed", 0.0)) for e in models.values()]
    if ranks and max(ranks) <= 5 and all(o is not None and o < 0 for o in others):
        text += (f" Finding: in every model both images are among the {max(ranks)} most "
                 "vertically anisotropic of the images, while the others average A < 0 "
                 "(slightly horizontal), and the model-fixed part stays within "
                 f"{max(fixed):.3f}: the vertical anisotropy of the earlier figure was the "
                 "content of its two photographs, not a property of the models (scan order, "
                 "checkerboard, stride phases or padding would survive the transpose).")
    return text


def _paired_offcentre(models: dict, reference: str = "lalic-tiny-scratch") -> dict:
    """Per model: the mean per-image difference of the mean |off-centre| correlation
    against ``reference`` (same images, paired), with its 95% bootstrap interval."""
    import numpy as np

    from lalic_core.analysis.bootstrap import bootstrap_ci

    if reference not in models:
        return {}
    out = {}
    for name, e in models.items():
        if name == reference or e["images"] != models[reference]["images"]:
            continue
        out[name] = {}
        for field in ("residual", "raw_y"):
            d = (np.asarray(e[field]["per_image_mean_abs_offcentre"], dtype=float)
                 - np.asarray(models[reference][field]["per_image_mean_abs_offcentre"],
                              dtype=float))
            out[name][field] = {"difference": float(d.mean()),
                                "ci": [float(v) for v in bootstrap_ci(d, seed=0)]}
    return out


def _corr_spec(name: str, mode: str):
    from lalic_core.data import KODAK_NAMES

    entry = _zoo_entry((name,))
    if entry is None:
        return None
    _, record = entry
    names = list(KODAK_NAMES) if mode == "full" else list(KODAK_NAMES[:FAST_IMAGES])
    return {"model": f"{name}:3", "weights_sha256": record.get("weights_sha256"),
            "preset": record.get("model"), "steps": _steps(record), "images": names,
            "k": CORR_K, "method": CORR_METHOD, "mode": mode}


def _corr_entry(name: str, label: str, inputs: dict, log=print) -> dict:
    import time

    from lalic_core import zoo
    from lalic_core.analysis.correlation import (
        CORRELATION_FIELDS,
        image_correlations,
        summarise_correlations,
    )

    start = time.perf_counter()
    model = zoo.load(name, 3)
    per_image, sizes, latent = [], {}, {}
    for img_name, x, _ in kodak_images(rotate_portrait=False, names=inputs["images"]):
        log(f"[figures] latent_correlation {name}: {img_name}")
        result = image_correlations(model, x, CORR_K)
        per_image.append(result)
        sizes[img_name] = list(x.shape[-2:])
        latent[img_name] = result["latent_size"]
    entry = {"inputs": inputs, "label": label, "n_images": len(per_image),
             "images": inputs["images"], "image_sizes": sizes, "latent_sizes": latent}
    for field in CORRELATION_FIELDS:
        entry["raw_y" if field == "y" else "residual"] = summarise_correlations(per_image,
                                                                                 field)
    log(f"[figures] latent_correlation {name}: {time.perf_counter() - start:.0f} s")
    return entry


def latent_correlation_data(mode: str = "fast", previous: dict | None = None,
                            recompute: bool = False, log=print) -> dict:
    """The numbers of the ``latent_correlation`` figure: {"models": {name: entry}, ...};
    entries of ``previous`` with the same inputs are reused."""
    previous = (previous or {}).get("models") or {}
    models, missing = {}, {}
    for name, label in CORR_MODELS:
        wanted = _corr_spec(name, mode)
        if wanted is None:
            missing[name] = "not in the zoo (not trained; see erf_comparison.json 'missing')"
            continue
        old = previous.get(name)
        candidates = [_round(wanted)]
        if mode == "fast":
            candidates.insert(0, _round(_corr_spec(name, "full")))
        if not recompute and old is not None and old.get("inputs") in candidates:
            models[name] = old
            continue
        models[name] = _corr_entry(name, label, wanted, log)
    demo = _demo_image_anisotropy(models)
    return {"models": models, "order": list(models), "missing": missing, "k": CORR_K,
            "method": CORR_METHOD, "demo_images": demo,
            "anisotropy_finding": _anisotropy_finding(models, demo),
            "paired_mean_abs_offcentre_vs_lalic_tiny_scratch": _paired_offcentre(models),
            "note": CORR_NOTE, "anisotropy_test": ANISOTROPY_TEST,
            "anisotropy_definition": (
                "A = mean corr at (dy, dx) = (+-1, 0) minus mean corr at (0, +-1), channel-mean "
                "map of one image; A_T the same for the transposed image (model frame)"),
            "interval": "95% percentile bootstrap over images (seed 0, 2000 resamples)"}


def _demo_image_anisotropy(models: dict) -> dict:
    """Per model: the residual anisotropy A of kodim15 and kodim23 (the two images the
    earlier figure used) and their rank among the measured images (1 = most vertical)."""
    out = {}
    for name, entry in models.items():
        res = entry["residual"]
        per = dict(zip(entry["images"], res["per_image_anisotropy"]))
        ranked = sorted(per, key=lambda n: -per[n])
        others = [v for n, v in per.items() if n not in ("kodim15", "kodim23")]
        out[name] = {n: {"anisotropy": per[n], "rank": ranked.index(n) + 1, "of": len(ranked)}
                     for n in ("kodim15", "kodim23") if n in per}
        out[name]["mean_of_the_others"] = sum(others) / len(others) if others else None
    return out


def _plot_correlation_figure(data: dict):
    import textwrap

    import numpy as np
    from matplotlib.figure import Figure

    models = data["models"]
    names = data.get("order") or list(models)
    n = len(names)
    fig = Figure((16, 3.0 * n + 1.8), layout="constrained")
    grid = fig.add_gridspec(n, 4, width_ratios=[1, 1, 1.5, 1.5])
    k = data["k"]
    offsets = list(range(-k, k + 1))
    image = None
    for r, name in enumerate(names):
        entry = models[name]
        for c, (field, title) in enumerate((("residual", "(y - mu) / sigma"),
                                            ("raw_y", "raw latent y"))):
            ax = fig.add_subplot(grid[r, c])
            m = np.asarray(entry[field]["mean_map"], dtype=float)
            lo, hi = (np.asarray(entry[field][key], dtype=float) for key in ("ci_low", "ci_high"))
            image = ax.imshow(m, cmap="coolwarm", vmin=-0.5, vmax=0.5)
            for i in range(len(offsets)):
                for j in range(len(offsets)):
                    txt = ("1" if i == j == k else
                           f"{m[i, j]:.2f}\n[{lo[i, j]:.2f},{hi[i, j]:.2f}]")
                    ax.text(j, i, txt, ha="center", va="center", fontsize=5.5)
            ax.set_xticks(range(len(offsets)), offsets, fontsize=7)
            ax.set_yticks(range(len(offsets)), offsets, fontsize=7)
            ax.set_xlabel("dx", fontsize=7)
            ax.set_ylabel(f"{entry['label']}\n{name}:3\ndy" if c == 0 else "dy", fontsize=7)
            if r == 0:
                ax.set_title(f"{title}: mean over N images [95% CI]", fontsize=8)
    ax = fig.add_subplot(grid[:, 2])
    rng = np.random.default_rng(0)
    for j, field in enumerate(("residual", "raw_y")):
        for i, name in enumerate(names):
            e = models[name][field]
            x0 = i + (j - 0.5) * 0.35
            per = np.asarray(e["per_image_mean_abs_offcentre"], dtype=float)
            ax.plot(x0 + rng.uniform(-0.06, 0.06, per.size), per, ".", color=f"C{j}",
                    alpha=0.35, markersize=4)
            lo, hi = e["mean_abs_offcentre_ci"]
            ax.errorbar([x0], [e["mean_abs_offcentre"]], yerr=[[e["mean_abs_offcentre"] - lo],
                        [hi - e["mean_abs_offcentre"]]], fmt="o", color=f"C{j}", capsize=3,
                        label=("(y - mu)/sigma" if field == "residual" else "raw y")
                        if i == 0 else None)
    ax.set_xticks(range(n), [f"{n_}\n(N={models[n_]['n_images']})" for n_ in names],
                  rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean |off-centre correlation| (5x5 window)", fontsize=8)
    ax.set_title("redundancy left, per image (dots) and mean [95% CI]\n(lower = less "
                 "spatial correlation left)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    ax = fig.add_subplot(grid[:, 3])
    parts = (("anisotropy", "total A (as measured)"),
             ("anisotropy_content", "content part (A - A_T)/2"),
             ("anisotropy_model_fixed", "model-fixed part (A + A_T)/2"))
    width = 0.8 / len(parts)
    for j, (key, label) in enumerate(parts):
        vals = [models[nm]["residual"].get(key, np.nan) for nm in names]
        cis = [models[nm]["residual"].get(key + "_ci", [np.nan, np.nan]) for nm in names]
        x = np.arange(n) + (j - 1) * width
        ax.bar(x, vals, width, color=f"C{j + 2}", label=label,
               yerr=np.array([[v - c[0] for v, c in zip(vals, cis)],
                              [c[1] - v for v, c in zip(vals, cis)]]), capsize=2)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(range(n), names, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("vertical - horizontal lag-1 correlation of (y - mu)/sigma", fontsize=8)
    ax.set_title("anisotropy, transpose test [95% CI]", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    if image is not None:
        fig.colorbar(image, ax=fig.axes[:2 * n], location="bottom", shrink=0.5,
                     label="correlation (colour clipped at ±0.5; centre = 1)")
    missing = ", ".join(data.get("missing", {}))
    caption = ("Spatial correlation of the latents on Kodak (k = 2). " + CORR_NOTE
               + (f" Not in the zoo: {missing}." if missing else "") + "\n"
               + ANISOTROPY_TEST + "\n" + data.get("anisotropy_finding", ""))
    paired = data.get("paired_mean_abs_offcentre_vs_lalic_tiny_scratch") or {}
    if paired:
        caption += "\nPaired per-image difference of mean |off-centre| against " \
            "lalic-tiny-scratch (same images, 95% CI): " + "; ".join(
                f"{n}: residual {v['residual']['difference']:+.4f} "
                f"[{v['residual']['ci'][0]:+.4f}, {v['residual']['ci'][1]:+.4f}], raw y "
                f"{v['raw_y']['difference']:+.4f} [{v['raw_y']['ci'][0]:+.4f}, "
                f"{v['raw_y']['ci'][1]:+.4f}]" for n, v in paired.items()) + "."
    fig.suptitle("\n".join(textwrap.fill(p, 200) for p in caption.split("\n")), fontsize=8,
                 ha="left", x=0.01)
    return fig


@figure("latent_correlation", "The paper's latent-correlation claim: spatial correlation of "
        "y and (y - mu) / sigma on the 24 Kodak images, LALIC vs TCM-style vs CNN (zoo q3)")
def latent_correlation(out_dir: Path) -> list[Path]:
    path = out_dir / DATA_DIR_NAME / "latent_correlation.json"
    data = latent_correlation_data(_MODE["value"], read_json(path), _MODE["recompute"])
    write_json(path, data)
    return [*_save(_plot_correlation_figure(read_json(path)), out_dir, "latent_correlation"),
            path]


@figure("scctx_steps", "The paper's RWKV-SCCTX decoding order: the decoder after each "
        "channel-group / checkerboard pass")
def scctx_steps(out_dir: Path) -> list[Path]:
    from lalic_core.explore import demo_images, plot_decode_grid, scctx_decode, zoo_or_random

    choice = zoo_or_random("lalic-tiny", 3)
    steps, _ = scctx_decode(choice.model, demo_images()[:1])
    fig = plot_decode_grid(steps)
    what = "zoo lalic-tiny q3" if choice.trained else "random-init 'tiny' (zoo entry missing)"
    fig.suptitle(f"{fig.get_suptitle()}\nmodel: {what}; packaged half-size kodim23", fontsize=10)
    return _save(fig, out_dir, "scctx_steps")


@figure("complexity_scaling", "The paper's complexity claim: one block's FLOPs vs resolution, "
        "Bi-RWKV vs window attention vs CNN vs global attention (timings: benchmarks/)")
def complexity_scaling(out_dir: Path) -> list[Path]:
    from lalic_core.analysis.complexity_sweep import plot_sweep, sweep

    rows = sweep(dim=64, resolutions=(16, 32, 64, 96, 128), repeats=1, time_budget_s=None)
    fig = plot_sweep(rows, title="One block (64 channels, batch 1) against the number of tokens",
                     quantities=("gflops",))
    return _save(fig, out_dir, "complexity_scaling", svg=True)


#: Our zoo's Kodak results (``scripts/eval_zoo.py``): merged curves ``kodak-<name>.json``.
RESULTS_DIR = REPO_ROOT / "results"


def zoo_results(results_dir: Path = RESULTS_DIR) -> dict:
    """Our merged zoo curves on Kodak, keyed by zoo name (empty before the zoo is evaluated)."""
    from lalic_core.rd import load_rd

    if not results_dir.is_dir():
        return {}
    import re

    return {p.stem.removeprefix("kodak-"): load_rd(p)
            for p in sorted(results_dir.glob("kodak-*.json"))
            if not re.search(r"-q\d+$", p.stem)}  # per-quality reports are merged already


#: The budget-matched q3 models of the RD comparison (zoo name, label); FAT-style and global
#: attention join when they are trained and evaluated (results/kodak-<name>-q3.json).
RD_MATCHED = (("lalic-tiny-scratch", "Bi-RWKV (LALIC-tiny)"), ("tcm-tiny", "TCM-style"),
              ("fat-tiny-scratch", "FAT-style"), ("global-tiny-scratch", "global attention"),
              ("cnn-tiny", "CNN (ELIC-style)"))
RD_NOTE = (
    "Can show: at q3, which tiny transform (one training run each, same skeleton, entropy "
    "model, data and 3,600 steps) reaches the lower training objective on Kodak, and how "
    "sure that is over images (95% bootstrap intervals; differences paired by image). "
    "Cannot show: run-to-run training variance (one seed per model), ranking at other rates "
    "or at the paper's size and training budget (4 orders of magnitude more), or a BD-rate "
    "between the trio (one point each).")


def rd_kodak_data(results_dir: Path = RESULTS_DIR) -> dict:
    """The numbers of the ``rd_kodak`` figure (see :func:`lalic_core.rd.plot_rd_study`)."""
    from lalic_core.rd import load_published, paired_differences, per_image_point

    matched, missing = {}, {}
    for name, label in RD_MATCHED:
        path = results_dir / f"kodak-{name}-q3.json"
        report = read_json(path)
        entry = _zoo_entry((name,))
        if report is None or not report.get("images"):
            missing[name] = ("not in the zoo (not trained)" if entry is None else
                             f"no per-image report {path.name}: run scripts/eval_zoo.py")
            continue
        if entry is not None and report.get("weights_sha256") not in (
                None, entry[1].get("weights_sha256")):
            missing[name] = f"{path.name} was made from other weights: run scripts/eval_zoo.py"
            continue
        lmbda = ((entry[1] if entry else {}).get("training") or {}).get("lambda", 0.0067)
        point = per_image_point(report, lmbda=lmbda)
        point.update(label=label, model=f"{name}:3", report=f"results/{path.name}",
                     steps=_steps(entry[1]) if entry else None, lmbda=lmbda)
        matched[name] = point
    reference = "lalic-tiny-scratch" if "lalic-tiny-scratch" in matched else None
    paired = {name: paired_differences(p, matched[reference])
              for name, p in matched.items() if reference and name != reference}
    zoo_curves = {}
    reports = sorted(results_dir.glob("kodak-lalic-tiny-q*.json"))
    if reports:
        from lalic_core.analysis.bootstrap import bootstrap_ci

        pts = []
        for path in reports:
            report = read_json(path) or {}
            if not report.get("images"):
                continue
            p = per_image_point(report)
            pts.append((p["bpp"], p["psnr"], *p["psnr_ci"], path.name))
        pts.sort()
        if pts:
            steps = [_steps((_zoo_entry(("lalic-tiny",), int(n.split("-q")[1][0])) or
                             (None, {}))[1]) for *_, n in pts]
            zoo_curves["lalic-tiny"] = {
                "description": "q1..q4, warm-started, steps " + "/".join(map(str, steps)),
                "bpp": [p[0] for p in pts], "psnr": [p[1] for p in pts],
                "psnr_ci_low": [p[2] for p in pts], "psnr_ci_high": [p[3] for p in pts],
                "reports": [p[4] for p in pts], "steps": steps}
        del bootstrap_ci
    shared = shared_data_dir()
    published = {d: load_published(d, shared / "rd" if shared else None)
                 for d in ("Kodak", "CLIC Pro Valid", "Tecnick")}
    lines = [f"{p['label']}: {p['bpp']:.4f} bpp [{p['bpp_ci'][0]:.4f}, {p['bpp_ci'][1]:.4f}], "
             f"{p['psnr']:.3f} dB [{p['psnr_ci'][0]:.3f}, {p['psnr_ci'][1]:.3f}], "
             f"rd cost {p['rd_cost']:.4f} [{p['rd_cost_ci'][0]:.4f}, {p['rd_cost_ci'][1]:.4f}]"
             for p in matched.values()]
    caption = ("Rate-distortion on Kodak (24 images, real bitstreams, CPU) and published "
               "curves. " + RD_NOTE
               + (" Missing budget-matched rows: " + ", ".join(missing) + "."
                  if missing else "") + "\n" + "; ".join(lines))
    return {"budget_matched": {"models": matched, "order": list(matched),
                               "reference": reference,
                               "paired_vs_reference": paired, "missing": missing,
                               "what": ("q3 zoo models trained from scratch for 3,600 steps, "
                                        "batch 8, 128x128 crops of train-photos, lambda "
                                        "0.0067; bpp of the whole .lalic file; PSNR per "
                                        "image on 8-bit RGB, then averaged")},
            "zoo_curves": zoo_curves, "published": published, "note": RD_NOTE,
            "interval": "95% percentile bootstrap over images (seed 0, 2000 resamples)",
            "caption": caption}


@figure("rd_kodak", "The paper's RD curves: budget-matched tiny models with intervals, our "
        "warm-started zoo, published points on Kodak, CLIC Pro Valid and Tecnick")
def rd_kodak(out_dir: Path) -> list[Path]:
    from lalic_core.rd import plot_rd_study

    path = write_json(out_dir / DATA_DIR_NAME / "rd_kodak.json", rd_kodak_data())
    return [*_save(plot_rd_study(read_json(path)), out_dir, "rd_kodak", svg=True), path]


def _reproducible() -> None:
    """Headless matplotlib with a fixed SVG id salt, one torch thread, seeded RNGs."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lalic-workbench"
    torch.set_num_threads(1)
    torch.manual_seed(0)


def main(argv: list[str] | None = None) -> int:
    import torch

    _reproducible()
    parser = argparse.ArgumentParser(prog="python -m lalic_core.figures",
                                     description="Regenerate the workbench's figures.")
    parser.add_argument("names", nargs="*", help="figures to make (default: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "figures")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    parser.add_argument("--full", action="store_true",
                        help="full-size measurements (make figures-full): all 24 Kodak images "
                             "at 512x768 for every ERF row; rows already in figures/data with "
                             "the same inputs are reused")
    parser.add_argument("--recompute", action="store_true",
                        help="ignore cached rows in figures/data and measure everything again")
    args = parser.parse_args(argv)
    _MODE["value"] = "full" if args.full else "fast"
    _MODE["recompute"] = args.recompute
    if args.list:
        for spec in REGISTRY.values():
            print(f"{spec.name:24s} {spec.paper_ref}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; known: {sorted(REGISTRY)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.names or list(REGISTRY):
        start = time.perf_counter()
        torch.manual_seed(0)  # each figure the same alone as in a full run
        try:
            paths = REGISTRY[name].make(args.out)
        except Exception as exc:  # noqa: BLE001 -- keep going: one broken figure must not hide the others
            failed.append(name)
            print(f"[figures] {name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        took = time.perf_counter() - start
        for p in paths:
            print(f"[figures] {name}: wrote {p.relative_to(args.out.parent) if p.is_relative_to(args.out.parent) else p} ({took:.1f} s)")
    if failed:
        print(f"[figures] {len(failed)} figure(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
