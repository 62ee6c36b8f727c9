"""Rate-distortion curves: JSON files, RD plots and BD-rate tables.

The JSON schema is CompressAI's (``results/image/<dataset>/*.json``), also used by
``../shared/data/rd`` and by ``lalic eval``::

    {"name": "LALIC", "description": "...",
     "results": {"bpp": [...], "psnr": [...], "ms-ssim": [...], "ms-ssim-db": [...], ...}}

``bpp`` is required; each quality metric is optional but, when present, has one value per
point. Extra per-point lists (encoding/decoding times) are kept in :attr:`RDCurve.extra`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import paper as _paper
from .metrics import bd_psnr, bd_rate

__all__ = [
    "METRICS",
    "PAPER_BD_RATES",
    "PUBLISHED_DATASETS",
    "PUBLISHED_KODAK",
    "RDCurve",
    "bd_rate_table",
    "format_bd_table",
    "load_published",
    "load_rd",
    "load_rd_dir",
    "merge_reports",
    "paper_bd_rates",
    "per_image_point",
    "plot_rd",
    "plot_rd_kodak",
    "plot_rd_study",
    "published_rd_dir",
    "save_rd",
    "zoo_bd_rows",
]

#: Quality metrics understood by :meth:`RDCurve.quality` (name in the JSON -> axis label).
METRICS = {"psnr": "PSNR (dB)", "ms-ssim": "MS-SSIM", "ms-ssim-db": "MS-SSIM (dB)"}


@dataclass
class RDCurve:
    """One codec's rate-distortion points (one per quality level)."""

    name: str
    bpp: list[float]
    metrics: dict[str, list[float]] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bpp = [float(v) for v in self.bpp]
        for key, values in {**self.metrics, **self.extra}.items():
            if len(values) != len(self.bpp):
                raise ValueError(
                    f"RD curve {self.name!r}: results[{key!r}] has {len(values)} values but "
                    f"results['bpp'] has {len(self.bpp)}"
                )
        self.metrics = {k: [float(v) for v in vals] for k, vals in self.metrics.items()}

    def quality(self, metric: str = "psnr") -> np.ndarray:
        """The quality values for ``metric`` ("psnr", "ms-ssim" or "ms-ssim-db"; the dB form is
        derived from "ms-ssim" when only that is stored)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if metric in self.metrics:
            return np.asarray(self.metrics[metric])
        if metric == "ms-ssim-db" and "ms-ssim" in self.metrics:
            return -10.0 * np.log10(1.0 - np.asarray(self.metrics["ms-ssim"]))
        raise ValueError(
            f"RD curve {self.name!r} has no {metric!r} values (has {sorted(self.metrics)})"
        )

    def has(self, metric: str) -> bool:
        return metric in self.metrics or (metric == "ms-ssim-db" and "ms-ssim" in self.metrics)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "results": {"bpp": self.bpp, **self.metrics, **self.extra},
        }


def _curve_from_dict(data: Mapping, source: str) -> RDCurve:
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), Mapping):
        raise ValueError(  # noqa: TRY004 (bad file content, not a programming error)
            f"{source}: expected an object with a 'results' object (CompressAI RD schema)"
        )
    results = dict(data["results"])
    if "bpp" not in results:
        raise ValueError(f"{source}: 'results' has no 'bpp' list (keys: {sorted(results)})")
    bpp = results.pop("bpp")
    metrics = {k: results.pop(k) for k in list(results) if k in METRICS}
    name = data.get("name") or Path(source).stem
    return RDCurve(
        name=str(name),
        bpp=bpp,
        metrics=metrics,
        description=str(data.get("description", "")),
        extra=results,
    )


def published_rd_dir() -> Path:
    """The published RD points shipped with the package (``lalic_core/assets/rd``): JPEG, BPG,
    VTM-9.1, ELIC, mbt2018-mean and LALIC on Kodak, CLIC Pro Valid and Tecnick, as collected in
    the project's shared data (sources in each file's ``description``)."""
    return Path(__file__).resolve().parent / "assets" / "rd"


def load_rd(path: str | Path) -> RDCurve:
    """Read one RD JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RD file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return _curve_from_dict(data, str(path))


def load_rd_dir(folder: str | Path, pattern: str = "*.json") -> dict[str, RDCurve]:
    """Read every RD JSON file in ``folder``, keyed by file stem (e.g. ``"kodak-lalic"``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"RD folder not found: {folder}")
    return {p.stem: load_rd(p) for p in sorted(folder.glob(pattern))}


def save_rd(curve: RDCurve, path: str | Path) -> Path:
    """Write ``curve`` in the same schema (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(curve.to_json(), indent=2) + "\n")
    return path


def merge_reports(reports: Iterable[Mapping], name: str, description: str = "") -> RDCurve:
    """One RD curve from several single-point reports of ``lalic eval`` (one per quality),
    sorted by bpp; each point keeps its model spec under ``extra["model"]``."""
    points = []
    for report in reports:
        curve = _curve_from_dict(report, str(report.get("name", "report")))
        if len(curve.bpp) != 1:
            raise ValueError(f"merge_reports: {curve.name!r} holds {len(curve.bpp)} points; "
                             "expected one (a `lalic eval` report)")
        spec = (report.get("model") or {}).get("spec", curve.name)
        points.append((curve.bpp[0], {k: v[0] for k, v in curve.metrics.items()},
                       {k: v[0] for k, v in curve.extra.items()}, spec))
    if not points:
        raise ValueError("merge_reports: no reports")
    points.sort(key=lambda p: p[0])
    keys = set.intersection(*(set(p[1]) for p in points))
    extra_keys = set.intersection(*(set(p[2]) for p in points))
    return RDCurve(
        name=name, bpp=[p[0] for p in points],
        metrics={k: [p[1][k] for p in points] for k in sorted(keys)},
        description=description,
        extra={**{k: [p[2][k] for p in points] for k in sorted(extra_keys)},
               "model": [p[3] for p in points]},
    )


def plot_rd(
    curves: Iterable[RDCurve] | Mapping[str, RDCurve],
    metric: str = "psnr",
    ax=None,
    title: str | None = None,
    max_bpp: float | None = None,
    styles: Mapping[str, Mapping] | None = None,
):
    """Plot rate-distortion curves (bpp on x, ``metric`` on y); returns the matplotlib Figure.

    ``styles`` maps a curve name to extra ``Axes.plot`` keyword arguments. Curves without the
    metric are skipped. ``max_bpp`` clips the x range (and drops points beyond it).
    """
    import matplotlib.pyplot as plt

    if isinstance(curves, Mapping):
        curves = curves.values()
    curves = [c for c in curves if c.has(metric)]
    if not curves:
        raise ValueError(f"none of the curves has {metric!r} values")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
    else:
        fig = ax.figure
    for curve in curves:
        bpp, quality = np.asarray(curve.bpp), curve.quality(metric)
        order = np.argsort(bpp)
        bpp, quality = bpp[order], quality[order]
        if max_bpp is not None:
            keep = bpp <= max_bpp
            bpp, quality = bpp[keep], quality[keep]
        kwargs = {"marker": "o", "markersize": 4, "linewidth": 1.5, "label": curve.name}
        kwargs.update((styles or {}).get(curve.name, {}))
        ax.plot(bpp, quality, **kwargs)
    ax.set_xlabel("Bit rate (bpp)")
    ax.set_ylabel(METRICS[metric])
    if max_bpp is not None:
        ax.set_xlim(0, max_bpp)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def bd_rate_table(
    anchor: RDCurve,
    tests: Iterable[RDCurve] | Mapping[str, RDCurve],
    metric: str = "psnr",
    method: str = "pchip",
) -> list[dict]:
    """BD-rate (%) and BD-quality of each test curve against ``anchor``.

    Returns one dict per test curve: ``{"name", "bd_rate", "bd_quality", "metric", "anchor"}``;
    a curve that cannot be compared (too few points, no overlap) gets ``nan`` and the reason in
    ``"error"``.
    """
    if isinstance(tests, Mapping):
        tests = tests.values()
    a_bpp, a_q = anchor.bpp, anchor.quality(metric)
    rows = []
    for test in tests:
        row = {"name": test.name, "anchor": anchor.name, "metric": metric}
        try:
            t_q = test.quality(metric)
            row["bd_rate"] = bd_rate(a_bpp, a_q, test.bpp, t_q, method=method)
            row["bd_quality"] = bd_psnr(a_bpp, a_q, test.bpp, t_q, method=method)
        except ValueError as err:
            row.update(bd_rate=math.nan, bd_quality=math.nan, error=str(err))
        rows.append(row)
    return rows


#: The paper's BD-rates against VTM-9.1 (PSNR) that the published points reproduce:
#: (dataset, model, anchor file stem, test file stem, paper BD-rate %), file stems as in
#: ``../shared/data/rd``; the values are Table 1's (:mod:`lalic_core.paper`).
PAPER_BD_RATES = tuple(
    (dataset, model, anchor, test, _paper.TABLE1[model][_paper.TABLE1_KEYS[dataset]])
    for dataset, model, anchor, test in (
        ("Kodak", "LALIC", "kodak-vtm91-compressai", "kodak-lalic"),
        ("CLIC Pro Valid", "LALIC", "clicproval-vtm91", "clicproval-lalic"),
        ("Tecnick", "LALIC", "tecnick-vtm91", "tecnick-lalic"),
        ("Kodak", "ELIC", "kodak-vtm91-compressai", "kodak-elic2022-paper"),
    )
)


def paper_bd_rates(rd_dir: str | Path, method: str = "pchip") -> list[dict]:
    """Recompute the paper's BD-rate table from the published RD points in ``rd_dir``.

    Returns one dict per row of :data:`PAPER_BD_RATES`: dataset, model, bd_rate (computed),
    paper (the published value) and difference."""
    rd_dir = Path(rd_dir)
    rows = []
    for dataset, model, anchor_stem, test_stem, paper in PAPER_BD_RATES:
        anchor, test = (load_rd(rd_dir / f"{stem}.json") for stem in (anchor_stem, test_stem))
        value = bd_rate(anchor.bpp, anchor.quality(), test.bpp, test.quality(), method=method)
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "bd_rate": value,
                "paper": paper,
                "difference": value - paper,
            }
        )
    return rows


def format_bd_table(rows: Sequence[Mapping], reference: Mapping[str, float] | None = None) -> str:
    """A Markdown table of :func:`bd_rate_table` rows; ``reference`` maps names to the paper's
    BD-rates, shown in an extra column."""
    header = "| model | BD-rate (%) | BD-quality (dB) |"
    rule = "| --- | ---: | ---: |"
    if reference is not None:
        header += " paper (%) |"
        rule += " ---: |"
    lines = [header, rule]
    for row in rows:
        line = f"| {row['name']} | {row['bd_rate']:.2f} | {row['bd_quality']:.3f} |"
        if reference is not None:
            ref = reference.get(row["name"])
            line += f" {ref:.2f} |" if ref is not None else " |"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Kodak: the published points and our zoo
# --------------------------------------------------------------------------------------------
#: Published Kodak curves of :func:`lalic_core.rd.published_rd_dir`: (file stem, label).
PUBLISHED_KODAK = (("kodak-lalic", "LALIC (paper)"), ("kodak-vtm91-compressai", "VTM-9.1"),
                   ("kodak-elic2022-paper", "ELIC (paper)"), ("kodak-bpg", "BPG"),
                   ("kodak-mbt2018-mean-compressai", "mbt2018-mean"), ("kodak-jpeg", "JPEG"))


def _published_kodak() -> list:
    curves = []
    for stem, label in PUBLISHED_KODAK:
        curve = load_rd(published_rd_dir() / f"{stem}.json")
        curve.name = label
        curves.append(curve)
    return curves


def plot_rd_kodak(ours: Mapping | None = None, max_bpp: float = 1.6):
    """The ``rd_kodak`` figure: PSNR against bpp on Kodak, the published points
    (:data:`PUBLISHED_KODAK`, dashed) with our curves ``ours`` (name -> RDCurve, e.g.
    :func:`lalic_core.figures.zoo_results`; single points drawn as stars) on the left, and a
    close-up of ours beside JPEG and BPG on the right. ``ours`` is not modified. Returns the
    Figure."""
    from matplotlib.figure import Figure

    if not (isinstance(max_bpp, (int, float)) and max_bpp > 0):
        raise ValueError(f"`max_bpp` must be a positive number, got {max_bpp!r}")
    curves = _published_kodak()
    # fixed colours, so a curve looks the same in both panels
    styles = {c.name: {"linestyle": "--", "alpha": 0.8, "color": f"C{i}"}
              for i, c in enumerate(curves)}
    ours = dict(ours or {})
    for i, (name, curve) in enumerate(ours.items(), start=len(curves)):
        curve = replace(curve, name=f"{name} (ours, CPU zoo)")
        single = len(curve.bpp) == 1
        styles[curve.name] = {"linewidth": 2.5, "color": f"C{i % 10}",
                              "marker": "*" if single else "s", "markersize": 13 if single else 7}
        curves.append(curve)
    fig = Figure((13, 5))
    axes = fig.subplots(1, 2)
    plot_rd(curves, ax=axes[0], max_bpp=max_bpp, styles=styles,
            title="Kodak: published points and our zoo")
    axes[0].set_ylim(24, 40)
    plot_rd([c for c in curves if "ours" in c.name or c.name in ("JPEG", "BPG")], ax=axes[1],
            styles=styles, max_bpp=max_bpp,
            title="Zoo close-up (controlled comparison: stars at q3)" if ours
            else "zoo not evaluated")
    if ours:
        top = max(max(c.bpp) for c in ours.values())
        axes[1].set_xlim(0, min(max_bpp, top * 1.6))
        axes[1].set_ylim(23, max(max(c.quality("psnr")) for c in ours.values()) + 3)
    fig.tight_layout()
    return fig


def zoo_bd_rows(ours: Mapping, anchors: Sequence[str] = ("kodak-jpeg", "kodak-vtm91-compressai"),
                metric: str = "psnr") -> list[dict]:
    """BD-rates (%) of our curves ``ours`` (name -> RDCurve) against published Kodak anchors
    (file stems of :func:`lalic_core.rd.published_rd_dir`), with :func:`lalic_core.metrics
    .bd_rate`. One dict per curve: "model", "points", "bpp", "psnr" (the points as text),
    "vs <anchor label>" per anchor (None where it cannot be computed) and "note" (why not:
    BD-rate needs at least 4 points per curve, and an overlapping quality range)."""
    labels = dict(PUBLISHED_KODAK)
    anchor_curves = []
    for stem in anchors:
        path = published_rd_dir() / f"{stem}.json"
        if not path.is_file():
            raise ValueError(f"`anchors`: no published curve {stem!r} in {published_rd_dir()}")
        anchor_curves.append((f"vs {labels.get(stem, stem)}", load_rd(path)))
    comparable = [replace(curve, name=name) for name, curve in ours.items()
                  if len(curve.bpp) >= 4]  # copies: the caller's names stay
    results = {key: {r["name"]: r for r in bd_rate_table(anchor, comparable, metric)}
               for key, anchor in anchor_curves}
    rows = []
    for name, curve in ours.items():
        row = {"model": name, "points": len(curve.bpp),
               "bpp": ", ".join(f"{b:.3f}" for b in curve.bpp),
               metric: ", ".join(f"{q:.2f}" for q in curve.quality(metric))}
        notes = []
        for key, _ in anchor_curves:
            result = results[key].get(name)
            row[key] = None if result is None or "error" in result else result["bd_rate"]
            if result is not None and "error" in result:
                notes.append(f"{key}: {result['error']}")
        if len(curve.bpp) < 4:
            notes.append(f"{len(curve.bpp)} point(s): BD-rate needs at least 4 per curve")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows



# --------------------------------------------------------------------------------------------
# The rd_kodak figure: budget-matched comparison with intervals, the zoo, published curves
# --------------------------------------------------------------------------------------------
#: Published curves by dataset: (label, file in ../shared/data/rd/<folder>/, packaged
#: fallback stem or None). Kodak, CLIC Professional Validation and Tecnick.
PUBLISHED_DATASETS = {
    "Kodak": ("kodak", (("LALIC", "lalic", "kodak-lalic"), ("TCM-large", "tcm-large", None),
                        ("FAT", "fat", None), ("MLIC++", "mlic++", None),
                        ("ELIC", "elic", "kodak-elic2022-paper"),
                        ("VTM-9.1", "vtm-9.1", "kodak-vtm91-compressai"),
                        ("BPG 4:4:4", "bpg-444", "kodak-bpg"), ("JPEG", "jpeg", "kodak-jpeg"))),
    "CLIC Pro Valid": ("clic-pro-val", (("LALIC", "lalic", "clicproval-lalic"),
                                        ("TCM-large", "tcm-large", None), ("FAT", "fat", None),
                                        ("MLIC++", "mlic++", None),
                                        ("VTM-9.1", "vtm-9.1", "clicproval-vtm91"))),
    "Tecnick": ("tecnick", (("LALIC", "lalic", "tecnick-lalic"),
                            ("TCM-large", "tcm-large", None), ("FAT", "fat", None),
                            ("MLIC++", "mlic++", None),
                            ("VTM-9.1", "vtm-9.1", "tecnick-vtm91"))),
}


def load_published(dataset: str, shared_rd: str | Path | None = None) -> dict[str, dict]:
    """Published curves of ``dataset`` (a key of :data:`PUBLISHED_DATASETS`): label ->
    {"bpp", "psnr", "source"}, sorted by bpp. Read from ``shared_rd`` (the project's
    ../shared/data/rd) when given and present, else from the packaged copies (fewer curves);
    methods with no published points on the dataset are absent."""
    folder, entries = PUBLISHED_DATASETS[dataset]
    out = {}
    for label, stem, packaged in entries:
        path = Path(shared_rd) / folder / f"{stem}.json" if shared_rd else None
        if path is None or not path.is_file():
            path = published_rd_dir() / f"{packaged}.json" if packaged else None
        if path is None or not path.is_file():
            continue
        curve = load_rd(path)
        if not curve.has("psnr"):
            continue
        order = np.argsort(curve.bpp)
        source = (f"../shared/data/rd/{folder}/{stem}.json" if shared_rd and
                  path.parent.name == folder else f"lalic_core/assets/rd/{path.name}")
        out[label] = {"bpp": [curve.bpp[i] for i in order],
                      "psnr": [float(curve.quality("psnr")[i]) for i in order],
                      "source": source}
    return out


def per_image_point(report: Mapping, lmbda: float | None = None, resamples: int = 2000,
                    seed: int = 0) -> dict:
    """One RD point with its per-image values and 95% bootstrap intervals over images, from
    a ``lalic eval`` report with per-image records (``results/kodak-<name>-q<q>.json``):
    {"n_images", "images", "bpp", "psnr" (means of the per-image values), "bpp_ci",
    "psnr_ci", "per_image": {"bpp": [...], "psnr": [...]}} and, with ``lmbda``, the
    training objective per image, ``rd_cost`` = lambda * 255^2 * MSE + bpp (MSE of [0, 1]
    RGB from each image's PSNR), with its interval."""
    from lalic_core.analysis.bootstrap import bootstrap_ci

    images = report.get("images") or []
    if not images:
        raise ValueError(f"{report.get('name', 'report')}: no per-image records ('images')")
    names = [r["image"] for r in images]
    bpp = np.array([r["bpp"] for r in images], dtype=np.float64)
    psnr = np.array([r["psnr"] for r in images], dtype=np.float64)
    out = {"n_images": len(images), "images": names,
           "bpp": float(bpp.mean()), "psnr": float(psnr.mean()),
           "bpp_ci": [float(v) for v in bootstrap_ci(bpp, resamples=resamples, seed=seed)],
           "psnr_ci": [float(v) for v in bootstrap_ci(psnr, resamples=resamples, seed=seed)],
           "per_image": {"bpp": bpp.tolist(), "psnr": psnr.tolist()}}
    if lmbda is not None:
        cost = lmbda * 255.0 ** 2 * 10.0 ** (-psnr / 10.0) + bpp
        out["rd_cost"] = float(cost.mean())
        out["rd_cost_ci"] = [float(v) for v in bootstrap_ci(cost, resamples=resamples,
                                                             seed=seed)]
        out["per_image"]["rd_cost"] = cost.tolist()
    return out


def paired_differences(a: Mapping, b: Mapping, keys=("bpp", "psnr", "rd_cost"),
                       resamples: int = 2000, seed: int = 0) -> dict:
    """Mean per-image differences a - b (same images, paired) with 95% bootstrap intervals,
    for two :func:`per_image_point` results."""
    from lalic_core.analysis.bootstrap import bootstrap_ci

    if list(a["images"]) != list(b["images"]):
        raise ValueError("paired differences need the same images in the same order")
    out = {}
    for key in keys:
        if key not in a["per_image"] or key not in b["per_image"]:
            continue
        d = np.asarray(a["per_image"][key]) - np.asarray(b["per_image"][key])
        out[key] = float(d.mean())
        out[key + "_ci"] = [float(v) for v in bootstrap_ci(d, resamples=resamples, seed=seed)]
    return out


def plot_rd_study(data: Mapping):
    """The ``rd_kodak`` figure from its JSON numbers: (a) the budget-matched models at q3
    with 95% intervals over images (bpp and PSNR), (b) the warm-started zoo curve beside
    the classic anchors on Kodak, (c-e) published curves on Kodak, CLIC Pro Valid and
    Tecnick. Returns the Figure."""
    import textwrap

    from matplotlib.figure import Figure

    fig = Figure((18, 10.5), layout="constrained")
    grid = fig.add_gridspec(2, 3)
    # (a) budget-matched
    ax = fig.add_subplot(grid[0, 0])
    matched = data.get("budget_matched", {}).get("models", {})
    order = data.get("budget_matched", {}).get("order") or list(matched)
    colour = {name: f"C{i}" for i, name in enumerate(order)}
    for name in order:
        p = matched[name]
        ax.errorbar([p["bpp"]], [p["psnr"]],
                    xerr=[[p["bpp"] - p["bpp_ci"][0]], [p["bpp_ci"][1] - p["bpp"]]],
                    yerr=[[p["psnr"] - p["psnr_ci"][0]], [p["psnr_ci"][1] - p["psnr"]]],
                    fmt="o", color=colour[name], capsize=4, markersize=7,
                    label=f"{p['label']}: {p['bpp']:.4f} bpp, {p['psnr']:.3f} dB")
    ax.set_xlabel("bpp (Kodak mean, whole .lalic file)")
    ax.set_ylabel("PSNR (dB, mean over images)")
    ax.set_title("(a) budget-matched at q3: same skeleton, entropy model, data,\n3,600 steps "
                 "from scratch; bars: 95% CI over the 24 images", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    # (a') paired differences and the training objective
    ax = fig.add_subplot(grid[1, 0])
    diffs = data.get("budget_matched", {}).get("paired_vs_reference", {})
    ref = data.get("budget_matched", {}).get("reference")
    names = [n for n in order if n in diffs]
    ticks, labels = [], []
    for j, (key, label) in enumerate((("rd_cost", "rd cost"), ("bpp", "bpp"),
                                      ("psnr", "PSNR dB"))):
        for i, name in enumerate(names):
            d = diffs[name]
            if key not in d:
                continue
            y = -(j * (len(names) + 1) + i)
            lo, hi = d[key + "_ci"]
            ax.errorbar([d[key]], [y], xerr=[[d[key] - lo], [hi - d[key]]], fmt="o",
                        color=colour[name], capsize=3)
            ax.text(hi, y, f"  {d[key]:+.4f} [{lo:+.4f}, {hi:+.4f}]", va="center", fontsize=7)
            ticks.append(y)
            labels.append(f"{label}: {matched[name]['label']}")
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel(f"paired per-image difference, model - {ref} (95% CI over images)")
    ax.set_title("(a') differences against Bi-RWKV on the same images; rd cost = the training "
                 "objective\nlambda 255^2 MSE + bpp at q3 (lambda = 0.0067): lower = better",
                 fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    # (b) zoo curves with anchors
    ax = fig.add_subplot(grid[0, 1])
    kodak = data.get("published", {}).get("Kodak", {})
    pub_colour = {label: f"C{i}" for i, label in enumerate(
        ("LALIC", "TCM-large", "FAT", "MLIC++", "ELIC", "VTM-9.1", "BPG 4:4:4", "JPEG"))}
    pub_colour["JPEG"] = "0.45"
    for label in ("JPEG", "BPG 4:4:4", "VTM-9.1"):
        if label in kodak:
            c = kodak[label]
            ax.plot(c["bpp"], c["psnr"], "--", color=pub_colour[label],
                    label=f"{label} (published)", marker=".")
    for i, (name, p) in enumerate(data.get("zoo_curves", {}).items()):
        ax.plot(p["bpp"], p["psnr"], "-s", color="k", markersize=5,
                label=f"{name}: {p['description']}")
        for b, q, lo, hi in zip(p["bpp"], p["psnr"], p.get("psnr_ci_low", []),
                                p.get("psnr_ci_high", [])):
            ax.plot([b, b], [lo, hi], color="k", linewidth=1)
    for name in order:
        p = matched[name]
        ax.plot([p["bpp"]], [p["psnr"]], "*", color=colour[name], markersize=11,
                label=f"{p['label']} (q3)")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(22, 36)
    ax.set_xlabel("bpp")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("(b) our CPU zoo on Kodak: lalic-tiny q1..q4 (warm-started, 9-11k steps;\n"
                 "not budget-matched) and the q3 trio (stars) beside classic anchors", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    for k, dataset in enumerate(("Kodak", "CLIC Pro Valid", "Tecnick")):
        ax = fig.add_subplot(grid[0, 2] if k == 0 else grid[1, k])
        curves = data.get("published", {}).get(dataset, {})
        for label, colour_ in pub_colour.items():
            if label not in curves:
                continue
            c = curves[label]
            ax.plot(c["bpp"], c["psnr"], "-o" if label == "LALIC" else "--.",
                    color=colour_, markersize=4,
                    linewidth=2 if label == "LALIC" else 1.2, label=label)
        ax.set_xlim(0, 1.25)
        ax.set_ylim(24 if dataset == "Kodak" else 27, 41)
        ax.set_xlabel("bpp")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"({'cde'[k]}) published points, {dataset}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    caption = data.get("caption", "")
    fig.suptitle("\n".join(textwrap.fill(part, 210) for part in caption.split("\n")),
                 fontsize=8.5, ha="left", x=0.01)
    return fig
