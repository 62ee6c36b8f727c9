"""BiWKV made visible: the attention weights it implies, and its backends side by side.

BiWKV never builds a T x T attention matrix (that is the point of its O(T) kernels), but it
*is* a weighted average of the values with an implied matrix: for batch item b and channel c,

    y[b, t, c] = sum_i A[b, c, t, i] * v[b, i, c],
    A[b, c, t, :] = softmax_i( k[b, i, c] - (|t - i| - 1) * w[c]   (i != t)
                               k[b, t, c] + u[c]                    (i == t) )

:func:`attention_weights` returns A (tests check ``y == A @ v`` against the backends);
:func:`plot_weight_matrices` and :func:`lalic_core.widgets.weights_explorer` draw it for chosen decays ``w`` and
boosts ``u``; :func:`compare_backends` measures how far the fast backends are from the float64
reference (the Triton kernels on the CPU run in a subprocess under ``TRITON_INTERPRET=1``,
which Triton reads when it is first imported).

Used by ``notebooks/01_biwkv.ipynb``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from lalic_core.ops.biwkv import biwkv, triton_available

__all__ = [
    "attention_weights",
    "compare_backends",
    "format_errors",
    "plot_weight_matrices",
    "plot_weight_profile",
]


def attention_weights(w, u, k: torch.Tensor | None = None, T: int | None = None
                      ) -> torch.Tensor:
    """The (B, C, T, T) matrix A with ``biwkv(w, u, k, v)[b, t, c] = sum_i A[b, c, t, i] *
    v[b, i, c]`` (float64; each row sums to 1).

    Args:
        w: (C,) per-token decay (the model passes ``decay / T``); a float is one channel.
        u: (C,) boost of the token itself (the model passes ``boost / T``).
        k: (B, T, C) keys, or None for "no content": all keys equal, so the weights depend on
            w and u alone (then ``T`` is required and B = 1).
        T: number of tokens when ``k`` is None.
    """
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    u = torch.as_tensor(u, dtype=torch.float64).reshape(-1)
    if w.shape != u.shape:
        raise ValueError(f"attention_weights: `w` and `u` must have the same shape (C,), got "
                         f"{tuple(w.shape)} and {tuple(u.shape)}")
    C = w.shape[0]
    if k is None:
        if T is None or T < 1:
            raise ValueError("attention_weights: give `k` (B, T, C) or a positive `T`")
        k = torch.zeros(1, T, C, dtype=torch.float64)
    else:
        if k.dim() != 3 or k.shape[2] != C:
            raise ValueError(f"attention_weights: `k` must have shape (B, T, {C}), got "
                             f"{tuple(k.shape)}")
        k = k.to(torch.float64)
        T = k.shape[1]
    idx = torch.arange(T, dtype=torch.float64)
    distance = (idx[:, None] - idx[None, :]).abs()  # (T, T): query t, key i
    logits = -(distance - 1)[None] * w[:, None, None]  # (C, T, T)
    eye = torch.eye(T, dtype=torch.bool)
    logits = torch.where(eye[None], u[:, None, None].expand(C, T, T), logits)
    logits = logits[None] + k.permute(0, 2, 1)[:, :, None, :]  # + k[b, i, c] -> (B, C, T, T)
    return torch.softmax(logits, dim=-1)


# ----------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------
def plot_weight_matrices(settings, T: int = 64, k_scale: float = 0.0, seed: int = 0):
    """One T x T weight matrix per ``(w, u)`` pair in ``settings`` (one channel each, keys
    all equal unless ``k_scale`` > 0: then random keys with that standard deviation, the same
    for every panel). Log colour scale, so that slow decays and the boosted diagonal show."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    settings = list(settings)
    k = None
    if k_scale > 0:
        g = torch.Generator().manual_seed(seed)
        k = torch.randn(1, T, 1, generator=g, dtype=torch.float64) * k_scale
    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 3.4),
                             squeeze=False)
    for ax, (w, u) in zip(axes[0], settings):
        if k is None:
            A = attention_weights([w], [u], T=T)[0, 0]
        else:
            A = attention_weights([w], [u], k)[0, 0]
        im = ax.imshow(A.numpy(), cmap="magma", norm=LogNorm(vmin=max(float(A.min()), 1e-6),
                                                              vmax=float(A.max())))
        ax.set_title(f"w = {w:g}, u = {u:g}", fontsize=9)
        ax.set_xlabel("key token i")
        ax.set_ylabel("query token t")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("BiWKV's implied attention weights A[t, i] (one channel, log scale)"
                 + (f", random keys (std {k_scale:g})" if k is not None else ", equal keys"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_weight_profile(w: float, u: float, H: int = 16, W: int = 16, fig=None):
    """What the centre pixel of an H x W map attends to, keys all equal: its weight row
    against the token index (left) and the same row as an H x W image (right: the row-major
    flattening turns |t - i| into stripes, which Omni-Shift compensates for locally)."""
    import matplotlib.pyplot as plt

    T = H * W
    t = (H // 2) * W + W // 2
    row = attention_weights([w], [u], T=T)[0, 0, t].numpy()
    if fig is None:
        fig = plt.figure(figsize=(9.5, 3.4))
    fig.clear()
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    ax1.semilogy(row, lw=1)
    ax1.plot([t], [row[t]], "o", color="C3", label=f"own token (boost u = {u:g})")
    ax1.set_xlabel("key token i (row-major index)")
    ax1.set_ylabel("weight A[t, i]")
    ax1.set_title(f"query t = {t} (centre pixel), decay w = {w:g} per token", fontsize=9)
    ax1.legend(fontsize=8, loc="lower center")
    ax1.grid(True, which="both", alpha=0.3)
    im = ax2.imshow(row.reshape(H, W), cmap="magma")
    ax2.plot([W // 2], [H // 2], "x", color="cyan")
    ax2.set_title(f"the same row on the {H} x {W} map", fontsize=9)
    ax2.set_xticks([])
    ax2.set_yticks([])
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------
# backends against the reference
# ----------------------------------------------------------------------------------------
def _make_inputs(B: int, T: int, C: int, dtype: torch.dtype, seed: int):
    """Inputs in the model's parametrisation (w = decay / T, u = boost / T), keys with a
    large spread (std 3) so that the exponentials really vary."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * 3
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * 3 / T
    u = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * 3 / T
    return w.to(dtype), u.to(dtype), k.to(dtype), v.to(dtype)


def _errors_here(backends, shape, dtypes, seed) -> list[dict]:
    rows = []
    B, T, C = shape
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        w, u, k, v = _make_inputs(B, T, C, dtype, seed)
        exact = biwkv(w.double(), u.double(), k.double(), v.double(), backend="reference")
        for backend in backends:
            y = biwkv(w, u, k, v, backend=backend).double()
            diff = (y - exact).abs()
            rows.append({
                "backend": backend, "dtype": dtype_name, "shape": [B, T, C],
                "max_abs": float(diff.max()),
                "max_rel": float((diff / exact.abs().clamp_min(1e-3)).max()),
                "device": str(k.device) if backend != "triton" or k.is_cuda
                else "cpu (Triton interpreter)",
            })
    return rows


def _errors_interpreted(backends, shape, dtypes, seed, timeout: float) -> list[dict]:
    """:func:`_errors_here` in a fresh Python with TRITON_INTERPRET=1 (Triton reads it on
    import, so it cannot be switched on inside a process that imported Triton already)."""
    code = ("import json, sys; from lalic_core.analysis.biwkv_explain import _errors_here; "
            "a = json.loads(sys.argv[1]); "
            "print('ROWS' + json.dumps(_errors_here(*a)))")
    args = json.dumps([list(backends), list(shape), list(dtypes), seed])
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                          env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the Triton interpreter run failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ROWS"))
    return json.loads(line[4:])


#: Results of the Triton interpreter runs of this process, by (shape, dtypes, seed): running
#: the comparison again (a notebook cell re-run) starts no new process.
_INTERPRETED: dict = {}


def _interpreter_cache_path(shape, dtypes, seed):
    """A file in the user's cache folder for one interpreter result, keyed by the inputs, the
    Triton version and the kernel source (a change of either measures again)."""
    import hashlib
    from pathlib import Path

    import triton

    from lalic_core.ops.biwkv import triton_kernel

    source = Path(triton_kernel.__file__).read_bytes()
    key = hashlib.sha256(json.dumps([list(shape), list(dtypes), seed, triton.__version__,
                                     hashlib.sha256(source).hexdigest()]).encode()).hexdigest()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lalic-workbench" / f"triton-interpreter-{key[:16]}.json"


def _errors_interpreted_cached(shape, dtypes, seed, timeout: float, use_cache: bool
                               ) -> list[dict]:
    key = (tuple(shape), tuple(dtypes), seed)
    if use_cache and key in _INTERPRETED:
        return [dict(r) for r in _INTERPRETED[key]]
    path = None
    if use_cache:
        try:
            path = _interpreter_cache_path(shape, dtypes, seed)
            rows = json.loads(path.read_text())
        except (OSError, ValueError, ImportError):
            rows = None
        if rows:
            _INTERPRETED[key] = rows
            return [dict(r, device=r["device"] + ", cached") for r in rows]
    rows = _errors_interpreted(["triton"], shape, dtypes, seed, timeout)
    _INTERPRETED[key] = rows
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows))
        except OSError:
            pass  # a read-only home: the in-process result still spares re-runs
    return rows


def compare_backends(backends=("cpu", "triton"), shape=(2, 64, 16),
                     dtypes=("float64", "float32"), seed: int = 0, timeout: float = 300.0,
                     use_cache: bool = True) -> list[dict]:
    """Max absolute and relative error of each backend against the float64 reference on
    random inputs of ``shape`` = (B, T, C), per input dtype.

    Relative error: ``|y - y_ref| / max(|y_ref|, 1e-3)``. Triton runs on CUDA when available,
    else on the CPU interpreter in a separate Python process (small shapes only: it is slow,
    ~5 s with the process start). That result is deterministic, so it is kept (in this
    process and in ``~/.cache/lalic-workbench``, keyed by the inputs, Triton's version and
    the kernel source) and a re-run starts no process; its device then says "cached"
    (``use_cache=False`` measures again). When Triton is not installed its row says so
    (``"skipped"``).
    """
    backends, shape, dtypes = list(backends), tuple(int(s) for s in shape), list(dtypes)
    rows = _errors_here([b for b in backends if b != "triton"], shape, dtypes, seed)
    if "triton" in backends:
        if not triton_available():
            rows.append({"backend": "triton", "skipped": "triton is not installed"})
        elif torch.cuda.is_available():
            rows += _errors_here(["triton"], shape, dtypes, seed)  # pragma: no cover (GPU)
        else:
            rows += _errors_interpreted_cached(shape, dtypes, seed, timeout, use_cache)
    return rows


def format_errors(rows: list[dict]) -> str:
    """:func:`compare_backends` rows as a text table."""
    lines = [(f"{'backend':8s} {'inputs':8s} {'shape (B,T,C)':14s} {'max abs err':>12s} "
             f"{'max rel err':>12s}  device")]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:8s} skipped: {r['skipped']}")
            continue
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['backend']:8s} {r['dtype']:8s} {shape:14s} {r['max_abs']:12.2e} "
                     f"{r['max_rel']:12.2e}  {r['device']}")
    return "\n".join(lines)
