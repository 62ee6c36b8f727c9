"""lalic_core.figures: the JSON numbers behind the figures (issue 15), on tiny inputs."""
import json

import pytest
import torch

from lalic_core import figures


def test_write_json_is_byte_reproducible(tmp_path):
    import numpy as np

    data = {"b": [1 / 3, float("nan"), np.float32(2.5)], "a": {"z": np.arange(3), "y": (1, 2)}}
    p1 = figures.write_json(tmp_path / "one.json", data)
    p2 = figures.write_json(tmp_path / "two.json", dict(reversed(list(data.items()))))
    assert p1.read_bytes() == p2.read_bytes()
    back = json.loads(p1.read_text())
    assert back["b"] == [0.333333, None, 2.5] and back["a"] == {"y": [1, 2], "z": [0, 1, 2]}
    assert list(back) == ["a", "b"]


def _fake_kodak(monkeypatch, n=2, size=(64, 96)):
    def images(rotate_portrait=True, names=None):
        out = []
        for i, name in enumerate(names or [f"kodim{j:02d}" for j in range(1, n + 1)]):
            x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i))
            out.append((name, x, False))
        return out

    for module in (figures.erf, figures.correlation):  # each looks the names up in its own
        monkeypatch.setattr(module, "kodak_images", images)
    monkeypatch.setattr(figures.erf, "FAST_IMAGES", n)
    monkeypatch.setattr(figures.correlation, "FAST_IMAGES", n)
    monkeypatch.setattr(figures.erf, "GLOBAL_CROP", {"fast": 32, "full": 32})
    for module in (figures.erf, figures.correlation):
        if hasattr(module, "RESAMPLES"):
            monkeypatch.setattr(module, "RESAMPLES", {"fast": 50, "full": 50})


def test_erf_comparison_json_schema(monkeypatch, tmp_path):
    _fake_kodak(monkeypatch)
    monkeypatch.setattr(figures.erf, "ERF_KINDS", ("birwkv", "cnn", "fat"))
    data = figures.erf.erf_comparison_data("fast", log=lambda *_: None)
    path = figures.write_json(tmp_path / "erf.json", data)
    data = json.loads(path.read_text())
    assert set(data["trained"]) == {"birwkv", "cnn"}  # no trained FAT-style transform
    assert "fat" in data["missing"] and "train_zoo.py" in data["missing"]["fat"]
    assert set(data["random"]) == {"birwkv", "cnn", "fat"}
    for section in ("trained", "random"):
        for row in data[section].values():
            assert row["image_size"] == [64, 96] and row["n_images"] == 2
            assert set(row["area_ratio"]) == {"0.2", "0.3", "0.5", "0.99"}
            for t, (lo, hi) in row["area_ratio_ci"].items():
                assert lo <= row["area_ratio"][t] + 1e-9 <= hi + 2e-9
    assert set(data["trained"]["birwkv"]["biwkv_floor"])
    # rows with the same inputs are reused, not measured again
    calls = []
    monkeypatch.setattr(figures.erf, "_erf_row", lambda *a, **k: calls.append(a) or {})
    figures.erf.erf_comparison_data("fast", previous=data, log=lambda *_: None)
    assert calls == []
    fig = figures.erf._plot_erf_figure(data)
    assert fig.axes


def test_latent_correlation_json_schema(monkeypatch, tmp_path):
    _fake_kodak(monkeypatch, size=(64, 64))
    monkeypatch.setattr(figures.correlation, "CORR_MODELS", (("cnn-tiny", "CNN"), ("nope-tiny", "none")))
    data = figures.correlation.latent_correlation_data("fast", log=lambda *_: None)
    data = json.loads(figures.write_json(tmp_path / "c.json", data).read_text())
    entry = data["models"]["cnn-tiny"]
    assert entry["n_images"] == 2 and "nope-tiny" in data["missing"]
    for field in ("residual", "raw_y"):
        s = entry[field]
        assert len(s["mean_map"]) == 5 and len(s["per_image_mean_abs_offcentre"]) == 2
        assert "anisotropy_content_ci" in s and "anisotropy_model_fixed" in s
    assert figures.correlation._plot_correlation_figure(data).axes


def test_rd_kodak_json_schema(tmp_path):
    report = {"name": "x", "weights_sha256": None,
              "images": [{"image": f"kodim{i:02d}.png", "bpp": 0.1 * i, "psnr": 30 - i}
                         for i in range(1, 5)]}
    for name in ("lalic-tiny-scratch", "tcm-tiny"):
        (tmp_path / f"kodak-{name}-q3.json").write_text(json.dumps(report))
    data = figures.rd.rd_kodak_data(tmp_path)
    data = json.loads(figures.write_json(tmp_path / "rd.json", data).read_text())
    bm = data["budget_matched"]
    assert set(bm["models"]) == {"lalic-tiny-scratch", "tcm-tiny"}
    assert bm["models"]["tcm-tiny"]["n_images"] == 4 and "cnn-tiny" in bm["missing"]
    assert bm["paired_vs_reference"]["tcm-tiny"]["bpp"] == pytest.approx(0.0)
    assert "Kodak" in data["published"] and "LALIC" in data["published"]["Tecnick"]
    from lalic_core.rd import plot_rd_study

    assert plot_rd_study(data).axes
