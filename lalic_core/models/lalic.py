"""LALIC: the learned image codec of Feng et al., "Linear Attention Modeling for Learned Image
Compression", CVPR 2025 (arXiv 2502.05741).

Like the official implementation, :class:`LALIC` derives from CompressAI's
``Elic2022Official`` (ELIC, He et al. CVPR 2022) and replaces its transforms and latent
codec: Bi-RWKV transforms g_a, g_s, h_a, h_s and the RWKV-SCCTX entropy model
(:mod:`lalic_core.entropy_models`). Forward, ``compress`` and ``decompress`` are CompressAI's
(``SimpleVAECompressionModel``), so the strings, their order and the state-dict keys are
those of the official model.

Transforms (dims N1..N6, depths L1..L4; conv(k) = stride-2 Conv2d, deconv(k) = stride-2
ConvTranspose2d, each stage one flat ``nn.Sequential``)::

    g_a: conv5(3->N1), L1 x Block(N1), conv3(N1->N2), L2 x Block(N2), conv3(N2->N3),
         L3 x Block(N3), conv3(N3->N4)                             y: (B, M=N4, H/16, W/16)
    g_s: deconv3(N4->N3), L3 x Block(N3), deconv3(N3->N2), L2 x Block(N2), deconv3(N2->N1),
         L1 x Block(N1), deconv5(N1->3)
    h_a: conv5(N4->N5), L4 x Block(N5), conv5(N5->N6)              z: (B, N6, H/64, W/64)
    h_s: deconv5(N6->N5), L4 x Block(N5), deconv5(N5->N4)          hyper params: M channels

Constructor keywords (our reading of the official ones; they reproduce the official state
dict, ``../shared/reference/lalic_state_dict.tsv``, key for key and shape for shape):

- ``N`` (128): ELIC's N; in LALIC it only sets the smallest inner width of the parameter
  aggregation, 2N = 256.
- ``M`` (320): channels of y; must equal ``dims[3]``.
- ``dims`` (96, 144, 256, 320, 256, 192): N1..N6 above.
- ``depths`` (2, 4, 6, 6): L1..L4 above (L4 is the depth of h_a and of h_s).
- ``groups`` (None -> ELIC's [16, 16, 32, 64, M - 128]): channel groups of y.

Our extra keyword-only arguments (defaults = the paper model): ``scctx`` ("rwkv", "conv",
"convplus": the ablation's entropy models), ``hidden_rate`` (4, Channel Mix expansion in the
transforms), ``ctx_dim`` (None -> M: width of the channel context), ``ctx_depth`` (2 Bi-RWKV
blocks per channel context), ``ctx_hidden_rate`` (8), ``block`` ("birwkv"; "tcm" or "cnn"
build the transforms from the comparison blocks instead), ``biwkv_semantics`` ("formula";
"official32" / "official64": what the official chunked CUDA kernels compute, used by every
BiWKV of the transforms and of the SCCTX channel contexts; the official pretrained
checkpoints were trained with "official64", ../shared/reference/README.md;
:meth:`LALIC.set_biwkv_semantics` changes it on a built model).

Presets (:data:`PRESETS`, :meth:`LALIC.from_preset`): "paper" (= "2466-rwkv"), the ablation
rows "2222-conv", "2466-conv", "2466-convplus", CPU-sized "tiny" and "small", and
"tiny-tcm" / "tiny-cnn": "tiny" with TCM-style or ELIC-style transform blocks (``block``) for
a controlled comparison at equal size and entropy model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from compressai.models import Elic2022Official, SimpleVAECompressionModel
from compressai.models.utils import conv, deconv
from torch import nn

from lalic_core.entropy_models import scctx_latent_codec
from lalic_core.layers import BiRWKVBlock, OmniShift
from lalic_core.models.config import PRESETS, TRANSFORM_BLOCKS, LALICConfig
from lalic_core.models.state_dict import infer_config, load_state_dict_strict

__all__ = ["LALIC", "PRESETS", "TRANSFORM_BLOCKS", "LALICConfig", "infer_config"]


def _blocks(dim: int, depth: int, hidden_rate: int, kind: str = "birwkv",
            semantics: str = "formula") -> list[nn.Module]:
    if kind == "birwkv":
        return [BiRWKVBlock(dim, hidden_rate=hidden_rate, biwkv_semantics=semantics)
                for _ in range(depth)]
    from lalic_core.baseline_layers import make_stack  # comparison blocks only

    return list(make_stack(kind, dim, depth)) if depth else []


class LALIC(Elic2022Official):
    """LALIC (Feng et al., CVPR 2025): Bi-RWKV transforms with the RWKV-SCCTX entropy model.

    ``forward(x)``: x (B, 3, H, W) in [0, 1], H and W multiples of 64 ->
    ``{"x_hat": (B, 3, H, W), "likelihoods": {"y": (B, M, H/16, W/16),
    "z": (B, N6, H/64, W/64)}}``.
    ``compress(x)`` (after :meth:`update`) -> ``{"strings": 2 * len(groups) + 1 lists of
    bytes (one per group and checkerboard pass, then z), "shape": {"y": ..., "hyper": ...},
    "y_hat": ...}``; ``decompress(strings, shape)`` -> ``{"x_hat": ...}`` (clamped to [0, 1]).

    Omni-Shift runs in its training form in training mode and with the collapsed 5x5 kernels
    in eval mode (:meth:`reparameterize` collapses them all explicitly).
    """

    PRESETS = PRESETS
    #: Image sizes must be multiples of this (16 in g_a times 4 in h_a).
    downsampling_factor = 64

    def __init__(
        self,
        N: int = 128,
        M: int = 320,
        dims: Sequence[int] = (96, 144, 256, 320, 256, 192),
        depths: Sequence[int] = (2, 4, 6, 6),
        groups: Sequence[int] | None = None,
        *,
        scctx: str = "rwkv",
        hidden_rate: int = 4,
        ctx_dim: int | None = None,
        ctx_depth: int = 2,
        ctx_hidden_rate: int = 8,
        block: str = "birwkv",
        biwkv_semantics: str = "formula",
    ):
        config = LALICConfig(N=N, M=M, dims=dims, depths=depths, groups=groups, scctx=scctx,
                             hidden_rate=hidden_rate, ctx_dim=ctx_dim, ctx_depth=ctx_depth,
                             ctx_hidden_rate=ctx_hidden_rate, block=block,
                             biwkv_semantics=biwkv_semantics)
        # ELIC's own layers are all replaced, so skip building them (Elic2022Official.__init__)
        # and initialise the CompressAI base directly.
        SimpleVAECompressionModel.__init__(self)
        self.config = config
        self.N, self.M = config.N, config.M
        self.groups = list(config.groups)
        N1, N2, N3, N4, N5, N6 = config.dims
        L1, L2, L3, L4 = config.depths
        r, kind, sem = config.hidden_rate, config.block, config.biwkv_semantics

        self.g_a = nn.Sequential(
            conv(3, N1, kernel_size=5), *_blocks(N1, L1, r, kind, sem),
            conv(N1, N2, kernel_size=3), *_blocks(N2, L2, r, kind, sem),
            conv(N2, N3, kernel_size=3), *_blocks(N3, L3, r, kind, sem),
            conv(N3, N4, kernel_size=3),
        )
        self.g_s = nn.Sequential(
            deconv(N4, N3, kernel_size=3), *_blocks(N3, L3, r, kind, sem),
            deconv(N3, N2, kernel_size=3), *_blocks(N2, L2, r, kind, sem),
            deconv(N2, N1, kernel_size=3), *_blocks(N1, L1, r, kind, sem),
            deconv(N1, 3, kernel_size=5),
        )
        h_a = nn.Sequential(conv(N4, N5, kernel_size=5), *_blocks(N5, L4, r, kind, sem),
                            conv(N5, N6, kernel_size=5))
        h_s = nn.Sequential(deconv(N6, N5, kernel_size=5), *_blocks(N5, L4, r, kind, sem),
                            deconv(N5, N4, kernel_size=5))
        self.latent_codec = scctx_latent_codec(
            config.groups, h_a=h_a, h_s=h_s, z_channels=N6, hyper_channels=N4,
            min_ch=2 * config.N, kind=config.scctx, ctx_dim=config.ctx_dim,
            ctx_depth=config.ctx_depth, ctx_hidden_rate=config.ctx_hidden_rate,
            biwkv_semantics=sem,
        )
        # The official model also holds h_a and h_s at the top level (same modules).
        self.h_a = h_a
        self.h_s = h_s
        self.set_biwkv_semantics(sem)  # also any Bi-RWKV block of the comparison stacks

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: LALICConfig) -> LALIC:
        if not isinstance(config, LALICConfig):
            raise ValueError(f"LALIC.from_config: expected a LALICConfig, got "  # noqa: TRY004
                             f"{type(config).__name__}")
        return cls(**config.as_kwargs())

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides) -> LALIC:
        """A randomly initialised model of preset ``name`` (see :data:`PRESETS`); keyword
        arguments override configuration fields, e.g. ``from_preset("tiny", depths=...)``."""
        if name not in PRESETS:
            raise ValueError(f"LALIC.from_preset: unknown preset {name!r}; available: "
                             f"{', '.join(PRESETS)}")
        config = PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
        return cls.from_config(config)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], *,
                        biwkv_semantics: str = "formula") -> LALIC:
        """A model with the configuration inferred from ``state_dict`` and its weights
        loaded (strict; see :func:`lalic_core.models.factory.load_checkpoint` for files).
        ``biwkv_semantics`` is not in a state dict: "official64" for the official
        pretrained checkpoints."""
        config = infer_config(state_dict).replace(biwkv_semantics=biwkv_semantics)
        model = cls.from_config(config)
        load_state_dict_strict(model, state_dict)
        return model

    # ------------------------------------------------------------------ BiWKV semantics
    @property
    def biwkv_semantics(self) -> str:
        """What every BiWKV of the model computes: "formula", "official32" or "official64"."""
        return self.config.biwkv_semantics

    def set_biwkv_semantics(self, semantics: str) -> LALIC:
        """Make every BiWKV (transforms and SCCTX channel contexts) compute ``semantics``
        ("formula", "official32", "official64"); weights are unchanged. Returns self.

        A bitstream decodes correctly only under the semantics it was encoded with (the
        entropy parameters depend on it); official checkpoints: "official64"."""
        self.config = self.config.replace(biwkv_semantics=semantics)  # validates
        for module in self.modules():
            if isinstance(module, BiRWKVBlock):
                module.biwkv_semantics = semantics
        return self

    # ------------------------------------------------------------------ inference helpers
    def reparameterize(self) -> LALIC:
        """Collapse every Omni-Shift into its single 5x5 kernel (done lazily in eval mode
        anyway); returns self."""
        for module in self.modules():
            if isinstance(module, OmniShift):
                module.reparameterize()
        return self

    def _check_image(self, x: torch.Tensor, where: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"LALIC.{where}: `x` must be a (B, 3, H, W) tensor, got {shape}")
        H, W = x.shape[-2:]
        f = self.downsampling_factor
        if H % f or W % f:
            raise ValueError(
                f"LALIC.{where}: height and width of `x` must be multiples of {f}, got "
                f"{H}x{W}; pad the image first (e.g. lalic_core.codec pads centred with zeros)"
            )

    def forward(self, x: torch.Tensor) -> dict:
        self._check_image(x, "forward")
        y = self.g_a(x).contiguous()
        y_out = self.latent_codec(y)
        return {"x_hat": self.g_s(y_out["y_hat"]), "likelihoods": y_out["likelihoods"]}

    def compress(self, x: torch.Tensor) -> dict:
        """Entropy-code x: ``{"strings", "shape", "y_hat"}`` (call :meth:`update` first).

        y is made contiguous (NCHW) before coding: the decoder rebuilds y_hat in that layout,
        and the entropy parameters must be computed from identically laid-out tensors on both
        sides (a channels-last y gave the channel context convolutions other rounding, and a
        scale on a table boundary then decodes with another CDF)."""
        self._check_image(x, "compress")
        self._check_updated("compress")
        with torch.inference_mode():
            return self.latent_codec.compress(self.g_a(x).contiguous())

    def decompress(self, strings: list, shape, **kwargs) -> dict:
        """Decode ``strings`` to ``{"x_hat"}``. ``shape`` is ``compress()["shape"]`` or just
        the spatial size (h, w) of z."""
        self._check_updated("decompress")
        n_strings = 2 * len(self.groups) + 1
        if not isinstance(strings, (list, tuple)) or len(strings) != n_strings:
            got = len(strings) if isinstance(strings, (list, tuple)) else type(strings).__name__
            raise ValueError(f"LALIC.decompress: `strings` must be a list of {n_strings} lists "
                             f"of bytes (2 per channel group, then z), got {got}")
        shape = self.latent_shape(shape)
        with torch.inference_mode():
            return super().decompress(list(strings), shape, **kwargs)

    def latent_shape(self, shape) -> dict:
        """The ``shape`` argument of :meth:`decompress` from a z size (h, w) (or pass a
        ``compress()["shape"]`` dict through)."""
        if isinstance(shape, Mapping):
            return dict(shape)
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"LALIC.decompress: `shape` must be compress()['shape'] or the "
                             f"(h, w) of z, got {shape!r}") from None
        if h <= 0 or w <= 0:
            raise ValueError(f"LALIC.decompress: z size must be positive, got {(h, w)}")
        y_hw = (4 * h, 4 * w)
        return {"y": [torch.Size((g, *y_hw)) for g in self.groups],
                "hyper": torch.Size((h, w))}

    def _check_updated(self, where: str) -> None:
        eb = self.latent_codec.hyper.entropy_bottleneck
        if eb._offset.numel() == 0:
            raise RuntimeError(f"LALIC.{where}: the entropy coder tables are missing; call "
                               "model.update() (or model.update(force=True)) first")
