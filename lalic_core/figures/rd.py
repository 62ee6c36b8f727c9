"""The RD figure (budget-matched tiny models with intervals, the warm-started zoo, published
curves) and its numbers, ``figures/data/rd_kodak.json``."""
from __future__ import annotations

from pathlib import Path

from lalic_core.figures.common import (
    DATA_DIR_NAME,
    REPO_ROOT,
    _save,
    _steps,
    _zoo_entry,
    figure,
    read_json,
    shared_data_dir,
    write_json,
)

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
