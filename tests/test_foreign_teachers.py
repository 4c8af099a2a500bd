"""Teachers that are not torch models: callables, precomputed outputs, scikit-learn estimators."""

from __future__ import annotations

import numpy as np
import pytest

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import TeacherError
from amalgamator.store import LOGITS, TeacherStore

pytestmark = pytest.mark.usefixtures("one_thread")

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]


@pytest.fixture(scope="module")
def split(digits):
    """conftest's digits permutation: its first 400 rows train the teachers, the next 300 are the pool."""
    x, y, first, second, _ = digits
    return x, y, first[:400], np.concatenate([first[400:], second[:100]])


@pytest.fixture(scope="module")
def sk_low(split):
    from sklearn.linear_model import LogisticRegression

    x, y, t, _ = split
    keep = t[np.isin(y[t], LOW)]
    return LogisticRegression(max_iter=300).fit(x[keep], y[keep])


@pytest.fixture(scope="module")
def sk_high(split):
    from sklearn.linear_model import LogisticRegression

    x, y, t, _ = split
    keep = t[np.isin(y[t], HIGH)]
    return LogisticRegression(max_iter=300).fit(x[keep], y[keep])


def _clipped_log(p):
    return np.log(np.clip(p, 1e-7, 1.0))


def test_sklearn_teacher_store_outputs_are_clipped_log_proba(split, sk_low, tmp_path):
    x, _, _, pool = split
    teacher = am.Teacher.from_sklearn(sk_low, name="sk")
    assert list(teacher.labels) == [str(c) for c in sk_low.classes_]
    got = TeacherStore(tmp_path, batch_size=64).get(teacher, Inputs(x[pool]))[LOGITS]
    np.testing.assert_allclose(got.numpy(), _clipped_log(sk_low.predict_proba(x[pool])), rtol=1e-5, atol=1e-5)
    again = TeacherStore(tmp_path)
    again.get(am.Teacher.from_sklearn(sk_low, name="sk"), Inputs(x[pool]))
    assert again.stats.hits == 1  # same estimator, same key


def test_sklearn_decision_function_binary_gives_half_scores(split):
    from sklearn.svm import LinearSVC

    x, y, t, _ = split
    keep = t[np.isin(y[t], ["0", "1"])]
    svc = LinearSVC().fit(x[keep], y[keep])
    teacher = am.Teacher.from_sklearn(svc, name="svc")
    s = svc.decision_function(x[:20])
    np.testing.assert_allclose(teacher.logits(x[:20]).numpy(), np.stack([-s / 2, s / 2], 1), rtol=1e-5, atol=1e-5)


def test_unfitted_and_multi_output_multiclass_estimators_are_refused():
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    with pytest.raises(TeacherError, match="fit it"):
        am.Teacher.from_sklearn(LogisticRegression(), name="raw")
    rng = np.random.default_rng(0)
    xm, ym = rng.normal(size=(40, 3)), np.stack([rng.integers(0, 2, 40), rng.integers(0, 3, 40)], 1)
    multi = MultiOutputClassifier(LogisticRegression()).fit(xm, ym)
    with pytest.raises(TeacherError, match=r"'multi': output 1 has 3 classes .* two classes per output"):
        am.Teacher.from_sklearn(multi, name="multi")
    with pytest.raises(TeacherError, match="3 labels given for 2 outputs"):
        am.Teacher.from_sklearn(MultiOutputClassifier(LogisticRegression()).fit(xm, ym % 2), labels=list("abc"))


# Multi-label estimators ---------------------------------------------------------


def _logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@pytest.fixture(scope="module")
def multilabel():
    """Six labels; x (float32) and y (0/1) for 400 training rows, a 400-row pool and a 400-row test part."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(1200, n_features=20, n_classes=6, n_labels=2, random_state=0)
    return x.astype(np.float32), y, np.arange(400), np.arange(400, 800), np.arange(800, 1200)


def test_multi_output_estimators_give_multilabel_teachers(multilabel):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import ClassifierChain, MultiOutputClassifier

    x, y, t, pool, _ = multilabel
    names = [f"L{j}" for j in range(6)]
    for est in (MultiOutputClassifier(LogisticRegression(max_iter=500)), RandomForestClassifier(20, random_state=0),
                ClassifierChain(LogisticRegression(max_iter=500), order=[0, 1, 2, 3, 4, 5])):  # fmt: skip
        est.fit(x[t], y[t])
        teacher = am.Teacher.from_sklearn(est, name="ml", labels=names)
        assert teacher.kind == "multilabel" and list(teacher.labels) == names
        raw = est.predict_proba(x[pool])
        positive = np.stack([p[:, 1] for p in raw], 1) if isinstance(raw, list) else raw
        np.testing.assert_allclose(teacher.logits(x[pool]).numpy(), _logit(positive), rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(teacher.predict(x[pool[:50]]), (positive[:50] > 0.5).astype(int))
    default = am.Teacher.from_sklearn(MultiOutputClassifier(LogisticRegression()).fit(x[t], y[t]))
    assert list(default.labels) == [str(j) for j in range(6)]


def test_an_output_with_one_class_is_certain(multilabel):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.tree import DecisionTreeClassifier

    x, y, t, _, _ = multilabel
    yy = np.stack([y[t, 0], np.zeros(len(t), int), np.ones(len(t), int)], 1)  # outputs 1 and 2 saw one class
    est = MultiOutputClassifier(DecisionTreeClassifier(max_depth=2)).fit(x[t], yy)
    probs = am.Teacher.from_sklearn(est, labels=["a", "never", "always"]).logits(x[:5]).sigmoid().numpy()
    np.testing.assert_allclose(probs[:, 1:], np.tile([0.0, 1.0], (5, 1)), atol=1e-6)
    with pytest.raises(ValueError):  # scikit-learn itself refuses one class for a logistic regression
        MultiOutputClassifier(LogisticRegression()).fit(x[t], yy)


def test_multilabel_sklearn_teachers_amalgamate_with_kd_ml(multilabel):
    """Two multi-output teachers sharing two of six labels; kd-ml's student covers all six and beats chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multioutput import MultiOutputClassifier

    x, y, t, pool, test = multilabel
    names = [f"L{j}" for j in range(6)]
    a = MultiOutputClassifier(LogisticRegression(max_iter=500)).fit(x[t], y[t][:, :4])
    b = MultiOutputClassifier(LogisticRegression(max_iter=500)).fit(x[t], y[t][:, 2:])
    teachers = [am.Teacher.from_sklearn(a, name="a", labels=names[:4]),
                am.Teacher.from_sklearn(b, name="b", labels=names[2:])]  # fmt: skip
    result = am.amalgamate(teachers, x[pool], method="kd-ml", steps=300, batch_size=64, lr=3e-3, progress=False)
    assert result.student.kind == "multilabel" and sorted(result.student.labels) == names
    order = [names.index(lb) for lb in result.student.labels]
    metrics = am.evaluate(result.student, x[test], y[test][:, order])
    own = np.concatenate([a.predict(x[test]), b.predict(x[test])[:, 2:]], 1)  # each label from a teacher knowing it
    as_good = f1_score(y[test], own, average="micro")  # 0.63 here; every label present scores 0.49
    assert metrics["f1_micro"] > as_good - 0.05, (metrics, as_good)


# ONNX ----------------------------------------------------------------------------


def test_onnx_export_of_a_forest_gives_its_probabilities(split, tmp_path):
    """Acceptance (issue 18): an ONNX export of the same forest gives the same probabilities to 1e-4."""
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    x, y, t, pool = split
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(x[t], y[t])
    onx = skl2onnx.convert_sklearn(forest, initial_types=[("x", FloatTensorType([None, x.shape[1]]))],
                                   options={"zipmap": False})  # fmt: skip
    (tmp_path / "forest.onnx").write_bytes(onx.SerializeToString())
    from_onnx = am.Teacher.from_onnx(tmp_path / "forest.onnx")
    from_sklearn = am.Teacher.from_sklearn(forest, name="forest")
    assert list(from_onnx.labels) == list(from_sklearn.labels) == [str(c) for c in forest.classes_]
    got = TeacherStore(tmp_path / "store").get(from_onnx, Inputs(x[pool]))[LOGITS]
    ref = TeacherStore(tmp_path / "store").get(from_sklearn, Inputs(x[pool]))[LOGITS]
    np.testing.assert_allclose(from_onnx.probabilities(got).numpy(), forest.predict_proba(x[pool]), atol=1e-4)
    np.testing.assert_allclose(from_onnx.probabilities(got).numpy(), from_sklearn.probabilities(ref).numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda p: np.where(np.arange(len(p))[:, None] == 1, np.nan, p), "NaN"),
        (lambda p: p[:, :3], r"shape \(\d+, 3\).*expected \(\d+, 5\)"),
        (lambda p: p * 2, "do not sum to 1"),
        (lambda p: np.where(np.arange(len(p))[:, None] == 0, p - 0.5, p), "negative"),
    ],
    ids=["nan", "width", "sum", "negative"],
)
def test_callable_with_bad_rows_is_refused_with_its_name(split, bad, match):
    x, _, _, pool = split
    uniform = lambda b: np.full((len(b), 5), 0.2)  # noqa: E731
    teacher = am.Teacher.from_callable(lambda b: bad(uniform(b)), LOW, name="shaky")
    with pytest.raises(TeacherError, match=match) as err:
        TeacherStore().get(teacher, Inputs(x[pool[:30]]))
    assert "'shaky'" in str(err.value) and "rows 0-29" in str(err.value)


def test_callable_probs_and_logits(split, sk_low):
    x, _, _, pool = split
    probs = am.Teacher.from_callable(sk_low.predict_proba, LOW, name="p", batch_size=7)
    np.testing.assert_allclose(
        probs.logits(x[pool[:50]]).numpy(), _clipped_log(sk_low.predict_proba(x[pool[:50]])), rtol=1e-5, atol=1e-5
    )
    scores = am.Teacher.from_callable(sk_low.decision_function, LOW, name="s", returns="logits")
    np.testing.assert_allclose(scores.logits(x[:10]).numpy(), sk_low.decision_function(x[:10]), rtol=1e-5, atol=1e-5)
    with pytest.raises(TeacherError, match="returns="):
        am.Teacher.from_callable(sk_low.predict_proba, LOW, returns="scores")


def test_callable_teacher_on_text_gets_a_list_of_str():
    seen = []

    def fn(batch):
        seen.append(batch)
        return np.array([[0.9, 0.1] if "good" in s else [0.1, 0.9] for s in batch])

    teacher = am.Teacher.from_callable(fn, ["pos", "neg"], name="words")
    assert teacher.predict(["good day", "bad day"]).tolist() == ["pos", "neg"]
    assert all(isinstance(b, list) for b in seen)


def test_different_callables_with_same_labels_differ_in_fingerprint():
    def f(b):
        return np.full((len(b), 2), 0.5)

    def g(b):
        return np.tile([0.3, 0.7], (len(b), 1))

    fp = lambda fn, **kw: am.Teacher.from_callable(fn, ["a", "b"], name="t", **kw).fingerprint()  # noqa: E731
    assert fp(f) != fp(g)
    assert fp(lambda b: np.full((len(b), 2), 0.5)) != fp(lambda b: np.full((len(b), 2), 0.25))
    assert fp(f) == fp(f)
    assert fp(f, version="2") != fp(f)
    assert fp(f) != fp(f, returns="logits")


def test_from_outputs_serves_its_data_and_refuses_other_data(split, sk_low, tmp_path):
    x, _, _, pool = split
    data = x[pool[:60]]
    probs = sk_low.predict_proba(data)
    teacher = am.Teacher.from_outputs(probs, LOW, data, name="frozen")
    got = TeacherStore(tmp_path, batch_size=16).get(teacher, Inputs(data))[LOGITS]
    np.testing.assert_allclose(got.numpy(), _clipped_log(probs), rtol=1e-6)
    np.testing.assert_allclose(teacher.logits(data[::-1][:5].copy()).numpy(), _clipped_log(probs[::-1][:5]), rtol=1e-6)
    with pytest.raises(TeacherError, match="'frozen' only has outputs for the data it was given"):
        TeacherStore(tmp_path).get(teacher, Inputs(x[pool[60:80]]))
    with pytest.raises(TeacherError, match="only has outputs"):
        teacher.logits(["some text"])
    other = am.Teacher.from_outputs(probs[::-1].copy(), LOW, data, name="frozen")
    assert other.fingerprint() != teacher.fingerprint()
    with pytest.raises(TeacherError, match=r"shape \(59, 5\).*expected \(60, 5\)"):
        am.Teacher.from_outputs(probs[:59], LOW, data, name="short")


def test_pickle_path_is_refused_and_skops_file_loads(split, sk_low, tmp_path):
    x, _, _, _ = split
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(b"not even read")
    with pytest.raises(TeacherError, match=r"arbitrary code.*skops\.io\.dump"):
        am.Teacher.from_sklearn(pkl)
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "low.skops"
    sio.dump(sk_low, path)
    teacher = am.Teacher.from_sklearn(path)
    assert teacher.name == "low" and list(teacher.labels) == LOW
    np.testing.assert_allclose(
        teacher.logits(x[:30]).numpy(), _clipped_log(sk_low.predict_proba(x[:30])), rtol=1e-5, atol=1e-5
    )
    assert teacher.fingerprint() == am.Teacher.from_sklearn(path).fingerprint()


class Custom:  # a type outside scikit-learn/numpy/scipy, to be refused until trusted
    def __init__(self, est):
        self.est = est

    def fit(self, x, y):
        return self

    def predict_proba(self, x):
        return self.est.predict_proba(x)

    @property
    def classes_(self):
        return self.est.classes_


def test_skops_file_with_foreign_types_needs_trust(sk_low, tmp_path):
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "custom.skops"
    sio.dump(Custom(sk_low), path)
    with pytest.raises(TeacherError, match=r"trusted=\[.*Custom"):
        am.Teacher.from_sklearn(path)
    types = sio.get_untrusted_types(file=path)
    teacher = am.Teacher.from_sklearn(path, trusted=types)
    assert list(teacher.labels) == LOW


@pytest.mark.filterwarnings("ignore:kd. only")
def test_amalgamate_sklearn_and_callable_teachers(split, sk_low, sk_high):
    x, _, _, pool = split
    sk_teacher = am.Teacher.from_sklearn(sk_low, name="sk-low")
    callable_teacher = am.Teacher.from_callable(sk_high.predict_proba, HIGH, name="fn-high")
    result = am.amalgamate([sk_teacher, callable_teacher], x[pool], method="kd", epochs=2, progress=False)
    assert sorted(result.student.labels) == sorted(LOW + HIGH)
    pred = result.student.predict(x[pool[:10]])
    assert len(pred) == 10 and set(pred) <= set(LOW + HIGH)


def test_onnx_teacher_from_skl2onnx(split, sk_low, tmp_path):
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    x, _, _, pool = split
    onx = skl2onnx.convert_sklearn(
        sk_low, initial_types=[("x", FloatTensorType([None, x.shape[1]]))], options={"zipmap": False}
    )
    path = tmp_path / "low.onnx"
    path.write_bytes(onx.SerializeToString())
    teacher = am.Teacher.from_onnx(path)
    assert teacher.name == "low" and list(teacher.labels) == LOW
    np.testing.assert_allclose(
        teacher.logits(x[pool[:40]]).numpy(), _clipped_log(sk_low.predict_proba(x[pool[:40]])), rtol=1e-3, atol=1e-4
    )
    with pytest.raises(TeacherError, match="no output 'nope'"):
        am.Teacher.from_onnx(path, output="nope")


def test_recipe_with_sklearn_and_onnx_teachers_runs_end_to_end(split, sk_low, sk_high, tmp_path):
    """Recipe teachers `sklearn: file.skops` and `onnx: file.onnx`; `inspect` shows where each came from."""
    skops_io = pytest.importorskip("skops.io")
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType
    from typer.testing import CliRunner

    from amalgamator.cli import app

    x, _, _, pool = split
    skops_io.dump(sk_low, tmp_path / "low.skops")
    onx = skl2onnx.convert_sklearn(sk_high, initial_types=[("x", FloatTensorType([None, x.shape[1]]))],
                                   options={"zipmap": False})  # fmt: skip
    (tmp_path / "high.onnx").write_bytes(onx.SerializeToString())
    np.savez(tmp_path / "pool.npz", x=x[pool])
    (tmp_path / "recipe.yaml").write_text(
        "teachers:\n  - sklearn: low.skops\n  - {onnx: high.onnx, name: high}\n"
        "data: pool.npz\nmethod: kd\ntrain: {epochs: 2}\n"
    )
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(tmp_path / "recipe.yaml")])
    assert shown.exit_code == 0, shown.output
    assert "scikit-learn" in shown.output and "onnx" in shown.output
    assert "capabilities" in shown.output and "gradients" not in shown.output  # outputs only: no feature taps etc.
    got = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")])
    assert got.exit_code == 0, got.output
    assert sorted(am.load_student(tmp_path / "out" / "student").labels) == sorted(LOW + HIGH)
    (tmp_path / "bad.yaml").write_text("teachers:\n  - {sklearn: low.skops, onnx: high.onnx}\ndata: pool.npz\n")
    bad = runner.invoke(app, ["run", str(tmp_path / "bad.yaml")])
    assert bad.exit_code != 0 and "exactly one of path, sklearn or onnx" in bad.output + str(bad.exception)


# The multiclass bench's case of three teams' models (issue 18, item 5) ----------------------------------------


def test_bench_foreign_teachers_are_cached_and_give_outputs_only(split, tmp_path, monkeypatch):
    """Each team's model is trained once, kept in the cache as a .skops / .onnx file, and read back as it would be
    handed over; a second call trains nothing."""
    pytest.importorskip("skops.io")
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    from amalgamator.bench import multiclass as MC
    from amalgamator.bench.teachers import TeacherSpec

    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path / "cache"))
    x, y, t, pool = split
    small = {"hgb-skops": {"max_iter": 10}, "forest-onnx": {"n_estimators": 5}, "logreg-callable": {"max_iter": 300}}
    for arch, origin in (("hgb-skops", "a scikit-learn model"), ("forest-onnx", "an ONNX model"),
                         ("logreg-callable", "a callable")):  # fmt: skip
        spec = TeacherSpec("T", LOW, arch, small[arch])
        teacher, seconds = MC.foreign_teacher("digits", spec, x, y, t, 0)
        again, zero = MC.foreign_teacher("digits", spec, x, y, t, 0)
        assert seconds > 0 and zero == 0.0 and again.fingerprint() == teacher.fingerprint()
        assert teacher.capabilities == {"outputs"} and teacher.origin == origin and list(teacher.labels) == LOW
        assert set(teacher.predict(x[pool[:20]])) <= set(LOW)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("model.*")) == ["model.onnx", "model.skops", "model.skops"]
    passes = MC.teacher_passes([teacher], ["logreg-callable"], x[pool], tmp_path / "store")
    assert passes["T"]["rows"] == len(pool) and passes["T"]["per_1000_rows"] > 0


def test_bench_teams_case_runs_its_own_rows_and_leaves_the_other_cases_configs_alone():
    from amalgamator.bench import multiclass as MC

    cases = {c.key: c for c in MC.cases(quick=False)}
    teams = cases["letters-teams"]
    assert [row for row, _, _ in MC.case_runs(teams)] == ["ensemble", "kd", "uhc", "auto", "calibrated"]
    assert list(cases)[-1] == "letters-teams" and "letters-teams" not in [c.key for c in MC.cases(quick=True)]
    assert list(MC._job_config("letters-teams", 0, False, None)["case"]["methods"]) == list(MC.FOREIGN_ROWS)
    for key in cases.keys() - {"letters-teams"}:  # cached jobs of the other cases stay valid
        assert "methods" not in MC._job_config(key, 0, False, None)["case"]
        assert len(MC.case_runs(cases[key])) >= len(MC.METHODS) + len(MC.CALIBRATED)


def test_bench_render_shows_teacher_passes_and_keeps_the_average_to_full_cases():
    from amalgamator.bench import multiclass as MC

    def run(acc: float, passes: bool) -> dict:
        rows = {"teacher T1 (2 classes)": {"accuracy": 0.3}, "kd": {"accuracy": acc, "teacher_s": 0.03},
                "cfl": {"accuracy": 0.5}}  # fmt: skip
        if passes:
            del rows["cfl"]
        out = {"rows": rows, "teacher_training_s": 1.0, "groups": [["a", "b"], ["c", "d"], ["e"]],
               "setup": {"sizes": {"teacher": 90, "pool": 1000, "test": 50}, "archs": ["mlp {}"], "student": "mlp {}",
                         "epochs": 1, "teacher_epochs": None if passes else 1}}  # fmt: skip
        if passes:
            out["teacher_pass"] = {"T1": {"type": "RandomForestClassifier exported to ONNX (Teacher.from_onnx)",
                                          "rows": 1000, "seconds": 0.5, "per_1000_rows": 0.5}}  # fmt: skip
        return out

    results = {"seeds": 1, "quick": False, "cases": {
        "letters-3": {"title": "Letters, 3 teachers", "runs": [run(0.5, False)]},
        "letters-teams": {"title": "Teams", "runs": [run(0.9, True)], "methods": ["kd"]}}}  # fmt: skip
    md = MC.render(results, {})
    assert "| kd | 50.0 ± 0.0 | 90.0 ± 0.0 | 50.0 |" in md  # the average over the cases that run every row
    assert "| cfl | 50.0 ± 0.0 | — | 50.0 |" in md and "avg: over the cases that run every row (not 'Teams')" in md
    assert "## Teachers that are not torch models: Teams" in md
    assert "| T1 | RandomForestClassifier exported to ONNX (Teacher.from_onnx) | 30.0 ± 0.0 | 0.500 | 0.5000 |" in md
    assert "0.010 s per teacher for its pool of 1000 rows" in md  # letters-3's kd row: 0.03 s for 3 teachers
