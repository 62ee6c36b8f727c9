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
build the transforms from the comparison blocks instead).

Presets (:data:`PRESETS`, :meth:`LALIC.from_preset`): "paper" (= "2466-rwkv"), the ablation
rows "2222-conv", "2466-conv", "2466-convplus", CPU-sized "tiny" and "small", and
"tiny-tcm" / "tiny-cnn": "tiny" with TCM-style or ELIC-style transform blocks (``block``) for
a controlled comparison at equal size and entropy model.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from compressai.models import Elic2022Official, SimpleVAECompressionModel
from compressai.models.utils import conv, deconv
from torch import nn

from lalic_core.entropy_models import SCCTX_KINDS, scctx_latent_codec
from lalic_core.layers import BiRWKVBlock, OmniShift

__all__ = ["LALIC", "PRESETS", "TRANSFORM_BLOCKS", "LALICConfig", "infer_config"]

#: Blocks the transforms can be built from: LALIC's Bi-RWKV, and for controlled comparisons
#: the TCM-style and ELIC-style blocks of :mod:`lalic_core.analysis.baselines`.
TRANSFORM_BLOCKS = ("birwkv", "tcm", "fat", "global", "cnn")


@dataclass(frozen=True)
class LALICConfig:
    """Architecture of a LALIC model (see the module docstring for each field)."""

    N: int = 128
    M: int = 320
    dims: tuple[int, ...] = (96, 144, 256, 320, 256, 192)
    depths: tuple[int, ...] = (2, 4, 6, 6)
    groups: tuple[int, ...] | None = None
    scctx: str = "rwkv"
    hidden_rate: int = 4
    ctx_dim: int | None = None
    ctx_depth: int = 2
    ctx_hidden_rate: int = 8
    block: str = "birwkv"

    def __post_init__(self):
        def positive_int(name, value, allow_zero=False):
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok or value < (0 if allow_zero else 1):
                kind = "non-negative" if allow_zero else "positive"
                raise ValueError(f"LALIC: `{name}` must be a {kind} int, got {value!r}")

        def int_tuple(name, value, length):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                count = f"{length} " if length else ""
                raise ValueError(f"LALIC: `{name}` must be a sequence of {count}ints, "  # noqa: TRY004
                                 f"got {value!r}")
            value = tuple(value)
            if length is not None and len(value) != length:
                raise ValueError(f"LALIC: `{name}` must have {length} entries, got {value!r}")
            object.__setattr__(self, name, value)
            return value

        positive_int("N", self.N)
        positive_int("M", self.M)
        for i, d in enumerate(int_tuple("dims", self.dims, 6)):
            positive_int(f"dims[{i}]", d)
        for i, d in enumerate(int_tuple("depths", self.depths, 4)):
            positive_int(f"depths[{i}]", d, allow_zero=True)
        if self.dims[3] != self.M:
            raise ValueError(f"LALIC: `dims[3]` (the channels of y) must equal `M` = {self.M}, "
                             f"got dims = {self.dims}")
        if self.groups is None:
            if self.M <= 128:
                raise ValueError(f"LALIC: `groups` must be given when M <= 128 (the default "
                                 f"[16, 16, 32, 64, M - 128] needs M > 128), got M = {self.M}")
            object.__setattr__(self, "groups", (16, 16, 32, 64, self.M - 128))
        groups = int_tuple("groups", self.groups, None)
        for i, g in enumerate(groups):
            positive_int(f"groups[{i}]", g)
        if not groups or sum(groups) != self.M:
            raise ValueError(f"LALIC: `groups` must be positive ints summing to M = {self.M}, "
                             f"got {groups} (sum {sum(groups)})")
        if self.scctx not in SCCTX_KINDS:
            raise ValueError(f"LALIC: `scctx` must be one of {SCCTX_KINDS}, got {self.scctx!r}")
        positive_int("hidden_rate", self.hidden_rate)
        if self.ctx_dim is None:
            object.__setattr__(self, "ctx_dim", self.M)
        positive_int("ctx_dim", self.ctx_dim)
        positive_int("ctx_depth", self.ctx_depth, allow_zero=True)
        positive_int("ctx_hidden_rate", self.ctx_hidden_rate)
        if self.block not in TRANSFORM_BLOCKS:
            raise ValueError(f"LALIC: `block` must be one of {TRANSFORM_BLOCKS}, got "
                             f"{self.block!r}")

    def replace(self, **changes) -> LALICConfig:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"LALIC: unknown configuration field(s) {unknown}; known: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        if "M" in changes and "groups" not in changes:
            changes["groups"] = None
        if "M" in changes and "ctx_dim" not in changes and self.ctx_dim == self.M:
            changes["ctx_dim"] = None
        return dataclasses.replace(self, **changes)

    def as_kwargs(self) -> dict:
        """Keyword arguments of :class:`LALIC` that build this configuration."""
        d = dataclasses.asdict(self)
        for name in ("dims", "depths", "groups"):
            d[name] = list(d[name])
        return d


#: Named configurations. "paper" is the official default model (= the ablation's RWKV row).
PRESETS: dict[str, LALICConfig] = {
    "paper": LALICConfig(),
    # the paper's ablation table: depths L1..L4 and the kind of SCCTX
    "2222-conv": LALICConfig(depths=(2, 2, 2, 2), scctx="conv"),
    "2466-conv": LALICConfig(scctx="conv"),
    "2466-convplus": LALICConfig(scctx="convplus"),
    "2466-rwkv": LALICConfig(),
    # CPU-sized models for training here (2 cores); same architecture, narrower and shallower.
    "tiny": LALICConfig(N=32, M=96, dims=(24, 32, 64, 96, 64, 48), depths=(1, 1, 1, 1),
                        groups=(8, 8, 16, 64), ctx_dim=64, ctx_depth=1, ctx_hidden_rate=4),
    "small": LALICConfig(N=64, M=160, dims=(48, 64, 96, 160, 96, 64), depths=(1, 2, 2, 2),
                         groups=(8, 8, 16, 32, 96), ctx_dim=128, ctx_depth=1,
                         ctx_hidden_rate=4),
    # Controlled comparisons with "tiny": the same skeleton and the same RWKV-SCCTX entropy
    # model, only the transform blocks differ (parameter counts within a few percent):
    # TCM-style blocks in (W, SW) pairs as TCM stacks them, ELIC's 3 residual bottlenecks.
    "tiny-tcm": LALICConfig(N=32, M=96, dims=(24, 32, 64, 96, 64, 48), depths=(2, 2, 2, 2),
                            groups=(8, 8, 16, 64), ctx_dim=64, ctx_depth=1, ctx_hidden_rate=4,
                            block="tcm"),
    "tiny-cnn": LALICConfig(N=32, M=96, dims=(24, 32, 64, 96, 64, 48), depths=(3, 3, 3, 3),
                            groups=(8, 8, 16, 64), ctx_dim=64, ctx_depth=1, ctx_hidden_rate=4,
                            block="cnn"),
    # FAT-style (frequency-aware window attention) and global softmax attention: the other two
    # rows of the paper's ERF comparison, same skeleton and entropy model as "tiny".
    "tiny-fat": LALICConfig(N=32, M=96, dims=(24, 32, 64, 96, 64, 48), depths=(2, 2, 2, 2),
                            groups=(8, 8, 16, 64), ctx_dim=64, ctx_depth=1, ctx_hidden_rate=4,
                            block="fat"),
    "tiny-global": LALICConfig(N=32, M=96, dims=(24, 32, 64, 96, 64, 48), depths=(2, 2, 2, 2),
                               groups=(8, 8, 16, 64), ctx_dim=64, ctx_depth=1,
                               ctx_hidden_rate=4, block="global"),
}


def _blocks(dim: int, depth: int, hidden_rate: int, kind: str = "birwkv") -> list[nn.Module]:
    if kind == "birwkv":
        return [BiRWKVBlock(dim, hidden_rate=hidden_rate) for _ in range(depth)]
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
    ):
        config = LALICConfig(N=N, M=M, dims=dims, depths=depths, groups=groups, scctx=scctx,
                             hidden_rate=hidden_rate, ctx_dim=ctx_dim, ctx_depth=ctx_depth,
                             ctx_hidden_rate=ctx_hidden_rate, block=block)
        # ELIC's own layers are all replaced, so skip building them (Elic2022Official.__init__)
        # and initialise the CompressAI base directly.
        SimpleVAECompressionModel.__init__(self)
        self.config = config
        self.N, self.M = config.N, config.M
        self.groups = list(config.groups)
        N1, N2, N3, N4, N5, N6 = config.dims
        L1, L2, L3, L4 = config.depths
        r, kind = config.hidden_rate, config.block

        self.g_a = nn.Sequential(
            conv(3, N1, kernel_size=5), *_blocks(N1, L1, r, kind),
            conv(N1, N2, kernel_size=3), *_blocks(N2, L2, r, kind),
            conv(N2, N3, kernel_size=3), *_blocks(N3, L3, r, kind),
            conv(N3, N4, kernel_size=3),
        )
        self.g_s = nn.Sequential(
            deconv(N4, N3, kernel_size=3), *_blocks(N3, L3, r, kind),
            deconv(N3, N2, kernel_size=3), *_blocks(N2, L2, r, kind),
            deconv(N2, N1, kernel_size=3), *_blocks(N1, L1, r, kind),
            deconv(N1, 3, kernel_size=5),
        )
        h_a = nn.Sequential(conv(N4, N5, kernel_size=5), *_blocks(N5, L4, r, kind),
                            conv(N5, N6, kernel_size=5))
        h_s = nn.Sequential(deconv(N6, N5, kernel_size=5), *_blocks(N5, L4, r, kind),
                            deconv(N5, N4, kernel_size=5))
        self.latent_codec = scctx_latent_codec(
            config.groups, h_a=h_a, h_s=h_s, z_channels=N6, hyper_channels=N4,
            min_ch=2 * config.N, kind=config.scctx, ctx_dim=config.ctx_dim,
            ctx_depth=config.ctx_depth, ctx_hidden_rate=config.ctx_hidden_rate,
        )
        # The official model also holds h_a and h_s at the top level (same modules).
        self.h_a = h_a
        self.h_s = h_s

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
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> LALIC:
        """A model with the configuration inferred from ``state_dict`` and its weights
        loaded (strict; see :func:`lalic_core.checkpoint.load_checkpoint` for files)."""
        from lalic_core.checkpoint import load_state_dict_strict

        model = cls.from_config(infer_config(state_dict))
        load_state_dict_strict(model, state_dict)
        return model

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


def _sorted_indices(state_dict: Mapping, prefix: str, suffix: str) -> list[int]:
    out = []
    for key in state_dict:
        if key.startswith(prefix) and key.endswith(suffix):
            middle = key[len(prefix):-len(suffix)]
            if middle.isdigit():
                out.append(int(middle))
    return sorted(set(out))


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> LALICConfig:
    """The :class:`LALICConfig` whose model has the keys and shapes of ``state_dict``
    (official or ours, after key normalisation), read from the tensor shapes.

    N only matters where it clips an inner width of the parameter aggregation (2N); when
    no width is clipped, 128 (or the largest N that reproduces the shapes) is returned.
    """
    def shape(key):
        if key not in state_dict:
            raise ValueError(f"infer_config: the state dict has no key {key!r}; it does not "
                             "look like a LALIC model (pass `model=` or a preset)")
        return tuple(state_dict[key].shape)

    def stage(prefix):
        convs = [i for i in _sorted_indices(state_dict, prefix, ".weight")
                 if len(shape(f"{prefix}{i}.weight")) == 4]
        blocks = _sorted_indices(state_dict, prefix, ".gamma1")
        return convs, blocks

    convs, blocks = stage("g_a.")
    if len(convs) != 4:
        raise ValueError(f"infer_config: expected 4 convolutions in g_a, found {len(convs)}; "
                         "the state dict does not look like a LALIC model (pass `model=` "
                         "or a preset)")
    dims = [shape(f"g_a.{i}.weight")[0] for i in convs]
    depths = [sum(convs[j] < b < convs[j + 1] for b in blocks) for j in range(3)]
    hprefix = "h_a." if "h_a.0.weight" in state_dict else "latent_codec.hyper.h_a."
    hconvs, hblocks = stage(hprefix)
    if len(hconvs) != 2:
        raise ValueError(f"infer_config: expected 2 convolutions in h_a, found {len(hconvs)}")
    dims += [shape(f"{hprefix}{i}.weight")[0] for i in hconvs]
    depths.append(len(hblocks))
    hidden_rate = 4
    for prefix, idx in (("g_a.", blocks), (hprefix, hblocks)):
        if idx:
            key = f"{prefix}{idx[0]}.ffn.key.weight"
            hidden_rate = shape(key)[0] // shape(key)[1]
            break

    lc = "latent_codec.y."
    groups = []
    while f"{lc}latent_codec.y{len(groups)}.context_prediction.weight" in state_dict:
        groups.append(shape(f"{lc}latent_codec.y{len(groups)}.context_prediction.weight")[1])
    if not groups:
        raise ValueError("infer_config: no channel groups found (keys "
                         f"'{lc}latent_codec.y0.context_prediction.weight', ...)")
    M = dims[3]

    kw: dict = {}
    if f"{lc}latent_codec.y0.entropy_parameters.0.mix.weight" in state_dict:
        scctx = "rwkv"
        if len(groups) > 1:
            cc = f"{lc}channel_context.y1."
            kw["ctx_dim"] = shape(f"{cc}0.weight")[0]
            ctx_blocks = _sorted_indices(state_dict, cc, ".gamma1")
            kw["ctx_depth"] = len(ctx_blocks)
            if ctx_blocks:
                key = f"{cc}{ctx_blocks[0]}.ffn.key.weight"
                kw["ctx_hidden_rate"] = shape(key)[0] // shape(key)[1]
    else:
        scctx = "conv"
        if len(groups) > 1:
            cc = f"{lc}channel_context.y1."
            n_convs = len(_sorted_indices(state_dict, cc, ".weight"))
            if n_convs == 4:
                scctx = "convplus"
                kw["ctx_dim"] = shape(f"{cc}0.weight")[0]
            elif n_convs != 3:
                raise ValueError(f"infer_config: unknown channel context with {n_convs} convs")

    # N: from an inner width of the parameter aggregation that the 2N floor clipped.
    layer = ".mix.weight" if scctx == "rwkv" else ".weight"
    clipped, ramp_min = set(), None
    for k, g in enumerate(groups):
        in_ch = 2 * g + (k > 0) * 2 * g + M
        ramp = torch.linspace(in_ch, 2 * g, 4).floor().int().tolist()
        for j, i in enumerate((0, 2), start=1):
            width = shape(f"{lc}latent_codec.y{k}.entropy_parameters.{i}{layer}")[0]
            if width != ramp[j]:
                clipped.add(width)
            ramp_min = ramp[j] if ramp_min is None else min(ramp_min, ramp[j])
    if len(clipped) > 1 or any(c % 2 for c in clipped):
        raise ValueError(f"infer_config: inconsistent parameter-aggregation widths {clipped}")
    N = clipped.pop() // 2 if clipped else min(128, ramp_min // 2)
    return LALICConfig(N=N, M=M, dims=tuple(dims), depths=tuple(depths), groups=tuple(groups),
                       scctx=scctx, hidden_rate=hidden_rate, **kw)
