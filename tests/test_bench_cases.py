"""The benchmark suites' cases and rows (issue 10), and the cnn preset's opt-in ``block_dropout``: fast checks,
no benchmark data needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn as nn

from amalgamator.bench import multiclass as MC
from amalgamator.bench import semisupervised as SS
from amalgamator.bench.datasets import FASHION_LABELS, LETTER_LABELS
from amalgamator.errors import DataError
from amalgamator.models import build
from amalgamator.models.cnn import SmallCNN

#: SmallCNN's state-dict keys before ``block_dropout`` existed: students saved then must load unchanged
OLD_CNN_KEYS = [
    "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias", "body.1.running_mean", "body.1.running_var",
    "body.1.num_batches_tracked", "body.4.weight", "body.4.bias", "body.5.weight", "body.5.bias",
    "body.5.running_mean", "body.5.running_var", "body.5.num_batches_tracked", "body.9.weight", "body.9.bias",
]  # fmt: skip


def _labels(case: MC.Case) -> list[str]:
    return {"letters": LETTER_LABELS, "fashion-mnist": FASHION_LABELS}.get(
        case.dataset, [f"topic{i}" for i in range(14)]
    )


def test_many_teacher_and_unequal_cases():
    cases = {c.key: c for c in MC.cases(quick=False)}
    groups = {k: c.groups(_labels(c)) for k, c in cases.items()}
    for key, g in groups.items():  # one architecture per teacher: zip(groups, archs) must drop none
        assert len(cases[key].archs) >= len(g), key
        assert sorted({lb for grp in g for lb in grp}) == sorted(_labels(cases[key])), key  # every class owned
    assert [len(g) for g in groups["letters-8"]] == [3, 3, 3, 3, 3, 3, 4, 4]
    assert [len(g) for g in groups["letters-13"]] == [2] * 13
    ring = groups["letters-8-overlap"]
    assert len(ring) == 8 and all(len(set(g) & set(ring[(i + 1) % 8])) == 1 for i, g in enumerate(ring))
    assert [len(g) for g in groups["letters-unequal"]] == [4, 22]
    for key in ("letters-8", "letters-13", "letters-8-overlap", "letters-unequal"):  # like the other letters cases
        c, ref = cases[key], cases["letters-5"]
        assert (c.teacher_rows, c.pool_rows, c.epochs, c.teacher_epochs) == (
            ref.teacher_rows, ref.pool_rows, ref.epochs, ref.teacher_epochs)  # fmt: skip
    quick = [c.key for c in MC.cases(quick=True)]
    assert quick == ["fashion-plain", "letters-4", "letters-unequal", "fortunes"]


def test_muki_ablation_teachers_have_dropout_in_every_block():
    cases = {c.key: c for c in MC.cases(quick=False)}
    assert all(c.key in ("fashion-plain", "fortunes") for c in cases.values() if c.ablation)
    cnn = dict(cases["fashion-plain"].archs)["cnn"]
    assert cnn["block_dropout"] == 0.1
    assert dict(cases["fashion-plain"].archs)["mlp"] == {"hidden": [256, 128]}  # Linear→ReLU→Dropout(0.1) blocks
    for arch, opts in cases["fortunes"].archs:
        assert arch == "text" and len(opts["hidden"]) == 2 and opts["dropout"] == 0.1
    assert "block_dropout" not in dict(cases["fashion-upper"].archs)["cnn"]  # only the ablation cases change


def test_new_rows_in_both_suites():
    for m in ("kd-std", "max-logit", "energy", "auto"):
        assert m in MC.METHODS
        assert SS.FREE_METHODS[m] == (m, {}) and m in SS.ROW_ORDER
    assert "auto" in SS.LABEL_METHODS and SS.LABEL_ROWS["auto"] in SS.ROW_ORDER
    assert SS._row_label("auto") != SS._row_label("auto+labels")


def test_cnn_block_dropout_default_adds_nothing():
    default = SmallCNN()
    assert list(default.state_dict()) == OLD_CNN_KEYS
    assert sum(isinstance(m, nn.Dropout) for m in default.modules()) == 1
    _, net, opts = build("cnn", None, {"image_shape": [1, 28, 28]})
    assert "block_dropout" not in opts and list(net.state_dict()) == OLD_CNN_KEYS  # student.json unchanged too


def test_cnn_block_dropout_after_each_conv_block():
    net = SmallCNN(block_dropout=0.1)
    kinds = [type(m).__name__ for m in net.body]
    assert kinds[:10] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout",
                          "Conv2d", "BatchNorm2d", "ReLU", "Dropout", "AdaptiveAvgPool2d"]  # fmt: skip
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.1, 0.1]
    assert SmallCNN(dropout=0.3, block_dropout=0.2).body[-1].p == 0.3  # the head's rate stays its own
    with pytest.raises(DataError):
        build("cnn", None, {"image_shape": [1, 8, 8], "block_dropout": 1.5})


@pytest.mark.filterwarnings("ignore:.*optimiser steps")
@pytest.mark.parametrize("options", [{}, {"block_dropout": 0.1}])
def test_cnn_block_dropout_save_load_round_trip(tmp_path, options):
    from amalgamator.api import train_classifier
    from amalgamator.student import load_student
    from amalgamator.teachers import Teacher

    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    y = np.array(["a", "b"])[(x.mean((1, 2, 3)) > 0.5).astype(int)]
    model = train_classifier(x, y, student="cnn", steps=3, student_options={"width": 4, "out_dim": 8, **options})
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "student.json").read_text())["architecture"]["options"]
    assert ("block_dropout" in saved) == bool(options)
    back = load_student(tmp_path / "m")
    assert np.array_equal(back.predict_proba(x), model.predict_proba(x))
    n_dropout = sum(isinstance(m, nn.Dropout) for m in back.network.modules())
    assert n_dropout == (3 if options else 1)
    assert Teacher.from_pretrained(tmp_path / "m").has_dropout


class _Res:
    def __init__(self, labels):
        self.student = type("S", (), {"labels": labels})()


def test_routing_figures_count_either_owner_of_a_shared_class():
    teachers = [type("T", (), {"labels": ls})() for ls in (["a", "b"], ["b", "c"], ["c", "a"])]
    y = np.array(["a", "b", "b", "c", "a"])
    row: dict = {}
    MC._routing_figures(row, np.array([0, 1, 0, 2, 1]), _Res(["a", "b", "c"]), teachers, y)
    assert row["routing"] == pytest.approx(0.8)  # b routed to T1 or T2 is right; a routed to T2 is not
    assert row["routing_per_class"] == {"a": 0.5, "b": 1.0, "c": 1.0}


def _multiclass_results(search_every_seed: bool = False) -> dict:
    """Two seeds per case; seed 0 chose CFL's α and seed 1 reused it (``search_every_seed``: results
    written before that, where every seed searched α)."""

    def run(alpha: float, risk: float = 0.4, search: bool = True) -> dict:
        cfl = {"accuracy": 0.55, "alpha": alpha, "train_s": 3.0}
        if search or search_every_seed:
            cfl["alpha_search"] = {"0.5": {"validation": 0.6, "accuracy": 0.55},
                                   "0.25": {"validation": 0.5, "accuracy": 0.5},
                                   "0.75": {"validation": 0.4, "accuracy": 0.6}}  # fmt: skip
        rows = {
            "teacher T1 (2 classes)": {"accuracy": 0.3},
            "kd": {"accuracy": 0.5, "train_s": 1.0},
            "cfl": cfl,
            "muki-soft": {"accuracy": 0.5, "routing": 0.7, "routing_per_class": {"a": 0.5, "b": 0.9}},
            "max-logit": {"accuracy": 0.4, "routing": 0.6},
            "energy": {"accuracy": 0.4, "routing": 0.65},
            "calibrated w/o prior": {"accuracy": 0.4},
            "auto": {"accuracy": 0.6, "chose": "calibrated"},
        }
        return {"rows": rows, "teacher_training_s": 1.0, "groups": [["a", "b"], ["b", "c"], ["c", "a"]],
                "setup": {"sizes": {"teacher": 90, "validation": 10, "pool": 100, "test": 50}, "archs": ["mlp {}"],
                          "student": "mlp {}", "epochs": 1, "teacher_epochs": 1},
                "diagnosis": {"risk": risk, "risky": True, "routing_plain": 1 - risk, "sinks": [], "overconfident": [],
                              "temperatures": [1.0]}}  # fmt: skip

    return {"seeds": 2, "quick": True,
            "cases": {"c1": {"title": "Case one", "runs": [run(0.5), run(0.5, search=False)]},
                      "c2": {"title": "Case two", "runs": [run(0.5, 0.3), run(0.5, search=False)]},
                      "c3": {"title": "Case three", "runs": [run(0.75, 0.5), run(0.75, 0.6, False)]}}}  # fmt: skip


def test_multiclass_render_routing_and_cfl_alpha():
    md = MC.render(_multiclass_results(), {})
    assert "| Case one | 3 | — | 70.0 ± 0.0 | 60.0 ± 0.0 | 65.0 ± 0.0 | a 50, b 90 |" in md
    assert "## CFL's α (Eq. 6), chosen on a validation split" in md
    assert "Each case chooses α once, on seed 0" in md and "the later seeds reuse seed 0's α" in md
    assert "| case | chosen α (per seed) | validation % at α=0.5 (seed 0) |" in md
    assert "| Case three | 0.75, 0.75 | 60.0 ± 0.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | 55.0 ± 0.0 |" in md
    assert "(+ 10 held out for validation)" in md
    assert "three at seed 0 (the choice of α), one at each later seed" not in md  # no job wall times here
    old = MC.render(_multiclass_results(search_every_seed=True), {})  # results from before: every seed searched
    assert "Each case and seed trains `cfl` at every α" in old and "reuse" not in old
    assert "| case | chosen α (per seed) | validation % at α=0.5 |" in old
    assert "## Ablation" not in md  # calibrated's "w/o" rows are not MUKI's ablation
    assert "`auto` chose (no labels): Case one: calibrated; Case two: calibrated" in md


def _semisupervised_results() -> dict:
    def setting() -> dict:
        free = {r: {"accuracy": 0.5, "wall_s": 1.0} for r in SS.FREE_METHODS if r != "auto"} | {
            "supervised": {"accuracy": 0.9, "wall_s": 1.0}}  # fmt: skip
        cell = {m: {"accuracy": 0.6, "wall_s": 1.0} for m in ("sup", "tc", "auto+labels")}
        cell["tc"].update({"ttl_routing": 0.8, "trust_by_class": {}})
        cell["auto+labels"]["chose"] = "supuhc"
        cell["labeled"] = 12
        return {"groups": [["1", "2"], ["3", "4"]], "teachers": {"teacher T1": 0.4, "teacher T2": 0.4}, "free": free,
                "ratios": {"0.04": cell}, "teacher_training_s": 1.0,
                "diagnosis": {"risk": 0.3, "risky": False, "routing_plain": 0.7, "sinks": [],
                              "overconfident": []}}  # fmt: skip

    run = {"split": "syn_train / syn_test", "sizes": {"teacher": 300, "pool": 300, "test": 300}, "seconds": 1.0,
           "settings": {"overlap": setting()}}  # fmt: skip
    setup = {"teachers": ["lstm {}"], "student": "lstm {}", "epochs": 1, "teacher_epochs": 1, "batch_size": 8, "lr": 1}
    return {"seeds": 1, "quick": True, "data": {"syn": {"title": "SYN", "runs": [run], "setup": setup}}}


def test_semisupervised_render_new_rows_and_syn_caveat():
    md = SS.render(_semisupervised_results(), {})
    for row in ("kd-std", "max-logit", "energy", "auto (with labels)"):
        assert f"| {row} | " in md
    assert "| auto (no labels) | — |" in md  # a row that did not run shows a dash
    assert "| SYN | overlap | — | supuhc |" in md  # what auto chose
    assert md.count(SS.SYN_CAVEAT) == 3  # Table 3 (the quick run has no Tables 4–5), trust, diagnosis


def test_multiclass_job_config_keys_later_seeds_by_seed_0s_alpha():
    assert "alpha" not in MC._job_config("letters-4", 0, True, None)
    later = MC._job_config("letters-4", 1, True, 0.5)
    assert later["alpha"] == 0.5 and later != MC._job_config("letters-4", 1, True, 0.25)
    assert later["case"]["epochs"] == 3 and "groups" not in later["case"]
    assert json.loads(json.dumps(later))  # what the cache compares
    assert MC._job_config("letters-4", 1, False, 0.5) != later  # quick and full budgets differ


def test_saved_parts_are_reused_only_with_their_config(tmp_path):
    from amalgamator.bench.common import load_part, save_part

    path = tmp_path / "parts" / "case-seed0.json"
    assert load_part(path, {"a": 1}) is None
    save_part(path, {"a": (1, 2)}, {"rows": {"kd": {"accuracy": 0.5}}})
    assert load_part(path, {"a": (1, 2)}) == {"rows": {"kd": {"accuracy": 0.5}}}  # tuples compared as JSON lists
    assert load_part(path, {"a": (1, 3)}) is None
    assert [p.name for p in path.parent.iterdir()] == ["case-seed0.json"]  # no temporary file left
    path.write_text('{"config": {"a": [1, 2]}, "res')  # a torn file
    assert load_part(path, {"a": (1, 2)}) is None


def test_default_workers(monkeypatch):
    from amalgamator.bench.common import WORKERS_ENV, default_workers

    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert 1 <= default_workers() <= 8
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    for bad in ("two", "0"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(DataError, match=WORKERS_ENV):
            default_workers()


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_queues_the_jobs_a_finished_job_unlocks(workers):
    """Seed 0 of each case first; a case's later seeds are queued when its seed 0 finishes, and see its
    result. ``dict`` stands in for a job function (module-level and picklable, as the workers need)."""
    from amalgamator.bench.common import run_jobs

    def job(case: str, seed: int, alpha: float | None = None) -> tuple:
        return ([("case", case), ("seed", seed), ("alpha", alpha)],)

    done: dict[tuple[str, int], dict] = {}
    order: list[tuple[str, int]] = []

    def finished(j: tuple, result: dict, seconds: float) -> list[tuple]:
        key = (result["case"], result["seed"])
        done[key] = result
        order.append(key)
        assert seconds >= 0
        return [job(key[0], s, alpha=0.25 if key[0] == "a" else 0.75) for s in (1, 2)] if key[1] == 0 else []

    run_jobs(dict, [job("a", 0), job("b", 0)], workers, finished, lambda j: f"{j[0][0][1]} seed {j[0][1][1]}")
    assert sorted(done) == [(c, s) for c in "ab" for s in range(3)]
    assert {k: v["alpha"] for k, v in done.items() if k[1]} == {("a", 1): 0.25, ("a", 2): 0.25, ("b", 1): 0.75,
                                                                  ("b", 2): 0.75}  # fmt: skip
    if workers == 1:  # in queue order: both seeds 0 before any later seed
        assert order == [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1), ("b", 2)]


def test_run_jobs_a_failed_job_stops_the_others():
    """A job that fails in a worker ends the run at once: the job beside it is stopped, not waited for."""
    import time

    from amalgamator.bench.common import run_jobs

    t0 = time.perf_counter()
    with pytest.raises(ValueError):  # time.sleep(-1) fails; time.sleep(60) would keep the other worker busy
        run_jobs(time.sleep, [(60,), (-1,)], 2, lambda *_: None, str)
    assert time.perf_counter() - t0 < 30


# Suite ``experts`` (issue 19) ------------------------------------------------------------------------------------


def test_experts_cases_teachers_and_overlap():
    from collections import Counter

    from amalgamator.bench import experts as EX

    cases = {c.key: c for c in EX.cases(quick=False)}
    assert list(cases) == ["letters-4", "letters-8", "letters-13", "letters-13-overlap", "fashion-5", "fortunes-7"]
    groups = {k: c.groups(_labels(c)) for k, c in cases.items()}
    assert [len(g) for g in groups["letters-4"]] == [6, 6, 7, 7]
    assert [len(g) for g in groups["letters-13"]] == [2] * 13
    assert [len(g) for g in groups["fashion-5"]] == [2] * 5 and [len(g) for g in groups["fortunes-7"]] == [2] * 7
    ring = groups["letters-13-overlap"]
    assert ring[0] == ["A", "B", "C", "D"] and ring[12] == ["Y", "Z", "A", "B"]
    assert set(Counter(lb for g in ring for lb in g).values()) == {2}  # every letter known to exactly two teachers
    for key, g in groups.items():
        assert len(cases[key].archs) >= len(g), key  # one architecture per teacher
        if key != "letters-13-overlap":
            assert sorted(lb for grp in g for lb in grp) == sorted(_labels(cases[key])), key  # disjoint, all owned
    for key in ("letters-4", "letters-8", "letters-13", "letters-13-overlap"):
        c = cases[key]
        assert (c.teacher_rows, c.pool_rows, c.test_rows, c.epochs, c.teacher_epochs) == (8000, 8000, None, 20, 20)
    assert cases["fashion-5"].pool_rows == 10000 and cases["fortunes-7"].student == "text"
    assert [c.key for c in EX.cases(quick=True)] == ["letters-4", "letters-13"]


def test_experts_rows_and_label_budgets():
    from amalgamator.bench import experts as EX
    from amalgamator.errors import AmalgamatorError

    assert EX.expand_rows(["sup (1 %)"]) == {"sup (1 %)"}
    assert EX.expand_rows(["mahalanobis"]) == {"mahalanobis", "mahalanobis (1/class)", "mahalanobis (1 %)",
                                               "mahalanobis (2 %)"}  # fmt: skip
    assert EX.expand_rows(["auto (no labels)", "supervised"]) == {"auto", EX.SUPERVISED}
    with pytest.raises(AmalgamatorError, match="unknown experts row"):
        EX.expand_rows(["bogus"])
    y = np.array(list("aabbbcccc") * 50)
    one = EX.labeled_rows(y, "1/class", 0)
    assert sorted(y[one]) == ["a", "b", "c"]
    assert len(EX.labeled_rows(y, "2 %", 0)) == 9 and len(EX.labeled_rows(y, "1 %", 0)) == 4
    assert np.array_equal(EX.labeled_rows(y, "2 %", 3), EX.labeled_rows(y, "2 %", 3))  # a recomputed row: same labels
    assert not np.array_equal(EX.labeled_rows(y, "2 %", 3), EX.labeled_rows(y, "2 %", 4))


def test_experts_oracle_and_target_accuracy():
    import torch

    from amalgamator.bench import experts as EX

    union = ["a", "b", "c"]
    # T1 owns a, b; T2 owns b, c (b twice: its owners' probabilities are averaged)
    p1 = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    p2 = np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    y = np.array(["a", "a", "c", "b"])
    # row 0: T1 says a; row 1: T1 says a; row 2: T2 says c; row 3: mean over b of T1 0.5 / T2 0.9 -> b wins
    assert EX.oracle_accuracy([p1, p2], [["a", "b"], ["b", "c"]], union, y) == 1.0
    # row 0 (b, both own it): the mean placed in the union is a .45, b .3, c .25 -> a, wrong; row 3 (c): T2 says b
    assert EX.oracle_accuracy([p1, p2], [["a", "b"], ["b", "c"]], union, np.array(["b", "a", "b", "c"])) == 0.5

    class Res:
        student = type("S", (), {"labels": union})()
        diagnostics = {"target": torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7], [0.0, 0.9, 0.1], [1.0, 0, 0]]),
                       "routing": torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])}  # fmt: skip

    teachers = [type("T", (), {"labels": ls})() for ls in (["a", "b"], ["b", "c"])]
    # the first three rows are the unlabeled pool (the fourth, labeled, is not counted)
    figs = EX.target_figures(Res(), teachers, np.array(["a", "b", "b"]))
    assert figs == {"target": pytest.approx(2 / 3), "routing": pytest.approx(1.0)}
    Res.diagnostics = {"owner": torch.tensor([0, 0, 1])}
    assert EX.target_figures(Res(), teachers, np.array(["a", "c", "b"])) == {"routing": pytest.approx(2 / 3)}
    Res.diagnostics = {}
    assert EX.target_figures(Res(), teachers, np.array(["a"])) == {}


def _experts_results() -> dict:
    def run(ens: float, oracle: float, mahal: float, risk: float, target: float) -> dict:
        rows = {
            "best teacher": {"accuracy": 0.2, "teacher": "T1"},
            "ensemble": {"accuracy": ens, "wall_s": 0.1},
            "calibrated": {"accuracy": 0.5, "wall_s": 12.0, "teacher_s": 2.0, "target": target},
            "mahalanobis": {"accuracy": mahal, "wall_s": 17.0, "teacher_s": 2.0, "target": 0.8, "routing": 0.9},
            "auto": {"accuracy": 0.5, "wall_s": 10.0, "chose": "calibrated"},
            "oracle routing": {"accuracy": oracle},
            "supervised (upper bound)": {"accuracy": 0.95, "wall_s": 5.0},
            "sup (1/class)": {"accuracy": 0.3, "wall_s": 5.0, "labeled": 26},
            "auto (2 %)": {"accuracy": 0.6, "wall_s": 5.0, "chose": "supuhc", "labeled": 160},
        }
        return {"rows": rows, "groups": [["A", "B"], ["C", "D"]], "statistics_s": 0.5, "teacher_training_s": 3.0,
                "labeled": {"1/class": 26, "2 %": 160}, "seconds": 100.0,
                "setup": {"sizes": {"teacher": 8000, "pool": 8000, "test": 4000}, "archs": ["mlp {}"] * 2,
                          "student": "mlp {}", "epochs": 20, "teacher_epochs": 20},
                "diagnosis": {"risk": risk, "risky": risk > 0.3, "routing_plain": 1 - risk, "sinks": [],
                              "overconfident": [], "temperatures": [1.0, 1.0]}}  # fmt: skip

    def case(title: str, n: int, *runs: dict) -> dict:
        return {"title": title, "teachers": n, "runs": list(runs)}

    figures = {"letters-4": ("L4", 4, (0.4, 0.8, 0.6, 0.2, 0.7)), "letters-8": ("L8", 8, (0.3, 0.9, 0.6, 0.4, 0.5)),
               "letters-13": ("L13", 13, (0.2, 0.9, 0.9, 0.6, 0.3))}  # fmt: skip
    return {"seeds": 2, "quick": False, "budgets": ["1/class", "1 %", "2 %"],
            "cases": {k: case(title, n, run(*f), run(*f)) for k, (title, n, f) in figures.items()}}  # fmt: skip


def test_experts_render_gap_closed_routing_and_times(tmp_path):
    from amalgamator.bench import experts as EX

    assert EX.gap_closed(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert EX.gap_closed(0.3, 0.4, 0.8) == pytest.approx(-0.25)  # below the ensemble
    assert EX.gap_closed(0.6, 0.4, 0.4) is None and EX.gap_closed(None, 0.4, 0.8) is None
    md = EX.render(_experts_results(), {"accuracy against teachers": "experts-teachers.png"})
    assert "| mahalanobis | 60.0 ± 0.0 | 60.0 ± 0.0 | 90.0 ± 0.0 |" in md
    assert "| oracle routing | 80.0 ± 0.0 | 90.0 ± 0.0 | 90.0 ± 0.0 |" in md
    assert "| cluster-route |" not in md  # a row no case ran has no line
    # gap closed: L4 (0.6-0.4)/(0.8-0.4) = 50, L8 (0.6-0.3)/(0.9-0.3) = 50, L13 (0.9-0.2)/(0.9-0.2) = 100; mean 67
    assert "| mahalanobis | 50 | 50 | 100 | 67 |" in md
    assert "| best teacher | -50 | -17 | 0 | -22 |" in md
    assert "| supervised (upper bound) | 137 | 108 | 107 | 118 |" in md
    assert "| sup (1/class) | -25 | 0 | 14 | -4 |" in md
    assert "| ensemble | 0 |" not in md and "| oracle routing | 100 |" not in md
    assert "| auto (2 %) | 60.0 ± 0.0 |" in md and "1/class = 26, 2 % = 160" in md
    # routing: target / routing accuracy
    assert "| mahalanobis | 80.0 / 90.0 | 80.0 / 90.0 | 80.0 / 90.0 |" in md
    assert "| calibrated | 70.0 / — | 50.0 / — | 30.0 / — |" in md
    # diagnosis: 1 − risk ranks the cases as calibrated's target accuracy does
    assert "1 − risk with calibrated's target accuracy: 1.00" in md
    assert "| L8 | 40.0 ± 0.0 | 60.0 ± 0.0 | 60.0 ± 0.0 | 50.0 ± 0.0 | 80.0 ± 0.0 | 2/2 |" in md
    # wall time without teacher passes, as a multiple of calibrated's (10 s): mahalanobis 15 s
    assert "| mahalanobis | 15.0 (1.5×) | 15.0 (1.5×) | 15.0 (1.5×) |" in md and "| calibrated | 10.0 | 10.0 |" in md
    assert "calibrated (no labels), supuhc (labels)" in md
    assert "![accuracy against teachers](experts-teachers.png)" in md
    assert EX.teachers_plot(_experts_results(), tmp_path / "t.png") and (tmp_path / "t.png").stat().st_size > 1000
    one = _experts_results()
    del one["cases"]["letters-8"], one["cases"]["letters-13"]
    assert not EX.teachers_plot(one, tmp_path / "u.png")  # one point is no curve
    assert "n/a (needs 3 cases, 1 here)" in EX.render(one, {})


def test_speed_markdown_reports_ratios_to_the_floor():
    from amalgamator.bench import speed

    r = {"machine": "test", "quick": False,
         "startup": [{"command": "amalgamator --help", "seconds": 0.3, "budget": 0.5, "budget_label": "≤ 0.50 s",
                      "ok": True, "exit": 0}],
         "kd_digits": {"whole_s": 3.0, "fit_s": 2.4, "steps": 1000, "bare_s": 2.0, "bare_steps": 1000,
                       "teacher_pass_s": 0.1, "floor_s": 2.1},
         "tc_syn": [{"seed": 0, "whole_s": 30.0, "amalgamate_s": 25.0, "fit_s": 22.0, "steps": 6000, "bare_s": 20.0,
                     "bare_steps": 6000, "accuracy": 0.92}]}  # fmt: skip
    md = speed.markdown(r)
    assert "| fit, ms per step | 2.400 | 2.000 | 1.20 |" in md
    assert "| `amalgamator --help` | 0.30 | ≤ 0.50 s | yes |" in md
    assert "| 0 | 30.0 | 25.0 | 22.0 | 3.67 | 3.33 | 1.10 | 14.1 × | 92.0 |" in md


def test_bare_fit_trains_the_same_network_shape(digits):
    import torch

    from amalgamator.bench.speed import bare_fit

    x, _, _, _, _ = digits
    net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    target = torch.softmax(torch.randn(len(x), 3), -1)
    seconds, steps = bare_fit(net, torch.as_tensor(x[:100]), target[:100], batch_size=32, epochs=2, lr=1e-3)
    assert steps == 8 and seconds > 0
