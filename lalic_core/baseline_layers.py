"""Baseline token mixers with LALIC's block interface, for the ERF, correlation and
complexity comparisons (and as transforms for small baseline models).

Every block maps (B, C, H, W) -> (B, C, H, W) for any H, W (window blocks pad internally and
mask the padding out of the attention). Kinds, as named by :func:`make_block`:

- ``"birwkv"``: LALIC's Bi-RWKV block (:class:`lalic_core.layers.BiRWKVBlock`), linear attention
  over all H*W tokens.
- ``"tcm"``: :class:`TCMBlock`, the Transformer-CNN mixture block of TCM (Liu et al. CVPR 2023).
- ``"fat"``: :class:`FATBlock`, the frequency-aware block of FAT/FTIC (Li et al. ICLR 2024).
- ``"cnn"``: :class:`ResidualBottleneck`, ELIC's residual bottleneck (He et al. CVPR 2022).
- ``"global"``: :class:`GlobalAttentionBlock`, a pre-norm transformer block with softmax attention
  over all tokens (``torch.nn.functional.scaled_dot_product_attention``), quadratic in H*W.

The stand-ins are written from the papers' descriptions (see
``../shared/reference/baselines-and-analysis.md``); each class docstring says what was simplified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BiRWKVBlock

__all__ = [
    "BLOCK_KINDS",
    "FDWA",
    "FMFFN",
    "FATBlock",
    "GlobalAttentionBlock",
    "RelPosWindowAttention",
    "ResidualBottleneck",
    "SwinBlock",
    "TCMBlock",
    "WindowMSA",
    "make_block",
    "make_stack",
]

BLOCK_KINDS = ("birwkv", "tcm", "fat", "cnn", "global")


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _check_input(x: torch.Tensor, channels: int, owner: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{owner} expects input of shape (B, {channels}, H, W), got {tuple(x.shape)}"
        )


class Mlp(nn.Sequential):
    """Linear -> GELU -> Linear on channels-last tokens (the transformer FFN)."""

    def __init__(self, dim: int, hidden_rate: float = 4.0):
        hidden = int(dim * hidden_rate)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


# --------------------------------------------------------------------------------------------
# Window attention (Swin, Liu et al. ICCV 2021) with padding
# --------------------------------------------------------------------------------------------
class RelPosWindowAttention(nn.Module):
    """Multi-head softmax attention inside (optionally shifted) windows, with a learned
    relative position bias; no projections (the caller owns q, k, v and the output proj).

    ``forward(q, k, v)``: each (B, H, W, num_heads * head_dim), channels-last, any H, W;
    returns the same shape. The map is zero-padded to a multiple of the window, cyclically
    rolled by ``shift`` (Swin's shifted windows), split into windows, attended with the bias and
    a mask that keeps the rolled-in regions apart and hides padded keys, then put back.
    """

    def __init__(self, num_heads: int, window_size, shift=(0, 0)):
        super().__init__()
        self.num_heads = num_heads
        self.window = _pair(window_size)
        self.shift = _pair(shift)
        wh, ww = self.window
        if not (0 <= self.shift[0] < wh and 0 <= self.shift[1] < ww):
            raise ValueError(
                f"shift must lie in [0, window) per axis, got {self.shift} for window {self.window}"
            )
        self.bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        rows, cols = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
        index = (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)
        self.register_buffer("bias_index", index, persistent=False)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, window={self.window}, shift={self.shift}"

    def _mask(self, hp: int, wp: int, h: int, w: int, device) -> torch.Tensor | None:
        """Additive (num_windows, N, N) mask, or None when nothing needs masking."""
        (wh, ww), (sh, sw) = self.window, self.shift
        if (sh, sw) == (0, 0) and (hp, wp) == (h, w):
            return None
        region = torch.zeros(hp, wp, device=device)
        if sh or sw:  # label the regions that the cyclic roll brings together (rolled frame)
            label = 0
            for rs in (slice(0, hp - wh), slice(hp - wh, hp - sh), slice(hp - sh, hp)):
                for cs in (slice(0, wp - ww), slice(wp - ww, wp - sw), slice(wp - sw, wp)):
                    region[rs, cs] = label
                    label += 1
        valid = torch.zeros(hp, wp, dtype=torch.bool, device=device)
        valid[:h, :w] = True
        valid = torch.roll(valid, shifts=(-sh, -sw), dims=(0, 1))
        region, valid = (self._windows(t[None, :, :, None])[:, :, 0] for t in (region, valid))
        n = wh * ww
        allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
        allowed |= torch.eye(n, dtype=torch.bool, device=device)  # padded queries see themselves
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Hp, Wp, C) -> (B * num_windows, wh * ww, C)."""
        b, hp, wp, c = x.shape
        wh, ww = self.window
        x = x.view(b, hp // wh, wh, wp // ww, ww, c).transpose(2, 3)
        return x.reshape(-1, wh * ww, c)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        (wh, ww), (sh, sw) = self.window, self.shift
        ph, pw = (-h) % wh, (-w) % ww
        hp, wp = h + ph, w + pw
        heads, head_dim = self.num_heads, c // self.num_heads

        num_windows, n = (hp // wh) * (wp // ww), wh * ww

        def prepare(t: torch.Tensor) -> torch.Tensor:
            t = F.pad(t, (0, 0, 0, pw, 0, ph))
            if sh or sw:
                t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
            t = self._windows(t).view(b * num_windows, n, heads, head_dim)
            return t.transpose(1, 2)  # (B * nW, heads, N, head_dim)

        q, k, v = prepare(q), prepare(k), prepare(v)
        bias = self.bias_table[self.bias_index.view(-1)].view(n, n, heads).permute(2, 0, 1)
        attn_mask = bias[None].to(q.dtype)  # (1, heads, N, N), broadcast over windows
        mask = self._mask(hp, wp, h, w, q.device)
        if mask is not None:  # per-window masks; 4-D tensors keep SDPA on its fast CPU path
            attn_mask = (attn_mask + mask[:, None].to(q.dtype)).repeat(b, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(b, hp // wh, wp // ww, wh, ww, c)
        out = out.transpose(2, 3).reshape(b, hp, wp, c)
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        return out[:, :h, :w, :].contiguous()


class WindowMSA(nn.Module):
    """Swin's (shifted-)window multi-head self-attention: qkv Linear -> attention -> Linear.
    (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shifted: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        shift = window_size // 2 if shifted else 0
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = RelPosWindowAttention(num_heads, window_size, (shift, shift))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(self.attn(q, k, v))


class SwinBlock(nn.Module):
    """Swin transformer block on (B, H, W, C): x + WMSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shifted: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowMSA(dim, num_heads, window_size, shifted)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------
# TCM: Transformer-CNN mixture block (Liu, Sun, Katto, CVPR 2023)
# --------------------------------------------------------------------------------------------
class TCMBlock(nn.Module):
    """TCM's Transformer-CNN mixture block: (B, C, H, W) -> (B, C, H, W).

    1x1 conv; split channels into a conv half and a transformer half (C/2 each); conv half:
    residual block (3x3 conv, LeakyReLU, 3x3 conv, LeakyReLU) plus identity; transformer half:
    one Swin block (window 8; ``shifted=True`` rolls by half a window, blocks alternate) with
    ``head_dim``-wide heads; concatenate, 1x1 conv, add the block input.

    Simplified: no stochastic depth (drop path), no special case for maps smaller than one
    window (they are padded and masked instead of shrinking the window).
    """

    def __init__(self, dim: int, head_dim: int = 32, window_size: int = 8, shifted: bool = False):
        super().__init__()
        if dim % 2:
            raise ValueError(
                f"TCMBlock needs an even dim (it splits channels in halves), got {dim}"
            )
        half = dim // 2
        head_dim = min(head_dim, half)
        if half % head_dim:
            raise ValueError(f"dim // 2 ({half}) must be divisible by head_dim ({head_dim})")
        self.dim = dim
        self.conv_in = nn.Conv2d(dim, dim, 1)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(half, half, 3, padding=1),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1),
            nn.LeakyReLU(inplace=True),
        )
        self.trans_branch = SwinBlock(half, half // head_dim, window_size, shifted)
        self.conv_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dim, "TCMBlock")
        conv_x, trans_x = self.conv_in(x).chunk(2, dim=1)
        conv_x = conv_x + self.conv_branch(conv_x)
        trans_x = self.trans_branch(trans_x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv_out(torch.cat([conv_x, trans_x], dim=1))


# --------------------------------------------------------------------------------------------
# FAT / FTIC: frequency-aware transformer block (Li et al., ICLR 2024)
# --------------------------------------------------------------------------------------------
class FDWA(nn.Module):
    """Frequency-decomposition window attention: (B, H, W, C) -> (B, H, W, C).

    One qkv projection; channels and heads are split into 4 equal branches attending in windows
    of different shapes, with base size ``s``: 2s x 2s (low frequency), s/2 x s/2 (high
    frequency), s/2 x 2s (horizontal) and 2s x s/2 (vertical); each branch has its own relative
    position bias and, when ``shifted``, its own half-window roll. Concatenate, project.
    """

    def __init__(self, dim: int, num_heads: int = 8, base_window: int = 8, shifted: bool = False):
        super().__init__()
        if num_heads % 4 or dim % num_heads:
            raise ValueError(
                "FDWA needs num_heads divisible by 4 and dim by num_heads, "
                f"got dim={dim}, num_heads={num_heads}"
            )
        s = base_window
        self.windows = [(2 * s, 2 * s), (s // 2, s // 2), (s // 2, 2 * s), (2 * s, s // 2)]
        self.qkv = nn.Linear(dim, 3 * dim)
        self.branches = nn.ModuleList(
            RelPosWindowAttention(
                num_heads // 4, win, (win[0] // 2, win[1] // 2) if shifted else (0, 0)
            )
            for win in self.windows
        )
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        qs, ks, vs = (t.chunk(4, dim=-1) for t in (q, k, v))
        out = [branch(qi, ki, vi) for branch, qi, ki, vi in zip(self.branches, qs, ks, vs)]
        return self.proj(torch.cat(out, dim=-1))


class FMFFN(nn.Module):
    """Frequency-modulated FFN: LN -> MLP (4x, GELU), then each ``patch`` x ``patch`` window of
    the output is filtered in the 2-D Fourier domain (rfft2, times a learned complex weight per
    frequency and channel, initialised to 1, irfft2). (B, H, W, C) -> (B, H, W, C), no residual.
    Maps that are not multiples of the patch are zero-padded and cropped back."""

    def __init__(self, dim: int, hidden_rate: float = 4.0, patch: int = 16):
        super().__init__()
        self.patch = patch
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_rate)
        # complex weight stored as (real, imag) pairs, initialised to 1 + 0j
        weight = torch.zeros(patch, patch // 2 + 1, dim, 2)
        weight[..., 0] = 1.0
        self.freq_weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        p = self.patch
        x = self.mlp(self.norm(x))
        ph, pw = (-h) % p, (-w) % p
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        x = x.view(b, hp // p, p, wp // p, p, c).transpose(2, 3)  # (B, nH, nW, p, p, C)
        spectrum = torch.fft.rfft2(x.float(), dim=(3, 4), norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.freq_weight)
        x = torch.fft.irfft2(spectrum, s=(p, p), dim=(3, 4), norm="ortho").to(x.dtype)
        x = x.transpose(2, 3).reshape(b, hp, wp, c)
        return x[:, :h, :w, :]


class FATBlock(nn.Module):
    """FAT's block: (B, C, H, W) -> (B, C, H, W).

    1x1 conv -> [x + FDWA(LN(x)); x + FMFFN(x)] -> 1x1 conv, added to the block input.
    ``shifted`` alternates between blocks as in the paper (two blocks per stage).

    Simplified: no stochastic depth; window shapes are fixed by ``base_window`` (8: 16x16,
    4x4, 4x16, 16x4), padded and masked at the borders rather than adapted to small maps.
    """

    def __init__(self, dim: int, num_heads: int = 8, base_window: int = 8, shifted: bool = False):
        super().__init__()
        self.dim = dim
        self.conv_in = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.attn = FDWA(dim, num_heads, base_window, shifted)
        self.ffn = FMFFN(dim, 4.0, patch=2 * base_window)
        self.conv_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dim, "FATBlock")
        t = self.conv_in(x).permute(0, 2, 3, 1)
        t = t + self.attn(self.norm(t))
        t = t + self.ffn(t)
        return x + self.conv_out(t.permute(0, 3, 1, 2))


# --------------------------------------------------------------------------------------------
# ELIC residual bottleneck (He et al., CVPR 2022) and global attention
# --------------------------------------------------------------------------------------------
class ResidualBottleneck(nn.Module):
    """ELIC's residual bottleneck: x + conv1x1(ReLU(conv3x3(ReLU(conv1x1(x))))), the middle at
    half width. (B, C, H, W) -> (B, C, H, W). ELIC's attention blocks (Cheng 2020) between
    stages are not part of this block."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        mid = max(dim // 2, 1)
        self.branch = nn.Sequential(
            nn.Conv2d(dim, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dim, "ResidualBottleneck")
        return x + self.branch(x)


class GlobalAttentionBlock(nn.Module):
    """Pre-norm transformer block with full softmax self-attention over all H*W tokens:
    x + MHSA(LN(x)), then x + MLP(LN(x)). (B, C, H, W) -> (B, C, H, W); time and memory grow
    as (H*W)^2. No positional encoding (the block is permutation-equivariant over tokens),
    the reference point for "global modelling at quadratic cost"."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        head_dim = min(head_dim, dim)
        if dim % head_dim:
            raise ValueError(f"dim ({dim}) must be divisible by head_dim ({head_dim})")
        self.dim, self.num_heads = dim, dim // head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dim, "GlobalAttentionBlock")
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, T, C)
        q, k, v = (
            u.view(b, h * w, self.num_heads, c // self.num_heads).transpose(1, 2)
            for u in self.qkv(self.norm1(t)).chunk(3, dim=-1)
        )
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        t = t + self.proj(attn)
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------
def make_block(kind: str, dim: int, *, shifted: bool = False, **kwargs) -> nn.Module:
    """One block of ``kind`` (see :data:`BLOCK_KINDS`) on ``dim`` channels.

    ``shifted`` selects the shifted-window variant for "tcm" and "fat" (ignored otherwise);
    other keyword arguments go to the block's constructor (e.g. ``hidden_rate`` for "birwkv",
    ``head_dim`` for "tcm"/"global", ``num_heads`` for "fat").
    """
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if kind == "birwkv":
        return BiRWKVBlock(dim, hidden_rate=kwargs.pop("hidden_rate", 4), **kwargs)
    if kind == "tcm":
        return TCMBlock(dim, shifted=shifted, **kwargs)
    if kind == "fat":
        return FATBlock(dim, shifted=shifted, **kwargs)
    if kind == "cnn":
        return ResidualBottleneck(dim, **kwargs)
    if kind == "global":
        return GlobalAttentionBlock(dim, **kwargs)
    raise ValueError(f"kind must be one of {BLOCK_KINDS}, got {kind!r}")


def make_stack(kind: str, dim: int, depth: int, **kwargs) -> nn.Sequential:
    """``depth`` blocks of ``kind`` in sequence; window blocks alternate plain and shifted
    windows (W, SW, W, ...) as in Swin, TCM and FAT."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    return nn.Sequential(
        *(make_block(kind, dim, shifted=bool(i % 2), **kwargs) for i in range(depth))
    )
