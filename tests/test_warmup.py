"""lalic_core.warmup: the BiWKV CPU kernels compiled once per install, announced when it
happens, loaded silently (one line) after."""
from __future__ import annotations

from lalic_core import warmup


def test_warm_reports_progress_over_four_kernels():
    seen = []
    compiled, seconds = warmup.warm(lambda done, total, what: seen.append((done, total, what)))
    n = len(warmup._steps())
    assert [s[0] for s in seen] == list(range(n + 1)) and all(s[1] == n for s in seen)
    assert seen[0][2] == "forward pass, float32" and seen[-1][2] == "done"
    assert seconds > 0 and isinstance(compiled, bool)
    assert warmup.biwkv_kernels_cached() in (True, None)  # after a warm-up: cached


def test_ensure_says_what_happened(capsys, monkeypatch):
    monkeypatch.setattr(warmup, "biwkv_kernels_cached", lambda: True)
    assert warmup.ensure_biwkv_compiled(show=False) == 0.0  # loads on first use
    assert "found in numba's cache" in capsys.readouterr().out
    assert warmup.ensure_biwkv_compiled(show=False, load=True) > 0.0
    assert "loaded in numba's cache" in capsys.readouterr().out
    monkeypatch.setattr(warmup, "biwkv_kernels_cached", lambda: False)
    warmup.ensure_biwkv_compiled(show=False)
    out = capsys.readouterr().out
    n = len(warmup._steps())
    assert out.startswith(warmup.ANNOUNCEMENT) and f"[{n}/{n}] done" in out
    assert "timings below exclude it" in out


def test_module_entry_point(capsys):
    assert warmup.main([]) == 0
    assert "BiWKV CPU kernels" in capsys.readouterr().out
