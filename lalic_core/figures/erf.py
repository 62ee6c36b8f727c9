"""The paper's ERF figure (Bi-RWKV vs TCM/FAT-style windows vs CNN vs global attention) and
its numbers, ``figures/data/erf_comparison.json``."""
from __future__ import annotations

from pathlib import Path

from lalic_core.figures.common import (
    _MODE,
    DATA_DIR_NAME,
    _centre_crop,
    _round,
    _save,
    _steps,
    _zoo_entry,
    figure,
    kodak_images,
    read_json,
    write_json,
)

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
