"""The multitask bench suite's pieces (thesis Ch. 5, Tables 10-12): settings, task sets, the teacher helper on a
tiny batch, ranks and rendering of hand-made results. The suite end to end is the slow test in test_bench_quick."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.bench import SUITES
from amalgamator.bench import multitask as MT
from amalgamator.bench.common import load_part, save_part
from amalgamator.methods import REGISTRY

#: tiny trainings make fewer optimiser steps than the engine's warning threshold, on purpose
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*optimiser steps.*:UserWarning"),
    pytest.mark.usefixtures("one_thread"),  # one CPU thread (conftest)
]


# Settings and task sets ------------------------------------------------------------------------------


def test_settings_cover_the_three_tables_and_yeast():
    keys = [s.key for s in MT.SETTINGS]
    assert len(keys) == len(set(keys))
    members = [k for ks in MT.TABLES.values() for k in ks]
    assert set(members) | {MT.TARGETNET} == set(keys)  # every setting is shown (TargetNet in its own section)
    by_key = {s.key: s for s in MT.SETTINGS}
    t10, t11, t12, tab = MT.TABLES.values()
    assert t10 == ["dr-30"] and by_key["dr-30"].teachers == ("densenet", "resnet")  # the thesis's pair
    assert [by_key[k].shared for k in t11] == [0.75, 0.5, 0.3]  # 25 % is Table 10's setting (same task sets)
    pairs = {by_key[k].teachers for k in t12}
    assert pairs == {("plainnet", "resnet"), ("densenet", "resnet"), ("plainnet", "densenet")}
    assert all(by_key[k].shared == 0.5 for k in t12)
    assert by_key[tab[0]].data == "yeast"
    assert all(a in MT.ARCHS for s in MT.SETTINGS for a in s.teachers)
    assert MT.STUDENTS["fashion"][0] == "resnet"  # the thesis's student backbone, ResNet18
    assert set(MT.ROWS) == {"MuST", "KD", "CFL", "VENUS"}
    assert {m for m, _ in MT.ROWS.values()} <= set(REGISTRY)
    assert [s.key for s in MT.settings_for(True)] == ["dr-30", "yeast-30", MT.TARGETNET]


def test_quick_budget_is_smaller_and_keeps_enough_steps():
    full, quick = MT.budget(False), MT.budget(True)
    assert quick.n_pool < full.n_pool and quick.n_teacher < full.n_teacher and quick.n_test < full.n_test
    # at least the engine's 200 steps, so the quick run does not warn about too few steps
    assert quick.student_epochs * -(-quick.n_pool // quick.batch_size) >= 200
    assert quick.teacher_epochs * -(-quick.n_teacher // quick.batch_size) >= 200


@pytest.mark.parametrize(
    ("key", "n_tasks", "shared", "size"),
    [("dr-30", 10, 2, 6), ("dr-50", 10, 4, 7), ("dr-75", 10, 6, 8), ("yeast-30", 14, 2, 8)],
)
def test_task_sets_follow_the_protocol_and_do_not_move_with_the_seed(key, n_tasks, shared, size):
    setting = next(s for s in MT.SETTINGS if s.key == key)
    sets = MT.task_sets(setting, n_tasks)
    assert [len(s) for s in sets] == [size, size]
    assert len(set(sets[0]) & set(sets[1])) == shared
    assert set(sets[0]) | set(sets[1]) == set(range(n_tasks))
    assert sets == MT.task_sets(setting, n_tasks)  # drawn once (TASK_SEED), the same for every run


def test_table_10_and_the_25_percent_column_share_their_task_sets():
    by_key = {s.key: s for s in MT.SETTINGS}
    from amalgamator.bench.fashion_pairs import teacher_task_sets

    assert MT.task_sets(by_key["dr-30"], 10) == teacher_task_sets(10, 2, 0.25, MT.TASK_SEED)


def test_pool_images_averages_blocks():
    x = np.arange(2 * 56 * 56, dtype=np.float32).reshape(2, 1, 56, 56)
    out = MT.pool_images(x, 28)
    assert out.shape == (2, 1, 28, 28) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean())
    assert out.mean() == pytest.approx(x.mean())
    assert MT.pool_images(x, 56) is x
    with pytest.raises(ValueError, match="does not divide"):
        MT.pool_images(x, 30)


# The teacher helper on a tiny batch -------------------------------------------------------------------


def _tiny(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8-feature rows; three tasks read off two features (separable)."""
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 0] + x[:, 1] > 0], 1).astype(np.uint8)
    return x, y


def test_train_multitask_fits_a_tiny_batch_and_becomes_a_tapped_teacher():
    x, y = _tiny(128, 0)
    tasks = ["a", "b", "c"]
    st = MT.train_multitask("mlp", x, y, tasks, {"hidden": [16]}, epochs=30, batch_size=32, lr=1e-2, seed=0)
    assert st.kind == "multitask" and st.labels == tasks
    again = MT.train_multitask("mlp", x, y, tasks, {"hidden": [16]}, epochs=30, batch_size=32, lr=1e-2, seed=0)
    np.testing.assert_array_equal(st.predict_proba(x), again.predict_proba(x))  # seeded: same teacher
    xt, yt = _tiny(200, 1)
    scores = MT._scores(st.predict_proba(xt), yt, tasks)
    assert scores["accuracy_mean"] > 0.85 and scores["roc_auc_mean"] > 0.9
    t = MT.as_teacher(st, "T1")
    assert t.kind == "multitask" and t.features == [MT.FEATURES] and list(t.labels) == tasks
    logits, feats = t.run(torch.as_tensor(xt[:5]), features=True)
    assert logits.shape == (5, 3) and feats[MT.FEATURES].shape == (5, 16)  # the backbone's output, F_c
    with pytest.raises(ValueError, match="expected"):
        MT.train_multitask("mlp", x, y[:, :2], tasks, epochs=1)


def test_image_teacher_taps_the_pooled_backbone_feature():
    x = np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32)
    y = (np.random.default_rng(1).random((16, 2)) > 0.5).astype(np.uint8)
    st = MT.train_multitask("plainnet", x, y, ["a", "b"], {"width": 2, "blocks": 2, "layers": 1}, epochs=1,
                            batch_size=8)  # fmt: skip
    _, feats = MT.as_teacher(st, "T").run(torch.as_tensor(x[:3]), features=True)
    assert feats[MT.FEATURES].shape == (3, 4)  # two blocks: 2 then 4 channels, globally pooled


def test_venus_reads_the_helpers_teachers(tmp_path):
    x, y = _tiny(160, 2)
    t1 = MT.as_teacher(MT.train_multitask("mlp", x[:80], y[:80, :2], ["a", "b"], {"hidden": [16]}, epochs=5), "T1")
    t2 = MT.as_teacher(MT.train_multitask("mlp", x[80:], y[80:, 1:], ["b", "c"], {"hidden": [8]}, epochs=5), "T2")
    res = am.amalgamate([t1, t2], x, method="venus", student="mlp", student_options={"hidden": [12]}, epochs=1,
                        store=tmp_path, progress=False)  # fmt: skip
    assert sorted(res.student.labels) == ["a", "b", "c"] and res.student.kind == "multitask"


# Ranks and rendering of hand-made results ---------------------------------------------------------------

TASKS = ["a", "b", "c"]


def _row(acc: list[float], auc: list[float | None]) -> dict:
    scored = [v for v in auc if v is not None]
    return {"accuracy": dict(zip(TASKS, acc, strict=True)), "roc_auc": dict(zip(TASKS, auc, strict=True)),
            "accuracy_mean": float(np.mean(acc)), "roc_auc_mean": float(np.mean(scored)), "seconds": 1.0}  # fmt: skip


def _run(shift: float = 0.0, shared_fraction: float = 0.5) -> dict:
    """One hand-made seed: VENUS best on a and b, KD best on c; CFL and MuST tie on a; c has no ROC-AUC."""
    rows = {
        "MuST": _row([0.7 + shift, 0.6, 0.5], [0.70, 0.6, None]),
        "KD": _row([0.8, 0.7, 0.9], [0.80, 0.7, None]),
        "CFL": _row([0.7 + shift, 0.8, 0.6], [0.75, 0.8, None]),
        "VENUS": _row([0.9, 0.9, 0.7], [0.90, 0.9, None]),
        MT.BOUND: _row([0.95, 0.95, 0.95], [0.99, 0.99, None]),
    }
    teachers = [
        {"name": "T1", "arch": "densenet", "tasks": ["a", "b"], "rows": 10, "parameters": 1234,
         "accuracy": {"a": 0.91, "b": 0.92}, "roc_auc": {"a": 0.95, "b": 0.96},
         "accuracy_mean": 0.915, "roc_auc_mean": 0.955},
        {"name": "T2", "arch": "resnet", "tasks": ["b", "c"], "rows": 10, "parameters": 2345,
         "accuracy": {"b": 0.93, "c": 0.94}, "roc_auc": {"b": 0.97, "c": None},
         "accuracy_mean": 0.935, "roc_auc_mean": 0.97},
    ]  # fmt: skip
    return {"rows": rows, "teachers": teachers, "tasks": TASKS, "task_sets": [["a", "b"], ["b", "c"]],
            "shared_fraction": shared_fraction, "sizes": {}, "seconds": 12.0}  # fmt: skip


def _results(keys: dict[str, float]) -> dict:
    budget = MT.budget(True).__dict__
    return {"seeds": 2, "quick": True, "budget": budget, "machine": "test",
            "settings": {k: [_run(0.0, f), _run(0.0, f)] for k, f in keys.items()}}  # fmt: skip


def test_ranks_per_task_averaged_ties_shared_and_bound_not_ranked():
    res = _results({"dr-30": 0.33})
    acc = MT.ranks(res, "dr-30", "accuracy")
    assert MT.BOUND not in acc
    # a: VENUS 1, KD 2, MuST/CFL tie 3.5; b: VENUS 1, CFL 2, KD 3, MuST 4; c: KD 1, VENUS 2, CFL 3, MuST 4
    assert acc == pytest.approx({"VENUS": 4 / 3, "KD": 2.0, "CFL": 8.5 / 3, "MuST": 11.5 / 3})
    auc = MT.ranks(res, "dr-30", "roc_auc")  # task c has no ROC-AUC: averaged over a and b only
    assert auc == pytest.approx({"VENUS": 1.0, "KD": 2.5, "CFL": 2.5, "MuST": 4.0})


def test_ranks_use_the_mean_over_seeds():
    res = _results({"dr-30": 0.33})
    res["settings"]["dr-30"][1] = _run(shift=0.3)  # MuST and CFL reach 1.0 on a in seed 1: mean 0.85
    acc = MT.ranks(res, "dr-30", "accuracy")
    # a: VENUS 0.9 first, MuST and CFL tie at 0.85 (2.5), KD 0.8 last (seed 0 alone would rank it second)
    assert acc == pytest.approx({"VENUS": 4 / 3, "KD": 8 / 3, "CFL": 2.5, "MuST": 3.5})


def test_render_lays_out_the_thesis_tables():
    res = _results({"dr-30": 0.33, "yeast-30": 0.25})
    md = MT.render(res, None)
    assert "## Table 10" in md and "## Tabular case" in md and "## Table 12" not in md  # only the settings run
    header = "| task | held by | MuST | KD | CFL | VENUS | supervised bound | T1 (densenet) | T2 (resnet) |"
    assert md.count(header) == 4  # two settings, accuracy and ROC-AUC each
    assert "| a | T1 |" in md and "| b | T1, T2 |" in md and "| c | T2 |" in md
    assert "**0.900 ± 0.000**" in md  # VENUS best on a
    assert "| avg rank ↓ |  | 3.83 | 2.00 | 2.83 | **1.33** | — | — | — |" in md
    assert "0.915 ± 0.000 (own tasks)" in md
    assert "| c | T2 | — | — | — | — | — | — | — |" in md  # no ROC-AUC on c: nothing to show
    assert "T1 densenet (1,234 parameters, 10 rows): tasks a, b" in md
    assert "## Summary" in md
    assert "| dr-30 (densenet + resnet, 1/2 shared) | 3.83 / 4.00 | 2.00 / 2.50 | 2.83 / 2.50 | 1.33 / 1.00 |" in md
    assert "| dr-30 (densenet + resnet, 1/2 shared) | 0.600 / 0.650 |" in md  # MuST's mean accuracy / mean ROC-AUC
    assert "50 % shared asked" not in md and "30 % shared asked, 1 of 2 tasks per teacher (33 %)" in md
    assert "![" not in md  # no Table 11 figure with one Table 11 setting
    both = MT.render(_results({"dr-75": 0.75, "dr-30": 0.33}), None)
    assert both.count(header) == 4 and "The same runs as in Table 10 above." in both  # 25 % column: not twice


def test_plot_draws_table_11_against_the_shared_fraction(tmp_path):
    pytest.importorskip("matplotlib")
    res = _results({"dr-75": 0.75, "dr-50": 0.57, "dr-30": 0.33})
    path = MT._plot(res, tmp_path / "fig.png")
    assert path is not None and path.stat().st_size > 1000
    assert "![shared tasks](fig.png)" in MT.render(res, path)
    assert MT._plot(_results({"dr-30": 0.33}), tmp_path / "none.png") is None


def test_cached_parts_are_keyed_by_the_configuration(tmp_path):
    cfg = MT._config("dr-30", True)
    json.dumps(cfg)  # JSON-able: load_part compares it as JSON
    save_part(tmp_path / "p.json", cfg, {"x": 1})
    assert load_part(tmp_path / "p.json", MT._config("dr-30", True)) == {"x": 1}
    assert load_part(tmp_path / "p.json", MT._config("dr-30", False)) is None  # another budget: recomputed
    assert load_part(tmp_path / "p.json", MT._config("dr-50", True)) is None


def test_suite_is_registered():
    assert SUITES["multitask"].module == "multitask"
    assert SUITES["multitask"].runner() is MT.run


def _targetnet_run(shift: float) -> dict:
    teachers = [
        {"name": "T1", "arch": "resnet", "tasks": ["a", "b"], "parameters": 1000, "ap": {"a": 0.9, "b": 0.8}},
        {"name": "T2", "arch": "resnet", "tasks": ["b", "c"], "parameters": 1000, "ap": {"b": 0.7, "c": 0.6}},
    ]
    per_block = [{"a": 0.5 + shift, "c": 0.4}, {"a": 0.7 + shift, "c": 0.5}, {"a": 0.8, "c": 0.55}]
    return {"teachers": teachers, "tasks": TASKS, "task_sets": [["a", "b"], ["b", "c"]], "customised": ["a", "c"],
            "custom": {"block_losses": {}, "branch_points": {"a": 3, "c": 2}, "ap_per_block": per_block,
                       "ap": {"a": 0.8, "c": 0.5}, "parameters": {"student": 1500, "teachers": 2000}},
            "all": {"tasks": TASKS, "ap": {"a": 0.8, "b": 0.7, "c": 0.5}, "parameters": {"student": 1800}},
            "seconds": 5.0}  # fmt: skip


def test_targetnet_section_shows_ap_per_block_and_map_against_the_teachers(tmp_path):
    pytest.importorskip("matplotlib")
    res = _results({"dr-30": 0.33})
    res["settings"][MT.TARGETNET] = [_targetnet_run(0.0), _targetnet_run(0.1)]
    md = MT.render(res, None, tmp_path)
    assert "## TargetNet" in md and "Customised tasks: a, c." in md
    assert "| a (T1) | 0.550 ± 0.071 | 0.750 ± 0.071 | 0.800 ± 0.000 | 0.800 ± 0.000 | 3, 3 | 0.900 ± 0.000 |" in md
    assert "| TargetNet (all tasks) | 0.667 ± 0.000 | 1,800 |" in md and "| teacher T1 (its 2 tasks) | 0.850" in md
    assert (tmp_path / "multitask-targetnet-quick.png").stat().st_size > 1000
    assert "## Table 10" in md  # the other settings render as before
