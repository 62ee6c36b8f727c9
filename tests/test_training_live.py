"""lalic_core.training.live (LivePlot, roundtrip) and training.data.training_folder."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lalic_core.data import demo_image_path, load_image
from lalic_core.training.data import TRAIN_DIR_ENV, find_images, training_folder
from lalic_core.training.live import LivePlot, plot_roundtrips, roundtrip


def test_liveplot_records_and_redraws_when_due(monkeypatch):
    live = LivePlot(total_steps=5, min_interval_s=3600, smooth=2, show=False)
    for step in range(1, 6):
        live(step, {"loss": 10.0 / step, "bpp": 1.0, "psnr": 20 + step, "mse": 0.1})
    assert live.history["step"] == [1, 2, 3, 4, 5]
    assert live.history["psnr"] == [21, 22, 23, 24, 25]
    assert live.redraws == 2  # the first step (never drawn before) and the last one
    raw, mean = live._lines["psnr"]
    np.testing.assert_allclose(raw.get_ydata(), [21, 22, 23, 24, 25])
    np.testing.assert_allclose(mean.get_ydata(), [21, 21.5, 22.5, 23.5, 24.5])
    assert live.finish() is live.figure and live.redraws == 3


def test_liveplot_updates_one_display_in_place(monkeypatch):
    import IPython.display

    calls = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj))

    def fake_display(obj, display_id=False):
        calls.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = LivePlot(keys=("loss",), min_interval_s=0, show=True)
    for step in range(1, 4):
        live(step, {"loss": 1.0})
    assert [c[0] for c in calls] == ["display", "update", "update"]
    assert calls[0][1].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_liveplot_needs_keys():
    with pytest.raises(ValueError, match="keys"):
        LivePlot(keys=(), show=False)


def test_training_folder_fallback_holds_out_the_test_image(tmp_path, monkeypatch):
    monkeypatch.delenv(TRAIN_DIR_ENV, raising=False)
    folder = training_folder(dest=tmp_path / "train")
    names = [p.name for p in find_images(folder)]
    assert names == ["kodim15_half.png"]
    assert training_folder(tmp_path / "train") == tmp_path / "train"  # an explicit folder
    monkeypatch.setenv(TRAIN_DIR_ENV, str(folder))
    assert training_folder() == folder
    with pytest.raises(ValueError, match="leaves none"):
        monkeypatch.delenv(TRAIN_DIR_ENV)
        training_folder(hold_out=("kodim15", "kodim23"))
    with pytest.raises(FileNotFoundError):
        training_folder(tmp_path / "missing")


def test_roundtrip_with_a_zoo_model():
    from lalic_core import zoo

    assert ("lalic-tiny", 3) in zoo.available(), "the shipped zoo entry lalic-tiny:3 is missing"
    model = zoo.load("lalic-tiny", 3)
    image = load_image(demo_image_path("kodim23"))[..., :64, :128]
    r = roundtrip(image, model, "tiny")
    assert r.x_hat.shape == image.shape
    assert r.bpp == pytest.approx(8 * len(r.data) / (64 * 128))
    assert 15 < r.psnr < 60
    assert torch.equal(r.x_hat, torch.round(r.x_hat * 255) / 255)  # 8-bit values
    assert "bpp" in str(r)
    fig = plot_roundtrips(image, [r], crop=32)
    assert fig.axes[0].get_images()[0].get_array().shape[:2] == (32, 32)
    plt.close("all")
