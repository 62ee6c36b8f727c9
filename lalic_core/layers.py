"""Building blocks of LALIC (Feng et al., "Linear Attention Modeling for Learned Image
Compression", CVPR 2025, arXiv 2502.05741).

- :class:`OmniShift`: depthwise 5x5 token shift, trained as a weighted sum of identity, 1x1,
  3x3 and 5x5 depthwise branches and collapsed ("re-parameterised") into one 5x5 kernel for
  inference (after Restore-RWKV).
- :class:`SpatialMix`: Omni-Shift, key/value/receptance projections, BiWKV bidirectional linear
  attention over all H*W tokens, receptance gate, output projection.
- :class:`ChannelMix`: Omni-Shift, squared-ReLU feed-forward gated by the receptance.
- :class:`BiRWKVBlock`: pre-norm residual block ``x + gamma1 * SpatialMix(LN(x))`` then
  ``x + gamma2 * ChannelMix(LN(x))``; used in g_a, g_s, h_a, h_s and the channel context.
- :class:`ChannelMixNoShift`: the 1x1 "Channel Mix without Omni-Shift" layer of the
  parameter aggregation network (pointwise, so checkerboard decoding stays causal).

Layout: modules take and return (B, C, H, W) tensors; inside a block the tokens are
(B, T, C) with T = H*W in row-major order. Blocks return their output as a channels-last view
of the token buffer (``x.permute(0, 3, 1, 2)`` of a (B, H, W, C) tensor), so a chain of blocks
and convolutions never copies between the two layouts.

Speed: without autograd on the CPU, :class:`BiRWKVBlock` runs an equivalent chunked path
(per-token work on chunks of :data:`INFERENCE_CHUNK_TOKENS` tokens in reused buffers; the
(T, hidden) Channel Mix activations are never materialised); Omni-Shift is collapsed in eval
mode. Training uses the plain formulas.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# numba's threading layer is chosen in lalic_core.ops.biwkv.cpu (before any launch).
from lalic_core.ops.biwkv import SEMANTICS, biwkv

__all__ = [
    "BiRWKVBlock",
    "ChannelMix",
    "ChannelMixNoShift",
    "OmniShift",
    "SpatialMix",
    "check_biwkv_semantics",
    "map_to_tokens",
    "tokens_to_map",
]


def check_biwkv_semantics(semantics: str) -> str:
    """``semantics`` if it is one of :data:`lalic_core.ops.biwkv.SEMANTICS`, else ValueError."""
    if semantics not in SEMANTICS:
        raise ValueError(f"biwkv_semantics must be one of {SEMANTICS}, got {semantics!r}")
    return semantics


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) tokens; free (a view) when ``x`` is channels-last."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, C)


def tokens_to_map(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) channels-last view (no copy for contiguous ``t``)."""
    H, W = hw
    return t.view(t.shape[0], H, W, t.shape[2]).permute(0, 3, 1, 2)


#: Tokens per chunk in the inference path of :class:`BiRWKVBlock` (per-token work is done in
#: chunks of about this many tokens, so that intermediates stay in cache and are reused).
INFERENCE_CHUNK_TOKENS = 8192


class _ChunkBuffers(threading.local):
    """Per-thread scratch matrices for the chunked inference path (reused across calls)."""

    def __init__(self):
        self.store: dict = {}

    def get(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        buf = self.store.get(key)
        if buf is None or buf.numel() < rows * cols:
            # a normal tensor even under inference_mode, so that later no_grad calls may
            # write to it too
            with torch.inference_mode(False):
                buf = torch.empty(rows * cols, device=like.device, dtype=like.dtype)
            self.store[key] = buf
        return buf[: rows * cols].view(rows, cols)


_BUFFERS = _ChunkBuffers()


def _squared_relu(x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.square(torch.relu(x))
    return torch.relu_(x).square_()  # inference: in place, saves two full-size buffers


class OmniShift(nn.Module):
    """Omni-Shift: a depthwise 5x5 convolution with two equivalent forms. (LALIC paper)

    Training form: ``alpha[0] * x + alpha[1] * dw1x1(x) + alpha[2] * dw3x3(x) +
    alpha[3] * dw5x5(x)`` (depthwise, no bias, 'same' padding; alpha ~ N(0, 1), shape (4,)).
    Inference form: one depthwise 5x5 convolution with the collapsed kernel
    ``conv5x5_reparam.weight`` (the identity and the small kernels zero-padded to 5x5 and
    summed with their alphas).

    The switch follows the module mode: in training mode the kernel is collapsed on the fly
    (one convolution, differentiable in alpha and all branches: the same function as the sum
    of the four branches, evaluated faster); in eval mode the stored ``conv5x5_reparam``
    kernel is used and recomputed from the branches whenever they changed since it was last
    collapsed (optimizer steps, ``load_state_dict``, ``.to()``; tracked through the tensors'
    version counters), or explicitly with :meth:`reparameterize`. :meth:`forward_branches`
    evaluates the literal four-branch sum.

    Shapes: ``forward(x)`` with x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"OmniShift: `dim` must be a positive int, got {dim!r}")
        self.dim = dim
        self.alpha = nn.Parameter(torch.randn(4))
        self.conv1x1 = nn.Conv2d(dim, dim, 1, groups=dim, bias=False)
        self.conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.conv5x5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, bias=False)
        self.conv5x5_reparam = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, bias=False)
        # Derived from the branches, never trained directly (DDP and optimizers skip it).
        self.conv5x5_reparam.weight.requires_grad_(False)
        self._reparam_key: tuple | None = None
        self.reparameterize()

    def collapsed_kernel(self) -> torch.Tensor:
        """The (C, 1, 5, 5) kernel equal to the weighted sum of the four branches
        (differentiable in alpha and the branch weights)."""
        a = self.alpha
        kernel = a[3] * self.conv5x5.weight
        kernel = kernel + F.pad(a[2] * self.conv3x3.weight, (1, 1, 1, 1))
        kernel = kernel + F.pad(a[1] * self.conv1x1.weight + a[0], (2, 2, 2, 2))
        return kernel

    def _branch_key(self) -> tuple:
        tensors = (self.alpha, self.conv1x1.weight, self.conv3x3.weight, self.conv5x5.weight,
                   self.conv5x5_reparam.weight)
        return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Collapse the training branches into ``conv5x5_reparam.weight`` (in place)."""
        self.conv5x5_reparam.weight.copy_(self.collapsed_kernel())
        self._reparam_key = self._branch_key()

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The training form written out: weighted sum of identity, 1x1, 3x3, 5x5 branches."""
        a = self.alpha
        return a[0] * x + a[1] * self.conv1x1(x) + a[2] * self.conv3x3(x) + a[3] * self.conv5x5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            kernel = self.collapsed_kernel()
        else:
            if self._reparam_key != self._branch_key():
                self.reparameterize()
            kernel = self.conv5x5_reparam.weight
        return F.conv2d(x, kernel, padding=2, groups=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SpatialMix(nn.Module):
    """Spatial Mix (token mixing) of a Bi-RWKV block, paper Eq. (4)-(6).

    ``x = OmniShift(x)``; ``k, v, r = key(x), value(x), receptance(x)`` (bias-free C -> C);
    ``y = BiWKV(decay / T, boost / T, k, v)`` over all T = H*W tokens;
    ``out = output(sigmoid(r) * y)``. decay and boost are learned (C,) vectors ~ N(0, 1).

    ``biwkv_semantics``: what BiWKV computes, "formula" (the paper's) or "official32" /
    "official64" (the official chunked CUDA kernels in exact arithmetic, see
    :mod:`lalic_core.ops.biwkv`); a plain attribute, not in the state dict.

    Shapes: ``forward(x, hw)`` with x (B, T, C) tokens and hw = (H, W) -> (B, T, C).
    """

    def __init__(self, dim: int, *, biwkv_semantics: str = "formula"):
        super().__init__()
        self.dim = dim
        self.biwkv_semantics = check_biwkv_semantics(biwkv_semantics)
        self.decay = nn.Parameter(torch.randn(dim))
        self.boost = nn.Parameter(torch.randn(dim))
        self.omni_shift = OmniShift(dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        T = x.shape[1]
        x = map_to_tokens(self.omni_shift(tokens_to_map(x, hw)))
        k = self.key(x)
        v = self.value(x)
        r = self.receptance(x)
        y = biwkv(self.decay / T, self.boost / T, k, v, semantics=self.biwkv_semantics)
        if torch.is_grad_enabled():
            y = torch.sigmoid(r) * y
        else:
            y = y.mul_(r.sigmoid_())
        return self.output(y)


class ChannelMix(nn.Module):
    """Channel Mix (feed-forward) of a Bi-RWKV block, paper Eq. (7).

    ``x = OmniShift(x)``; ``out = sigmoid(receptance(x)) * value(relu(key(x)) ** 2)`` with
    key C -> r*C, value r*C -> C, receptance C -> C, all bias-free (r = ``hidden_rate``).

    Shapes: ``forward(x, hw)`` with x (B, T, C) tokens -> (B, T, C).
    """

    def __init__(self, dim: int, hidden_rate: int = 4):
        super().__init__()
        self.dim = dim
        self.hidden_rate = hidden_rate
        hidden = int(hidden_rate * dim)
        self.omni_shift = OmniShift(dim)
        self.key = nn.Linear(dim, hidden, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = map_to_tokens(self.omni_shift(tokens_to_map(x, hw)))
        kv = self.value(_squared_relu(self.key(x)))
        r = self.receptance(x)
        if torch.is_grad_enabled():
            return torch.sigmoid(r) * kv
        return kv.mul_(r.sigmoid_())


class BiRWKVBlock(nn.Module):
    """Bi-RWKV block (LALIC paper): pre-norm Spatial Mix and Channel Mix with residual
    connections scaled per channel by gamma1, gamma2 (initialised to ones)::

        x = x + gamma1 * SpatialMix(LN1(x))
        x = x + gamma2 * ChannelMix(LN2(x))

    Shapes: (B, C, H, W) -> (B, C, H, W) (returned as a channels-last view of the tokens).
    ``biwkv_semantics`` ("formula", "official32", "official64"): see :class:`SpatialMix`
    (read and set through the block's property of that name).
    Set ``grad_checkpointing = True`` to recompute the block in backward (saves memory in
    training, as the official code optionally does).
    """

    def __init__(self, dim: int, hidden_rate: int = 4, *, biwkv_semantics: str = "formula"):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"BiRWKVBlock: `dim` must be a positive int, got {dim!r}")
        if not hidden_rate or hidden_rate <= 0:
            raise ValueError(f"BiRWKVBlock: `hidden_rate` must be positive, got {hidden_rate!r}")
        self.dim = dim
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.att = SpatialMix(dim, biwkv_semantics=biwkv_semantics)
        self.ffn = ChannelMix(dim, hidden_rate)
        self.grad_checkpointing = False

    @property
    def biwkv_semantics(self) -> str:
        return self.att.biwkv_semantics

    @biwkv_semantics.setter
    def biwkv_semantics(self, value: str) -> None:
        self.att.biwkv_semantics = check_biwkv_semantics(value)

    def _forward_tokens(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        t = torch.addcmul(t, self.att(self.ln1(t), hw), self.gamma1)
        t = torch.addcmul(t, self.ffn(self.ln2(t), hw), self.gamma2)
        return t

    def _forward_inference(self, t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The same computation without autograd, for CPUs: everything per token (the
        receptance gates, the output projection, the whole Channel Mix, the residual adds)
        runs on chunks of tokens in reused scratch buffers, so the (T, hidden) activations
        are never materialised and memory traffic stays in cache."""
        B, T, C = t.shape
        att, ffn = self.att, self.ffn
        rows = B * T
        step = max(1, min(rows, INFERENCE_CHUNK_TOKENS))

        # Spatial Mix: key, value and BiWKV need all tokens at once
        s = map_to_tokens(att.omni_shift(tokens_to_map(self.ln1(t), hw))).reshape(rows, C)
        k = torch.mm(s, att.key.weight.t()).view(B, T, C)
        v = torch.mm(s, att.value.weight.t()).view(B, T, C)
        y = biwkv(att.decay / T, att.boost / T, k, v,
                  semantics=att.biwkv_semantics).reshape(rows, C)
        del k, v
        t_in = t.reshape(rows, C)
        out = torch.empty((rows, C), dtype=t.dtype, device=t.device)
        for a in range(0, rows, step):
            b = min(rows, a + step)
            r = _BUFFERS.get("r", b - a, C, t)
            torch.mm(s[a:b], att.receptance.weight.t(), out=r)
            gated = y[a:b].mul_(r.sigmoid_())
            o = _BUFFERS.get("o", b - a, C, t)
            torch.mm(gated, att.output.weight.t(), out=o)
            torch.addcmul(t_in[a:b], o, self.gamma1, out=out[a:b])
        del s, y

        # Channel Mix, chunk by chunk, added to the residual stream in place
        s = map_to_tokens(ffn.omni_shift(tokens_to_map(self.ln2(out.view(B, T, C)), hw)))
        s = s.reshape(rows, C)
        hidden = ffn.key.weight.shape[0]
        for a in range(0, rows, step):
            b = min(rows, a + step)
            h = _BUFFERS.get("h", b - a, hidden, t)
            torch.mm(s[a:b], ffn.key.weight.t(), out=h)
            h.relu_()
            h.mul_(h)
            kv = _BUFFERS.get("o", b - a, C, t)
            torch.mm(h, ffn.value.weight.t(), out=kv)
            r = _BUFFERS.get("r", b - a, C, t)
            torch.mm(s[a:b], ffn.receptance.weight.t(), out=r)
            kv.mul_(r.sigmoid_())
            out[a:b].addcmul_(kv, self.gamma2)
        return out.view(B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"BiRWKVBlock expects input of shape (B, {self.dim}, H, W), got {tuple(x.shape)}"
            )
        hw = (x.shape[2], x.shape[3])
        t = map_to_tokens(x)
        if not torch.is_grad_enabled() and t.device.type == "cpu":
            t = self._forward_inference(t, hw)
        elif self.grad_checkpointing and self.training:
            t = checkpoint(self._forward_tokens, t, hw, use_reentrant=False)
        else:
            t = self._forward_tokens(t, hw)
        return tokens_to_map(t, hw)

    def extra_repr(self) -> str:
        if self.biwkv_semantics != "formula":
            return f"dim={self.dim}, biwkv_semantics={self.biwkv_semantics!r}"
        return f"dim={self.dim}"


class ChannelMixNoShift(nn.Module):
    """The 1x1 "Channel Mix without Omni-Shift" layer of LALIC's parameter aggregation.

    ``m = mix(x)`` (1x1 convolution in -> out, with bias), then a gated squared-ReLU branch on
    ``n = LayerNorm(m)``: ``out = m + sigmoid(receptance(n)) * value(relu(key(n)) ** 2)``
    with key out -> 2*out, value 2*out -> out, receptance out -> out (bias-free). Every
    operation is per pixel, which keeps checkerboard decoding causal.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W) (channels-last view).
    """

    def __init__(self, in_ch: int, out_ch: int, hidden_rate: int = 2):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        hidden = int(hidden_rate * out_ch)
        self.mix = nn.Conv2d(in_ch, out_ch, kernel_size=1)
        self.norm = nn.LayerNorm(out_ch)
        self.key = nn.Linear(out_ch, hidden, bias=False)
        self.value = nn.Linear(hidden, out_ch, bias=False)
        self.receptance = nn.Linear(out_ch, out_ch, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the 1x1 convolution as a matmul on channels-last pixels: (B, H, W, in) -> (B, H, W, out)
        m = F.linear(x.permute(0, 2, 3, 1), self.mix.weight.flatten(1), self.mix.bias)
        n = self.norm(m)
        kv = self.value(_squared_relu(self.key(n)))
        r = self.receptance(n)
        if torch.is_grad_enabled():
            out = torch.addcmul(m, torch.sigmoid(r), kv)
        else:
            out = m.addcmul_(r.sigmoid_(), kv)
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, out_ch={self.out_ch}"
