"""The LALIC model: official state-dict layout, presets, configuration checks, forward and
exact compress/decompress (tiny preset, small images)."""
from __future__ import annotations

import pytest
import torch
from compressai.models import Elic2022Official

from lalic_core.layers import OmniShift
from lalic_core.models import LALIC, PRESETS, LALICConfig, infer_config


def _read_tsv(path):
    rows = path.read_text().splitlines()[1:]
    out = {}
    for row in rows:
        key, shape, dtype = row.split("\t")
        out[key] = (tuple(int(s) for s in shape.split("x")), dtype)
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LALIC.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def tiny_updated(tiny):
    tiny.update(force=True)
    return tiny


def _image(h, w, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a smooth image plus a little noise: latents of moderate size, like a photograph
    base = torch.rand(batch, 3, h // 8, w // 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(batch, 3, h, w, generator=g)).clamp(0, 1)


# ------------------------------------------------------------------ official layout
def test_state_dict_equals_official_listing(reference_dir):
    """Keys, shapes and dtypes of LALIC() equal the official model's (1623 entries), in order."""
    expected = _read_tsv(reference_dir / "lalic_state_dict.tsv")
    assert len(expected) == 1623
    state = LALIC().state_dict()
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    assert not missing and not unexpected, (missing[:10], unexpected[:10])
    wrong = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
    assert not wrong, list(wrong.items())[:10]
    assert list(got) == list(expected)


def test_lalic_is_an_elic_and_shares_hyper_transforms():
    model = LALIC.from_preset("tiny")
    assert isinstance(model, Elic2022Official)
    assert model.h_a is model.latent_codec.hyper.h_a
    assert model.h_s is model.latent_codec.hyper.h_s


def test_conv_scctx_channel_context_is_elics():
    """"Conv" SCCTX uses ELIC's channel context and spatial context layer for layer."""
    ours = LALIC.from_preset("2466-conv").latent_codec.y.state_dict()
    elic = Elic2022Official(N=128, M=320).latent_codec.y.state_dict()
    for prefix in ("channel_context.", "latent_codec.y3.context_prediction."):
        a = {k: v.shape for k, v in ours.items() if k.startswith(prefix)}
        b = {k: v.shape for k, v in elic.items() if k.startswith(prefix)}
        assert a and a == b


# ------------------------------------------------------------------ presets and config
def test_presets():
    assert set(PRESETS) >= {"paper", "2222-conv", "2466-conv", "2466-convplus", "2466-rwkv",
                             "tiny", "small"}
    assert PRESETS["paper"] == PRESETS["2466-rwkv"] == LALICConfig()
    assert PRESETS["2222-conv"].depths == (2, 2, 2, 2)
    assert PRESETS["2466-convplus"].scctx == "convplus"
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        LALIC.from_preset("nope")


def test_default_constructor_keywords():
    model = LALIC()
    assert model.config == LALICConfig(N=128, M=320, dims=(96, 144, 256, 320, 256, 192),
                                       depths=(2, 4, 6, 6), groups=(16, 16, 32, 64, 192))
    same = LALIC(N=128, M=320, dims=[96, 144, 256, 320, 256, 192], depths=[2, 4, 6, 6],
                 groups=[16, 16, 32, 64, 192])
    assert same.config == model.config


@pytest.mark.parametrize("name", ["tiny", "small", "2222-conv", "2466-convplus", "paper"])
def test_infer_config_roundtrip(name):
    config = PRESETS[name]
    model = LALIC.from_config(config)
    assert infer_config(model.state_dict()) == config


@pytest.mark.parametrize("kwargs, match", [
    ({"M": 256}, "dims\\[3\\]"),
    ({"groups": (16, 16, 32, 64, 100)}, "summing to M"),
    ({"depths": (2, 4, 6)}, "4 entries"),
    ({"dims": (96, 144, -1, 320, 256, 192)}, "dims\\[2\\]"),
    ({"scctx": "transformer"}, "scctx"),
    ({"N": 0}, "`N`"),
    ({"dims": 96}, "`dims` must be a sequence of 6 ints"),
    ({"groups": "16,16"}, "`groups` must be a sequence of ints"),
])
def test_bad_config_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LALIC(**kwargs)


def test_from_preset_overrides():
    model = LALIC.from_preset("tiny", depths=(0, 1, 0, 1))
    assert model.config.depths == (0, 1, 0, 1)
    with pytest.raises(ValueError, match="unknown configuration field"):
        LALIC.from_preset("tiny", width=3)


# ------------------------------------------------------------------ forward
def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = LALIC.from_preset("tiny").train()
    x = _image(64, 128, batch=2)
    out = model(x)
    c = model.config
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (2, c.M, 4, 8)
    assert out["likelihoods"]["z"].shape == (2, c.dims[5], 1, 2)
    loss = (out["x_hat"] - x).square().mean() - sum(
        lk.log2().sum() for lk in out["likelihoods"].values()) / x.numel()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and "quantiles" not in n]
    assert not no_grad, no_grad  # every trainable tensor is used (DDP without unused params)


def test_train_and_eval_forward_agree_on_reconstruction(tiny):
    """Training mode (Omni-Shift branches) and eval mode (collapsed kernels) compute the same
    network; the reconstruction uses STE rounding in both."""
    x = _image(64, 64)
    with torch.no_grad():
        tiny.train()
        a = tiny(x)["x_hat"]
        tiny.eval()
        b = tiny(x)["x_hat"]
    assert torch.allclose(a, b, atol=1e-4)
    assert all(not m.training for m in tiny.modules() if isinstance(m, OmniShift))


@pytest.mark.parametrize("h, w", [(48, 64), (64, 100), (32, 32)])
def test_forward_rejects_sizes_not_multiple_of_64(tiny, h, w):
    with pytest.raises(ValueError, match="multiples of 64"):
        tiny(torch.rand(1, 3, h, w))


def test_forward_rejects_non_rgb(tiny):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny(torch.rand(1, 1, 64, 64))


# ------------------------------------------------------------------ compress / decompress
@pytest.mark.parametrize("h, w, batch", [(64, 64, 1), (128, 64, 2)])
def test_compress_decompress_is_exact(tiny_updated, h, w, batch):
    model = tiny_updated
    x = _image(h, w, batch, seed=h + w)
    with torch.no_grad():
        ref = model(x)["x_hat"].clamp(0, 1)
    enc = model.compress(x)
    groups = len(model.groups)
    assert len(enc["strings"]) == 2 * groups + 1  # (group, anchor/non-anchor) steps, then z
    assert all(len(s) == batch and all(isinstance(b, bytes) for b in s)
               for s in enc["strings"])
    dec = model.decompress(enc["strings"], enc["shape"])
    assert dec["x_hat"].shape == x.shape
    assert (dec["x_hat"] - ref).abs().max().item() <= 1e-4
    # the z size alone is enough to decode
    dec2 = model.decompress(enc["strings"], enc["shape"]["hyper"])
    assert torch.equal(dec2["x_hat"], dec["x_hat"])


def test_string_structure_matches_elic():
    """A LALIC with ELIC's five groups gives ELIC's 11 strings (10 for y, then z)."""
    torch.manual_seed(0)
    model = LALIC(N=32, M=160, dims=(16, 24, 32, 160, 32, 32), depths=(0, 0, 0, 1),
                  groups=(16, 16, 32, 64, 32), ctx_dim=32, ctx_depth=1).eval()
    model.update()
    enc = model.compress(_image(64, 64))
    assert len(enc["strings"]) == 11
    assert enc["shape"]["hyper"] == (1, 1)
    assert [tuple(s) for s in enc["shape"]["y"]] == [(g, 4, 4) for g in model.groups]


def test_compress_needs_update():
    model = LALIC.from_preset("tiny").eval()
    with pytest.raises(RuntimeError, match="update"):
        model.compress(_image(64, 64))


def test_decompress_rejects_wrong_string_count(tiny_updated):
    with pytest.raises(ValueError, match="strings"):
        tiny_updated.decompress([[b""]] * 3, (1, 1))
    with pytest.raises(ValueError, match="shape"):
        tiny_updated.decompress([[b""]] * (2 * len(tiny_updated.groups) + 1), "1x1")


def test_fast_entropy_coding_gives_compressai_strings(tiny_updated):
    """Our GaussianConditional.build_indexes (bucketize) and CheckerboardLatentCodec
    compress/decompress (no anchor-pass context conv) are CompressAI's, bit for bit."""
    from compressai.entropy_models import GaussianConditional as CompressAIGC
    from compressai.latent_codecs import CheckerboardLatentCodec as CompressAICB

    from lalic_core import entropy_models as em

    model = tiny_updated
    x = _image(64, 128, batch=2, seed=7)
    ours = model.compress(x)
    gc = model.latent_codec.y.latent_codec.y0.y.gaussian_conditional
    scales = torch.rand(3, 4, 5, 6) * 300
    assert torch.equal(em.GaussianConditional.build_indexes(gc, scales),
                       CompressAIGC.build_indexes(gc, scales))
    patched = []
    try:
        for m in model.modules():
            if isinstance(m, em.CheckerboardLatentCodec):
                m.compress = CompressAICB.compress.__get__(m)
                m.decompress = CompressAICB.decompress.__get__(m)
                patched.append(m)
            if isinstance(m, em.GaussianConditional):
                m.build_indexes = CompressAIGC.build_indexes.__get__(m)
                patched.append(m)
        theirs = model.compress(x)
        dec_theirs = model.decompress(ours["strings"], ours["shape"])["x_hat"]
    finally:
        for m in patched:
            for name in ("compress", "decompress", "build_indexes"):
                m.__dict__.pop(name, None)
    assert ours["strings"] == theirs["strings"]
    assert torch.equal(dec_theirs, model.decompress(ours["strings"], ours["shape"])["x_hat"])


def _scales_seen(model, run):
    """The scales each GaussianConditional turns into CDF indexes during ``run()``."""
    from lalic_core.entropy_models import GaussianConditional

    seen = []
    original = GaussianConditional.build_indexes

    def spy(self, scales):
        seen.append(scales.clone())
        return original(self, scales)

    GaussianConditional.build_indexes = spy
    try:
        run()
    finally:
        GaussianConditional.build_indexes = original
    return seen


def _assert_decoder_sees_encoder_scales(model, x, enc_threads, dec_threads):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(enc_threads)
        holder = {}
        enc_scales = _scales_seen(model, lambda: holder.update(enc=model.compress(x)))
        torch.set_num_threads(dec_threads)
        enc = holder["enc"]
        dec_scales = _scales_seen(model, lambda: model.decompress(enc["strings"], enc["shape"]))
    finally:
        torch.set_num_threads(threads)
    assert len(enc_scales) == len(dec_scales) == 2 * len(model.groups)
    for a, b in zip(enc_scales, dec_scales):
        assert torch.equal(a, b)  # bit for bit, or a scale on a table boundary mis-decodes


def test_decoder_computes_the_encoders_entropy_parameters(tiny_updated):
    """Decoding is exact only if the decoder computes bit-identical scales; this failed when
    the encoder's y was channels-last and the decoder's NCHW (other convolution rounding)."""
    _assert_decoder_sees_encoder_scales(tiny_updated, _image(64, 128, seed=11), 2, 2)
    assert tiny_updated.compress(_image(64, 64))["y_hat"].is_contiguous()


def test_decoding_does_not_depend_on_thread_count():
    torch.manual_seed(0)
    model = LALIC.from_preset("small").eval()
    model.update()
    _assert_decoder_sees_encoder_scales(model, _image(128, 128, seed=11), 2, 1)
