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


def _multiclass_results() -> dict:
    def run(alpha: float, risk: float = 0.4) -> dict:
        search = {"0.5": {"validation": 0.6, "accuracy": 0.55}, "0.25": {"validation": 0.5, "accuracy": 0.5},
                  "0.75": {"validation": 0.4, "accuracy": 0.6}}  # fmt: skip
        rows = {
            "teacher T1 (2 classes)": {"accuracy": 0.3},
            "kd": {"accuracy": 0.5, "train_s": 1.0},
            "cfl": {"accuracy": 0.55, "alpha": alpha, "alpha_search": search, "train_s": 3.0},
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
            "cases": {"c1": {"title": "Case one", "runs": [run(0.5), run(0.25)]},
                      "c2": {"title": "Case two", "runs": [run(0.5, 0.3), run(0.5)]},
                      "c3": {"title": "Case three", "runs": [run(0.75, 0.5), run(0.5, 0.6)]}}}  # fmt: skip


def test_multiclass_render_routing_and_cfl_alpha():
    md = MC.render(_multiclass_results(), {})
    assert "| Case one | 3 | — | 70.0 ± 0.0 | 60.0 ± 0.0 | 65.0 ± 0.0 | a 50, b 90 |" in md
    assert "## CFL's α (Eq. 6), chosen on a validation split" in md
    assert "| Case one | 0.5, 0.25 | 60.0 ± 0.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | 55.0 ± 0.0 |" in md
    assert "(+ 10 held out for validation)" in md
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
