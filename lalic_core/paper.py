"""The LALIC paper's published numbers, for tables that put our measurements beside them.

Source: Feng et al., "Linear Attention Modeling for Learned Image Compression", CVPR 2025
(arXiv 2502.05741): Table 1 (complexity and BD-rates of learned codecs) and the ablation
tables (transform depths and SCCTX kind; attention operator). Values as transcribed in the
project's reference notes; the BD-rates are against VTM-9.1 on PSNR.

The one copy of these numbers: :data:`lalic_core.complexity.PAPER_NUMBERS` (GFLOPs / params
per preset) and :data:`lalic_core.rd.PAPER_BD_RATES` (the BD-rates that the packaged RD points
reproduce) are built from it.
"""
from __future__ import annotations

CITATION = ("Feng, D., et al. Linear Attention Modeling for Learned Image Compression. "
            "CVPR 2025, arXiv:2502.05741.")

#: Table 1: decoding time (s, RTX 4090; ``None`` where the paper gives only a bound, see
#: ``decode_time_note``), complexity (GFLOPs as the paper counts them, at 768x512 Kodak
#: size), parameters (millions) and BD-rate (%) against VTM-9.1 on Kodak, CLIC Pro Valid
#: and Tecnick.
TABLE1: dict[str, dict] = {
    "ELIC": {"decode_time_s": 0.120, "gflops": 332.0, "params_m": 33.3,
             "bd_kodak": -7.02, "bd_clic": -1.19, "bd_tecnick": -7.64},
    "TCM-large": {"decode_time_s": 0.151, "gflops": 701.0, "params_m": 75.9,
                  "bd_kodak": -11.73, "bd_clic": -9.41, "bd_tecnick": -10.93},
    "FAT": {"decode_time_s": None, "decode_time_note": ">10", "gflops": 245.0,
            "params_m": 69.8, "bd_kodak": -14.56, "bd_clic": -10.79, "bd_tecnick": -14.40},
    "MLIC++": {"decode_time_s": 0.268, "gflops": 443.0, "params_m": 83.3,
               "bd_kodak": -15.02, "bd_clic": -14.45, "bd_tecnick": -17.21},
    "LALIC": {"decode_time_s": 0.150, "gflops": 286.0, "params_m": 63.2,
              "bd_kodak": -15.26, "bd_clic": -15.41, "bd_tecnick": -17.63},
}

#: The official LALIC lambdas (README of the official code, MSE models), quality 1..6.
LAMBDAS: dict[int, float] = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483}
#: CompressAI's lambdas for MS-SSIM models, quality 1..6.
LAMBDAS_MS_SSIM: dict[int, float] = {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50}

#: Table 1's BD-rate key for each dataset name.
TABLE1_KEYS = {"Kodak": "bd_kodak", "CLIC Pro Valid": "bd_clic", "Tecnick": "bd_tecnick"}

#: Ablation of transform depths and SCCTX kind (Kodak BD-rate relative to the first row),
#: keyed by our preset name (:data:`lalic_core.models.lalic.PRESETS`).
ABLATION: dict[str, dict] = {
    "2222-conv": {"label": "depths 2,2,2,2 + Conv SCCTX", "gflops": 164.0, "params_m": 27.6,
                  "bd_rate": 0.00},
    "2466-conv": {"label": "depths 2,4,6,6 + Conv SCCTX", "gflops": 239.0, "params_m": 42.6,
                  "bd_rate": -1.68},
    "2466-convplus": {"label": "depths 2,4,6,6 + Conv Plus SCCTX", "gflops": 304.0,
                      "params_m": 62.1, "bd_rate": -2.74},
    "2466-rwkv": {"label": "depths 2,4,6,6 + RWKV SCCTX (LALIC)", "gflops": 286.0,
                  "params_m": 63.2, "bd_rate": -3.50},
}

#: Ablation of the attention operator: extra GFLOPs over the block without attention, and
#: the training loss reached (lower is better).
ATTENTION_ABLATION: dict[str, dict] = {
    "AFT": {"extra_gflops": 0.60, "loss": 0.5657},
    "AFT + Shift": {"extra_gflops": 4.91, "loss": 0.5604},
    "BiWKV + Shift": {"extra_gflops": 6.80, "loss": 0.5551},
}


def markdown_table(rows: list[dict], columns: list[tuple[str, str]],
                   digits: dict[str, int] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); ``columns``: (key, header) pairs. Floats get
    2 decimals (none from 100 on) unless ``digits`` gives a column's decimals; ``None`` shows
    as "-"."""
    digits = dict(digits or {})
    unknown = set(digits) - {k for k, _ in columns}
    if unknown:
        raise ValueError(f"`digits` names columns that are not in `columns`: {sorted(unknown)}")

    def cell(key: str, value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if key in digits:
                return f"{value:.{digits[key]}f}"
            return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |"]
    lines += ["| " + " | ".join(cell(k, row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def table1_markdown() -> str:
    """Table 1 as Markdown."""
    rows = [{"model": name, **values,  # decode times keep their 3 decimals (0.151 s)
             "decode_time_s": (f"{values['decode_time_s']:.3f}"
                               if values["decode_time_s"] is not None
                               else values.get("decode_time_note"))}
            for name, values in TABLE1.items()]
    return markdown_table(rows, [("model", "model"), ("decode_time_s", "decode (s)"),
                                 ("gflops", "GFLOPs"), ("params_m", "params (M)"),
                                 ("bd_kodak", "Kodak (%)"), ("bd_clic", "CLIC (%)"),
                                 ("bd_tecnick", "Tecnick (%)")])


def ablation_markdown() -> str:
    """The ablation of transform depths and SCCTX kind (:data:`ABLATION`) as Markdown, keyed by
    our preset names."""
    rows = [{"preset": name, **values} for name, values in ABLATION.items()]
    return markdown_table(rows, [("preset", "preset"), ("label", "paper row"),
                                 ("gflops", "GFLOPs"), ("params_m", "params (M)"),
                                 ("bd_rate", "Kodak BD-rate vs row 1 (%)")])


def attention_ablation_markdown() -> str:
    """The ablation of the attention operator (:data:`ATTENTION_ABLATION`) as Markdown."""
    rows = [{"operator": name, **values, "loss": f"{values['loss']:.4f}"}
            for name, values in ATTENTION_ABLATION.items()]
    return markdown_table(rows, [("operator", "operator"),
                                 ("extra_gflops", "extra GFLOPs"), ("loss", "training loss")])
