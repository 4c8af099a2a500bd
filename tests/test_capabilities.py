"""Capabilities (issue 18, item 2): what each teacher can give, what each method needs, and a refusal before any
work when a method needs what a teacher cannot give."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn
from typer.testing import CliRunner

import amalgamator as am
from amalgamator import cli
from amalgamator.errors import MethodError
from amalgamator.methods import REGISTRY
from amalgamator.methods.base import methods_serving
from amalgamator.teachers import CAPABILITIES

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:.*optimiser steps")]

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]
README = Path(__file__).resolve().parents[1] / "README.md"


def _net(dropout: bool) -> nn.Module:
    layers = [nn.Linear(64, 16), nn.ReLU(), *([nn.Dropout(0.1)] if dropout else []), nn.Linear(16, 5)]
    return nn.Sequential(*layers)


def test_torch_teacher_capabilities_follow_its_taps_and_dropout():
    bare = am.Teacher(_net(dropout=False), LOW, name="bare")
    assert bare.capabilities == {"outputs", "gradients"} and bare.origin is None
    tapped = am.Teacher(_net(dropout=False), LOW, name="tapped", features="1")
    assert tapped.capabilities == {"outputs", "gradients", "features"}
    full = am.Teacher(_net(dropout=True), LOW, name="full", features="1")
    assert full.capabilities == {"outputs", "gradients", "features", "dropout"}
    assert set(full.capabilities) <= set(CAPABILITIES)


def test_foreign_and_embedding_teachers_give_outputs_only(sk_teacher):
    fn = am.Teacher.from_callable(lambda b: np.full((len(b), 5), 0.2), LOW, name="fn")
    data = np.zeros((3, 64), np.float32)
    given = am.Teacher.from_outputs(np.full((3, 5), 0.2), LOW, data, name="given")
    table = am.Teacher.from_embeddings({"cat": np.ones(3), "dog": np.zeros(3)}, name="vec")
    for teacher, origin in ((fn, "a callable"), (given, "outputs computed elsewhere"),
                            (sk_teacher, "a scikit-learn model"), (table, "a word-embedding table")):  # fmt: skip
        assert teacher.capabilities == {"outputs"} and teacher.origin == origin


@pytest.fixture(scope="module")
def sk_teacher(digits):
    from sklearn.linear_model import LogisticRegression

    x, y, t, _, _ = digits
    keep = t[np.isin(y[t], HIGH)]
    return am.Teacher.from_sklearn(LogisticRegression(max_iter=300).fit(x[keep], y[keep]), name="lr")


def test_cfl_with_a_callable_teacher_is_refused_before_any_work(digits, teachers, tmp_path):
    """The refusal names the method, what is missing, the teacher and what it is, and the methods that work; the
    callable never ran, the store stayed empty and the out folder was never made."""
    x, _, _, p, _ = digits
    calls: list[int] = []

    def probs(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return np.full((len(batch), 5), 0.2)

    fn = am.Teacher.from_callable(probs, LOW, name="lr")
    store = tmp_path / "store"
    with pytest.raises(MethodError) as err:
        am.amalgamate([fn, teachers[1]], data=x[p], method="cfl", epochs=1, store=store, out=tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith("method 'cfl' needs feature taps, which teacher 'lr' (a callable) cannot give; ")
    fit = msg.split("methods that work with these teachers: ")[1].rstrip(".").split(", ")
    assert {"ensemble", "kd", "uhc", "calibrated", "auto"} <= set(fit) and not {"cfl", "dfa", "muki-soft"} & set(fit)
    assert calls == [] and not (tmp_path / "out").exists() and not any(store.rglob("*.safetensors"))
    am.amalgamate([fn, teachers[1]], data=x[p][:40], method="kd", epochs=1, progress=False)  # outputs suffice
    assert calls


@pytest.mark.parametrize("method", ["dfa", "muki-hard", "muki-soft"])
def test_other_needs_refuse_foreign_teachers(digits, teachers, sk_teacher, method):
    x, _, _, p, _ = digits
    with pytest.raises(MethodError) as err:
        am.amalgamate([teachers[0], sk_teacher], data=x[p], method=method, epochs=1)
    what = "feature taps" if method == "dfa" else "dropout for Monte-Carlo passes"
    msg = str(err.value)
    assert f"method '{method}' needs {what}, which teacher 'lr' (a scikit-learn model) cannot give" in msg, msg
    assert ("method_options={'k': 1}" in msg) == method.startswith("muki")  # MUKI's published variant


def test_muki_without_dropout_runs_only_when_asked_for(digits, teachers, sk_teacher):
    x, _, _, p, _ = digits
    res = am.amalgamate([teachers[0], sk_teacher], data=x[p], method="muki-soft", method_options={"k": 1},
                        epochs=1, progress=False)  # fmt: skip
    assert res.timings["mc"] == 0.0 and res.student.info["method_options"]["k"] == 1


def test_a_method_needing_gradients_refuses_a_foreign_teacher(sk_teacher):
    targetnet = REGISTRY["targetnet"]()
    assert "gradients" in targetnet.needs_of(sk_teacher)
    with pytest.raises(MethodError, match=r"needs a live module for gradients, which teacher 'lr' \(a scikit"):
        targetnet.check_capabilities([sk_teacher])


def test_needs_are_capabilities_and_methods_serving_respects_them(teachers, sk_teacher):
    for cls in REGISTRY.values():
        assert "outputs" in cls.needs and set(cls.needs) <= set(CAPABILITIES), cls.name
    assert {name for name, cls in REGISTRY.items() if "features" in cls.needs} >= {"cfl", "dfa", "venus"}
    tapped = methods_serving(teachers)
    assert {"cfl", "dfa", "muki-hard", "muki-soft", "kd"} <= set(tapped)
    mixed = methods_serving([teachers[0], sk_teacher])
    assert "kd" in mixed and not {"cfl", "dfa", "muki-hard", "muki-soft"} & set(mixed)


def test_inspect_marks_methods_a_teacher_cannot_serve(teachers, sk_teacher):
    rows = {name: (ok, why) for name, _, ok, why in cli.suitable_methods([teachers[0], sk_teacher], has_labeled=False)}
    assert rows["kd"] == (True, "") and rows["cfl"][0] is False
    assert "(a scikit-learn model) cannot give" in rows["cfl"][1]


def test_the_methods_listing_shows_what_each_method_needs():
    res = CliRunner().invoke(cli.app, ["methods"], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "needs" in res.output
    line = {ln.split("│")[1].strip(): ln for ln in res.output.splitlines() if ln.count("│") > 7}
    assert "outputs, features" in line["cfl"] and "outputs, features" in line["dfa"]
    assert "outputs, dropout" in line["muki-soft"] and "k = 1" in line["muki-soft"]
    assert "outputs, gradients" in line["targetnet"]
    assert line["kd"].rstrip(" │").endswith("outputs")


def test_readme_methods_tables_agree_with_the_declared_needs():
    """The README's "needs" column says feature taps, dropout and live teachers exactly where the code does."""
    said: dict[str, str] = {}
    for row in README.read_text().splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([a-z0-9+\-]+)`(?: \(default\))?", cells[0]) if len(cells) >= 5 else None
        if name and name.group(1) in REGISTRY:
            said[name.group(1)] = cells[-1]
    assert {"cfl", "dfa", "muki-soft", "venus", "targetnet", "kd"} <= set(said)
    for name, text in said.items():
        needs = REGISTRY[name].needs
        assert ("feature tap per teacher" in text) == ("features" in needs), name
        assert ("dropout" in text) == ("dropout" in needs), name
        assert ("live" in text) == ("gradients" in needs), name
