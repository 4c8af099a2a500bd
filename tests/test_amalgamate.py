"""amalgamate end to end on digits: methods, determinism, resume, saved students, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import amalgamator as am
from amalgamator import engine
from amalgamator.errors import DataError, LabelError, MethodError, TeacherError

from .conftest import HIGH, LOW


def _acc(model, x, y):
    return float(np.mean(model.predict(x) == y))


def test_students_beat_each_teacher_and_cover_the_union(digits, teachers):
    x, y, _, p, s = digits
    solo = max(_acc(t, x[s], y[s]) for t in teachers)
    for method in ("kd", "uhc"):
        res = am.amalgamate(teachers, data=x[p], method=method, epochs=15, batch_size=64, lr=3e-3)
        assert res.student.labels == LOW + HIGH
        acc = _acc(res.student, x[s], y[s])
        assert acc > solo + 0.2, (method, acc, solo)
        assert set(res.student.predict(x[s])) - set(LOW), "the student must predict labels of both teachers"


def test_ensemble_is_a_predictor_not_a_student(digits, teachers, tmp_path):
    x, y, _, p, s = digits
    res = am.amalgamate(teachers, data=x[p], method="ensemble")
    proba = res.student.predict_proba(x[s])
    assert proba.shape == (len(s), 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert _acc(res.student, x[s], y[s]) > 0.6
    with pytest.raises(MethodError, match="no weights to save"):
        res.student.save(tmp_path)


def test_supervised_needs_labels_and_trains_on_them(digits, teachers):
    x, y, _, p, s = digits
    with pytest.raises(MethodError, match="labeled="):
        am.amalgamate(teachers, data=x[p], method="supervised", epochs=1)
    res = am.amalgamate(teachers, labeled=(x[p], y[p]), method="supervised", epochs=15, batch_size=64, lr=3e-3)
    assert _acc(res.student, x[s], y[s]) > 0.9


def test_overlapping_teachers_share_a_label(digits):
    x, y, t, p, s = digits
    from .conftest import fit_mlp

    a, b = ["0", "1", "2", "3"], ["3", "4", "5"]
    ts = [am.Teacher(fit_mlp(x[t], y[t], a, 16, 0), a, "a"), am.Teacher(fit_mlp(x[t], y[t], b, 16, 1), b, "b")]
    res = am.amalgamate(ts, data=x[p], method="kd", epochs=2)
    assert res.student.labels == ["0", "1", "2", "3", "4", "5"]


def test_training_is_deterministic_and_seed_sensitive(digits, teachers):
    x, _, _, p, s = digits
    runs = [am.amalgamate(teachers, data=x[p], method="uhc", epochs=2, seed=seed) for seed in (3, 3, 4)]
    probs = [r.student.predict_proba(x[s]) for r in runs]
    assert np.array_equal(probs[0], probs[1])
    assert not np.array_equal(probs[0], probs[2])


def test_resume_after_interruption_is_bit_identical(digits, teachers, tmp_path, monkeypatch):
    x, _, _, p, _ = digits
    kw = dict(method="kd", epochs=4, batch_size=64, seed=5)
    full = am.amalgamate(teachers, data=x[p], out=tmp_path / "full", **kw)

    real_save = engine._save_checkpoint

    def save_then_crash(ckpt_dir, epoch, *args):
        real_save(ckpt_dir, epoch, *args)
        if epoch == 1:  # interrupted right after the 2nd epoch's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        am.amalgamate(teachers, data=x[p], out=tmp_path / "cut", **kw)
    monkeypatch.setattr(engine, "_save_checkpoint", real_save)
    assert sorted(d.name for d in (tmp_path / "cut" / "checkpoints").iterdir()) == ["epoch-001", "epoch-002"]

    resumed = am.amalgamate(teachers, data=x[p], out=tmp_path / "cut", resume=True, **kw)
    assert resumed.history.resumed_from == 2
    a = full.student.network.state_dict()
    b = resumed.student.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history.loss == full.history.loss
    on_disk = load_file(str(tmp_path / "cut" / "student" / "model.safetensors"))
    assert torch.equal(on_disk["head.weight"], a["head.weight"])


def test_resume_refuses_other_settings(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    am.amalgamate(teachers, data=x[p], method="kd", epochs=1, out=tmp_path)
    with pytest.raises(am.AmalgamatorError, match="other settings"):
        am.amalgamate(teachers, data=x[p], method="kd", epochs=1, lr=0.5, out=tmp_path, resume=True)


def test_saved_student_round_trips_and_serves_as_teacher(digits, teachers, tmp_path):
    x, y, _, p, s = digits
    st = am.amalgamate(teachers, data=x[p], method="uhc", epochs=2, student="cnn").student
    st.save(tmp_path / "st")
    assert {f.name for f in (tmp_path / "st").iterdir()} == {"model.safetensors", "student.json", "report.md"}
    again = am.load_student(tmp_path / "st")
    assert np.array_equal(again.predict_proba(x[s]), st.predict_proba(x[s]))
    as_teacher = am.Teacher.from_pretrained(tmp_path / "st")
    assert list(as_teacher.labels) == st.labels
    assert np.array_equal(as_teacher.predict(x[s]), st.predict(x[s]))


def test_custom_module_student_reloads_with_its_backbone(digits, teachers, tmp_path):
    x, _, _, p, s = digits
    body = nn.Sequential(nn.Linear(64, 20), nn.Tanh())
    st = am.amalgamate(teachers, data=x[p], method="kd", student=body, epochs=1).student
    st.save(tmp_path)
    with pytest.raises(TeacherError, match="backbone="):
        am.load_student(tmp_path)
    again = am.load_student(tmp_path, backbone=nn.Sequential(nn.Linear(64, 20), nn.Tanh()))
    assert np.array_equal(again.predict_proba(x[s]), st.predict_proba(x[s]))


# Bad input: one clear line each --------------------------------------------------------------


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_unknown_method_suggests(digits, teachers):
    x, _, _, p, _ = digits
    with pytest.raises(MethodError) as err:
        am.amalgamate(teachers, data=x[p], method="uhd")
    assert "Did you mean: uhc" in _one_line(err)


def test_unknown_method_option_lists_valid_ones(digits, teachers):
    x, _, _, p, _ = digits
    with pytest.raises(MethodError) as err:
        am.amalgamate(teachers, data=x[p], method="kd", method_options={"temperature": 2})
    assert "'temperature'" in _one_line(err) and "tau" in str(err.value)


def test_labeled_y_outside_the_union(digits, teachers):
    x, y, _, p, _ = digits
    y_bad = y[p[:10]].copy()
    y_bad[4] = "eleven"
    with pytest.raises(LabelError) as err:
        am.amalgamate(teachers, data=x[p], labeled=(x[p[:10]], y_bad), method="kd", epochs=1)
    assert "labeled y[4] is 'eleven', which no teacher knows" in _one_line(err)


def test_data_the_teacher_rejects(teachers):
    with pytest.raises(TeacherError) as err:
        am.amalgamate(teachers, data=np.zeros((20, 63), np.float32), method="kd", epochs=1)
    assert "teacher 'low' rejected a batch of shape (2, 63)" in _one_line(err)


def test_nan_in_data_and_empty_data(teachers):
    bad = np.zeros((5, 64), np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values in 1 rows"):
        am.amalgamate(teachers, data=bad, method="kd", epochs=1)
    with pytest.raises(DataError, match="empty"):
        am.amalgamate(teachers, data=np.zeros((0, 64), np.float32), method="kd", epochs=1)


def test_no_teachers_and_non_teacher(digits):
    x, _, _, p, _ = digits
    with pytest.raises(TeacherError, match="no teachers"):
        am.amalgamate([], data=x[p])
    with pytest.raises(TeacherError, match=r"wrap models as am.Teacher"):
        am.amalgamate([nn.Linear(64, 3)], data=x[p])


def test_train_classifier_makes_a_teacher(digits, tmp_path):
    x, y, t, _, s = digits
    clf = am.train_classifier(x[t], y[t], student="mlp", epochs=10, lr=3e-3)
    assert clf.labels == sorted(set(y[t]))
    clf.save(tmp_path)
    teacher = am.Teacher.from_pretrained(tmp_path, name="clf")
    assert float(np.mean(teacher.predict(x[s]) == y[s])) > 0.85
