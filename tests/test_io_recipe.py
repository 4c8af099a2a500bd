"""Data files (io.load_table) and recipes (recipe.load_recipe): contents and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amalgamator.errors import DataError, RecipeError
from amalgamator.io import SUPPORTED, load_table
from amalgamator.recipe import load_recipe


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AMALGAMATOR_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("AMALGAMATOR_QUIET", "1")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# io ---------------------------------------------------------------------------------------------


def test_npz_features_and_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(12, dtype=np.float64).reshape(4, 3), y=np.array(["a", "b", "a", "c"]))
    x, y = load_table("d.npz", tmp_path)
    assert x.dtype == np.float32 and x.shape == (4, 3)
    assert y.dtype.kind == "U" and list(y) == ["a", "b", "a", "c"]


def test_npz_without_labels_and_int_labels(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.zeros((3, 2)))
    assert load_table(tmp_path / "u.npz")[1] is None
    np.savez(tmp_path / "i.npz", x=np.zeros((3, 2)), y=np.array([0, 7, 3]))
    assert list(load_table({"path": str(tmp_path / "i.npz")})[1]) == ["0", "7", "3"]


def test_npz_text_x_is_a_list(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.array(["hello world", "bye"]), y=np.array(["greet", "part"]))
    x, y = load_table(tmp_path / "t.npz")
    assert x == ["hello world", "bye"] and list(y) == ["greet", "part"]


def test_npz_object_labels_refused_with_the_fix(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 2)), y=np.array(["a", None], dtype=object))
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "o.npz")
    msg = _one_line(err)
    assert "'y'" in msg and "pickle" in msg and "dtype=str" in msg


def test_npz_missing_array_lists_present(tmp_path):
    np.savez(tmp_path / "m.npz", features=np.zeros((2, 2)))
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "m.npz")
    assert "'x'" in _one_line(err) and "features" in str(err.value)


def test_csv_numeric_columns_with_label(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n0.5,1,3\n1.5,2,03\n")
    x, y = load_table(tmp_path / "d.csv")
    assert x.shape == (2, 2) and x.dtype == np.float32
    assert list(y) == ["3", "03"]  # label names are read as text, never as numbers


def test_csv_text_column_and_named_label(tmp_path):
    (tmp_path / "t.csv").write_text("body,topic,extra\nhello there,greet,1\nso long,part,2\n")
    x, y = load_table({"path": str(tmp_path / "t.csv"), "text_column": "body", "label_column": "topic"})
    assert x == ["hello there", "so long"] and list(y) == ["greet", "part"]


def test_csv_feature_columns_subset(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,c,label\n1,2,x,p\n3,4,y,q\n")
    x, y = load_table({"path": str(tmp_path / "d.csv"), "feature_columns": ["a", "b"]})
    assert x.tolist() == [[1, 2], [3, 4]] and list(y) == ["p", "q"]


def test_csv_missing_column_lists_columns(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,p\n")
    with pytest.raises(DataError) as err:
        load_table({"path": str(tmp_path / "d.csv"), "text_column": "body"})
    msg = _one_line(err)
    assert "'body'" in msg and "['a', 'b', 'y']" in msg
    with pytest.raises(DataError, match="no label column 'topic'"):
        load_table({"path": str(tmp_path / "d.csv"), "label_column": "topic"})


def test_csv_non_numeric_features(tmp_path):
    (tmp_path / "d.csv").write_text("a,word,y\n1,cat,p\n2,dog,q\n")
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "d.csv")
    msg = _one_line(err)
    assert "numeric" in msg and "word" in msg and "text_column" in msg


def test_parquet_roundtrip(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"f0": [0.1, 0.2], "f1": [1.0, 2.0], "label": ["a", "b"]}).to_parquet(tmp_path / "d.parquet")
    x, y = load_table(tmp_path / "d.parquet")
    assert x.shape == (2, 2) and list(y) == ["a", "b"]


def test_jsonl_text_and_label(tmp_path):
    lines = [{"text": "hi", "label": "greet"}, {"text": "bye", "label": 2}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    x, y = load_table(tmp_path / "d.jsonl")
    assert x == ["hi", "bye"] and list(y) == ["greet", "2"]


def test_jsonl_errors_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="line 2"):
        load_table(tmp_path / "bad.jsonl")
    (tmp_path / "nofield.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "nofield.jsonl")
    assert "line 2" in _one_line(err) and "'text'" in str(err.value) and "body" in str(err.value)


def test_missing_file_has_absolute_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_table("nope.npz", tmp_path)
    assert str(tmp_path / "nope.npz") in _one_line(err)


def test_unknown_extension_lists_supported(tmp_path):
    (tmp_path / "d.xlsx").write_text("")
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "d.xlsx")
    msg = _one_line(err)
    assert ".xlsx" in msg and all(ext in msg for ext in SUPPORTED)


def test_row_count_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array(["a", "b"]))
    with pytest.raises(DataError, match="3 rows but y has 2"):
        load_table(tmp_path / "d.npz")


# recipes -------------------------------------------------------------------------------------------


def _recipe(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


BASE = "teachers: [t/low, {path: t/high, name: high, features: 1}]\ndata: pool.npz\n"


def test_valid_recipe_resolves_relative_paths(tmp_path):
    p = _recipe(tmp_path / "sub", BASE + "method: kd\nmethod_options: {tau: 2.0}\ntrain: {epochs: 3}\nout: res\n")
    r = load_recipe(p)
    assert r.teachers[0].path == "t/low" and r.teachers[1].features == ["1"]  # YAML's int 1 is a module path
    assert r.resolve(r.data.path) == (tmp_path / "sub" / "pool.npz").resolve()
    assert r.out_dir() == (tmp_path / "sub" / "res").resolve()
    assert r.out_dir(tmp_path / "x") == (tmp_path / "x").resolve()
    assert r.train.epochs == 3 and r.train.batch_size == 128 and r.method_options == {"tau": 2.0}


def test_empty_sections_take_defaults(tmp_path):
    r = load_recipe(_recipe(tmp_path, BASE + "train:\nmethod_options:\n"))
    assert r.train.epochs == 10 and r.method_options == {}


def test_unknown_key_in_train_suggests_and_lists(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, BASE + "train: {epoch: 3}\n"))
    msg = _one_line(err)
    assert "'epoch'" in msg and "in train" in msg and "Did you mean: epochs" in msg
    assert "Valid keys: epochs, steps, batch_size, lr, weight_decay, seed" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, BASE + "metod: kd\n"))
    msg = _one_line(err)
    assert "'metod'" in msg and "top level" in msg and "Did you mean: method" in msg and "teachers" in msg


def test_misplaced_key_says_where_it_belongs(tmp_path):
    with pytest.raises(RecipeError, match="belongs under train"):
        load_recipe(_recipe(tmp_path, BASE + "batch_size: 3\n"))


def test_unknown_key_in_a_teacher(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, "teachers: [{path: a, nmae: x}]\ndata: p.npz\n"))
    msg = _one_line(err)
    assert "teachers[0]" in msg and "Did you mean: name" in msg and "path, name, features" in msg


def test_wrong_type_names_field_and_type(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, BASE + "train: {epochs: ten}\n"))
    msg = _one_line(err)
    assert "train.epochs" in msg and "an integer" in msg and "'ten'" in msg
    with pytest.raises(RecipeError, match="teachers must be a list"):
        load_recipe(_recipe(tmp_path, "teachers: {a: 1}\ndata: p.npz\n"))
    with pytest.raises(RecipeError, match=r"train.epochs: input should be greater than or equal to 1"):
        load_recipe(_recipe(tmp_path, BASE + "train: {epochs: 0}\n"))


def test_missing_required_key(tmp_path):
    with pytest.raises(RecipeError, match="missing the required key 'teachers'"):
        load_recipe(_recipe(tmp_path, "data: p.npz\n"))
    with pytest.raises(RecipeError, match="data: .*labeled:"):
        load_recipe(_recipe(tmp_path, "teachers: [a]\n"))


def test_yaml_syntax_error_gives_line(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, "teachers: [a]\ndata: p.npz\ntrain: {epochs: 3\nmethod: kd\n"))
    msg = _one_line(err)
    assert "YAML syntax error at line" in msg


def test_duplicate_key_refused(tmp_path):
    with pytest.raises(RecipeError, match="'method' is given twice"):
        load_recipe(_recipe(tmp_path, BASE + "method: kd\nmethod: uhc\n"))


def test_missing_empty_and_non_mapping_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(RecipeError, match="is empty"):
        load_recipe(_recipe(tmp_path, ""))
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(_recipe(tmp_path, "- a\n- b\n"))


def test_method_name_options_and_labels_checked(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, BASE + "method: kdd\n"))
    assert "'kdd'" in _one_line(err) and "Did you mean: kd" in str(err.value)
    with pytest.raises(RecipeError, match="method_options: .*no option 'tua'"):
        load_recipe(_recipe(tmp_path, BASE + "method: kd\nmethod_options: {tua: 2}\n"))
    with pytest.raises(RecipeError, match="labeled:"):
        load_recipe(_recipe(tmp_path, BASE + "method: supervised\n"))
    with pytest.raises(RecipeError, match="unknown preset 'mpl'.*Did you mean: mlp"):
        load_recipe(_recipe(tmp_path, BASE + "student: mpl\n"))


def test_reversed_and_strided_array_views_are_accepted():
    """A view such as x[::-1] (negative strides) is copied, not refused with a torch message."""
    from amalgamator.data import Inputs

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    got = Inputs(x[::-1])
    np.testing.assert_array_equal(got.values.numpy(), x[::-1])
    np.testing.assert_array_equal(Inputs(x[:, ::-2]).values.numpy(), x[:, ::-2])
