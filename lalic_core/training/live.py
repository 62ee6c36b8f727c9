"""Notebook views of training: live curves while a run trains, and the trained model on a
real image.

    live = LivePlot(total_steps=config.steps)
    result = train(config, on_step=live)       # the figure redraws in place as steps finish
    live.finish()

    r = roundtrip(image, model, "my model")    # .lalic bytes, reconstruction, bpp, PSNR
    plot_roundtrips(image, [r])

:class:`LivePlot` is an ``on_step`` callback for :func:`lalic_core.train.train`. Inside
IPython/Jupyter it shows its figure once through a display handle and replaces it in place
(``update_display_data``), which works in JupyterLab, in VS Code and under nbclient alike; it
redraws at most every ``min_interval_s`` seconds so that drawing does not slow training. Outside
IPython it only records the history (``live.history``; ``live.figure`` is drawn on demand).
"""
from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LivePlot", "Roundtrip", "plot_roundtrips", "roundtrip"]

_LABELS = {"loss": "loss (λ·255²·MSE + bpp)", "bpp": "bpp (estimated)", "psnr": "PSNR (dB)",
           "mse": "MSE", "aux_loss": "auxiliary loss", "lr": "learning rate"}


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


class LivePlot:
    """Training curves that redraw while :func:`lalic_core.train.train` runs.

    Args:
        keys: metrics of ``on_step`` to plot, one panel each (``loss``, ``bpp``, ``psnr``,
            ``mse``, ``aux_loss``, ``lr``).
        total_steps: x-axis range (and the step that always triggers a redraw).
        min_interval_s: least time between two redraws.
        smooth: window of the running mean drawn over the raw per-step values.
        show: display in the notebook; None = when running inside IPython.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "bpp", "psnr"), *,
                 total_steps: int | None = None, min_interval_s: float = 2.0, smooth: int = 10,
                 show: bool | None = None):
        from matplotlib.figure import Figure

        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("LivePlot: give at least one metric in `keys`")
        self.total_steps = total_steps
        self.min_interval_s = float(min_interval_s)
        self.smooth = max(1, int(smooth))
        self.show = _in_ipython() if show is None else bool(show)
        self.history: dict[str, list[float]] = {"step": [], **{k: [] for k in self.keys}}
        self.redraws = 0
        # a Figure outside pyplot: shown only through the display handle, never twice
        self.figure = Figure(figsize=(3.6 * len(self.keys), 3.0), layout="constrained")
        self.axes = self.figure.subplots(1, len(self.keys), squeeze=False)[0]
        self._lines = {}
        for ax, key in zip(self.axes, self.keys):
            raw, = ax.plot([], [], color="C0", alpha=0.3, lw=0.8, label="per step")
            mean, = ax.plot([], [], color="C0", lw=1.8, label=f"mean of {self.smooth}")
            self._lines[key] = (raw, mean)
            ax.set_title(_LABELS.get(key, key), fontsize=10)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
        if "loss" in self.keys:
            self.axes[self.keys.index("loss")].set_yscale("log")
        self.axes[0].legend(fontsize=8)
        self._handle = None
        self._last_draw = -float("inf")

    def __call__(self, step: int, metrics: dict) -> None:
        """The ``on_step(step, metrics)`` callback: record, and redraw when due."""
        self.history["step"].append(int(step))
        for key in self.keys:
            self.history[key].append(float(metrics.get(key, np.nan)))
        final = self.total_steps is not None and step >= self.total_steps
        if final or time.perf_counter() - self._last_draw >= self.min_interval_s:
            self.redraw()

    def _running_mean(self, values: np.ndarray) -> np.ndarray:
        """Mean of the last ``smooth`` values at each step (fewer at the start)."""
        csum = np.concatenate([[0.0], np.cumsum(values)])
        end = np.arange(1, len(values) + 1)
        start = np.maximum(end - self.smooth, 0)
        return (csum[end] - csum[start]) / (end - start)

    def redraw(self) -> None:
        """Update the curves and, when showing, the notebook output."""
        steps = np.asarray(self.history["step"], dtype=float)
        for ax, key in zip(self.axes, self.keys):
            values = np.asarray(self.history[key], dtype=float)
            raw, mean = self._lines[key]
            raw.set_data(steps, values)
            mean.set_data(steps, self._running_mean(values) if len(values) else values)
            ax.relim()
            ax.autoscale_view()
            if self.total_steps:
                ax.set_xlim(0, self.total_steps)
        self.redraws += 1
        self._last_draw = time.perf_counter()
        if self.show:
            self._display()

    def _display(self) -> None:
        from IPython.display import Image, display

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        image = Image(data=buffer.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def finish(self):
        """Final redraw (whatever the interval); returns the figure."""
        self.redraw()
        return self.figure


# --------------------------------------------------------------------------------------------
# The trained model on a real image
# --------------------------------------------------------------------------------------------
@dataclass
class Roundtrip:
    """One image through a codec: the ``.lalic`` file's bytes, the decoded image, rates."""

    label: str
    data: bytes
    x_hat: torch.Tensor
    bpp: float
    psnr: float

    def __str__(self) -> str:
        return (f"{self.label}: {len(self.data)} bytes, {self.bpp:.3f} bpp, "
                f"PSNR {self.psnr:.2f} dB")


def roundtrip(image: torch.Tensor, model, label: str = "model") -> Roundtrip:
    """Compress ``image`` ((1, 3, H, W) in [0, 1]) to ``.lalic`` bytes with
    :func:`lalic_core.codec.encode_image` and decode them with
    :func:`~lalic_core.codec.decode_image`: real entropy coding, so ``bpp`` counts every byte
    of the file (header included) over the H * W pixels; PSNR of the 8-bit rounded
    reconstruction. ``model``: a :class:`~lalic_core.codec.CodecModel` (e.g. from
    :func:`~lalic_core.codec.resolve_model`) or a CompressAI-style model in eval mode with
    ``update()`` done."""
    from lalic_core import codec
    from lalic_core.metrics import psnr

    codec_model = codec.as_codec_model(model, name=label)
    data = codec.encode_image(image, codec_model)
    x_hat = codec.decode_image(data, codec_model)
    x_hat = codec.to_uint8(x_hat).permute(2, 0, 1)[None].float().div(255)  # 8-bit, as saved
    H, W = image.shape[-2:]
    return Roundtrip(label=label, data=data, x_hat=x_hat, bpp=8 * len(data) / (H * W),
                     psnr=psnr(image, x_hat))


def plot_roundtrips(image: torch.Tensor, results: Sequence[Roundtrip], crop: int | None = None):
    """The original next to each decoded image, bpp and PSNR in the titles; ``crop``: show
    only the centre ``crop`` x ``crop`` pixels (details are easier to compare)."""
    import matplotlib.pyplot as plt

    def view(x):
        x = x[0].permute(1, 2, 0).clamp(0, 1).numpy()
        if crop is not None:
            H, W = x.shape[:2]
            top, left = max(0, (H - crop) // 2), max(0, (W - crop) // 2)
            x = x[top:top + crop, left:left + crop]
        return x

    panels = [("original", view(image))]
    panels += [(f"{r.label}\n{r.bpp:.3f} bpp, {r.psnr:.2f} dB", view(r.x_hat)) for r in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, x) in zip(axes[0], panels):
        ax.imshow(x)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
