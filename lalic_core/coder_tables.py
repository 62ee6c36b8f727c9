"""Entropy-coder tables that are the same on every machine.

CompressAI's ``update()`` rebuilds the rANS tables of an ``EntropyBottleneck`` (the
hyperprior's z) from its learned density in float32 on the model's device; the result
depends on the machine (BLAS kernels, vectorised ``tanh``/``sigmoid``): the same weights gave
26 different entries of the quantized CDF on two machines, so files did not travel. Here:

- :func:`bottleneck_tables` / :func:`gaussian_tables` compute the tables of one module in
  float64 on the CPU, one thread, with explicit elementwise products instead of ``matmul``
  (a fixed order of operations), and quantize them with CompressAI's integer routine;
- :func:`update_coder_tables` fills every module's empty tables that way (``force=True``:
  all of them); tables already present -- stored with a zoo entry or a checkpoint -- are used
  as they are, never recomputed;
- :func:`compressai_tables` is CompressAI's own ``update(force=True)`` on copies of the
  modules, as the code before stored tables did at load time (used only to recognise files
  made by that code, see :mod:`lalic_core.codec.identity`).

Tables of a module (state-dict buffers): ``_quantized_cdf`` (n, max_length + 2) int32,
``_cdf_length`` (n,) int32, ``_offset`` (n,) int32; n = z channels (EntropyBottleneck) or
the 64 scales of ``scale_table`` (GaussianConditional).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import scipy.stats
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import get_scale_table
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "TABLE_NAMES",
    "bottleneck_tables",
    "coder_modules",
    "coder_table_state",
    "compressai_tables",
    "fresh_table_state",
    "gaussian_tables",
    "has_coder_tables",
    "set_coder_tables",
    "update_coder_tables",
]

#: The buffers of a CompressAI entropy model that hold its rANS tables.
TABLE_NAMES = ("_quantized_cdf", "_offset", "_cdf_length")


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _quantize(pmf: Tensor, tail: Tensor, lengths: Tensor, precision: int) -> Tensor:
    """(n, L) float64 pmfs, (n,) tail masses, (n,) lengths -> (n, max(lengths) + 2) int32
    CDFs (CompressAI's integer quantization; the float64 values are its only input)."""
    from compressai._CXX import pmf_to_quantized_cdf

    max_length = int(lengths.max())
    cdf = torch.zeros((len(lengths), max_length + 2), dtype=torch.int32)
    for i in range(len(lengths)):
        n = int(lengths[i])
        values = pmf[i, :n].tolist() + [float(tail[i])]
        row = torch.tensor(pmf_to_quantized_cdf(values, precision), dtype=torch.int32)
        cdf[i, : row.numel()] = row
    return cdf


def _logits_cumulative(eb: EntropyBottleneck, x: Tensor) -> Tensor:
    """The bottleneck's cumulative logits in float64: x (C, 1, L) -> (C, 1, L); each layer
    out[c, i] = sum_j softplus(M)[c, i, j] * x[c, j] summed in the order j = 0, 1, ..."""
    n_layers = len(eb.filters) + 1
    for i in range(n_layers):
        matrix = F.softplus(eb.matrices[i].detach().cpu().double())
        bias = eb.biases[i].detach().cpu().double()
        out = matrix[:, :, 0:1] * x[:, 0:1, :]
        for j in range(1, matrix.shape[2]):
            out = out + matrix[:, :, j:j + 1] * x[:, j:j + 1, :]
        x = out + bias
        if i < n_layers - 1:
            factor = torch.tanh(eb.factors[i].detach().cpu().double())
            x = x + factor * torch.tanh(x)
    return x


def bottleneck_tables(eb: EntropyBottleneck) -> dict[str, Tensor]:
    """The rANS tables of an ``EntropyBottleneck`` (C channels), computed in float64 on the
    CPU with one thread: the same on every machine, whatever the module's device/dtype."""
    with torch.no_grad(), _one_thread():
        q = eb.quantiles.detach().cpu().double()[:, 0, :]  # (C, 3): lower, median, upper
        medians = q[:, 1]
        minima = torch.ceil(medians - q[:, 0]).clamp(min=0).long()
        maxima = torch.ceil(q[:, 2] - medians).clamp(min=0).long()
        lengths = minima + maxima + 1
        start = medians - minima.double()
        samples = torch.arange(int(lengths.max()), dtype=torch.float64)[None, None, :] \
            + start[:, None, None]
        lower = _logits_cumulative(eb, samples - 0.5)
        upper = _logits_cumulative(eb, samples + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()[:, 0, :]
        tail = torch.sigmoid(lower[:, 0, 0]) + torch.sigmoid(-upper[:, 0, -1])
        cdf = _quantize(pmf, tail, lengths, eb.entropy_coder_precision)
    return {"_quantized_cdf": cdf, "_offset": (-minima).int(), "_cdf_length": (lengths + 2).int()}


def gaussian_tables(gc: GaussianConditional) -> dict[str, Tensor]:
    """The rANS tables of a ``GaussianConditional`` for its ``scale_table`` (S scales),
    computed in float64 on the CPU with one thread."""
    with torch.no_grad(), _one_thread():
        scales = gc.scale_table.detach().cpu().double()
        multiplier = -float(scipy.stats.norm.ppf(float(gc.tail_mass) / 2))
        center = torch.ceil(scales * multiplier).long()
        lengths = 2 * center + 1
        samples = (torch.arange(int(lengths.max()))[None, :] - center[:, None]).abs().double()

        def cumulative(v: Tensor) -> Tensor:
            return 0.5 * torch.erfc(-(2 ** -0.5) * v)

        upper = cumulative((0.5 - samples) / scales[:, None])
        lower = cumulative((-0.5 - samples) / scales[:, None])
        cdf = _quantize(upper - lower, 2 * lower[:, 0], lengths, gc.entropy_coder_precision)
    return {"_quantized_cdf": cdf, "_offset": (-center).int(), "_cdf_length": (lengths + 2).int()}


def coder_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every EntropyBottleneck and GaussianConditional of ``model``, each
    module once (LALIC registers some modules under two names)."""
    seen, out = set(), []
    for name, module in model.named_modules():
        if isinstance(module, (EntropyBottleneck, GaussianConditional)) and id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def _module_has_tables(module: nn.Module) -> bool:
    if isinstance(module, GaussianConditional) and module.scale_table.numel() == 0:
        return False
    return all(getattr(module, t).numel() > 0 for t in TABLE_NAMES)


def has_coder_tables(model: nn.Module) -> bool:
    """Whether every entropy model of ``model`` has its tables."""
    return all(_module_has_tables(m) for _, m in coder_modules(model))


def set_coder_tables(module: nn.Module, tables: dict[str, Tensor]) -> None:
    """Replace a module's table buffers (on the module's device)."""
    device = module.quantiles.device if isinstance(module, EntropyBottleneck) \
        else module.scale_table.device
    for key in TABLE_NAMES:
        setattr(module, key, tables[key].to(device))


def update_coder_tables(model: nn.Module, *, force: bool = False,
                        scale_table: Tensor | None = None) -> bool:
    """Compute the missing tables of every entropy model of ``model`` deterministically
    (all of them with ``force``). ``scale_table``: new scales for the GaussianConditionals
    (CompressAI's default when they have none). Returns True if any table was computed."""
    updated = False
    for _, module in coder_modules(model):
        if _module_has_tables(module) and not force:
            continue
        if isinstance(module, EntropyBottleneck):
            set_coder_tables(module, bottleneck_tables(module))
        else:
            if scale_table is not None or module.scale_table.numel() == 0:
                table = scale_table if scale_table is not None else get_scale_table()
                module.scale_table = module._prepare_scale_table(table).to(
                    module.scale_table.device)
            set_coder_tables(module, _gaussian_cached(module))
        updated = True
    return updated


def coder_table_state(model: nn.Module) -> dict[str, Tensor]:
    """The table buffers of ``model.state_dict()`` (every name they appear under), on the
    CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()
            if k.rsplit(".", 1)[-1] in TABLE_NAMES}


def fresh_table_state(model: nn.Module) -> dict[str, Tensor]:
    """State-dict entries (every name they appear under) of the tables :func:`update_coder_tables`
    would compute for ``model`` now, and of the GaussianConditionals' scale tables, without
    changing ``model`` (the trainer stores them with its checkpoints)."""
    computed = {}
    for _, module in coder_modules(model):
        if isinstance(module, EntropyBottleneck):
            computed[id(module)] = bottleneck_tables(module)
        else:
            probe = copy.deepcopy(module).cpu()
            if probe.scale_table.numel() == 0:
                probe.scale_table = probe._prepare_scale_table(get_scale_table())
            computed[id(module)] = {**_gaussian_cached(probe),
                                    "scale_table": probe.scale_table.detach().clone()}
    out = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for key, value in computed.get(id(module), {}).items():
            out[f"{name}.{key}" if name else key] = value
    return out


_GAUSSIAN_CACHE: dict[tuple, dict[str, Tensor]] = {}


def _gaussian_cached(gc: GaussianConditional) -> dict[str, Tensor]:
    """:func:`gaussian_tables`, memoised on the scale table, tail mass and precision."""
    key = (gc.scale_table.detach().cpu().double().numpy().tobytes(), float(gc.tail_mass),
           int(gc.entropy_coder_precision))
    if key not in _GAUSSIAN_CACHE:
        _GAUSSIAN_CACHE.clear()
        _GAUSSIAN_CACHE[key] = gaussian_tables(gc)
    return {k: v.clone() for k, v in _GAUSSIAN_CACHE[key].items()}


def compressai_tables(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """module name -> the tables CompressAI's ``update(force=True)`` computes for it on this
    machine (on copies: ``model`` is left unchanged). Machine-dependent; for old files only."""
    out = {}
    for name, module in coder_modules(model):
        probe = copy.deepcopy(module)
        if isinstance(probe, EntropyBottleneck):
            probe.update(force=True)
        else:
            probe.update_scale_table(get_scale_table(), force=True)
        out[name] = {k: getattr(probe, k).detach().cpu() for k in TABLE_NAMES}
    return out
