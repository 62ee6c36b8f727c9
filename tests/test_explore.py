"""lalic_core.explore (what notebooks 04-07 compute) and lalic_core.paper (the paper's numbers).

Small, seeded inputs throughout: tiny models, 32-64 pixel images, one preset of the paper size
at 64x64. The paper's numbers are checked against the copies used elsewhere
(:data:`lalic_core.complexity.PAPER_NUMBERS`, :data:`lalic_core.rd.PAPER_BD_RATES`), against the
packaged RD points and, when the project's shared folder is present, against its reference notes.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pytest
import torch
from torch import nn

from lalic_core import explore, paper
from lalic_core.complexity import PAPER_NUMBERS, count_params
from lalic_core.models.lalic import LALIC
from lalic_core.rd import PAPER_BD_RATES, RDCurve, load_rd, paper_bd_rates, published_rd_dir

#: Typed from the paper (Feng et al., CVPR 2025, arXiv 2502.05741), independently of
#: lalic_core.paper. Table 1: GFLOPs, params (M), BD-rate (%) vs VTM-9.1 on Kodak, CLIC Pro
#: Valid, Tecnick. Ablation table (transform depths, SCCTX kind): GFLOPs, params (M), Kodak
#: BD-rate (%) relative to its first row, keyed by our preset names.
TYPED_TABLE1 = {"ELIC": (332, 33.3, -7.02, -1.19, -7.64),
                "TCM-large": (701, 75.9, -11.73, -9.41, -10.93),
                "FAT": (245, 69.8, -14.56, -10.79, -14.40),
                "MLIC++": (443, 83.3, -15.02, -14.45, -17.21),
                "LALIC": (286, 63.2, -15.26, -15.41, -17.63)}
TYPED_ABLATION = {"2222-conv": (164, 27.6, 0.00), "2466-conv": (239, 42.6, -1.68),
                  "2466-convplus": (304, 62.1, -2.74), "2466-rwkv": (286, 63.2, -3.50)}
REFERENCE_README = (Path(os.environ.get("LALIC_SHARED_DIR", Path(__file__).resolve().parents[2]
                                        / "shared")) / "reference" / "README.md")


def paper_tables() -> tuple[dict, dict]:
    """(Table 1, ablation) as the project's reference notes transcribe them
    (../shared/reference/README.md: "Paper numbers" table and "Ablation" line), checked against
    the typed copies; the typed copies where the notes are absent (a clone without ../shared)."""
    if not REFERENCE_README.is_file():
        print(f"paper tables: {REFERENCE_README} absent, using the values typed from the paper")
        return TYPED_TABLE1, TYPED_ABLATION
    text = REFERENCE_README.read_text()
    table1 = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in TYPED_TABLE1:
            table1[cells[0]] = tuple(float(c.rstrip("%")) for c in (cells[2], cells[3], *cells[4:]))
    presets = {("2,2,2,2", "Conv"): "2222-conv", ("2,4,6,6", "Conv"): "2466-conv",
               ("2,4,6,6", "Conv Plus"): "2466-convplus", ("2,4,6,6", "RWKV"): "2466-rwkv"}
    ablation = {presets[depths, kind]: (float(g), float(p), float(bd)) for depths, kind, g, p, bd
                in re.findall(r"(\d,\d,\d,\d) \+ (Conv Plus|Conv|RWKV) SCCTX: (\d+) ?G(?:FLOPs)?, "
                              r"([\d.]+)M, (-?[\d.]+)%", text)}
    assert table1 == TYPED_TABLE1, f"{REFERENCE_README}: Table 1 differs from the paper's"
    assert ablation == TYPED_ABLATION, f"{REFERENCE_README}: ablation differs from the paper's"
    return table1, ablation


# --------------------------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------------------------
def test_complexity_paper_numbers_are_the_papers():
    table1, ablation = paper_tables()
    assert set(PAPER_NUMBERS) == {*ablation, "paper"}
    for preset, (gflops, params_m, bd_rate) in ablation.items():
        assert PAPER_NUMBERS[preset] == (gflops, params_m), preset
        row = paper.ABLATION[preset]
        assert (row["gflops"], row["params_m"], row["bd_rate"]) == (gflops, params_m, bd_rate)
    assert PAPER_NUMBERS["paper"] == table1["LALIC"][:2]


def test_ablation_presets_exist():
    from lalic_core.models.lalic import PRESETS

    assert set(paper.ABLATION) <= set(PRESETS)


def test_rd_paper_bd_rates_are_the_papers():
    table1, _ = paper_tables()
    columns = {"Kodak": 2, "CLIC Pro Valid": 3, "Tecnick": 4}
    assert {(d, m) for d, m, *_ in PAPER_BD_RATES} == {
        ("Kodak", "LALIC"), ("CLIC Pro Valid", "LALIC"), ("Tecnick", "LALIC"), ("Kodak", "ELIC")}
    for dataset, model, _, _, value in PAPER_BD_RATES:
        assert value == table1[model][columns[dataset]], (dataset, model)
    for model, values in table1.items():
        row = paper.TABLE1[model]
        assert (row["gflops"], row["params_m"], row["bd_kodak"], row["bd_clic"],
                row["bd_tecnick"]) == values, model


def test_packaged_points_reproduce_the_paper_bd_rates():
    rows = paper_bd_rates(published_rd_dir())
    assert len(rows) == len(PAPER_BD_RATES)
    for row in rows:
        assert row["difference"] == pytest.approx(row["bd_rate"] - row["paper"])
        assert abs(row["difference"]) < 0.05, row


def test_paper_numbers_match_the_reference_notes(reference_dir):
    text = (reference_dir / "README.md").read_text()
    for name, row in paper.TABLE1.items():
        time = row.get("decode_time_note") or f"{row['decode_time_s']:.3f}"
        line = (f"| {name} | {time} | {row['gflops']:.0f} | {row['params_m']:.1f} | "
                f"{row['bd_kodak']:.2f}% | {row['bd_clic']:.2f}% | {row['bd_tecnick']:.2f}% |")
        assert line in text, line
    for row in paper.ABLATION.values():
        assert f"{row['gflops']:.0f}" in text and f"{row['params_m']:.1f}M" in text
        assert f"{row['bd_rate']:.2f}%" in text
    for name, row in paper.ATTENTION_ABLATION.items():
        assert f"{name} {row['extra_gflops']:.2f}, {row['loss']:.4f}" in text, name


def test_markdown_tables():
    table = paper.markdown_table([{"a": "x", "b": 1.234}, {"a": "y", "b": None},
                                  {"a": "z", "b": 286.0}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "| --- | ---: |", "| x | 1.23 |", "| y | - |",
                                  "| z | 286 |"]
    digits = paper.markdown_table([{"a": "x", "b": 1.23456, "c": 0.5}], [("b", "B"), ("c", "C")],
                                  digits={"b": 3})
    assert digits.splitlines()[-1] == "| 1.235 | 0.50 |"
    with pytest.raises(ValueError, match="`digits`"):
        paper.markdown_table([], [("a", "A")], digits={"b": 1})
    t1 = paper.table1_markdown()
    assert len(t1.splitlines()) == 2 + len(paper.TABLE1)
    assert "| TCM-large | 0.151 |" in t1 and "| FAT | >10 |" in t1 and "-15.26" in t1
    ablation = paper.ablation_markdown()
    for preset, row in paper.ABLATION.items():
        assert f"| {preset} | {row['label']} |" in ablation
    assert "| BiWKV + Shift | 6.80 | 0.5551 |" in paper.attention_ablation_markdown()


# --------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory):
    """A random 'tiny' LALIC (the zoo_or_random fallback: an empty weights folder)."""
    empty = tmp_path_factory.mktemp("empty-zoo")
    return explore.zoo_or_random("lalic-tiny", 3, weights_dir=empty, seed=1)


def test_zoo_or_random_falls_back_to_random_with_a_note(random_tiny, tmp_path):
    choice = random_tiny
    assert not choice.trained and choice.preset == "tiny"
    assert "not in the zoo" in choice.note and "random" in choice.note and "seed 1" in choice.note
    assert not choice.model.training
    reference = LALIC.from_preset("tiny")
    assert count_params(choice.model) == count_params(reference)
    again = explore.zoo_or_random("lalic-tiny", 3, weights_dir=tmp_path, seed=1)
    other = explore.zoo_or_random("lalic-tiny", 3, weights_dir=tmp_path, seed=2)
    a, b, c = (m.model.state_dict() for m in (choice, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    # an explicit preset for a name the zoo does not know
    custom = explore.zoo_or_random("mine", 1, preset="tiny-cnn", weights_dir=tmp_path)
    assert not custom.trained and custom.preset == "tiny-cnn"


def test_zoo_or_random_takes_the_zoo_entry():
    from lalic_core import zoo

    # the zoo ships in the package: a missing entry is a broken package, not a skip
    assert ("lalic-tiny", 3) in zoo.available(), "zoo entry lalic-tiny:3 is not installed"
    choice = explore.zoo_or_random("lalic-tiny", 3)
    assert choice.trained and choice.preset == "tiny"
    assert "trained weights from the zoo" in choice.note
    loaded = zoo.load("lalic-tiny", 3)
    a, b = choice.model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zoo_or_random_rejects_an_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="preset="):
        explore.zoo_or_random("no-such-model", 3, weights_dir=tmp_path)


def test_image_crops():
    crops = explore.image_crops(3, 32, seed=5)
    assert crops.shape == (3, 3, 32, 32) and crops.dtype == torch.float32
    assert 0 <= float(crops.min()) and float(crops.max()) <= 1
    assert torch.equal(crops, explore.image_crops(3, 32, seed=5))
    assert not torch.equal(crops, explore.image_crops(3, 32, seed=6))
    images = explore.demo_images()
    assert images.shape == (2, 3, 256, 384)
    assert explore.image_crops(1, 256).shape == (1, 3, 256, 256)


@pytest.mark.parametrize(("n", "size", "name"), [(0, 32, "n"), (2.0, 32, "n"), (1, 4, "size"),
                                                 (1, 257, "size"), (True, 32, "n")])
def test_image_crops_bad_arguments(n, size, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        explore.image_crops(n, size)


# --------------------------------------------------------------------------------------------
# ERF helpers
# --------------------------------------------------------------------------------------------
def test_centred_shares():
    sides, shares = explore.centred_shares(torch.ones(5, 5))
    assert sides == [1, 3, 5]
    assert shares == pytest.approx([1 / 25, 9 / 25, 1.0])
    delta = torch.zeros(7, 6)
    delta[3, 3] = 2.0
    sides, shares = explore.centred_shares(delta)
    assert sides[0] == 1 and shares == pytest.approx([1.0] * len(sides))
    ramp = torch.rand(9, 9, generator=torch.Generator().manual_seed(0))
    _, shares = explore.centred_shares(ramp)
    assert all(a <= b for a, b in itertools.pairwise(shares)) and shares[-1] == pytest.approx(1)


@pytest.mark.parametrize("bad", [torch.zeros(4, 4), torch.ones(2, 4, 4), torch.ones(0, 3)])
def test_centred_shares_bad_maps(bad):
    with pytest.raises(ValueError, match="`scaled`"):
        explore.centred_shares(bad)


def test_display_map_ranges():
    m = torch.tensor([[1.0, 0.1], [1e-3, 1e-9]]) * 7
    linear = explore.display_map(m, "linear")
    assert linear == pytest.approx(torch.tensor([[1.0, 0.1], [1e-3, 1e-9]], dtype=torch.float64))
    log = explore.display_map(m, "log", decades=5)
    assert log == pytest.approx(torch.tensor([[1.0, 0.8], [0.4, 0.0]], dtype=torch.float64))
    default = explore.display_map(m)  # log over DECADES decades
    assert float(default.max()) == 1.0 and float(default.min()) == 0.0
    assert float(default[0, 1]) == pytest.approx(1 - 1 / explore.DECADES)
    assert float(explore.display_map(-m, "linear").abs().max()) == 0  # nothing positive: zeros


@pytest.mark.parametrize(("kwargs", "name"), [({"scale": "sqrt"}, "scale"),
                                              ({"decades": 0}, "decades"),
                                              ({"decades": 2.5}, "decades")])
def test_display_map_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        explore.display_map(torch.ones(3, 3), **kwargs)


def test_g_a_stages(random_tiny):
    g_a = random_tiny.model.g_a
    convs = [i for i, m in enumerate(g_a) if isinstance(m, nn.Conv2d)]
    first = explore.g_a_stages(g_a, 1)
    assert len(first) == convs[1] and isinstance(first[0], nn.Conv2d)
    assert len(explore.g_a_stages(g_a, len(convs))) == len(g_a)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert explore.g_a_stages(g_a, 1)(x).shape[-1] == 32
        assert explore.g_a_stages(g_a, len(convs))(x).shape == g_a(x).shape


def test_g_a_stages_bad_input(random_tiny):
    g_a = random_tiny.model.g_a
    n = sum(isinstance(m, nn.Conv2d) for m in g_a)
    for stages in (0, n + 1, "2"):
        with pytest.raises(ValueError, match="`stages`"):
            explore.g_a_stages(g_a, stages)
    with pytest.raises(ValueError, match="`g_a`"):
        explore.g_a_stages(nn.Sequential(nn.ReLU(), nn.Identity()), 1)
    with pytest.raises(TypeError, match="`g_a`"):
        explore.g_a_stages(nn.Conv2d(3, 8, 3), 1)


def test_erf_lab_small():
    lab = explore.ERFLab(dim=8, n_images=1, seed=0)
    view = lab.erf("birwkv", 1, 32)
    assert view.result.contributions.shape == (32, 32)
    assert view.result.scaled.shape == (32, 32)
    assert view.display().shape == (32, 32)
    assert view.label == "Bi-RWKV" and view.note == "" and "1 random" in view.source
    ratios = [view.result.area_ratios[t][1] for t in sorted(view.result.area_ratios)]
    assert all(0 < r <= 1 for r in ratios)
    assert all(a <= b for a, b in itertools.pairwise(ratios)), ratios
    assert lab.erf("birwkv", 1, 32) is view  # cached
    # one global Bi-RWKV block reaches the whole input, one CNN block a few pixels (t = 0.99)
    cnn = lab.erf("cnn", 1, 32)
    assert view.result.area_ratios[0.99][1] > 0.5 > cnn.result.area_ratios[0.99][1]


@pytest.mark.parametrize(("call", "name"), [
    (lambda: explore.ERFLab(dim=0), "dim"),
    (lambda: explore.ERFLab(n_images=0), "n_images"),
    (lambda: explore.ERFLab(dim=4).erf("nope", 1, 32), "kind"),
    (lambda: explore.ERFLab(dim=4).erf("cnn", 0, 32), "depth"),
    (lambda: explore.ERFLab(dim=4).erf("cnn", 1, 300), "size"),
    (lambda: explore.ERFLab(dim=4).erf("cnn", 1, 32, weights="trained"), "weights"),
])
def test_erf_lab_bad_arguments(call, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        call()


# --------------------------------------------------------------------------------------------
# Correlation and SCCTX decoding
# --------------------------------------------------------------------------------------------
def test_compare_correlations_on_a_random_tiny_model(random_tiny):
    images = explore.image_crops(1, 64, seed=0)
    results = explore.compare_correlations({"random": random_tiny.model}, images, k=1)
    assert list(results) == ["random"]
    result = results["random"]
    assert result.overall.shape == (3, 3)
    assert float(result.overall[1, 1]) == pytest.approx(1.0, abs=1e-5)
    assert list(result.groups) == list(random_tiny.model.groups)
    assert len(result.per_group) == len(result.groups)
    assert 0 <= result.mean_abs_offcentre() <= 1
    assert explore.common_groups(results) == list(random_tiny.model.groups)
    with pytest.raises(ValueError, match="`models`"):
        explore.compare_correlations({}, images)


def test_scctx_decode_last_step_is_decompress(random_tiny):
    model = random_tiny.model
    image = explore.image_crops(1, 48, seed=3)[0, :, :, :40]  # (3, 48, 40): padded to 64x64
    steps, out = explore.scctx_decode(model, image)
    assert len(steps) == 2 * len(model.groups)
    with torch.inference_mode():
        x_hat = model.decompress(out["strings"], out["shape"])["x_hat"].clamp(0, 1)
    assert x_hat.shape == (1, 3, 64, 64)
    assert torch.equal(steps[-1].x_hat, x_hat)
    assert bool(steps[-1].mask.all())
    bits = 8 * sum(len(s) for strings in out["strings"] for s in strings)
    assert steps[-1].cumulative_bits == bits
    assert [s.cumulative_bits for s in steps] == sorted(s.cumulative_bits for s in steps)


def test_scctx_decode_bad_image(random_tiny):
    with pytest.raises(ValueError, match="`image`"):
        explore.scctx_decode(random_tiny.model, torch.rand(2, 3, 64, 64))


# --------------------------------------------------------------------------------------------
# Complexity and rate-distortion against the paper
# --------------------------------------------------------------------------------------------
def test_complexity_rows_small():
    rows = explore.complexity_rows(("tiny", "2222-conv"), size=(64, 64))
    assert [r["model"] for r in rows] == ["tiny", "2222-conv"]
    for row in rows:
        torch.manual_seed(0)
        model = LALIC.from_preset(row["model"])
        count = count_params(model)
        assert row["params_m"] * 1e6 == pytest.approx(count.inference)
        assert count.inference <= sum(p.numel() for p in model.parameters())
        assert 0 < row["gmacs_without_biwkv"] < row["gmacs"] < row["gmacs_thop_style"] + 1
        assert row["counted_at"] == "64x64"
    tiny, conv = rows
    assert tiny["paper_gflops"] is None and tiny["thop_vs_paper_pct"] is None
    assert conv["paper_gflops"] == paper.ABLATION["2222-conv"]["gflops"]
    assert conv["paper_bd_rate"] == paper.ABLATION["2222-conv"]["bd_rate"]
    # thop-style MACs are what the paper calls FLOPs: within a few percent
    assert abs(conv["thop_vs_paper_pct"]) < 5, conv
    assert abs(conv["params_m"] / conv["paper_params_m"] - 1) < 0.05, conv
    text = explore.format_complexity(rows)
    assert "| tiny |" in text and paper.ABLATION["2222-conv"]["label"] in text
    assert "GMACs w/o BiWKV" in text and len(text.splitlines()) == 4


def test_complexity_rows_scale_exactly():
    small, = explore.complexity_rows(("tiny",), size=(64, 64))
    wide, = explore.complexity_rows(("tiny",), size=(64, 128))
    for key in ("gmacs", "gmacs_without_biwkv", "gmacs_thop_style", "params_m"):
        assert small[key] == pytest.approx(wide[key], rel=1e-9), key


@pytest.mark.parametrize("size", [(100, 64), (64, 0), (-64, 64)])
def test_complexity_rows_bad_size(size):
    with pytest.raises(ValueError, match="`size`"):
        explore.complexity_rows(("tiny",), size=size)


def _curve(name, bpp, psnr):
    return RDCurve(name=name, bpp=list(bpp), metrics={"psnr": list(psnr)})


def test_zoo_bd_rows():
    lalic = load_rd(published_rd_dir() / "kodak-lalic.json")
    ours = {"two": _curve("two", [0.3, 0.5], [28.0, 29.5]),
            "lalic": lalic,
            "far": _curve("far", [5, 6, 7, 8], [60, 61, 62, 63])}
    rows = explore.zoo_bd_rows(ours)
    assert [r["model"] for r in rows] == ["two", "lalic", "far"]
    two, full, far = rows
    assert two["points"] == 2 and two["vs JPEG"] is None and two["vs VTM-9.1"] is None
    assert "at least 4" in two["note"] and two["bpp"] == "0.300, 0.500"
    assert full["vs VTM-9.1"] == pytest.approx(paper.TABLE1["LALIC"]["bd_kodak"], abs=0.05)
    assert full["vs JPEG"] < -50 and full["note"] == ""
    assert far["vs JPEG"] is None and "vs JPEG" in far["note"]
    assert names_unchanged(ours)
    with pytest.raises(ValueError, match="`anchors`"):
        explore.zoo_bd_rows(ours, anchors=("kodak-nothing",))


def names_unchanged(ours):
    return all(curve.name in (name, "LALIC") for name, curve in ours.items())


def test_plot_rd_kodak():
    ours = {"toy": _curve("toy", [0.3, 0.5], [28.0, 29.5]), "star": _curve("star", [0.3], [28.2])}
    fig = explore.plot_rd_kodak(ours)
    left, right = fig.axes
    labels = [line.get_label() for line in left.get_lines()]
    assert labels[:len(explore.PUBLISHED_KODAK)] == [label for _, label in explore.PUBLISHED_KODAK]
    assert "toy (ours, CPU zoo)" in labels and "star (ours, CPU zoo)" in labels
    assert {line.get_label() for line in right.get_lines()} == {
        "JPEG", "BPG", "toy (ours, CPU zoo)", "star (ours, CPU zoo)"}
    assert ours["toy"].name == "toy"  # the caller's curves are not renamed
    assert right.get_xlim()[1] == pytest.approx(0.8)
    empty = explore.plot_rd_kodak({})
    assert empty.axes[1].get_title() == "zoo not evaluated"
    with pytest.raises(ValueError, match="`max_bpp`"):
        explore.plot_rd_kodak(ours, max_bpp=0)


def test_zoo_results_are_curves():
    from lalic_core.figures import zoo_results

    for name, curve in zoo_results().items():
        assert curve.has("psnr") and len(curve.bpp) >= 1, name
        assert all(not math.isnan(v) for v in curve.quality("psnr"))
