"""Issue 9, "never a silent wrong answer", at evaluation and inference (items 2, 4 and 6).

Evaluation names what it cannot score; inference checks the input before torch sees it;
messages give advice that fits the situation (teacher folder vs student, data vs preset).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.errors import DataError, TeacherError
from amalgamator.io import load_table
from amalgamator.methods.reference import EnsemblePredictor
from amalgamator.metrics import label_names
from amalgamator.student import InputSpec

from .conftest import LOW
from .test_cli import _main, _teacher_folder


@pytest.fixture(scope="module")
def student(digits):
    """A plain mlp classifier over all ten digits: labels '0'..'9'."""
    x, y, t, _, _ = digits
    return am.train_classifier(x[t], y[t], epochs=8, batch_size=64, seed=0, progress=False)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# A. Evaluation counts what it cannot score ----------------------------------------------


def test_float_labels_score_like_their_names(student, digits):
    x, y, _, _, s = digits
    by_name = am.evaluate(student, x[s], y[s])
    by_float = am.evaluate(student, x[s], y[s].astype(float))  # 1.0 for the name "1": was 0 % accuracy
    by_int = am.evaluate(student, x[s], y[s].astype(int))
    assert by_name["accuracy"] > 0.8
    assert by_float == by_name == by_int
    assert by_name["unknown_labels"] == 0 and by_name["accuracy_known"] == by_name["accuracy"]


def test_a_label_literally_named_like_a_float_is_kept():
    assert label_names(np.array([1.0, 2.0]), ["1", "2"]).tolist() == ["1", "2"]
    assert label_names(np.array([1.0, 2.0]), ["1.0", "2"]).tolist() == ["1.0", "2"]  # "1.0" is a label
    assert label_names(np.array([1, 2]), ["1.0", "2.0"]).tolist() == ["1.0", "2.0"]
    assert label_names(np.array([1.5, 2.0]), ["1", "2"]).tolist() == ["1.5", "2"]  # only integral twins
    assert label_names(np.array(["1.0", "x"]), ["1", "x"]).tolist() == ["1", "x"]  # as a file loader gives them


def test_unknown_labels_warn_and_report_known_accuracy(teachers, digits):
    x, y, _, _, s = digits
    low = teachers[0]  # a Teacher: its labels are a LabelSpace over 0-4, scored on all ten digits
    with pytest.warns(UserWarning, match="does not know") as caught:
        m = am.evaluate(low, x[s], y[s])
    known = np.isin(y[s], LOW)
    pred = low.predict(x[s])
    msg = str(caught[0].message)
    assert f"{int((~known).sum())} of {len(s)} test rows" in msg and "'7'" in msg and "accuracy_known" in msg
    assert m["unknown_labels"] == int((~known).sum())
    assert m["accuracy"] == pytest.approx(float(np.mean(pred == y[s])))  # every row, as the papers score it
    assert m["accuracy_known"] == pytest.approx(float(np.mean(pred[known] == y[s][known])))
    assert m["accuracy_known"] > 2 * m["accuracy"] - 0.05


def test_unknown_labels_of_a_student_and_an_ensemble(student, teachers, digits):
    x, y, _, _, s = digits
    typo = y[s].astype("U8")
    typo[:4] = "eleven"
    with pytest.warns(UserWarning, match=r"4 of .*'eleven' \(4 rows\)"):
        m = am.evaluate(student, x[s], typo)
    assert m["unknown_labels"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every label known: no warning
        ens = am.evaluate(EnsemblePredictor(teachers), x[s], y[s])
    assert ens["unknown_labels"] == 0


def test_no_known_label_at_all_is_a_data_error(student, digits):
    x, y, _, _, s = digits
    with pytest.raises(DataError, match="none of the") as exc:
        am.evaluate(student, x[s], np.full(len(s), "cat"))
    assert "'cat'" in _one_line(exc) and "'0'" in str(exc.value)
    with pytest.raises(DataError, match="look like floats"):
        am.evaluate(student, x[s], np.full(len(s), 2.5))
    named = am.Teacher(nn.Linear(64, 2), labels=["cat", "dog"], name="pets")
    with pytest.raises(DataError, match="indices"):
        am.evaluate(named, x[s], np.arange(len(s)) % 2)


def test_cli_evaluate_maps_float_labels_and_warns(digits, tmp_path, capsys):
    x, y, t, _, s = digits
    _teacher_folder(tmp_path / "low", x[t], y[t], LOW, 0)  # a saved student over 0-4
    np.savez(tmp_path / "test.npz", x=x[s], y=y[s].astype(float))  # float labels: "1.0" after loading
    assert _main("evaluate", tmp_path / "low", "--data", tmp_path / "test.npz", "--json") == 0
    out = capsys.readouterr()
    m = json.loads(out.out)
    known = np.isin(y[s], LOW)
    assert m["unknown_labels"] == int((~known).sum()) and m["accuracy_known"] > 0.8
    assert out.err.startswith("warning: ") and "does not know" in out.err and "'9.0'" in out.err
    assert _main("evaluate", tmp_path / "low", "--data", tmp_path / "test.npz") == 0
    table = capsys.readouterr().out
    assert "accuracy_known" in table and "unknown_labels" in table


# B. Inference checks its input -----------------------------------------------------------


def test_student_inference_names_the_row_shape(student, digits):
    x, y, _, _, s = digits
    for call in (student.predict, student.predict_proba, student.logits, lambda v: am.evaluate(student, v, y[:5])):
        with pytest.raises(DataError, match=r"expects rows of shape \(64,\) but x has rows of shape \(10,\)") as exc:
            call(x[:5, :10])
        _one_line(exc)
    with pytest.raises(DataError, match=r"1-D.*x\.reshape\(1, -1\)") as exc:
        student.predict(x[0])
    _one_line(exc)
    assert student.predict(x[:1])[0] in student.labels  # the advice works


def test_cnn_and_custom_students_reject_wrong_widths_in_one_line(digits):
    x, y, t, _, _ = digits
    cnn = am.train_classifier(x[t[:100]], y[t[:100]], student="cnn", epochs=1, progress=False)
    with pytest.raises(DataError, match=r"rows of shape \(1, 8, 8\) \(or 64 values per row\)") as exc:
        cnn.predict(x[:3, :10])
    _one_line(exc)
    body = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
    custom = am.train_classifier(x[t[:100]], y[t[:100]], student=body, epochs=1, progress=False)
    with pytest.raises(DataError, match=r"rejected x with rows of shape \(10,\)") as exc:
        custom.predict(x[:3, :10])
    assert "RuntimeError" in _one_line(exc)
    with pytest.raises(DataError, match="1-D"):
        custom.predict(x[0])


def test_text_versus_numbers_speaks_of_the_data(student, digits):
    x = digits[0]
    with pytest.raises(DataError, match="reads numeric arrays") as exc:
        am.evaluate(student, ["a text", "another"], ["1", "2"])
    assert "student=" not in _one_line(exc)
    texts = ["good day", "bad day", "good fun", "bad luck"] * 5
    text_student = am.train_classifier(
        texts, ["p", "n", "p", "n"] * 5, student="text", student_options={"encoder": "tfidf"}, epochs=1, progress=False
    )
    with pytest.raises(DataError, match="reads text") as exc:
        am.evaluate(text_student, x[:3], ["p", "n", "p"])
    assert "student=" not in _one_line(exc)
    with pytest.raises(DataError, match="reads text") as exc:
        text_student.as_teacher("words").predict(x[:3])
    assert "student=" not in _one_line(exc)


# C. Advice that fits --------------------------------------------------------------------


def test_corrupt_teacher_folder_says_teacher(student, tmp_path):
    student.save(tmp_path / "t")
    (tmp_path / "t" / "student.json").write_text("{not json")
    with pytest.raises(TeacherError, match="teacher folder .* is corrupt") as exc:
        am.Teacher.from_pretrained(tmp_path / "t")
    assert "re-save or re-export that teacher" in _one_line(exc) and "the student" not in str(exc.value)
    with pytest.raises(TeacherError, match="re-save the student"):  # loading it as a student still says so
        am.load_student(tmp_path / "t")
    student.save(tmp_path / "u")
    (tmp_path / "u" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(TeacherError, match="re-save or re-export that teacher"):
        am.Teacher.from_pretrained(tmp_path / "u")


def test_teacher_shape_hint_depends_on_where_it_came_from(student, digits, tmp_path):
    x = digits[0]
    student.save(tmp_path / "t")
    folder = am.Teacher.from_pretrained(tmp_path / "t", name="saved")
    with pytest.raises(DataError, match=r"teacher 'saved' expects rows of shape \(64,\)") as exc:
        folder.predict(x[:4, :10])
    assert "preprocess=" not in _one_line(exc)
    folder._spec = InputSpec()  # a layout the checks cannot know: the model's own complaint
    with pytest.raises(TeacherError, match="rejected a batch") as exc:
        folder.predict(x[:4, :10])
    assert str(tmp_path / "t") in _one_line(exc) and "preprocess=" not in str(exc.value)
    made = am.Teacher(nn.Linear(64, 3), labels=["a", "b", "c"], name="made")
    with pytest.raises(TeacherError, match="preprocess="):  # made in Python: preprocess= exists there
        made.predict(x[:4, :10])


def test_object_array_advice_covers_numbers(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object), y=np.array(["a", "b"]))
    with pytest.raises(DataError, match="object array") as exc:
        load_table(tmp_path / "obj.npz")
    msg = _one_line(exc)
    assert "np.asarray(x, dtype=np.float32)" in msg and "np.asarray(x, dtype=str)" in msg


def test_teacher_from_a_file_says_it_is_a_file(tmp_path):
    torch.save(nn.Linear(64, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(TeacherError, match="exists but is a file") as exc:
        am.Teacher.from_pretrained(tmp_path / "model.pt")
    msg = _one_line(exc)
    assert "does not exist" not in msg and "weights_only=True" in msg and "am.Teacher(model, labels=" in msg


def test_a_student_given_as_a_teacher_model(student):
    with pytest.raises(TeacherError, match=r"use student\.as_teacher\(name\)"):
        am.Teacher(student, labels=student.labels)
