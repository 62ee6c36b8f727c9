"""The Triton BiWKV kernels against the float64 reference, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1). Triton reads that variable when kernels are defined, so
the checks run in one subprocess; each test then asserts on its own case."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (it is Linux-only)")

CASES = {  # name: (B, T, C, dtype); T = 1, T not a multiple of the block, B > 1, C > block
    "T1": (1, 1, 3, "float64"),
    "B2_T5_C7": (2, 5, 7, "float64"),
    "B3_T37_C20_float32": (3, 37, 20, "float32"),
    "B2_T19_C70": (2, 19, 70, "float64"),  # two channel blocks, the last one partial
}

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_biwkv import grads, make_inputs
    from lalic_core.ops.biwkv import biwkv

    results = {{}}
    for name, (B, T, C, dtype) in {cases!r}.items():
        w, u, k, v = make_inputs(B, T, C, dtype=getattr(torch, dtype), seed=T)
        grad_y = torch.randn(B, T, C, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(3))
        fast = grads("triton", w, u, k, v, grad_y)
        exact = grads("reference", w, u, k.double(), v.double(), grad_y)
        errors = {{}}
        for label, a, b in zip(("y", "dw", "du", "dk", "dv"), fast, exact):
            scale = b.abs().max().clamp_min(1.0)
            errors[label] = float(((a.double() - b) / scale).abs().max())
        results[name] = {{"dtype": str(fast[0].dtype), "errors": errors}}

    w, u, k, v = make_inputs(2, 6, 3, k_scale=1.0, decay=2.0, boost=2.0)
    inputs = [x.requires_grad_() for x in (w, u, k, v)]
    results["gradcheck"] = bool(torch.autograd.gradcheck(
        lambda *a: biwkv(*a, backend="triton"), inputs))
    print("RESULTS" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def triton_results():
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests_dir, cases=CASES)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])


@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_reference_values_and_gradients(triton_results, case):
    result = triton_results[case]
    dtype = CASES[case][3]
    assert result["dtype"] == f"torch.{dtype}"
    tol = 1e-10 if dtype == "float64" else 1e-5
    for label, error in result["errors"].items():
        assert error < tol, f"{case}: {label} differs from the reference by {error:.2e}"


def test_triton_gradcheck_float64(triton_results):
    assert triton_results["gradcheck"]
