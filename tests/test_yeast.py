"""The Yeast loader (river's bundled csv, read without importing river) and the thesis's teacher protocol."""

from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest

from amalgamator.bench import yeast
from amalgamator.errors import DataError

needs_river = pytest.mark.skipif(importlib.util.find_spec("river") is None, reason="river not installed")

# (n_teachers, shared_fraction): Table 7, Table 8 (fraction unstated; 0.5 as in Table 7), Table 9.
TABLE_7 = [(2, 0.5)]
TABLE_8 = [(3, 0.5), (4, 0.5), (5, 0.5)]
TABLE_9 = [(2, 1.0), (2, 0.75), (2, 0.5), (2, 0.25), (2, 0.0)]


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(yeast.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def data():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(yeast.ENV_VAR, raising=False)
        return yeast.load_yeast()


def _write_csv(path, rows: np.ndarray, n_features: int = yeast.N_FEATURES, compress: bool = False) -> None:
    header = [f"Att{i}" for i in range(1, n_features + 1)] + [f"L{j}" for j in range(yeast.N_LABELS)]
    text = ",".join(header) + "\n" + "\n".join(",".join(f"{v:g}" for v in r) for r in rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())


def _tiny_rows(n: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.hstack([rng.normal(size=(n, yeast.N_FEATURES)), rng.integers(0, 2, size=(n, yeast.N_LABELS))])


# ---------------------------------------------------------------------------------------------------- loading


@needs_river
def test_shapes_dtypes_names_and_labels(data):
    x, y, names = data
    assert x.shape == (2417, 103) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.shape == (2417, 14) and y.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1}
    assert names == [f"Class{i}" for i in range(1, 15)]
    cardinality = float(y.sum(axis=1).mean())
    print(f"Yeast label cardinality: {cardinality:.4f} labels per row")
    assert 4.1 < cardinality < 4.4  # published: 4.24 (thesis Table 6)
    assert len({tuple(r) for r in y}) == 198  # distinct label sets, thesis Table 6


@needs_river
def test_source_is_rivers_bundled_file(data):
    path, full = yeast.source_path()
    assert path.name == "yeast.csv.gz" and path.parent.name == "datasets" and full


@needs_river
def test_splits_are_deterministic_disjoint_and_standardised():
    a, b, c = yeast.yeast_splits(0), yeast.yeast_splits(0), yeast.yeast_splits(1)
    assert np.array_equal(a["train"], b["train"]) and np.array_equal(a["x_test"], b["x_test"])
    assert not np.array_equal(a["test"], c["test"])
    assert len(np.intersect1d(a["train"], a["test"])) == 0
    assert len(a["train"]) + len(a["test"]) == 2417 and len(a["test"]) == round(0.3 * 2417)
    assert a["x_train"].dtype == np.float32 and a["y_train"].dtype == np.uint8
    assert np.allclose(a["x_train"].mean(axis=0), 0, atol=1e-4)
    assert np.allclose(a["x_train"].std(axis=0)[a["std"] != 1], 1, atol=1e-3)
    x, y, _ = yeast.load_yeast()
    assert np.allclose(a["x_test"], (x[a["test"]] - a["mean"]) / a["std"], atol=1e-5)  # train statistics only
    assert np.array_equal(a["y_test"], y[a["test"]])
    assert len(yeast.yeast_splits(0, test_fraction=0.2)["test"]) == round(0.2 * 2417)
    with pytest.raises(DataError, match="test_fraction"):
        yeast.yeast_splits(0, test_fraction=1.0)


def test_override_csv_and_csv_gz(tmp_path, monkeypatch):
    rows = _tiny_rows()
    rows[:, 3] = 7.0  # a constant feature: std 0 is divided by 1, not 0
    for name, compress in (("tiny.csv", False), ("tiny.csv.gz", True)):
        _write_csv(tmp_path / name, rows, compress=compress)
        monkeypatch.setenv(yeast.ENV_VAR, str(tmp_path / name))
        x, y, names = yeast.load_yeast()
        assert x.shape == (5, 103) and y.shape == (5, 14) and names == [f"L{j}" for j in range(14)]
        assert np.allclose(x, rows[:, :103], atol=1e-5) and np.array_equal(y, rows[:, 103:])
    split = yeast.yeast_splits(0, test_fraction=0.4)
    assert len(split["test"]) == 2 and np.isfinite(split["x_train"]).all() and split["std"][3] == 1


def test_missing_file_and_missing_river_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(yeast.ENV_VAR, str(tmp_path / "nope.csv.gz"))
    with pytest.raises(DataError, match="AMALGAMATOR_YEAST points at .*nope.csv.gz, which is not a file"):
        yeast.load_yeast()
    monkeypatch.delenv(yeast.ENV_VAR)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError) as err:
        yeast.load_yeast()
    msg = str(err.value)
    assert "\n" not in msg and "river" in msg and "amalgamator[bench]" in msg and "make setup" in msg
    assert "AMALGAMATOR_YEAST" in msg


_HEADER = ",".join([f"Att{i}" for i in range(1, 104)] + [f"L{j}" for j in range(14)])


@pytest.mark.parametrize(
    "content, match",
    [
        (b"a,b,c\n1,2,3\n", "3 header columns"),
        (f"{_HEADER}\n" + ",".join(["0.5"] * 116) + ",2\n", "label values other than 0 and 1"),
        (f"{_HEADER}\n" + ",".join(["nan"] + ["0"] * 116) + "\n", "non-finite feature values"),
        (f"{_HEADER}\n" + ",".join(["oops"] + ["0"] * 116) + "\n", "not a numeric Yeast csv"),
        (f"{_HEADER}\n" + ",".join(["1"] * 116) + "\n", "expected rows of 117 numbers"),
        (f"{_HEADER}\n", "no data rows"),
        (b"", "header columns"),
        (b"\x1f\x8b not really gzip", "cannot read"),
    ],
)
def test_malformed_files_are_data_errors(tmp_path, monkeypatch, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setenv(yeast.ENV_VAR, str(path))
    with pytest.raises(DataError, match=match):
        yeast.load_yeast()


def test_full_file_requires_all_rows(tmp_path):
    path = tmp_path / "tiny.csv"
    _write_csv(path, _tiny_rows())
    with pytest.raises(DataError, match="5 rows; the Yeast dataset has 2417"):
        yeast.parse(path, full=True)


# ------------------------------------------------------------------------------------------- teacher protocol


def _shared(sets: list[list[int]]) -> set[int]:
    return {lab for t, s in enumerate(sets) for lab in s if any(lab in o for u, o in enumerate(sets) if u != t)}


def _best_achievable(n_labels: int, n_teachers: int, f: float) -> float:
    """Brute force over equal-size core-plus-own-block plans: the smallest achievable |fraction - f|."""
    fr = [s / (s + (n_labels - s) // n_teachers) for s in range(n_labels + 1) if (n_labels - s) % n_teachers == 0]
    if 0 < f < 1:
        fr = [v for v in fr if 0 < v < 1] or fr
    return min(abs(v - f) for v in fr)


@pytest.mark.parametrize("n_teachers, fraction", TABLE_7 + TABLE_8 + TABLE_9)
@pytest.mark.parametrize("n_labels", [14, 6, 8, 20])
def test_label_sets_follow_the_protocol(n_labels, n_teachers, fraction):
    sets = yeast.teacher_label_sets(n_labels, n_teachers, fraction, seed=3)
    assert sets == yeast.teacher_label_sets(n_labels, n_teachers, fraction, seed=3)  # deterministic
    assert len(sets) == n_teachers
    assert set().union(*map(set, sets)) == set(range(n_labels))  # the union covers every label
    assert len({len(s) for s in sets}) == 1  # equal label counts
    assert all(s == sorted(set(s)) for s in sets)
    achieved = yeast.shared_fractions(sets)
    assert len(set(achieved)) == 1  # every teacher shares the same fraction
    assert abs(achieved[0] - fraction) == pytest.approx(_best_achievable(n_labels, n_teachers, fraction))
    shared = _shared(sets)
    assert all(shared <= set(s) for s in sets)  # the shared labels are held by every teacher
    if fraction == 1.0:
        assert all(s == list(range(n_labels)) for s in sets)  # identical label sets
    if fraction == 0.0 and n_labels % n_teachers == 0:
        assert not shared  # completely distinct label sets
    if 0 < fraction < 1:
        assert 0 < len(shared) < n_labels  # a partial overlap stays partial


def test_yeast_label_plans_and_exact_cases():
    """The plans documented in teacher_label_sets for Yeast's 14 labels."""
    plans = {(n, f): yeast.label_set_sizes(14, n, f) for n, f in TABLE_7 + TABLE_8 + TABLE_9}
    assert plans == {
        (2, 1.0): (14, 14),
        (2, 0.75): (8, 11),
        (2, 0.5): (4, 9),
        (2, 0.25): (2, 8),
        (2, 0.0): (0, 7),
        (3, 0.5): (5, 8),
        (4, 0.5): (2, 5),
        (5, 0.5): (4, 6),
    }
    # Where the arithmetic allows it the fraction is exact, as in the authors' example (1-4 and 3-6 of 6).
    assert yeast.shared_fractions(yeast.teacher_label_sets(6, 2, 0.5, seed=0)) == [0.5, 0.5]
    assert yeast.label_set_sizes(6, 2, 0.5) == (2, 4)


def test_label_sets_vary_with_seed_and_reject_bad_arguments():
    assert len({str(yeast.teacher_label_sets(14, 2, 0.5, seed=s)) for s in range(5)}) > 1
    with pytest.raises(DataError, match="at least two teachers"):
        yeast.teacher_label_sets(14, 1, 0.5, seed=0)
    with pytest.raises(DataError, match="shared_fraction"):
        yeast.teacher_label_sets(14, 2, 1.5, seed=0)
    with pytest.raises(DataError, match="from 3 labels"):
        yeast.teacher_label_sets(3, 4, 0.5, seed=0)
    with pytest.raises(DataError, match="seed"):
        yeast.teacher_label_sets(14, 2, 0.5, seed=-1)


@pytest.mark.parametrize("n_teachers", [1, 2, 3, 5])
def test_teacher_data_split_is_disjoint_equal_and_seeded(n_teachers):
    parts = yeast.teacher_data_split(1692, n_teachers, seed=0)
    assert len(parts) == n_teachers
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1692))  # disjoint and complete
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    again = yeast.teacher_data_split(1692, n_teachers, seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))
    if n_teachers > 1:
        other = yeast.teacher_data_split(1692, n_teachers, seed=1)
        assert not np.array_equal(parts[0], other[0])
    with pytest.raises(DataError, match="disjoint non-empty parts"):
        yeast.teacher_data_split(n_teachers - 1, n_teachers, seed=0)
