"""The RWKV-SCCTX decoding order, step by step (LALIC paper).

The entropy model splits y (M channels) into channel groups (paper: 16, 16, 32, 64, 192) and
decodes each group in two checkerboard passes: the anchors, from the hyperprior and the
channel context of the groups before it, then the non-anchors, with the decoded anchors as
spatial context. :func:`decode_steps` runs the model's own decoder one pass at a time over a
real bitstream and yields a :class:`DecodeStep` after each pass (2 x groups steps, 10 for the
paper model), so a notebook can show what the decoder knows at every moment.

Partial reconstructions: positions not decoded yet are set to their *predicted means*, the
means the model would use given everything decoded so far -- for the current group's
non-anchors, the means of the next pass exactly; for later groups, the model's own
prediction run forward with means in place of decoded values (anchors from the hyperprior
and channel context, then non-anchors from those predicted anchors). The last step has
everything decoded, and its ``x_hat`` equals ``model.decompress(strings, shape)["x_hat"]``
exactly (tested).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from torch import Tensor

__all__ = ["DecodeStep", "decode_steps", "plot_decode_grid", "plot_decode_step", "scctx_decode"]


@dataclass
class DecodeStep:
    """What the decoder knows after one checkerboard pass of one channel group.

    Shapes: N images, M channels of y, (h, w) the latent size, g the group's channels.

    - ``index``: 0 .. 2 * groups - 1; ``group`` and ``phase`` ("anchor" / "non-anchor").
    - ``channels``: the group's channel slice of y.
    - ``mask``: (M, h, w) bool, every position of y decoded after this step (cumulative);
      ``step_mask``: (M, h, w) bool, the positions this pass decoded.
    - ``bits``: bits this pass consumed (the real string lengths, summed over the batch);
      ``cumulative_bits``: z's bits plus all passes so far; ``z_bits``: the side information.
    - ``means``, ``scales``: (N, g, h, w) the Gaussian parameters this pass used, at this
      pass's positions (zero elsewhere).
    - ``y_hat``: (N, M, h, w) decoded values where ``mask``, predicted means elsewhere.
    - ``x_hat``: (N, 3, H, W) ``g_s(y_hat)`` clamped to [0, 1], the progressive
      reconstruction.
    """

    index: int
    group: int
    phase: str
    channels: slice
    mask: Tensor
    step_mask: Tensor
    bits: int
    cumulative_bits: int
    z_bits: int
    means: Tensor
    scales: Tensor
    y_hat: Tensor
    x_hat: Tensor

    @property
    def label(self) -> str:
        return f"group {self.group} {self.phase}s"


def _string_bits(strings: list) -> int:
    return 8 * sum(len(s) for s in strings)


def _pass_gaussian(cb, side_params_: Tensor, y_hat_: Tensor, i: int) -> tuple[Tensor, Tensor]:
    """(scales, means) of checkerboard pass i of one group, computed as its decoder does."""
    params_i = cb.entropy_parameters(cb.merge(cb._context(y_hat_, i), side_params_[i]))
    glc = cb.latent_codec["y"]
    scales, means = glc._chunk(glc.entropy_parameters(params_i))
    return scales, means


def _predict_group(cb, ctx_params: Tensor, y_group: Tensor, known: Tensor) -> Tensor:
    """Predicted means of one group (N, g, h, w): positions in ``known`` (a mask of the
    same shape) keep ``y_group``; the others get the model's means from what is known, with
    predicted anchors standing in as context for the non-anchors."""
    side_params_ = cb.unembed(ctx_params)
    y_ = cb.unembed(y_group)
    known_ = cb.unembed(known.to(y_group.dtype)).bool()
    for i in range(2):
        if bool(known_[i].all()):
            continue
        _, means = _pass_gaussian(cb, side_params_, y_, i)
        y_[i] = torch.where(known_[i], y_[i], means)
    return cb.embed(y_)


def decode_steps(model, strings: list, shape) -> Iterator[DecodeStep]:
    """Decode ``strings`` (``model.compress(x)["strings"]``: two per channel group, then z)
    one SCCTX pass at a time, yielding a :class:`DecodeStep` after each.

    ``shape`` is ``compress()["shape"]`` or the (h, w) of z. The model must be a LALIC
    model (any preset) after ``update()``. Runs under ``torch.inference_mode``.
    """
    groups = list(getattr(model, "groups", []))
    if not groups or not hasattr(model, "latent_codec"):
        raise ValueError("decode_steps: `model` must be a LALIC model (with channel groups and "
                         "an SCCTX latent codec)")
    n_strings = 2 * len(groups) + 1
    if not isinstance(strings, (list, tuple)) or len(strings) != n_strings:
        got = len(strings) if isinstance(strings, (list, tuple)) else type(strings).__name__
        raise ValueError(f"decode_steps: `strings` must be a list of {n_strings} lists of "
                         f"bytes (2 per channel group, then z), got {got}")
    model._check_updated("decode_steps")
    shape = model.latent_shape(shape)
    hyper = model.latent_codec.latent_codec["hyper"]
    lc_y = model.latent_codec.latent_codec["y"]
    z_bits = _string_bits(strings[-1])

    with torch.inference_mode():
        side_params = hyper.decompress([strings[-1]], shape["hyper"])["params"]
        n = len(strings[0])
        m = sum(groups)
        h, w = shape["y"][0][1:]
        # The same buffers as ChannelGroupsLatentCodec.decompress, so the final y_hat is
        # bit-identical to the decoder's.
        y_hat = torch.zeros((n, m, h, w), device=side_params.device)
        y_hat_ = y_hat.split(groups, dim=1)
        decoded = torch.zeros((m, h, w), dtype=torch.bool, device=side_params.device)
        bounds = [0]
        for g in groups:
            bounds.append(bounds[-1] + g)
        cumulative = z_bits
        for k, g in enumerate(groups):
            cb = lc_y.latent_codec[f"y{k}"]
            ctx_params = lc_y._get_ctx_params(k, side_params, y_hat_)
            side_params_ = cb.unembed(ctx_params)
            group_ = side_params.new_zeros((2, n, g, h, w // 2))
            glc = cb.latent_codec["y"]
            for i in range(2):
                scales, means = _pass_gaussian(cb, side_params_, group_, i)
                indexes = glc.gaussian_conditional.build_indexes(scales)
                group_[i] = glc.gaussian_conditional.decompress(strings[2 * k + i], indexes,
                                                               means=means)
                y_hat_[k][:] = cb.embed(group_)

                pass_ = torch.zeros_like(group_[:, :1, :1])
                pass_[i] = 1
                step_mask = torch.zeros_like(decoded)
                step_mask[bounds[k]:bounds[k + 1]] = cb.embed(pass_)[0].bool()
                decoded |= step_mask
                bits = _string_bits(strings[2 * k + i])
                cumulative += bits


                y_partial = _predicted_latent(lc_y, groups, bounds, side_params, y_hat,
                                              decoded)
                yield DecodeStep(
                    index=2 * k + i, group=k, phase=("anchor", "non-anchor")[i],
                    channels=slice(bounds[k], bounds[k + 1]), mask=decoded.clone(),
                    step_mask=step_mask, bits=bits, cumulative_bits=cumulative, z_bits=z_bits,
                    means=_at_pass(cb, group_, i, means), scales=_at_pass(cb, group_, i, scales),
                    y_hat=y_partial,
                    x_hat=model.g_s(y_partial).clamp_(0, 1),
                )


def _at_pass(cb, group_: Tensor, i: int, t: Tensor) -> Tensor:
    """Pass i's (N, g, h, w/2) values placed at their positions of the (N, g, h, w) group."""
    full = torch.zeros_like(group_)
    full[i] = t
    return cb.embed(full)


def _predicted_latent(lc_y, groups, bounds, side_params, y_hat, decoded) -> Tensor:
    """y_hat with every undecoded position replaced by its predicted mean."""
    if bool(decoded.all()):
        return y_hat.clone()
    y_pred = y_hat.clone()
    y_pred_ = y_pred.split(groups, dim=1)
    for k in range(len(groups)):
        known = decoded[bounds[k]:bounds[k + 1]].expand_as(y_pred_[k])
        if bool(known.all()):
            continue
        cb = lc_y.latent_codec[f"y{k}"]
        ctx_params = lc_y._get_ctx_params(k, side_params, y_pred_)
        y_pred_[k][:] = _predict_group(cb, ctx_params, y_pred_[k].clone(), known)
    return y_pred


def plot_decode_step(steps: list[DecodeStep], index: int, *, image: int = 0, fig=None):
    """One figure for step ``index``: which (group, pass) steps are done, the positions of the
    current group decoded so far, the scales this pass used (mean over the group's channels),
    the bits per step as a cumulative bar, and the progressive reconstruction."""
    import matplotlib.pyplot as plt
    import numpy as np

    if not steps:
        raise ValueError("plot_decode_step: no steps (run decode_steps first)")
    if not 0 <= index < len(steps):
        raise ValueError(f"plot_decode_step: `index` must be in 0..{len(steps) - 1}, got {index}")
    s = steps[index]
    if fig is None:
        fig = plt.figure(figsize=(14, 3.6))
    fig.clear()
    axes = fig.subplots(1, 5, gridspec_kw={"width_ratios": [0.7, 1, 1, 0.6, 1.5]})

    ax = axes[0]  # progress: rows = channel groups, columns = anchor / non-anchor pass
    n_groups = len(steps) // 2
    state = np.array([[2.0 if 2 * k + i < index else 1.0 if 2 * k + i == index else 0.0
                       for i in range(2)] for k in range(n_groups)])
    ax.imshow(state, cmap="Blues", vmin=-0.3, vmax=2.3, aspect="auto")
    widths = [steps[2 * k].channels.stop - steps[2 * k].channels.start for k in range(n_groups)]
    ax.set_xticks([0, 1], ["anchor", "non-\nanchor"], fontsize=8)
    ax.set_yticks(range(n_groups), [f"g{k} ({c} ch)" for k, c in enumerate(widths)], fontsize=8)
    ax.set_title(f"step {index + 1}/{len(steps)}", fontsize=9)

    ax = axes[1]
    # Dark = decoded, as in the progress panel (after the non-anchor pass: all dark).
    ax.imshow(s.mask[s.channels].float().mean(0).cpu(), vmin=-0.15, vmax=1, cmap="Blues")
    ax.set_title(f"group {s.group}: decoded positions (dark)", fontsize=9)

    ax = axes[2]
    sm = s.step_mask[s.channels]
    scales = s.scales[image].sum(0) / sm.sum(0).clamp(min=1)
    shown = torch.where(sm.any(0), scales, torch.full_like(scales, float("nan")))
    im = ax.imshow(shown.cpu(), cmap="magma")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"scales used ({s.phase}s)", fontsize=9)

    ax = axes[3]
    bottom = steps[0].z_bits / 1e3
    ax.bar(0, bottom, color="0.55")
    for j, t in enumerate(steps):
        color = "C1" if j == index else "C0" if j < index else "0.88"
        ax.bar(0, t.bits / 1e3, bottom=bottom, color=color, edgecolor="white", linewidth=0.5)
        bottom += t.bits / 1e3
    ax.set_xlim(-0.8, 0.8)
    ax.set_xticks([])
    ax.set_ylabel("kbit (grey: z)")
    ax.set_title(f"{s.cumulative_bits / 1e3:.1f} / {bottom:.1f} kbit", fontsize=9)

    ax = axes[4]
    ax.imshow(s.x_hat[image].permute(1, 2, 0).cpu().numpy())
    ax.set_title("reconstruction (undecoded = predicted means)", fontsize=9)
    for a in (axes[1], axes[2], axes[4]):
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# A whole decode: compress an image, then every step in one grid
# --------------------------------------------------------------------------------------------
def scctx_decode(model: torch.nn.Module, image: Tensor) -> tuple[list, dict]:
    """Compress ``image`` ((1, 3, H, W) or (3, H, W) in [0, 1], padded centred to multiples of
    64 here) with ``model`` (after ``update()``) and decode it step by step: returns
    (:class:`DecodeStep` list, the ``compress()`` output)."""

    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"`image` must be (1, 3, H, W) or (3, H, W), got {tuple(image.shape)}")
    multiple = getattr(model, "downsampling_factor", 64)
    pad, _ = compute_padding(*image.shape[-2:], min_div=multiple)  # centred, extra bottom/right
    x = F.pad(image.to(torch.float32), pad, mode="constant", value=0.0)
    with torch.inference_mode():
        out = model.compress(x)
    return list(decode_steps(model, out["strings"], out["shape"])), out


def plot_decode_grid(steps: Sequence, image: int = 0):
    """Every SCCTX step in one grid, a column per step: which positions of y are decoded so
    far (share of the channels; the text gives the share of all of y), the scales the step
    used (mean over the group's channels, log colours; grey: positions this pass did not
    code), and the progressive reconstruction. Returns the Figure."""
    import matplotlib
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    if not steps:
        raise ValueError("plot_decode_grid: no steps")
    n = len(steps)
    h, w = steps[0].x_hat.shape[-2:]
    fig = Figure((1.9 * n + 1.2, 1.9 * 3 * h / w + 1.0), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    used = torch.cat([s.scales[image][s.step_mask[s.channels]] for s in steps])
    norm = LogNorm(vmin=max(float(used.min()), 1e-2), vmax=float(used.max()))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.85")
    for j, s in enumerate(steps):
        frac = s.mask.float().mean(0).cpu().numpy()
        axes[0, j].imshow(frac, vmin=0, vmax=1, cmap="Blues")
        axes[0, j].text(0.5, 0.5, f"{s.mask.float().mean():.0%} of y", ha="center",
                        va="center", fontsize=9, transform=axes[0, j].transAxes,
                        bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        axes[0, j].set_title(f"{j + 1}: g{s.group} {s.phase}\n+{s.bits / 1e3:.1f} kbit "
                             f"(total {s.cumulative_bits / 1e3:.1f})", fontsize=8)
        sm = s.step_mask[s.channels]
        mean_scale = s.scales[image].sum(0) / sm.sum(0).clamp(min=1)
        shown = np.where(sm.any(0).cpu().numpy(), mean_scale.cpu().numpy(), np.nan)
        im = axes[1, j].imshow(shown, cmap=cmap, norm=norm)
        axes[2, j].imshow(s.x_hat[image].permute(1, 2, 0).cpu().numpy())
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("decoded\n(share of channels)", fontsize=8)
    axes[1, 0].set_ylabel("scales used", fontsize=8)
    axes[2, 0].set_ylabel("reconstruction", fontsize=8)
    fig.colorbar(im, ax=axes[1, :].tolist(), location="right", shrink=0.9, label="σ (log)")
    kbit = steps[-1].cumulative_bits / 1e3
    fig.suptitle(f"SCCTX decoding, {n} steps: z ({steps[0].z_bits / 1e3:.1f} kbit) first, then "
                 f"anchors and non-anchors of each channel group; {kbit:.1f} kbit in all = "
                 f"{1e3 * kbit / (h * w):.3f} bpp (padded size {w}x{h})", fontsize=10)
    return fig
