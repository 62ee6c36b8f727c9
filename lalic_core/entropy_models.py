"""LALIC's entropy model: the RWKV space-channel context model (RWKV-SCCTX)
and the convolutional SCCTX variants of the paper's ablation table, assembled from
CompressAI's latent codecs exactly as CompressAI's ``Elic2022Official`` assembles ELIC's:

    HyperpriorLatentCodec
    ├── hyper: HyperLatentCodec(EntropyBottleneck(z_ch), h_a, h_s)        -> params (M ch.)
    └── y: ChannelGroupsLatentCodec(groups)                               (uneven groups)
         ├── channel_context["y{k}"], k >= 1: y_hat[:k] -> 2 * groups[k] channels
         └── latent_codec["y{k}"]: CheckerboardLatentCodec
              ├── context_prediction: CheckerboardMaskedConv2d 5x5, groups[k] -> 2 * groups[k]
              ├── entropy_parameters: parameter aggregation, 1x1 only (pointwise)
              │      in = 2*g_k (spatial) + 2*g_k (channel, k >= 1) + M (hyper) -> 2*g_k
              └── y: GaussianConditionalLatentCodec (scales, means)

so ``compress`` returns one string per (group, anchor / non-anchor pass) for y, then z: the
same list structure, key names and bitstreams as the official implementation. Two CompressAI
classes are subclassed for speed only, with identical outputs and strings (tested):
:class:`GaussianConditional` (one-pass ``build_indexes``) and :class:`CheckerboardLatentCodec`
(no spatial-context convolution for the anchor pass, whose context is zero).
:class:`ChannelGroupsLatentCodec` is CompressAI's with one fix: ``decompress`` builds y_hat in
the dtype of the hyper parameters (CompressAI uses torch's default dtype, so a float64 model
failed to decode unless float64 was the default).

Every Bi-RWKV block of the channel contexts computes BiWKV with ``biwkv_semantics``
("formula", "official32", "official64"; :mod:`lalic_core.ops.biwkv`).

SCCTX kinds (``kind=``):

- ``"rwkv"`` (LALIC): channel context = conv3x3(sum(groups[:k]) -> ctx_dim), ``ctx_depth``
  Bi-RWKV blocks (hidden rate ``ctx_hidden_rate``), conv1x1(ctx_dim -> 2*g_k); parameter
  aggregation = three :class:`~lalic_core.layers.ChannelMixNoShift` layers ramping linearly
  in width from input to output (inner widths >= 2N), with no activation between them
  (``nn.Identity`` keeps CompressAI's ``sequential_channel_ramp`` indices 0, 2, 4).
- ``"conv"`` (ELIC's SCCTX, He et al. CVPR 2022, as in CompressAI's ``Elic2022Official``):
  channel context conv5x5(sum(groups[:k]) -> 224), ReLU, conv5x5(224 -> 128), ReLU,
  conv5x5(128 -> 2*g_k); parameter aggregation = three 1x1 convolutions with ReLUs, same
  ramp of widths.
- ``"convplus"`` (the ablation's "Conv Plus SCCTX"; our reading, the paper gives no layer
  list): ELIC's SCCTX with the channel context widened to four 5x5 convolutions
  sum(groups[:k]) -> W -> W -> W -> 2*g_k with ReLUs, W = ``ctx_dim`` (320 by default), so
  that the whole entropy model is about as large as the RWKV one: 30.0M parameters (channel
  contexts 27.3M, parameter aggregation 2.7M) against RWKV-SCCTX's 30.7M (18.2M + 12.6M);
  whole models 64.6M against 65.4M (the paper's rows: 62.1M against 63.2M).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.entropy_models import GaussianConditional as _GaussianConditional
from compressai.latent_codecs import ChannelGroupsLatentCodec as _ChannelGroupsLatentCodec
from compressai.latent_codecs import CheckerboardLatentCodec as _CheckerboardLatentCodec
from compressai.latent_codecs import (
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d, sequential_channel_ramp
from compressai.models.utils import conv
from torch import Tensor, nn

from lalic_core.layers import BiRWKVBlock, ChannelMixNoShift

__all__ = [
    "SCCTX_KINDS",
    "ChannelGroupsLatentCodec",
    "CheckerboardLatentCodec",
    "GaussianConditional",
    "conv_channel_context",
    "conv_param_aggregation",
    "convplus_channel_context",
    "rwkv_channel_context",
    "rwkv_param_aggregation",
    "scctx_latent_codec",
]

SCCTX_KINDS = ("rwkv", "conv", "convplus")


class GaussianConditional(_GaussianConditional):
    """CompressAI's GaussianConditional with a one-pass ``build_indexes``.

    CompressAI compares the scales with each of the 64 table entries in turn (three full
    passes per entry); ``torch.bucketize`` gives the same indexes (the number of table
    entries below each scale, ``scale_table[:-1]`` being sorted) in one pass, so the
    bitstreams are unchanged.
    """

    def build_indexes(self, scales: Tensor) -> Tensor:
        scales = self.lower_bound_scale(scales)
        boundaries = self.scale_table[:-1].to(device=scales.device, dtype=scales.dtype)
        return torch.bucketize(scales.contiguous(), boundaries, out_int32=True)


class CheckerboardLatentCodec(_CheckerboardLatentCodec):
    """CompressAI's two-pass checkerboard codec (He et al. CVPR 2021) with the same
    bitstreams; ``compress``/``decompress`` skip the spatial-context convolution of the anchor
    pass, whose output CompressAI computes and then zeroes."""

    def compress(self, y: Tensor, side_params: Tensor) -> dict:
        n, c, h, w = y.shape
        side_params_ = self.unembed(side_params)
        y_ = self.unembed(y)
        y_hat_ = side_params.new_zeros((2, n, c, h, w // 2))
        strings = []
        for i in range(2):
            params_i = self.entropy_parameters(self.merge(self._context(y_hat_, i), side_params_[i]))
            out = self.latent_codec["y"].compress(y_[i], params_i)
            y_hat_[i] = out["y_hat"]
            strings.append(out["strings"][0])
        y_hat = self.embed(y_hat_)
        return {"strings": strings, "shape": y_hat.shape[1:], "y_hat": y_hat}

    def decompress(self, strings, shape, side_params: Tensor, **kwargs) -> dict:
        if len(strings) != 2:
            raise ValueError(f"checkerboard: expected 2 strings (anchors, non-anchors), got "
                             f"{len(strings)}")
        n = len(strings[0])
        c, h, w = shape
        side_params_ = self.unembed(side_params)
        y_hat_ = side_params.new_zeros((2, n, c, h, w // 2))
        for i in range(2):
            params_i = self.entropy_parameters(self.merge(self._context(y_hat_, i), side_params_[i]))
            out = self.latent_codec["y"].decompress([strings[i]], (h, w // 2), params_i)
            y_hat_[i] = out["y_hat"]
        return {"y_hat": self.embed(y_hat_)}

    def _context(self, y_hat_: Tensor, i: int) -> Tensor:
        """Spatial context of pass i (0: anchors, none; 1: non-anchors, from the anchors)."""
        n, h, w_half = y_hat_.shape[1], y_hat_.shape[3], y_hat_.shape[4]
        out_ch = self.context_prediction.out_channels
        if i == 0:
            return y_hat_.new_zeros((n, out_ch, h, w_half))
        return self.unembed(self.context_prediction(self.embed(y_hat_)))[1]


class ChannelGroupsLatentCodec(_ChannelGroupsLatentCodec):
    """CompressAI's ChannelGroupsLatentCodec; ``decompress`` keeps the dtype of the model
    (y_hat is allocated like ``side_params``, not in torch's default dtype)."""

    def decompress(self, strings, shape, side_params: Tensor, **kwargs) -> dict:
        n = len(strings[0])
        if not all(len(s) == n for s in strings):
            raise ValueError("channel groups: every string list must hold one string per image")
        per_group = len(strings) // len(self.groups)
        y_shape = (sum(s[0] for s in shape), *shape[0][1:])
        y_hat = side_params.new_zeros((n, *y_shape))
        y_hat_ = y_hat.split(self.groups, dim=1)
        for k in range(len(self.groups)):
            params = self._get_ctx_params(k, side_params, y_hat_)
            out = self.latent_codec[f"y{k}"].decompress(
                strings[per_group * k: per_group * (k + 1)], shape[k], params)
            y_hat_[k][:] = out["y_hat"]
        return {"y_hat": y_hat}


def rwkv_channel_context(
    in_ch: int, out_ch: int, dim: int = 320, depth: int = 2, hidden_rate: int = 8,
    *, biwkv_semantics: str = "formula",
) -> nn.Sequential:
    """RWKV channel context g_ch^(k): (B, in_ch, h, w) -> (B, out_ch, h, w)."""
    return nn.Sequential(
        conv(in_ch, dim, kernel_size=3, stride=1),
        *[BiRWKVBlock(dim, hidden_rate=hidden_rate, biwkv_semantics=biwkv_semantics)
          for _ in range(depth)],
        conv(dim, out_ch, kernel_size=1, stride=1),
    )


def conv_channel_context(in_ch: int, out_ch: int) -> nn.Sequential:
    """ELIC's convolutional channel context: 5x5 convs in -> 224 -> 128 -> out with ReLUs."""
    return nn.Sequential(
        conv(in_ch, 224, kernel_size=5, stride=1),
        nn.ReLU(inplace=True),
        conv(224, 128, kernel_size=5, stride=1),
        nn.ReLU(inplace=True),
        conv(128, out_ch, kernel_size=5, stride=1),
    )


def convplus_channel_context(in_ch: int, out_ch: int, width: int = 320) -> nn.Sequential:
    """"Conv Plus" channel context: 5x5 convs in -> W -> W -> W -> out with ReLUs."""
    return nn.Sequential(
        conv(in_ch, width, kernel_size=5, stride=1),
        nn.ReLU(inplace=True),
        conv(width, width, kernel_size=5, stride=1),
        nn.ReLU(inplace=True),
        conv(width, width, kernel_size=5, stride=1),
        nn.ReLU(inplace=True),
        conv(width, out_ch, kernel_size=5, stride=1),
    )


def rwkv_param_aggregation(in_ch: int, out_ch: int, min_ch: int) -> nn.Sequential:
    """LALIC's parameter aggregation: three ChannelMixNoShift layers, widths ramping linearly
    from in_ch to out_ch (inner widths at least ``min_ch``), no activation in between."""
    return sequential_channel_ramp(
        in_ch, out_ch, min_ch=min_ch, num_layers=3, interp="linear",
        make_layer=ChannelMixNoShift, make_act=nn.Identity,
    )


def conv_param_aggregation(in_ch: int, out_ch: int, min_ch: int) -> nn.Sequential:
    """ELIC's parameter aggregation: three 1x1 convolutions with ReLUs, same width ramp."""
    return sequential_channel_ramp(
        in_ch, out_ch, min_ch=min_ch, num_layers=3, interp="linear",
        make_layer=nn.Conv2d, make_act=lambda: nn.ReLU(inplace=True),
        kernel_size=1, stride=1, padding=0,
    )


def scctx_latent_codec(
    groups: Sequence[int],
    *,
    h_a: nn.Module,
    h_s: nn.Module,
    z_channels: int,
    hyper_channels: int,
    min_ch: int,
    kind: str = "rwkv",
    ctx_dim: int = 320,
    ctx_depth: int = 2,
    ctx_hidden_rate: int = 8,
    biwkv_semantics: str = "formula",
) -> HyperpriorLatentCodec:
    """The whole latent codec (hyperprior + channel groups + checkerboard) of LALIC.

    Args:
        groups: channel-group sizes of y (LALIC: [16, 16, 32, 64, 192]).
        h_a, h_s: hyper analysis / synthesis transforms (shared with the model, as in the
            official implementation, where they appear under both ``h_a`` and
            ``latent_codec.hyper.h_a``).
        z_channels: channels of z (the EntropyBottleneck's).
        hyper_channels: channels of the hyper parameters that h_s outputs (M).
        min_ch: smallest inner width of the parameter aggregation (2N).
        kind: "rwkv", "conv" or "convplus" (see the module docstring).
        ctx_dim, ctx_depth, ctx_hidden_rate: width, number of Bi-RWKV blocks and their hidden
            rate in the RWKV channel context (``ctx_dim`` is also the Conv Plus width).
        biwkv_semantics: BiWKV semantics of the channel-context blocks ("formula",
            "official32", "official64").
    """
    if kind not in SCCTX_KINDS:
        raise ValueError(f"scctx: `kind` must be one of {SCCTX_KINDS}, got {kind!r}")
    groups = [int(g) for g in groups]

    def channel_context(k: int) -> nn.Module:
        in_ch, out_ch = sum(groups[:k]), 2 * groups[k]
        if kind == "rwkv":
            return rwkv_channel_context(in_ch, out_ch, ctx_dim, ctx_depth, ctx_hidden_rate,
                                        biwkv_semantics=biwkv_semantics)
        if kind == "conv":
            return conv_channel_context(in_ch, out_ch)
        return convplus_channel_context(in_ch, out_ch, ctx_dim)

    make_param_aggregation = rwkv_param_aggregation if kind == "rwkv" else conv_param_aggregation

    def group_codec(k: int) -> CheckerboardLatentCodec:
        g = groups[k]
        in_ch = 2 * g + (k > 0) * 2 * g + hyper_channels
        return CheckerboardLatentCodec(
            latent_codec={"y": GaussianConditionalLatentCodec(
                gaussian_conditional=GaussianConditional(None), quantizer="ste")},
            context_prediction=CheckerboardMaskedConv2d(g, 2 * g, kernel_size=5, stride=1,
                                                        padding=2),
            entropy_parameters=make_param_aggregation(in_ch, 2 * g, min_ch),
        )

    return HyperpriorLatentCodec(
        latent_codec={
            "y": ChannelGroupsLatentCodec(
                groups=groups,
                channel_context={f"y{k}": channel_context(k) for k in range(1, len(groups))},
                latent_codec={f"y{k}": group_codec(k) for k in range(len(groups))},
            ),
            "hyper": HyperLatentCodec(
                entropy_bottleneck=EntropyBottleneck(z_channels), h_a=h_a, h_s=h_s,
                quantizer="ste",
            ),
        },
    )
