"""Which model made (and can decode) a ``.lalic`` file: :class:`ModelIdentity` (preset, zoo
entry, checkpoint, custom), :class:`CodecModel` (a model ready for coding with its identity
and weights fingerprint) and :func:`resolve_model`, the one way from a name (preset,
``NAME:QUALITY`` or checkpoint path) to a model ready for coding.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from lalic_core import zoo
from lalic_core.coder_tables import update_coder_tables
from lalic_core.errors import LalicWarning, ModelMismatchError
from lalic_core.models.factory import build_model, load_checkpoint, preset_names

__all__ = [
    "CHECKPOINT_HASH_BYTES",
    "ENTROPY_PATHS",
    "FINGERPRINT_BYTES",
    "IDENTITY_KINDS",
    "RANDOM_INIT_SEED",
    "CodecModel",
    "ModelIdentity",
    "as_codec_model",
    "decoding_digest",
    "decoding_state",
    "file_sha256",
    "fingerprint_coverage",
    "legacy_fingerprint",
    "model_fingerprint",
    "model_for_file",
    "resolve_model",
    "tagged_fingerprint",
]

FINGERPRINT_BYTES = 4
CHECKPOINT_HASH_BYTES = 8
RANDOM_INIT_SEED = 0  # presets without weights are built under this torch seed
#: Identity kinds, in the order of their code in the file header.
IDENTITY_KINDS = ("preset", "zoo", "checkpoint", "custom")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a file was made with: a preset, a zoo entry, a checkpoint file or a model
    given programmatically ("custom", which needs the model again to decode)."""

    kind: str
    name: str = ""
    quality: int | None = None
    checkpoint_sha256: bytes | None = None  # first CHECKPOINT_HASH_BYTES bytes

    def __post_init__(self) -> None:
        if self.kind not in IDENTITY_KINDS:
            raise ValueError(f"kind must be one of {IDENTITY_KINDS}, got {self.kind!r}")
        if self.kind == "checkpoint":
            if self.checkpoint_sha256 is None or len(self.checkpoint_sha256) != CHECKPOINT_HASH_BYTES:
                raise ValueError(f"a checkpoint identity needs {CHECKPOINT_HASH_BYTES} hash bytes")
        elif not self.name:
            raise ValueError(f"a {self.kind} identity needs a name")
        if self.kind == "zoo" and (self.quality is None or self.quality < 0):
            raise ValueError("a zoo identity needs a quality >= 0")

    @property
    def spec(self) -> str:
        """How to ask for this model with ``--model`` (checkpoints: by path only)."""
        if self.kind == "zoo":
            return f"{self.name}:{self.quality}"
        if self.kind == "checkpoint":
            return f"checkpoint sha256:{self.checkpoint_sha256.hex()}"
        return self.name

    def describe(self) -> str:
        if self.kind == "preset":
            return f"preset {self.name!r} (random-initialised weights, seed {RANDOM_INIT_SEED})"
        if self.kind == "zoo":
            return f"zoo model {self.name!r}, quality {self.quality}"
        if self.kind == "checkpoint":
            return f"checkpoint with SHA-256 {self.checkpoint_sha256.hex()}..."
        return f"custom model {self.name!r}"


class CodecModel:
    """A CompressAI-style model (``compress``/``decompress``, ``update()`` done) with its
    identity; the weights fingerprint is computed once, so the model must not change after."""

    def __init__(self, model: nn.Module, identity: ModelIdentity, *, random_init: bool = False):
        for method in ("compress", "decompress"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model must have a {method}() method (CompressAI convention)")
        _apply_masks(model)
        self.model = model
        self.identity = identity
        self.random_init = random_init

    @cached_property
    def decoding_digest(self) -> bytes:
        return decoding_digest(self.model)

    @property
    def fingerprint(self) -> bytes:
        """The fingerprint of files coded with the default float64 entropy-parameter path."""
        return self.fingerprint_for("float64")

    def fingerprint_for(self, entropy_path: str) -> bytes:
        """The fingerprint of files coded with ``entropy_path`` ("float64" or "float32")."""
        return tagged_fingerprint(self.decoding_digest, entropy_path)

    def entropy_path_of(self, fingerprint: bytes) -> str | None:
        """How a file with ``fingerprint`` was coded by this model: "float64", "float32",
        "legacy" (before stored tables: float32 with this machine's CompressAI tables), or
        None (another model)."""
        for path in ENTROPY_PATHS:
            if fingerprint == self.fingerprint_for(path):
                return path
        return "legacy" if fingerprint == self.legacy_fingerprint else None

    @cached_property
    def legacy_tables(self) -> dict[str, dict[str, torch.Tensor]]:
        """The coder tables CompressAI's ``update()`` computes on this machine (as the code
        before stored tables did when it loaded a model)."""
        from lalic_core.coder_tables import compressai_tables

        return compressai_tables(self.model)

    @cached_property
    def legacy_fingerprint(self) -> bytes:
        """The fingerprint files made before stored coder tables carry for this model, when
        made on a machine whose CompressAI tables are this machine's."""
        return legacy_fingerprint(self.model, self.legacy_tables)

    @contextmanager
    def tables_for(self, fingerprint: bytes):
        """Within this block the model decodes files with ``fingerprint``: its own tables, or,
        for the legacy fingerprint, the tables of :attr:`legacy_tables` (restored after)."""
        if self.entropy_path_of(fingerprint) != "legacy":
            yield self.model
            return
        from lalic_core.coder_tables import coder_modules, set_coder_tables

        saved = []
        for name, module in coder_modules(self.model):
            saved.append((module, {k: getattr(module, k) for k in ("_quantized_cdf", "_offset",
                                                                    "_cdf_length")}))
            set_coder_tables(module, self.legacy_tables[name])
        try:
            yield self.model
        finally:
            for module, tables in saved:
                set_coder_tables(module, tables)

    @property
    def device(self) -> torch.device:
        tensor = next(iter(self.model.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters (float32 unless converted, e.g. double())."""
        floats = (p.dtype for p in self.model.parameters() if p.is_floating_point())
        return next(floats, torch.float32)

    @property
    def downsampling_factor(self) -> int:
        """The smallest image-size multiple the model codes exactly (64 when not declared)."""
        factor = getattr(self.model, "downsampling_factor", 64)
        return int(factor) if isinstance(factor, int) and factor > 0 else 64

    def __repr__(self) -> str:
        return f"CodecModel({type(self.model).__name__}, {self.identity.describe()})"


def _apply_masks(model: nn.Module) -> None:
    """Zero the masked weights of CompressAI's masked (checkerboard) convolutions, as their
    first forward pass does in place, so the weights and their fingerprint do not change when
    a freshly initialised model is first used."""
    from compressai.layers import MaskedConv2d

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MaskedConv2d):
                module.weight.mul_(module.mask)


def as_codec_model(model: CodecModel | nn.Module, name: str | None = None) -> CodecModel:
    """Wrap a bare model as a "custom" :class:`CodecModel` (decoding needs it again)."""
    if isinstance(model, CodecModel):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a CodecModel or an nn.Module, got {type(model).__name__}")
    return CodecModel(model, ModelIdentity("custom", name or type(model).__name__))


#: Modules that only encode (analysis transforms): not covered by the fingerprint.
ENCODER_ONLY = ("g_a", "h_a")
#: EntropyBottleneck entries that decide its coder tables only (covered through the tables).
DENSITY_ONLY = ("matrices", "biases", "factors", "target")
#: Entries never used to decode: training-only bounds.
TRAINING_ONLY = ("likelihood_lower_bound",)
FINGERPRINT_DOMAIN = b"lalic-decoding-fingerprint-2;"
#: Precisions of the entropy-parameter path a file can be coded with (the default first).
ENTROPY_PATHS = ("float64", "float32")


def decoding_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries that decide decoding, in state-dict order: the weights of the
    decoder (g_s), of the entropy-parameter path (h_s, SCCTX channel-context, checkerboard
    context and parameter-aggregation networks), the coder tables (``_quantized_cdf``,
    ``_offset``, ``_cdf_length``), the scale tables and bounds and the hyper-latent medians.

    Left out: the encoder-only g_a and h_a (under any name), the EntropyBottleneck's density
    network (it decides nothing but its tables, which are covered), training-only bounds, and
    the Omni-Shift ``*_reparam`` kernels (computed from the covered branch weights)."""
    from compressai.entropy_models import EntropyBottleneck

    bottlenecks = {name for name, m in model.named_modules(remove_duplicate=False)
                   if isinstance(m, EntropyBottleneck)}
    out = {}
    for key, tensor in model.state_dict(keep_vars=False).items():
        parts = key.split(".")
        if any(p in ENCODER_ONLY or p in TRAINING_ONLY or p.endswith("_reparam") for p in parts):
            continue
        owner = next((b for b in bottlenecks if key.startswith(b + ".")), None)
        if owner is not None and key[len(owner) + 1:].split(".")[0] in DENSITY_ONLY:
            continue
        out[key] = tensor
    return out


def _sha256(items, domain: bytes = b"") -> bytes:
    digest = hashlib.sha256(domain)
    for name, tensor in items:
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tensor.numel()};".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.digest()


def _digest(items, domain: bytes = b"") -> bytes:
    return _sha256(items, domain)[:FINGERPRINT_BYTES]


def decoding_digest(model: nn.Module) -> bytes:
    """SHA-256 of :func:`decoding_state` (names, dtypes, sizes, bytes)."""
    return _sha256(decoding_state(model).items(), FINGERPRINT_DOMAIN)


def tagged_fingerprint(digest: bytes, entropy_path: str) -> bytes:
    """The 4-byte fingerprint of a :func:`decoding_digest` coded with ``entropy_path``."""
    if entropy_path not in ENTROPY_PATHS:
        raise ValueError(f"entropy_path must be one of {ENTROPY_PATHS}, got {entropy_path!r}")
    return hashlib.sha256(FINGERPRINT_DOMAIN + entropy_path.encode() + b";" + digest
                          ).digest()[:FINGERPRINT_BYTES]


def model_fingerprint(model: nn.Module, entropy_path: str = "float64") -> bytes:
    """The 4 bytes that a file coded by ``model`` with the entropy-parameter path in
    ``entropy_path`` ("float64", the default, or "float32") carries: a hash of exactly what
    decides decoding (:func:`decoding_state`, coder tables included) and of that precision,
    and of nothing computed on the machine (tables are stored or computed
    deterministically), so the same model has the same fingerprint on every machine and
    device; the decoder reads the precision back from it."""
    return tagged_fingerprint(decoding_digest(model), entropy_path)


def legacy_fingerprint(model: nn.Module, tables: dict[str, dict[str, torch.Tensor]]) -> bytes:
    """The fingerprint of files made before coder tables were stored (format 1 files of
    lalic_core up to commit 38523cf): SHA-256 of the whole state dict, with the coder tables
    ``tables`` (module name -> tables) in place of the model's."""
    by_key = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for src_name, src in model.named_modules():
            if src is module and src_name in tables:
                for t, value in tables[src_name].items():
                    by_key[f"{name}.{t}" if name else t] = value
    state = model.state_dict()
    return _digest((k, by_key.get(k, v)) for k, v in state.items())


def fingerprint_coverage(model: nn.Module) -> list[str]:
    """What :func:`model_fingerprint` covers, one line per part (for ``lalic info``)."""
    from compressai.entropy_models import EntropyBottleneck

    from lalic_core.coder_tables import TABLE_NAMES, coder_modules

    parts: dict[str, list[int]] = {}
    tables = 0
    for key, tensor in decoding_state(model).items():
        if key.rsplit(".", 1)[-1] in TABLE_NAMES:
            tables += tensor.numel()
            continue
        head = key.split(".")
        part = ".".join(head[:4]) if head[0] == "latent_codec" and head[1] == "y" else \
            ".".join(head[:2]) if head[0] == "latent_codec" else head[0]
        count = parts.setdefault(part, [0, 0])
        count[0] += 1
        count[1] += tensor.numel()
    lines = [f"{part}: {n} tensors, {v:,} values" for part, (n, v) in parts.items()]
    mods = coder_modules(model)
    n_eb = sum(isinstance(m, EntropyBottleneck) for _, m in mods)
    lines.append(f"coder tables: {n_eb} EntropyBottleneck + {len(mods) - n_eb} "
                 f"GaussianConditional ({tables:,} values)")
    lines.append("not covered: " + ", ".join(ENCODER_ONLY) + " (encoder only), the "
                 "EntropyBottleneck density network (decides only its tables)")
    return lines


def file_sha256(path: str | os.PathLike) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _zoo_entries() -> list[tuple[str, int]]:
    return [(str(n), int(q)) for n, q in zoo.available()]


def _prepare(model: nn.Module, device: str | torch.device) -> nn.Module:
    update_coder_tables(model)  # only missing tables; stored ones are used as they are
    return model.to(device).eval()


def _load_checkpoint(path: Path, device, biwkv_semantics: str | None = None) -> CodecModel:
    identity = ModelIdentity("checkpoint", checkpoint_sha256=file_sha256(path)[:CHECKPOINT_HASH_BYTES])
    model = load_checkpoint(path, biwkv_semantics=biwkv_semantics)
    return CodecModel(_prepare(model, device), identity)


def _with_semantics(codec_model: CodecModel, biwkv_semantics: str | None) -> CodecModel:
    if biwkv_semantics is None:
        return codec_model
    setter = getattr(codec_model.model, "set_biwkv_semantics", None)
    if callable(setter):
        setter(biwkv_semantics)
    elif biwkv_semantics != "formula":
        raise ValueError(f"biwkv_semantics={biwkv_semantics!r} needs a LALIC model, got "
                         f"{type(codec_model.model).__name__}")
    return codec_model


def _load_zoo(name: str, quality: int, device) -> CodecModel:
    entries = _zoo_entries()
    if (name, quality) not in entries:
        known = ", ".join(f"{n}:{q}" for n, q in entries) or "none installed"
        raise ValueError(f"model: unknown zoo entry '{name}:{quality}' (available: {known})")
    return CodecModel(_prepare(zoo.load(name, quality), device), ModelIdentity("zoo", name, quality))


def _load_preset(name: str, device, warn_random: bool) -> CodecModel:
    model = build_model(name, seed=RANDOM_INIT_SEED)
    if warn_random:
        warnings.warn(
            f"preset {name!r} has random-initialised weights (seed {RANDOM_INIT_SEED}): the "
            "bitstream is real but the reconstruction is meaningless; use a zoo entry "
            "NAME:QUALITY or a checkpoint file for real compression",
            LalicWarning, stacklevel=3,
        )
    return CodecModel(_prepare(model, device), ModelIdentity("preset", name), random_init=True)


def resolve_model(spec: str | os.PathLike, *, device: str | torch.device = "cpu",
                  warn_random: bool = True, biwkv_semantics: str | None = None) -> CodecModel:
    """The model named by ``spec``, ready for coding (eval mode, ``update()`` done):

    - a checkpoint file path -> :func:`lalic_core.models.factory.load_checkpoint`, identified by
      the file's SHA-256;
    - ``NAME:QUALITY`` -> the zoo entry (:func:`lalic_core.zoo.load`);
    - a preset name -> ``LALIC.from_preset(name)`` with random weights (seed 0, the same in
      every process, so files still decode), with a :class:`LalicWarning`.

    ``biwkv_semantics`` ("formula", "official32", "official64"): what the model's BiWKV
    computes; None keeps the default (zoo, presets: "formula"; checkpoints: what the file
    records, else "formula"; official checkpoints were trained with "official64").
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str) or not text:
        raise ValueError(f"model must be a preset, NAME:QUALITY or a checkpoint path, got {spec!r}")
    path = Path(text)
    if path.is_file():
        return _load_checkpoint(path, device, biwkv_semantics)
    if path.is_dir():
        raise ValueError(f"model: {text!r} is a folder, not a checkpoint file")
    name, sep, quality = text.rpartition(":")
    if sep and name and quality.isdigit():
        return _with_semantics(_load_zoo(name, int(quality), device), biwkv_semantics)
    presets = preset_names()
    if text in presets:
        return _with_semantics(_load_preset(text, device, warn_random), biwkv_semantics)
    if any(c in text for c in "/\\") or path.suffix in {".pt", ".pth", ".tar", ".ckpt"}:
        raise FileNotFoundError(f"checkpoint file not found: {text}")
    zoo_names = ", ".join(f"{n}:{q}" for n, q in _zoo_entries()) or "none installed"
    raise ValueError(
        f"model: {text!r} is not a checkpoint file, a zoo entry NAME:QUALITY ({zoo_names}) "
        f"or a preset ({', '.join(presets)})"
    )


def model_for_file(header, model: CodecModel | nn.Module | str | None,
                    device: str | torch.device) -> CodecModel:
    """The model that decodes ``header``: the given one (a model, a spec for
    :func:`resolve_model`), or, for None, the preset or zoo entry its identity names; raises
    :class:`ModelMismatchError` when its weights fingerprint is not the file's."""
    ident = header.identity
    if model is None:
        if ident.kind == "checkpoint":
            raise ModelMismatchError(
                f"this file was made with a checkpoint (SHA-256 {ident.checkpoint_sha256.hex()}...); "
                "pass that checkpoint file with --model"
            )
        if ident.kind == "custom":
            raise ModelMismatchError(
                f"this file was made with a custom model ({ident.name!r}); pass that model to decode it"
            )
        if ident.kind == "zoo":  # by kind, never by re-reading the name as a --model spec
            entries = _zoo_entries()
            if (ident.name, ident.quality) not in entries:
                known = ", ".join(f"{n}:{q}" for n, q in entries) or "none installed"
                raise ModelMismatchError(f"this file was made with {ident.describe()}, which is "
                                         f"not installed here (available: {known})")
            codec_model = _load_zoo(ident.name, ident.quality, device)
        elif ident.name in preset_names():
            codec_model = _load_preset(ident.name, device, warn_random=False)
        else:
            raise ModelMismatchError(f"this file names an unknown preset {ident.name!r} "
                                     f"(known: {', '.join(preset_names())})")
    elif isinstance(model, (str, os.PathLike)):
        codec_model = resolve_model(model, device=device, warn_random=False)
    else:
        codec_model = as_codec_model(model)

    given = codec_model.identity
    if ident.kind == "checkpoint" and given.kind == "checkpoint" \
            and given.checkpoint_sha256 != ident.checkpoint_sha256:
        raise ModelMismatchError(
            f"wrong checkpoint: the file was made with SHA-256 {ident.checkpoint_sha256.hex()}..., "
            f"the given checkpoint has {given.checkpoint_sha256.hex()}..."
        )
    if codec_model.entropy_path_of(header.fingerprint) is None:
        raise ModelMismatchError(
            f"this file was made by another model: it needs {ident.describe()} with decoding "
            f"fingerprint {header.fingerprint.hex()}, the model given is {given.describe()} with "
            f"fingerprint {codec_model.fingerprint.hex()} (its decoder weights, entropy-parameter "
            f"networks and coder tables; files made before stored coder tables: "
            f"{codec_model.legacy_fingerprint.hex()} with this machine's recomputed tables, so "
            f"such a file made on another machine whose CompressAI tables differ cannot be "
            f"decoded here: re-encode it with this version)"
        )
    return codec_model
