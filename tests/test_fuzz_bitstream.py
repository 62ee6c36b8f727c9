"""Random damage to a valid .lalic file: every case decodes or fails with LalicFormatError.

Two kinds of damage, both on a file made by LALIC "tiny" from a 64x64 image:

- plain mutations (bit flips, byte changes, truncations, insertions, deletions, duplicated
  spans): nearly all are caught by the CRC-32, the rest by the parser;
- the same mutations with the checksum recomputed, so that the parser, the latent-shape
  checks and the bounds-checked rANS decoder themselves meet the damage.

``make test`` runs 1,000 plain + 200 resealed mutations; ``make test-slow`` (``-m slow``)
10,000 (5,000 + 5,000). Each prints a one-line summary (crashes, hangs).

The mutations run in a child process (this file run as a script), so that a crash or a hang
in native code fails the test instead of killing pytest; the child reports its counts as
JSON and times every case.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

CHILD_SECONDS_PER_DECODE = 1.0  # generous time limits: the machine may be shared
MAX_CASE_SECONDS = 30.0


def _mutate(data: bytes, rng, region: tuple[int, int], kinds: int = 6) -> bytes:
    """One random mutation of ``data`` inside ``region`` (start, end); ``kinds=2`` keeps the
    length (bit flips and byte changes only)."""
    lo, hi = region
    pos = int(rng.integers(lo, max(hi, lo + 1)))
    kind = int(rng.integers(0, kinds))
    if kind == 0:  # flip one bit
        return data[:pos] + bytes([data[pos] ^ (1 << int(rng.integers(0, 8)))]) + data[pos + 1:]
    if kind == 1:  # replace a byte
        return data[:pos] + bytes([int(rng.integers(0, 256))]) + data[pos + 1:]
    if kind == 2:  # truncate
        return data[:pos]
    if kind == 3:  # insert random bytes
        extra = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype="uint8"))
        return data[:pos] + extra + data[pos:]
    if kind == 4:  # delete a span
        return data[:pos] + data[pos + int(rng.integers(1, 9)):]
    span = data[pos: pos + int(rng.integers(1, 17))]  # duplicate a span
    return data[:pos] + span + data[pos:]


def _run_child(n_plain: int, n_resealed: int, seed: int) -> dict:
    import struct
    import warnings
    import zlib

    import numpy as np
    import torch

    from lalic_core import codec
    from lalic_core.codec.container import CRC_BYTES

    warnings.simplefilter("ignore")
    model = codec.resolve_model("tiny", warn_random=False)
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 9, generator=g), size=(64, 64),
                                            mode="bilinear", align_corners=False)
    valid = codec.encode_image(image, model)
    reference = codec.decode_image(valid, model)
    header_end = codec.LalicFile.from_bytes(valid).header_bytes - CRC_BYTES
    rng = np.random.default_rng(seed)
    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    slowest = 0.0

    def attempt(data: bytes, label: str) -> None:
        nonlocal slowest
        start = time.perf_counter()
        try:
            x_hat = codec.decode_image(data, model)
        except codec.LalicFormatError as exc:
            outcomes[f"{label}: rejected"] += 1
            reasons[re.sub(r"\d+", "N", str(exc).split(" (")[0].split(":")[0])] += 1
        except Exception as exc:  # anything else is a bug: report the case
            raise SystemExit(f"{label} mutation raised {type(exc).__name__}: {exc}; "
                             f"file (hex): {data.hex()}") from exc
        else:  # e.g. a changed height that pads to the same size: a valid, smaller image
            assert x_hat.dim() == 4 and x_hat.shape[:2] == (1, 3), x_hat.shape
            assert bool(torch.isfinite(x_hat).all()) and 0 <= x_hat.min() <= x_hat.max() <= 1
            same = x_hat.shape == reference.shape and torch.equal(x_hat, reference)
            outcomes[f"{label}: decoded {'unchanged' if same else 'differently'}"] += 1
        slowest = max(slowest, time.perf_counter() - start)

    start = time.perf_counter()
    for i in range(n_plain):
        attempt(_mutate(valid, rng, (0, len(valid))), "plain")
    plain_seconds = time.perf_counter() - start
    body = valid[: -CRC_BYTES]
    for i in range(n_resealed):  # a third each: header, strings, strings with the same length
        region = (0, header_end) if i % 3 == 0 else (header_end, len(body))
        damaged = _mutate(body, rng, region, kinds=2 if i % 3 == 2 else 6)
        attempt(damaged + struct.pack("<I", zlib.crc32(damaged)), "resealed")
    return {"outcomes": dict(outcomes), "reasons": dict(reasons), "slowest_case_s": slowest,
            "plain_seconds": plain_seconds, "file_bytes": len(valid),
            "total_seconds": time.perf_counter() - start}


def _fuzz(n_plain: int, n_resealed: int, seed: int) -> dict:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(n_plain), str(n_resealed), str(seed)],
        capture_output=True, text=True, env=env, check=False,
        timeout=600 + CHILD_SECONDS_PER_DECODE * n_resealed,  # model build, numba, load
    )
    assert proc.returncode == 0, f"fuzz child failed (status {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    outcomes = report["outcomes"]
    rejected = sum(v for k, v in outcomes.items() if k.endswith("rejected"))
    hangs = int(report["slowest_case_s"] >= MAX_CASE_SECONDS)
    print(f"fuzz: {n_plain + n_resealed} mutated files ({n_plain} plain, {n_resealed} with the "
          f"checksum recomputed): {rejected} rejected, {n_plain + n_resealed - rejected} "
          f"decoded, 0 crashes, {hangs} hangs (slowest case {report['slowest_case_s']:.3f} s, "
          f"{report['total_seconds']:.0f} s in all)")
    outcomes = report["outcomes"]
    assert sum(v for k, v in outcomes.items() if k.startswith("plain")) == n_plain
    assert sum(v for k, v in outcomes.items() if k.startswith("resealed")) == n_resealed
    assert report["slowest_case_s"] < MAX_CASE_SECONDS
    return report


def test_fuzz_random_mutations():
    report = _fuzz(n_plain=1000, n_resealed=200, seed=0)
    outcomes = report["outcomes"]
    # Damage that changes the file is never silently accepted without the checksum fixed up.
    assert outcomes.get("plain: decoded differently", 0) == 0
    assert outcomes.get("plain: rejected", 0) >= 990
    assert report["plain_seconds"] < 60  # parse + CRC rejection is fast
    # With the checksum recomputed, the parser, the shape checks and the rANS end-state
    # check catch nearly all damage themselves.
    assert outcomes.get("resealed: rejected", 0) >= 185
    assert report["reasons"].get("damaged bitstream", 0) >= 40


@pytest.mark.slow
def test_fuzz_ten_thousand_mutations():
    """10,000 mutated files (half plain, half with the checksum recomputed): 0 crashes (the
    child exits normally), 0 hangs (every case under MAX_CASE_SECONDS), no silent change."""
    report = _fuzz(n_plain=5000, n_resealed=5000, seed=1)
    outcomes = report["outcomes"]
    assert outcomes.get("plain: decoded differently", 0) == 0
    assert outcomes.get("plain: rejected", 0) >= 4950
    assert outcomes.get("resealed: rejected", 0) >= 4750


if __name__ == "__main__":  # the child: python test_fuzz_bitstream.py N_PLAIN N_RESEALED SEED
    result = _run_child(*(int(a) for a in sys.argv[1:4]))
    print(json.dumps(result))
