"""Evaluate every shipped zoo model on Kodak with real bitstreams and summarise.

    .venv/bin/python scripts/eval_zoo.py [--kodak DIR] [--threads 2]

For each zoo entry ``name:q`` it runs ``lalic eval KODAK --model name:q`` (the console
command users run) into ``results/kodak-<name>-q<q>.json``, skipping entries whose report
was made from the same weights (sha256); then merges each name's qualities into one RD curve,
``results/kodak-<name>.json`` (the schema of the published points), and prints the
BD-rates of every curve with >= 2 points against JPEG and VTM-9.1 and a table of all
points (bpp from the whole .lalic files).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from lalic_core import zoo
    from lalic_core.data import find_kodak
    from lalic_core.rd import bd_rate_table, load_rd, merge_reports, save_rd

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kodak", default=None, help="Kodak folder (default: lalic_core.data.find_kodak())")
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="evaluate again even when up to date")
    args = p.parse_args(argv)
    kodak = Path(args.kodak) if args.kodak else find_kodak()
    if kodak is None:
        p.error("Kodak not found: run `lalic download-kodak` or pass --kodak")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)

    by_name = defaultdict(list)
    for name, quality in zoo.available():
        out = results / f"kodak-{name}-q{quality}.json"
        sha = zoo.info(name, quality)["weights_sha256"]
        stale = not out.exists() or json.loads(out.read_text()).get("weights_sha256") != sha
        if args.force or stale:
            print(f"eval {name}:{quality} -> {out.relative_to(ROOT)}", flush=True)
            subprocess.run([sys.executable, "-m", "lalic_core.cli", "eval", str(kodak),
                            "--model", f"{name}:{quality}", "--threads", str(args.threads),
                            "--quiet", "--force", "--output", str(out)], check=True, cwd=ROOT)
            report = json.loads(out.read_text())
            report["weights_sha256"] = sha  # which weights these numbers belong to
            out.write_text(json.dumps(report, indent=2) + "\n")
        by_name[name].append(json.loads(out.read_text()))

    print("\n| model | quality | bpp | bpp (strings) | PSNR (dB) | MS-SSIM | enc s | dec s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    curves = {}
    for name, reports in sorted(by_name.items()):
        for r in sorted(reports, key=lambda r: r["results"]["bpp"][0]):
            res = r["results"]
            print(f"| {name} | {r['model']['spec'].rsplit(':', 1)[-1]} | {res['bpp'][0]:.4f} | "
                  f"{res['bpp-strings'][0]:.4f} | {res['psnr'][0]:.3f} | "
                  f"{res['ms-ssim'][0]:.4f} | {res['encoding_time'][0]:.2f} | "
                  f"{res['decoding_time'][0]:.2f} |")
        record = zoo.info(name, min(q for n, q in zoo.available() if n == name))
        curve = merge_reports(reports, name, description=(
            f"zoo model {name} ({record.get('model')}), trained on train-photos; lalic eval on "
            f"the 24 Kodak images, real .lalic files (bpp = whole file)"))
        save_rd(curve, results / f"kodak-{name}.json")
        curves[name] = curve

    from lalic_core.rd import published_rd_dir

    rd = published_rd_dir()
    multi = {n: c for n, c in curves.items() if len(c.bpp) >= 2}
    for anchor_stem, label in (("kodak-jpeg", "JPEG"), ("kodak-vtm91-compressai", "VTM-9.1")):
        anchor = load_rd(rd / f"{anchor_stem}.json")
        for row in bd_rate_table(anchor, multi):
            text = (f"{row['bd_rate']:+.2f} %" if row["bd_rate"] == row["bd_rate"]
                    else f"n/a ({row.get('error')})")
            print(f"BD-rate of {row['name']} against {label} (Kodak, PSNR, pchip): {text}")
    jpeg = load_rd(rd / "kodak-jpeg.json")
    import numpy as np

    for name, curve in sorted(curves.items()):
        for bpp, q in zip(curve.bpp, curve.quality("psnr")):
            jpeg_q = float(np.interp(bpp, jpeg.bpp, jpeg.quality("psnr")))
            inside = jpeg.bpp[0] <= bpp <= jpeg.bpp[-1]
            print(f"{name} at {bpp:.4f} bpp: {q:.3f} dB; JPEG at that bpp "
                  f"{jpeg_q:.3f} dB{'' if inside else ' (extrapolated: outside JPEG points)'} "
                  f"-> {'beats' if q > jpeg_q else 'LOSES TO'} JPEG by {q - jpeg_q:+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
