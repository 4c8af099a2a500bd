"""Kinds in the core: multilabel and chain students and teachers, their files, metrics and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import amalgamator as am
from amalgamator.cli import app, main
from amalgamator.data import Inputs
from amalgamator.errors import AmalgamatorError, DataError, MethodError, TeacherError
from amalgamator.io import load_table
from amalgamator.kinds import get_kind, multilabel_targets
from amalgamator.student import Student

LABELS = ["a", "b", "c"]


def _rows(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.int64)
    return x, y


@pytest.mark.parametrize("kind", ["multilabel", "chain"])
def test_a_multilabel_student_predicts_a_matrix_and_survives_save_and_load(tmp_path, kind):
    x, _ = _rows()
    torch.manual_seed(0)
    st = Student.create("mlp", Inputs(x), LABELS, kind, {"hidden": [8]})
    proba = st.predict_proba(x)
    assert proba.shape == (60, 3) and not np.allclose(proba.sum(1), 1.0)  # independent sigmoids, not a softmax
    pred = st.predict(x)
    assert pred.shape == (60, 3) and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    st.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "student.json").read_text())
    assert meta["kind"] == kind and (("head" in meta["architecture"]) == (kind == "chain"))
    back = am.load_student(tmp_path / "s")
    assert back.kind == kind
    np.testing.assert_allclose(back.predict_proba(x), proba, rtol=0, atol=1e-6)
    teacher = am.Teacher.from_pretrained(tmp_path / "s", name="t")
    assert teacher.kind == kind
    np.testing.assert_array_equal(teacher.predict(x), pred)


def test_a_chain_student_accepts_a_forced_state_as_a_teacher(tmp_path):
    x, _ = _rows()
    torch.manual_seed(0)
    st = Student.create("mlp", Inputs(x), LABELS, "chain", {"hidden": [8]})
    t = st.as_teacher("chain")
    mask = torch.zeros(60, 3, dtype=torch.bool)
    mask[:, 0] = True
    forced = t.forced(torch.as_tensor(x), torch.full((60, 3), 0.9), mask)
    assert torch.allclose(forced[:, 0], torch.logit(torch.tensor(0.9)), atol=1e-5)
    plain = am.Teacher(nn.Linear(4, 3), LABELS, name="plain", kind="multilabel")
    with pytest.raises(TeacherError, match="only chain teachers accept forced labels"):
        plain.forced(torch.as_tensor(x), torch.full((60, 3), 0.9), mask)


def test_evaluate_reports_the_multilabel_metrics_and_reads_name_lists():
    x, y = _rows()
    torch.manual_seed(0)
    st = Student.create("mlp", Inputs(x), LABELS, "multilabel", {"hidden": [8]})
    pred = st.predict(x)
    m = am.evaluate(st, x, y)
    assert set(m) == {"subset_accuracy", "hamming_loss", "f1_micro", "f1_macro", "n"}
    assert m["hamming_loss"] == pytest.approx(float((pred != y).mean()))
    assert m["subset_accuracy"] == pytest.approx(float((pred == y).all(1).mean()))
    names = [[LABELS[j] for j in np.flatnonzero(row)] for row in y]
    assert am.evaluate(st, x, names) == m
    perfect = am.evaluate(st, x, pred)
    assert perfect["subset_accuracy"] == 1.0 and perfect["hamming_loss"] == 0.0


def test_label_matrices_other_than_zero_one_are_refused_in_one_line():
    with pytest.raises(DataError, match=r"only 0 and 1.*threshold probabilities first") as e:
        multilabel_targets(np.full((4, 3), 0.7), LABELS)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="one column per label"):
        multilabel_targets(np.zeros((4, 2)), LABELS)
    with pytest.raises(DataError, match=r"does not have: \['z'\]"):
        multilabel_targets([["a"], ["z"]], LABELS)


def test_a_multiclass_method_refuses_multilabel_teachers_naming_what_fits():
    x, _ = _rows()
    teachers = [am.Teacher(nn.Linear(4, 2), ["a", "b"], name="ab", kind="multilabel"),
                am.Teacher(nn.Linear(4, 2), ["b", "c"], name="bc", kind="multilabel")]  # fmt: skip
    with pytest.raises(MethodError, match=r"'kd' amalgamates multiclass teachers, but 'ab' is multilabel") as e:
        am.amalgamate(teachers, data=x, method="kd", epochs=1, progress=False)
    assert "\n" not in str(e.value)


def test_teachers_of_kinds_that_cannot_share_a_student_are_refused():
    x, _ = _rows()
    teachers = [am.Teacher(nn.Linear(4, 2), ["a", "b"], name="mc"),
                am.Teacher(nn.Linear(4, 2), ["c", "d"], name="ml", kind="multilabel")]  # fmt: skip
    with pytest.raises(MethodError, match=r"cannot be amalgamated into one student.*each kind separately"):
        am.amalgamate(teachers, data=x, method="kd", epochs=1, progress=False)
    assert get_kind("embedding").name == "embedding"  # the meta-embedding family's kind (tests/test_metaembedding.py)
    with pytest.raises(AmalgamatorError, match="kind 'vectors' is unknown"):
        get_kind("vectors")


def test_data_files_carry_multilabel_labels(tmp_path):
    x, y = _rows(6)
    np.savez(tmp_path / "ml.npz", x=x, y=y, label_names=np.asarray(LABELS))
    _, got = load_table(tmp_path / "ml.npz")
    assert got == [[LABELS[j] for j in np.flatnonzero(r)] for r in y]
    np.savez(tmp_path / "bare.npz", x=x, y=y)
    with pytest.raises(DataError, match="no 'label_names' array"):
        load_table(tmp_path / "bare.npz")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
    for j, lb in enumerate(LABELS):
        frame[lb] = y[:, j]
    frame.to_csv(tmp_path / "ml.csv", index=False)
    xs, got_csv = load_table({"path": str(tmp_path / "ml.csv"), "label_columns": LABELS})
    assert got_csv == got and xs.shape == (6, 4)
    (tmp_path / "ml.jsonl").write_text(
        "\n".join(json.dumps({"text": f"row {i}", "y": names}) for i, names in enumerate(got))
    )
    _, got_jsonl = load_table(tmp_path / "ml.jsonl")
    assert got_jsonl == got


def test_a_stated_kind_must_match_the_folder(tmp_path):
    x, _ = _rows()
    Student.create("mlp", Inputs(x), LABELS, "multilabel", {"hidden": [8]}).save(tmp_path / "s")
    with pytest.raises(TeacherError, match=r"holds a multilabel model but kind 'multiclass' was given"):
        am.Teacher.from_pretrained(tmp_path / "s", kind="multiclass")


def test_the_cli_evaluates_a_multilabel_student(tmp_path, capsys):
    x, y = _rows()
    Student.create("mlp", Inputs(x), LABELS, "multilabel", {"hidden": [8]}).save(tmp_path / "s")
    np.savez(tmp_path / "test.npz", x=x, y=y, label_names=np.asarray(LABELS))
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "s"), "--data", str(tmp_path / "test.npz"), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert {"subset_accuracy", "hamming_loss", "f1_micro", "f1_macro"} <= set(metrics) and metrics["n"] == 60
    bad = y.astype(float) * 0.8
    np.savez(tmp_path / "bad.npz", x=x, y=bad, label_names=np.asarray(LABELS))
    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(tmp_path / "s"), "--data", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: ") and "only 0 and 1" in err and err.count("\n") == 1


def test_the_methods_listing_shows_each_methods_kinds():
    res = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "kinds" in res.output and "multiclass" in res.output


def test_a_recipe_of_two_multilabel_teacher_folders_runs_saves_and_evaluates(tmp_path, capsys):
    """Two multilabel teachers sharing label 'b', saved as folders; `amalgamator run` trains kd-ml on a
    pool, saves the student and scores it on a test file with the multilabel metrics."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 4)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.int64)
    for name, labels, cols in (("ab", ["a", "b"], [0, 1]), ("bc", ["b", "c"], [1, 2])):
        torch.manual_seed(0)
        st = Student.create("mlp", Inputs(x), labels, "multilabel", {"hidden": [16]})
        opt = torch.optim.Adam(st.network.parameters(), 1e-2)
        xt, yt = torch.as_tensor(x[:300]), torch.as_tensor(y[:300][:, cols], dtype=torch.float32)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(st.network(xt), yt).backward()
            opt.step()
        st.network.eval()
        st.save(tmp_path / name)
    np.savez(tmp_path / "pool.npz", x=x[300:600])
    np.savez(tmp_path / "test.npz", x=x[600:], y=y[600:], label_names=np.asarray(LABELS))
    (tmp_path / "recipe.yaml").write_text(
        "teachers:\n  - {path: ab, kind: multilabel}\n  - bc\ndata: pool.npz\ntest: test.npz\n"
        "method: kd-ml\nstudent: mlp\nstudent_options: {hidden: [16]}\ntrain: {steps: 300, batch_size: 32, lr: 0.01}\n"
    )
    assert main_code(["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")]) == 0
    assert "test f1_micro" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]
    assert metrics["f1_micro"] > 0.85 and metrics["n"] == 100  # each label learnt from a teacher that knows it
    meta = json.loads((tmp_path / "out" / "student" / "student.json").read_text())
    assert meta["kind"] == "multilabel" and meta["labels"] == LABELS
    assert "### Per label" in (tmp_path / "out" / "report.md").read_text()


def main_code(argv: list[str]) -> int:
    """``amalgamator`` in-process: its exit code (0 when it returns normally)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_a_multitask_student_is_scored_per_task_with_roc_auc(tmp_path):
    x, y = _rows(80)
    torch.manual_seed(0)
    st = Student.create("mlp", Inputs(x), LABELS, "multitask", {"hidden": [8]})
    assert st.predict(x).shape == (80, 3)
    y[:, 2] = 1  # a task whose test rows are all positive has no ROC-AUC
    m = am.evaluate(st, x, y)
    proba = st.predict_proba(x)
    from sklearn.metrics import roc_auc_score

    assert m["roc_auc"]["a"] == pytest.approx(roc_auc_score(y[:, 0], proba[:, 0])) and m["roc_auc"]["c"] is None
    assert m["roc_auc_mean"] == pytest.approx((m["roc_auc"]["a"] + m["roc_auc"]["b"]) / 2)
    assert m["accuracy"]["c"] == pytest.approx(float((proba[:, 2] > 0.5).mean()))
    st.save(tmp_path / "mt")
    assert am.load_student(tmp_path / "mt").kind == "multitask"
    mixed = [am.Teacher(nn.Linear(4, 2), ["a", "b"], name="mt", kind="multitask"),
             am.Teacher(nn.Linear(4, 2), ["c", "d"], name="ml", kind="multilabel")]  # fmt: skip
    with pytest.raises(MethodError, match="cannot be amalgamated into one student"):
        am.amalgamate(mixed, data=x, method="kd", epochs=1, progress=False)


class _TwoHeads(nn.Module):
    """A multitask net: a shared layer (tapped as ``body``) and one logit per task."""

    def __init__(self, n_tasks: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.heads = nn.Linear(8, n_tasks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x))


@pytest.mark.filterwarnings("ignore:.*optimiser steps.*:UserWarning")
def test_auto_picks_by_kind_and_says_why():
    from amalgamator.models.chain import ChainClassifier

    x, _ = _rows()
    torch.manual_seed(0)
    cases = [
        ([am.Teacher(ChainClassifier(4, 2), ["a", "b"], name="c1", kind="chain"),
          am.Teacher(ChainClassifier(4, 2), ["b", "c"], name="c2", kind="chain")], "ant", "chain"),
        ([am.Teacher(ChainClassifier(4, 2), ["a", "b"], name="c1", kind="chain"),
          am.Teacher(nn.Linear(4, 2), ["b", "c"], name="plain", kind="multilabel")], "kd-ml", "multilabel"),
        ([am.Teacher(_TwoHeads(2), ["a", "b"], name="m1", kind="multitask", features="body"),
          am.Teacher(_TwoHeads(2), ["b", "c"], name="m2", kind="multitask", features="body")], "venus", "multitask"),
        ([am.Teacher(_TwoHeads(2), ["a", "b"], name="m1", kind="multitask", features="body"),
          am.Teacher(_TwoHeads(2), ["b", "c"], name="bare", kind="multitask")], "kd-mt", "multitask"),
    ]  # fmt: skip
    for teachers, method, kind in cases:
        res = am.amalgamate(teachers, data=x, epochs=1, progress=False)
        choice = res.student.info["method_choice"]
        assert choice["method"] == method and res.student.kind == kind, (method, choice)
        assert res.student.predict(x).shape == (60, 3)
    assert "plain are not chains" in am.amalgamate(cases[1][0], data=x, epochs=1, progress=False).student.info[
        "method_choice"]["why"]  # fmt: skip
