"""load_checkpoint: official checkpoint layouts (wrapped dicts, module. prefixes, old
CompressAI entropy-bottleneck names), strict matching with readable errors, architecture
inference; synthetic checkpoint files written to tmp_path."""
from __future__ import annotations

import re

import pytest
import torch

from lalic_core.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    normalize_state_dict,
)
from lalic_core.layers import OmniShift
from lalic_core.models import LALIC, LALICConfig


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = LALIC.from_preset("tiny")
    with torch.no_grad():  # make every tensor distinctive
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.reparameterize()  # keep conv5x5_reparam consistent with the branches


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))


_SINGULAR = {"matrices": "matrix", "biases": "bias", "factors": "factor"}


def _old_eb_names(state):
    """CompressAI's older EntropyBottleneck names: matrices.N -> _matrixN, etc."""
    out = {}
    for k, v in state.items():
        m = re.match(r"(.*entropy_bottleneck\.)(matrices|biases|factors)\.(\d+)$", k)
        out[f"{m[1]}_{_SINGULAR[m[2]]}{m[3]}" if m else k] = v
    return out


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    skip = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
    return set(sa) == set(sb) and all(
        torch.equal(sa[k], sb[k]) for k in sa if not k.endswith(skip))


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model_state_dict", "module",
                                    "old_eb_names", "all"])
def test_load_checkpoint_layouts(tmp_path, source, layout):
    state = source.state_dict()
    if layout in ("module", "all"):
        state = {f"module.{k}": v for k, v in state.items()}
    if layout in ("old_eb_names", "all"):
        state = _old_eb_names(state)
        assert any("_matrix0" in k for k in state)
    obj = state
    if layout in ("state_dict", "all"):
        obj = {"state_dict": state, "epoch": 3}
    if layout == "model_state_dict":
        obj = {"model_state_dict": state, "optimizer_state_dict": {}}
    path = tmp_path / "ckpt.pth.tar"
    torch.save(obj, path)
    model = load_checkpoint(path)  # architecture inferred from the shapes
    assert model.config == source.config
    assert _same_weights(model, source)
    assert not model.training
    assert model.latent_codec.hyper.entropy_bottleneck._offset.numel() > 0  # update() done
    for m in model.modules():
        if isinstance(m, OmniShift):
            assert torch.allclose(m.conv5x5_reparam.weight, m.collapsed_kernel(), atol=1e-6)


def test_loaded_model_codes_like_the_source(tmp_path, source, image):
    path = tmp_path / "ckpt.pt"
    torch.save(source.state_dict(), path)
    model = load_checkpoint(path)
    src = source.eval()
    src.update(force=True)
    a, b = src.compress(image), model.compress(image)
    assert a["strings"] == b["strings"]
    assert torch.equal(model.decompress(a["strings"], a["shape"])["x_hat"],
                       src.decompress(a["strings"], a["shape"])["x_hat"])


def test_model_argument_preset_or_instance(tmp_path, source):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    assert _same_weights(load_checkpoint(path, model="tiny"), source)
    target = LALIC.from_preset("tiny")
    assert load_checkpoint(path, model=target) is target
    assert _same_weights(target, source)
    with pytest.raises(ValueError, match="`model`"):
        load_checkpoint(path, model=3)


def test_wrong_key_lists_missing_and_unexpected(tmp_path, source):
    state = dict(source.state_dict())
    state["g_a.1.att.kee.weight"] = state.pop("g_a.1.att.key.weight")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path)
    err = info.value
    assert err.missing == ["g_a.1.att.key.weight"]
    assert err.unexpected == ["g_a.1.att.kee.weight"]
    assert "missing keys (1)" in str(err) and "g_a.1.att.key.weight" in str(err)
    assert "unexpected keys (1)" in str(err) and "g_a.1.att.kee.weight" in str(err)
    assert isinstance(err, ValueError)


def test_shape_mismatch_with_given_model(tmp_path, source):
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as info:
        load_checkpoint(path, model="small")
    assert info.value.mismatched


def test_hyper_transforms_stored_once(tmp_path, source):
    """Only latent_codec.hyper.h_a/h_s stored (no top-level copy of the shared modules)."""
    state = {k: v for k, v in source.state_dict().items()
             if not k.startswith(("h_a.", "h_s."))}
    path = tmp_path / "once.pt"
    torch.save(state, path)
    assert _same_weights(load_checkpoint(path), source)


def test_normalize_state_dict_renames():
    t = torch.zeros(1)
    out = normalize_state_dict({
        "module.g_a.0.downsample.weight": t,
        "module.module.latent_codec.hyper.entropy_bottleneck._matrix3": t,
        "entropy_bottleneck._biases.1": t,
        "latent_codec.hyper.entropy_bottleneck.factors.2": t,
    })
    assert set(out) == {
        "g_a.0.skip.weight",
        "latent_codec.hyper.entropy_bottleneck.matrices.3",
        "entropy_bottleneck.biases.1",
        "latent_codec.hyper.entropy_bottleneck.factors.2",
    }


def test_official_listing_loads_as_paper_model(reference_dir):
    """A checkpoint dict with exactly the official keys and shapes (DataParallel prefixes,
    old entropy-bottleneck names, wrapped as the official training script saves it) loads
    into the inferred paper configuration."""
    rows = (reference_dir / "lalic_state_dict.tsv").read_text().splitlines()[1:]
    state = {}
    for row in rows:
        key, shape, dtype = row.split("\t")
        size = tuple(int(s) for s in shape.split("x"))
        state["module." + key] = torch.zeros(size, dtype=getattr(torch, dtype))
    state["module.g_a.0.weight"] = torch.rand(96, 3, 5, 5)
    model = load_checkpoint({"epoch": 40, "state_dict": _old_eb_names(state)}, update=False)
    assert model.config == LALICConfig()
    assert torch.equal(model.g_a[0].weight, state["module.g_a.0.weight"])


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(garbage)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match="state dict"):
        load_checkpoint(tensor_only)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="does not look like a LALIC"):
        load_checkpoint(other)


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_weights_only_refuses_arbitrary_pickles(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(path)
    assert "pickle code ran" not in capsys.readouterr().out
