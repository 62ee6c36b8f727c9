"""lalic_core.rd: RD JSON files, RD plots, BD-rate tables."""

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from lalic_core.rd import (
    RDCurve,
    bd_rate_table,
    format_bd_table,
    load_rd,
    load_rd_dir,
    paper_bd_rates,
    plot_rd,
    save_rd,
)


def _curve(name="A", scale=1.0, shift=0.0, n=5):
    bpp = [0.1 * 2**i * scale for i in range(n)]
    return RDCurve(name, bpp, {"psnr": [28.0 + 2.5 * i + shift for i in range(n)]})


def test_round_trip(tmp_path):
    curve = RDCurve(
        "X",
        [0.1, 0.2],
        {"psnr": [30.0, 32.0], "ms-ssim": [0.9, 0.95]},
        description="d",
        extra={"encoding_time": [1.0, 2.0]},
    )
    path = save_rd(curve, tmp_path / "sub" / "x.json")
    back = load_rd(path)
    assert back == curve
    assert json.loads(path.read_text())["results"]["encoding_time"] == [1.0, 2.0]


def test_quality_derives_msssim_db():
    curve = RDCurve("X", [0.1, 0.2], {"ms-ssim": [0.9, 0.99]})
    assert curve.quality("ms-ssim-db").tolist() == pytest.approx([10.0, 20.0])
    with pytest.raises(ValueError, match="no 'psnr'"):
        curve.quality("psnr")
    with pytest.raises(ValueError, match="metric must be"):
        curve.quality("ssim")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rd(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"psnr": [1, 2]}}))
    with pytest.raises(ValueError, match="'bpp'"):
        load_rd(bad)
    bad.write_text(json.dumps({"results": {"bpp": [1, 2], "psnr": [1]}}))
    with pytest.raises(ValueError, match="has 1 values"):
        load_rd(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_rd(bad)


def test_bd_rate_table_synthetic():
    anchor = _curve("anchor")
    rows = bd_rate_table(anchor, [_curve("smaller", scale=0.9), _curve("tiny", n=3)])
    assert rows[0]["name"] == "smaller" and rows[0]["bd_rate"] == pytest.approx(-10.0)
    assert math.isnan(rows[1]["bd_rate"]) and "at least 4" in rows[1]["error"]
    table = format_bd_table(rows[:1], reference={"smaller": -10.0})
    assert "| smaller | -10.00 |" in table and table.count("\n") == 2


def test_shared_rd_files_and_paper_table(rd_dir):
    curves = load_rd_dir(rd_dir)
    assert {"kodak-lalic", "kodak-vtm91-compressai", "kodak-elic2022-paper"} <= set(curves)
    rows = bd_rate_table(
        curves["kodak-vtm91-compressai"], [curves["kodak-lalic"], curves["kodak-elic2022-paper"]]
    )
    assert [round(r["bd_rate"], 2) for r in rows] == [-15.26, -7.02]
    assert rows[0]["bd_quality"] > rows[1]["bd_quality"] > 0  # both beat VTM in BD-PSNR
    assert curves["kodak-lalic-msssim"].has("ms-ssim-db")


def test_plot_rd(rd_dir):
    curves = load_rd_dir(rd_dir, "kodak-*.json")
    fig = plot_rd(curves, metric="psnr", title="Kodak", max_bpp=1.0)
    ax = fig.axes[0]
    with_psnr = [c for c in curves.values() if c.has("psnr")]
    assert len(ax.lines) == len(with_psnr)
    assert ax.get_xlim() == (0.0, 1.0)
    assert all(max(line.get_xdata()) <= 1.0 for line in ax.lines)
    plt.close(fig)
    with pytest.raises(ValueError, match="none of the curves"):
        plot_rd([RDCurve("x", [0.1], {"psnr": [30.0]})], metric="ms-ssim")


def test_paper_bd_rates(rd_dir):
    rows = paper_bd_rates(rd_dir)
    assert [(r["dataset"], r["model"]) for r in rows] == [
        ("Kodak", "LALIC"),
        ("CLIC Pro Valid", "LALIC"),
        ("Tecnick", "LALIC"),
        ("Kodak", "ELIC"),
    ]
    for row in rows:
        assert round(row["bd_rate"], 2) == row["paper"]
        assert abs(row["difference"]) < 0.005


def test_packaged_published_points_reproduce_the_paper_without_shared_data():
    from lalic_core.rd import paper_bd_rates, published_rd_dir

    rows = paper_bd_rates(published_rd_dir())
    assert len(rows) == 4
    for row in rows:
        assert abs(row["difference"]) < 0.01, row


def test_merge_reports_sorts_points_and_keeps_models():
    from lalic_core.rd import merge_reports

    def report(q, bpp, psnr):
        return {"name": f"m:{q}", "model": {"spec": f"m:{q}"},
                "results": {"bpp": [bpp], "psnr": [psnr], "encoding_time": [0.1]}}

    curve = merge_reports([report(3, 0.5, 30.0), report(1, 0.2, 27.0)], "m")
    assert curve.bpp == [0.2, 0.5]
    assert list(curve.quality("psnr")) == [27.0, 30.0]
    assert curve.extra["model"] == ["m:1", "m:3"]
    with pytest.raises(ValueError, match="no reports"):
        merge_reports([], "m")


# ------------------------------------------------------------------ per-image points (issue 15)
def _report(bpps, psnrs):
    return {"name": "x", "images": [{"image": f"kodim{i + 1:02d}.png", "bpp": b, "psnr": p}
                                    for i, (b, p) in enumerate(zip(bpps, psnrs))]}


def test_per_image_point_and_paired_differences():
    from lalic_core.rd import paired_differences, per_image_point

    a = per_image_point(_report([0.2, 0.3, 0.4, 0.5], [30, 29, 28, 27]), lmbda=0.0067,
                        resamples=300)
    assert a["n_images"] == 4 and a["bpp"] == pytest.approx(0.35)
    assert a["bpp_ci"][0] <= 0.35 <= a["bpp_ci"][1]
    assert 0.2 <= a["bpp_ci"][0] and a["bpp_ci"][1] <= 0.5
    mse = [10 ** (-p / 10) for p in (30, 29, 28, 27)]
    assert a["rd_cost"] == pytest.approx(sum(0.0067 * 255 ** 2 * m + b for m, b in
                                             zip(mse, (0.2, 0.3, 0.4, 0.5))) / 4)
    b = per_image_point(_report([0.1, 0.2, 0.3, 0.4], [30, 29, 28, 27]), lmbda=0.0067,
                        resamples=300)
    d = paired_differences(a, b, resamples=300)
    assert d["bpp"] == pytest.approx(0.1) and d["bpp_ci"] == pytest.approx([0.1, 0.1])
    assert d["psnr"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        per_image_point({"name": "x"})


def test_load_published_falls_back_to_packaged(tmp_path):
    from lalic_core.rd import load_published

    packaged = load_published("Kodak", None)
    assert {"LALIC", "VTM-9.1", "JPEG"} <= set(packaged)
    assert all(c["bpp"] == sorted(c["bpp"]) for c in packaged.values())
    assert "TCM-large" not in packaged  # only in ../shared/data/rd
    assert set(load_published("Tecnick", tmp_path)) == {"LALIC", "VTM-9.1"}
