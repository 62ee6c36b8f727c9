"""Configuration of a LALIC model: :class:`LALICConfig` and the named :data:`PRESETS`.

Fields (defaults = the paper model of Feng et al., CVPR 2025; see :mod:`lalic_core.models.lalic`
for what each one builds): ``N``, ``M``, ``dims`` (N1..N6), ``depths`` (L1..L4), ``groups``
(channel groups of y), ``scctx`` (entropy model of the ablation: "rwkv", "conv",
"convplus"), ``hidden_rate``, ``ctx_dim``, ``ctx_depth``, ``ctx_hidden_rate``, ``block``
(transform blocks: Bi-RWKV, or a comparison block of :mod:`lalic_core.baseline_layers`) and
``biwkv_semantics`` (what every BiWKV computes: "formula", the paper's, or "official32" /
"official64", the official chunked CUDA kernels; the pretrained official checkpoints were
trained with "official64"; see :mod:`lalic_core.ops.biwkv`). ``biwkv_semantics`` changes no
parameter: it is not in the state dict, and it is not inferred from one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from lalic_core.entropy_models import SCCTX_KINDS
from lalic_core.ops.biwkv import SEMANTICS as BIWKV_SEMANTICS

__all__ = ["BIWKV_SEMANTICS", "PRESETS", "TRANSFORM_BLOCKS", "LALICConfig"]

#: Blocks the transforms can be built from: LALIC's Bi-RWKV, and for controlled comparisons
#: the TCM-, FAT-, global-attention and ELIC-style blocks of
#: :mod:`lalic_core.baseline_layers`.
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
    biwkv_semantics: str = "formula"

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
        if self.biwkv_semantics not in BIWKV_SEMANTICS:
            raise ValueError(f"LALIC: `biwkv_semantics` must be one of {BIWKV_SEMANTICS}, got "
                             f"{self.biwkv_semantics!r}")

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
