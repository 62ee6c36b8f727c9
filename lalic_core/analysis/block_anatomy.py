"""Inside a Bi-RWKV block: token order, Omni-Shift's two forms, shapes along the way.

Helpers for ``notebooks/02_birwkv_block.ipynb`` (and anyone taking
:class:`lalic_core.layers.BiRWKVBlock` apart):

- :func:`token_order` / :func:`plot_token_order`: how the (H, W) map becomes the token
  sequence BiWKV sees (row-major), and how far apart neighbours end up in it;
- :func:`omni_shift_kernels` / :func:`plot_omni_shift_kernels`: the four training branches
  of :class:`~lalic_core.layers.OmniShift` (identity, 1x1, 3x3, 5x5 depthwise, scaled by
  alpha and zero-padded to 5x5) and the single 5x5 kernel they collapse into;
- :func:`reparameterization_check`: the two forms on the same input (max abs difference);
- :func:`trace_shapes` / :func:`format_shape_trace`: every submodule's (and BiWKV's) input and
  output shape in one forward pass;
- :func:`compare_block_paths`: the block's training formula against its chunked CPU
  inference path.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "compare_block_paths",
    "example_block",
    "format_shape_trace",
    "omni_shift_kernels",
    "plot_omni_shift_kernels",
    "plot_token_order",
    "reparameterization_check",
    "token_order",
    "trace_shapes",
]


def example_block(dim: int = 24, *, trained: bool = True, seed: int = 0
                  ) -> tuple[nn.Module, str]:
    """A Bi-RWKV block to take apart, and where it comes from: the first block of g_a of the
    zoo model "lalic-tiny" (dim 24, trained) when ``trained`` and the zoo has it, else a
    freshly initialised ``BiRWKVBlock(dim)`` (seeded)."""
    from lalic_core.layers import BiRWKVBlock

    if trained:
        from lalic_core import zoo

        entries = [e for e in zoo.available() if e[0] == "lalic-tiny"]
        if entries:
            name, quality = entries[0]
            block = zoo.load(name, quality).g_a[1]
            if isinstance(block, BiRWKVBlock):
                return block, f"g_a[1] of the zoo model {name}:{quality} (trained)"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = BiRWKVBlock(dim)
    return block.eval(), f"BiRWKVBlock({dim}), random initialisation (seed {seed})"


def token_order(H: int, W: int) -> np.ndarray:
    """(H, W) array: the token index of each pixel (``map_to_tokens``: row-major)."""
    from lalic_core.layers import map_to_tokens

    index_map = torch.arange(H * W, dtype=torch.float64).view(1, 1, H, W)
    return map_to_tokens(index_map)[0, :, 0].view(H, W).long().numpy()


def plot_token_order(H: int = 5, W: int = 7):
    """The map's pixels numbered in token order, the flattening path drawn through them, and
    the sequence distance |t - i| from the centre pixel to every other pixel (what BiWKV's
    decay sees: the pixel below is W tokens away, the one to the right 1)."""
    import matplotlib.pyplot as plt

    order = token_order(H, W)
    centre = order[H // 2, W // 2]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.imshow(order, cmap="Blues", alpha=0.35)
    ys, xs = np.unravel_index(np.argsort(order, axis=None), order.shape)
    ax1.plot(xs, ys, "-", color="C1", lw=1, alpha=0.8)
    for (r, c), t in np.ndenumerate(order):
        ax1.text(c, r, str(t), ha="center", va="center", fontsize=9)
    ax1.set_title(f"token index t of each pixel ({H} x {W} map, row-major)", fontsize=9)
    distance = np.abs(order - centre)
    im = ax2.imshow(distance, cmap="viridis")
    for (r, c), d in np.ndenumerate(distance):
        ax2.text(c, r, str(d), ha="center", va="center", fontsize=9,
                 color="white" if d < distance.max() / 2 else "black")
    ax2.set_title(f"sequence distance |t - {centre}| from the centre pixel", fontsize=9)
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    for ax in (ax1, ax2):
        ax.set_xticks(range(W))
        ax.set_yticks(range(H))
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.tight_layout()
    return fig


def omni_shift_kernels(shift: nn.Module, channel: int = 0) -> dict[str, np.ndarray]:
    """5x5 kernels of one channel: each training branch scaled by its alpha and zero-padded
    to 5x5 (they sum to the collapsed kernel), and the collapsed kernel itself."""
    a = shift.alpha.detach()
    with torch.no_grad():
        parts = {
            "identity x alpha0": F.pad(a[0].reshape(1, 1), (2, 2, 2, 2)),
            "1x1 x alpha1": F.pad(a[1] * shift.conv1x1.weight[channel, 0], (2, 2, 2, 2)),
            "3x3 x alpha2": F.pad(a[2] * shift.conv3x3.weight[channel, 0], (1, 1, 1, 1)),
            "5x5 x alpha3": a[3] * shift.conv5x5.weight[channel, 0],
            "collapsed 5x5": shift.collapsed_kernel()[channel, 0],
        }
    return {k: v.cpu().double().numpy() for k, v in parts.items()}


def plot_omni_shift_kernels(shift: nn.Module, channel: int = 0):
    """:func:`omni_shift_kernels` as five images on one symmetric colour scale, with the
    values written in: ``identity + 1x1 + 3x3 + 5x5 = collapsed``."""
    import matplotlib.pyplot as plt

    kernels = omni_shift_kernels(shift, channel)
    vmax = max(float(np.abs(k).max()) for k in kernels.values())
    fig, axes = plt.subplots(1, len(kernels), figsize=(2.5 * len(kernels), 2.9))
    for i, (ax, (name, k)) in enumerate(zip(axes, kernels.items())):
        im = ax.imshow(k, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for (r, c), value in np.ndenumerate(k):
            if value != 0:
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        sign = "+" if i < len(kernels) - 2 else ("=" if i == len(kernels) - 2 else "")
        if sign:
            ax.text(1.08, 0.5, sign, transform=ax.transAxes, fontsize=16, ha="center",
                    va="center")
    fig.colorbar(im, ax=list(axes), fraction=0.015, pad=0.02)
    fig.suptitle(f"Omni-Shift kernels of channel {channel} (depthwise, 'same' padding)",
                 fontsize=10)
    return fig


@torch.no_grad()
def reparameterization_check(shift: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Max abs differences on ``x`` (B, C, H, W) between the literal four-branch sum
    (:meth:`OmniShift.forward_branches`) and (a) the training-mode forward (kernel collapsed
    on the fly), (b) the eval-mode forward with the stored ``conv5x5_reparam`` kernel after
    :meth:`OmniShift.reparameterize`. Restores the module's mode."""
    was_training = shift.training
    try:
        branches = shift.forward_branches(x)
        shift.train()
        training_form = shift(x)
        shift.reparameterize()
        shift.eval()
        inference_form = shift(x)
    finally:
        shift.train(was_training)
    scale = float(branches.abs().max())
    return {
        "branches_vs_training_forward": float((training_form - branches).abs().max()),
        "branches_vs_collapsed_kernel": float((inference_form - branches).abs().max()),
        "output_scale": scale,
    }


def _shape(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return str(tuple(obj.shape))
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], torch.Tensor):
        return _shape(obj[0])
    return type(obj).__name__


def trace_shapes(block: nn.Module, x: torch.Tensor) -> list[dict]:
    """One forward pass of ``block`` on ``x`` (with autograd on, so that every submodule is
    called as a module; eval mode), recording for each submodule call, in call order, its
    name, depth, class, input and output shapes; BiWKV calls (a function, not a module)
    appear as ``biwkv`` with the shapes of k and of the output."""
    from lalic_core import layers

    rows: list[dict] = []
    stack: list[dict] = []
    handles = []

    def pre(name, module):
        def hook(mod, args):
            row = {"name": name or "(block)", "depth": name.count(".") + 1 if name else 0,
                   "type": type(mod).__name__, "input": _shape(args[0]) if args else "-",
                   "output": "?"}
            rows.append(row)
            stack.append(row)
        return hook

    def post(mod, args, out):
        stack.pop()["output"] = _shape(out)

    for name, module in block.named_modules():
        handles.append(module.register_forward_pre_hook(pre(name, module)))
        handles.append(module.register_forward_hook(post))

    real_biwkv = layers.biwkv

    def traced_biwkv(w, u, k, v, *args, **kwargs):
        parent = stack[-1] if stack else {"name": "", "depth": 0}
        y = real_biwkv(w, u, k, v, *args, **kwargs)
        rows.append({"name": f"{parent['name']}: biwkv(w, u, k, v)",
                     "depth": parent["depth"] + 1, "type": "BiWKV",
                     "input": f"k, v {_shape(k)}; w, u {_shape(w)}", "output": _shape(y)})
        return y

    was_training = block.training
    block.eval()
    try:
        with torch.enable_grad(), mock.patch.object(layers, "biwkv", traced_biwkv):
            block(x)
    finally:
        for h in handles:
            h.remove()
        block.train(was_training)
    return rows


def format_shape_trace(rows: list[dict]) -> str:
    """:func:`trace_shapes` rows as an indented text table."""
    names = ["  " * r["depth"] + r["name"].split(".")[-1] if r["type"] != "BiWKV"
             else "  " * r["depth"] + "biwkv(w, u, k, v)" for r in rows]
    width = max(len(n) for n in names) + 2
    lines = [f"{'module':{width}s}{'type':14s}{'input':34s}output"]
    for n, r in zip(names, rows):
        lines.append(f"{n:{width}s}{r['type']:14s}{r['input']:34s}{r['output']}")
    return "\n".join(lines)


def compare_block_paths(block: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between the block's plain formulas (autograd on) and its chunked
    CPU inference path (``torch.no_grad``), both in eval mode, on ``x`` (B, C, H, W)."""
    was_training = block.training
    block.eval()
    try:
        with torch.enable_grad():
            reference = block(x).detach()
        with torch.no_grad():
            fast = block(x)
    finally:
        block.train(was_training)
    return float((fast - reference).abs().max())
