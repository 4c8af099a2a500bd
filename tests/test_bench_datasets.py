"""Benchmark dataset loaders: real sources when installed (skipped otherwise), synthetic ones always."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amalgamator.bench import datasets as D
from amalgamator.errors import DataError, LabelError


@pytest.fixture(scope="session")
def letters_rda() -> Path | None:
    """The real LetterRecognition.rda, found with the environment as it was (before tmp caches)."""
    try:
        return D._letters_source()
    except DataError:
        return None


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets an empty data cache and no path overrides."""
    for var in ("AMALGAMATOR_FASHION_MNIST", "AMALGAMATOR_LETTERS", "AMALGAMATOR_FORTUNES"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(root))
    return root


def assert_same(a: D.Benchmark, b: D.Benchmark) -> None:
    assert a.labels == b.labels and a.kind == b.kind and a.image_shape == b.image_shape
    for field in ("x_train", "y_train", "x_test", "y_test"):
        x, y = getattr(a, field), getattr(b, field)
        if isinstance(x, list):
            assert x == y
        else:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def cache_files(name: str) -> list[Path]:
    return sorted(D.cache_dir().glob(f"{name}-*.npz"))


def one_line_naming(exc: DataError, *words: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


# ------------------------------------------------------------------------------------------------ real sources


def test_fashion_mnist(monkeypatch):
    if not (D.FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST absent from {D.FASHION_DIR}: run scripts/bench-data.sh")
    b = D.load("fashion-mnist")
    assert b.kind == "image" and b.image_shape == (28, 28)
    assert b.x_train.shape == (60000, 784) and b.x_test.shape == (10000, 784)
    assert b.x_train.dtype == np.float32 and 0.0 <= b.x_train.min() and b.x_train.max() <= 1.0
    assert b.labels == D.FASHION_LABELS and b.labels[9] == "Ankle boot"
    assert set(b.y_train) == set(b.labels) and Counter(b.y_test.tolist()) == {k: 1000 for k in b.labels}
    assert len(cache_files("fashion-mnist")) == 1
    monkeypatch.setattr(D, "read_idx", lambda p: pytest.fail("parsed again instead of reading the cache"))
    assert_same(b, D.load("fashion-mnist"))


def test_letters(monkeypatch, letters_rda):
    if letters_rda is None:
        pytest.skip("LetterRecognition.rda absent (r-cran-mlbench not unpacked): run scripts/bench-data.sh")
    pytest.importorskip("rdata", reason="rdata not installed: run scripts/bench-data.sh")
    monkeypatch.setenv("AMALGAMATOR_LETTERS", str(letters_rda))
    b = D.load("letters")
    assert b.kind == "tabular" and b.image_shape is None
    assert b.x_train.shape == (16000, 16) and b.x_test.shape == (4000, 16) and b.x_train.dtype == np.float32
    assert b.labels == [chr(c) for c in range(65, 91)] and set(b.y_train) == set(b.y_test) == set(b.labels)
    assert b.y_train[0] == "T"  # the data frame's first row
    np.testing.assert_allclose(b.x_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(b.x_train.std(axis=0), 1, atol=1e-3)
    assert np.abs(b.x_test.mean(axis=0)).max() < 0.1
    monkeypatch.setattr(D, "_parse_letters", lambda p: pytest.fail("parsed again instead of reading the cache"))
    assert_same(b, D.load("letters"))


def test_fortunes(monkeypatch):
    if len(D._fortune_files(D.FORTUNES_DIR)) < D.N_FORTUNE_TOPICS:
        pytest.skip(f"fortune files absent from {D.FORTUNES_DIR}: run scripts/bench-data.sh")
    b = D.load("fortunes")
    assert b.kind == "text" and len(b.labels) == 14 and b.labels == sorted(b.labels)
    assert isinstance(b.x_train, list) and all(isinstance(s, str) and s == s.strip() and s for s in b.x_train)
    assert set(b.y_train) == set(b.y_test) == set(b.labels)
    assert not set(b.x_train) & set(b.x_test)
    n = len(b.x_train) + len(b.x_test)
    assert n > 5000 and len(b.x_test) == round(0.2 * n)
    total, test = Counter(b.y_train.tolist() + b.y_test.tolist()), Counter(b.y_test.tolist())
    assert all(abs(test[k] - 0.2 * total[k]) <= 1 for k in b.labels)  # stratified
    assert not any(line.strip() == "%" for s in b.x_train for line in s.splitlines())
    monkeypatch.setattr(D, "_parse_fortunes", lambda f: pytest.fail("parsed again instead of reading the cache"))
    assert_same(b, D.load("fortunes"))


def test_digits():
    b = D.load("digits")
    assert b.x_train.shape == (1438, 64) and b.x_test.shape == (359, 64) and b.image_shape == (8, 8)
    assert 0.0 <= b.x_train.min() and b.x_train.max() <= 1.0
    assert b.labels == [str(i) for i in range(10)] and set(b.y_test) == set(b.labels)
    assert max(Counter(b.y_test.tolist()).values()) - min(Counter(b.y_test.tolist()).values()) <= 2
    assert_same(b, D.load("digits"))


def test_unknown_name():
    with pytest.raises(DataError, match="fashion-mnist"):
        D.load("fashion_mnist")


# ------------------------------------------------------------------------------------------------ missing data


def test_missing_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.setenv("AMALGAMATOR_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DataError) as e:
        D.load("fashion-mnist")
    one_line_naming(e.value, "dataset-fashion-mnist", "AMALGAMATOR_FASHION_MNIST", "scripts/bench-data.sh")


def test_missing_letters(monkeypatch, tmp_path):
    monkeypatch.setenv("AMALGAMATOR_LETTERS", str(tmp_path / "LetterRecognition.rda"))
    with pytest.raises(DataError) as e:
        D.load("letters")
    one_line_naming(e.value, "r-cran-mlbench", "AMALGAMATOR_LETTERS", "scripts/bench-data.sh")


def test_missing_letters_default_paths(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "MLBENCH_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError) as e:
        D.load("letters")
    one_line_naming(e.value, "r-cran-mlbench", "AMALGAMATOR_LETTERS")


def test_missing_fortunes(monkeypatch, tmp_path):
    monkeypatch.setenv("AMALGAMATOR_FORTUNES", str(tmp_path))
    with pytest.raises(DataError) as e:
        D.load("fortunes")
    one_line_naming(e.value, "Debian package fortunes", "AMALGAMATOR_FORTUNES")


# ----------------------------------------------------------------------------------------- synthetic sources


def write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    data = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_read_idx(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.gz", "a"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(D.read_idx(tmp_path / name), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "a").read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        D.read_idx(tmp_path / "short")


def test_fashion_from_env_folder(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 30), ("t10k", 10)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 5)))
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    monkeypatch.setenv("AMALGAMATOR_FASHION_MNIST", str(tmp_path))
    b = D.load("fashion-mnist")
    assert b.x_train.shape == (30, 20) and b.image_shape == (4, 5) and b.y_test[9] == "Ankle boot"
    assert_same(b, D.load("fashion-mnist"))


def test_split_fortunes():
    text = "one\n%\n\n%\n  two\nlines \n%\n_\bb_\bo_\bl_\bd and x\bxy\n% \nlast"
    assert D.split_fortunes(text) == ["one", "two\nlines", "bold and xy", "last"]
    assert D.split_fortunes("50% off\n%\n") == ["50% off"]


def make_fortunes(folder: Path, n_topics: int = 16) -> None:
    folder.mkdir(exist_ok=True)
    for t in range(n_topics):
        items = [f"topic {t} saying {i}\n  -- someone" for i in range(10 + t)]
        (folder / f"topic{t:02d}").write_text("\n%\n".join(items + ["shared by two topics"]) + "\n%\n")
        (folder / f"topic{t:02d}.dat").write_bytes(b"\0" * 24)
    (folder / "link").symlink_to(folder / "topic15")
    (folder / "off").mkdir()
    (folder / "off" / "huge").write_text("\n%\n".join(f"x{i}" for i in range(500)))


def test_fortunes_from_env_folder(monkeypatch, tmp_path):
    make_fortunes(tmp_path / "f")
    monkeypatch.setenv("AMALGAMATOR_FORTUNES", str(tmp_path / "f"))
    b = D.load("fortunes")
    assert b.labels == [f"topic{t:02d}" for t in range(2, 16)]  # the 14 largest; off/, links, .dat ignored
    texts = b.x_train + b.x_test
    assert "shared by two topics" not in texts  # ambiguous texts are dropped
    assert len(texts) == sum(10 + t for t in range(2, 16)) and len(set(texts)) == len(texts)
    assert all(t.endswith("-- someone") for t in texts)
    files = cache_files("fortunes")
    assert len(files) == 1
    assert_same(b, D.load("fortunes"))
    with np.load(files[0], allow_pickle=False) as z:  # readable without pickle, text as unicode
        assert z["topic"].dtype.kind == "U" and z["blob"].dtype.kind == "U"


def test_cache_corrupt_and_stale(monkeypatch, tmp_path):
    make_fortunes(tmp_path / "f")
    monkeypatch.setenv("AMALGAMATOR_FORTUNES", str(tmp_path / "f"))
    first = D.load("fortunes")
    (path,) = cache_files("fortunes")
    path.write_bytes(b"not a zip")
    assert_same(first, D.load("fortunes"))  # re-parsed over the torn file
    (tmp_path / "f" / "topic15").write_text("now\n%\nsmall\n")  # source changed: parsed again, old file replaced
    second = D.load("fortunes")
    assert "topic15" not in second.labels and "topic01" in second.labels
    assert cache_files("fortunes") != [path] and len(cache_files("fortunes")) == 1


# ------------------------------------------------------------------------------------------- groups and roles


def test_scaled_sizes_examples():
    assert D.scaled_sizes(26, (2, 2, 2, 4)) == [5, 5, 5, 11]
    assert D.scaled_sizes(10, (2, 2, 2, 4)) == [2, 2, 2, 4]
    assert D.scaled_sizes(4, (1, 1, 1)) == [1, 1, 2]
    assert D.scaled_sizes(3, (1, 10)) == [1, 2]
    with pytest.raises(DataError):
        D.scaled_sizes(2, (1, 1, 1))
    with pytest.raises(DataError):
        D.scaled_sizes(5, (1, 0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=8), st.integers(0, 60))
def test_scaled_sizes_properties(pattern, extra):
    n = len(pattern) + extra
    sizes = D.scaled_sizes(n, pattern)
    assert sum(sizes) == n and len(sizes) == len(pattern) and min(sizes) >= 1
    for i, (p, s) in enumerate(zip(pattern, sizes, strict=True)):
        for q, t in zip(pattern[i + 1 :], sizes[i + 1 :], strict=True):
            if p < q:
                assert s <= t
            elif p > q:
                assert s >= t
            else:
                assert abs(s - t) <= 1
    if n % sum(pattern) == 0:  # exact multiples scale exactly
        assert sizes == [p * n // sum(pattern) for p in pattern]


def test_class_groups():
    letters = D.LETTER_LABELS
    groups = D.class_groups(letters, [6, 6, 6, 8])
    assert groups[0] == list("ABCDEF") and groups[3] == list("STUVWXYZ")
    shuffled = D.class_groups(letters, D.scaled_sizes(26, (2, 2, 2, 4)), seed=1)
    assert [len(g) for g in shuffled] == [5, 5, 5, 11]
    flat = [c for g in shuffled for c in g]
    assert sorted(flat) == letters and flat != letters
    assert shuffled == D.class_groups(letters, [5, 5, 5, 11], seed=1)
    assert D.class_groups(letters, [3, 3]) == [list("ABC"), list("DEF")]  # the rest in no group
    with pytest.raises(LabelError):
        D.class_groups(letters, [20, 7])
    with pytest.raises(LabelError):
        D.class_groups(["a", "a", "b"], [1, 1])


def test_overlapping_groups():
    letters = D.LETTER_LABELS
    ring = D.overlapping_groups(list("ABCDEF"), [2, 2, 2])
    assert ring == [list("ABC"), list("CDE"), list("EFA")]
    groups = D.overlapping_groups(letters, D.scaled_sizes(26, (1,) * 8), overlap=1)
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4, 4, 5, 5]
    assert sorted({c for g in groups for c in g}) == letters  # every letter has an owner
    owners = Counter(c for g in groups for c in g)
    assert max(owners.values()) == 2 and sum(v == 2 for v in owners.values()) == 8  # one shared letter per pair
    for i, g in enumerate(groups):
        assert len(set(g) & set(groups[(i + 1) % 8])) == 1  # neighbours share exactly one letter
        assert all(not set(g) & set(groups[j]) for j in range(8) if (j - i) % 8 not in (0, 1, 7))
    two = D.overlapping_groups(letters, D.scaled_sizes(26, (1,) * 8), overlap=2)
    assert all(len(set(g) & set(two[(i + 1) % 8])) == 2 for i, g in enumerate(two))
    thirteen = D.overlapping_groups(letters, [2] * 13)
    assert [len(g) for g in thirteen] == [3] * 13 and thirteen[-1] == list("YZA")
    for bad in ([3, 3], [2, 2, 2]):  # two groups are no ring; overlap must leave each group a letter of its own
        with pytest.raises(LabelError):
            D.overlapping_groups(letters, bad, overlap=2)
    with pytest.raises(LabelError):
        D.overlapping_groups(letters, [3, 3, 3], overlap=0)


def test_hold_out():
    y = np.repeat(np.array(["a", "b"]), [800, 200])
    rows = np.arange(0, 2000, 2)
    full = np.zeros(2000, dtype=y.dtype)
    full[rows] = y
    kept, held = D.hold_out(rows, 0.1, seed=0, y=full)
    assert len(held) == 100 and len(kept) == 900 and not set(kept) & set(held)
    assert set(kept) | set(held) == set(rows.tolist()) and np.all(np.diff(held) > 0)
    assert Counter(full[held].tolist()) == {"a": 80, "b": 20}  # stratified
    assert np.array_equal(held, D.hold_out(rows, 0.1, seed=0, y=full)[1])
    assert len(D.hold_out(rows, 0.1, seed=0, max_rows=30)[1]) == 30
    assert len(D.hold_out(np.arange(3), 0.01, seed=0)[1]) == 1  # at least one row
    with pytest.raises(DataError):
        D.hold_out(rows, 1.0, seed=0)


def test_role_split():
    y = np.repeat(np.array(["a", "b", "c"]), [600, 300, 100])
    rng = np.random.default_rng(0)
    y = y[rng.permutation(len(y))]
    t, p = D.role_split(len(y), (0.4, 0.5), seed=3, y=y)
    assert len(t) == 400 and len(p) == 500 and not set(t) & set(p)
    assert np.all(np.diff(t) > 0) and t.max() < len(y)
    assert Counter(y[t].tolist()) == {"a": 240, "b": 120, "c": 40}
    assert Counter(y[p].tolist()) == {"a": 300, "b": 150, "c": 50}
    t2, p2 = D.role_split(len(y), (0.4, 0.5), seed=3, y=y)
    assert np.array_equal(t, t2) and np.array_equal(p, p2)
    assert not np.array_equal(t, D.role_split(len(y), (0.4, 0.5), seed=4, y=y)[0])
    tc, pc = D.role_split(len(y), (0.4, 0.5), seed=3, y=y, max_rows=(100, None))
    assert len(tc) == 100 and set(tc) <= set(t) and np.array_equal(pc, p)
    assert Counter(y[tc].tolist()) == {"a": 60, "b": 30, "c": 10}
    tu, pu = D.role_split(1000, (0.5, 0.5), seed=0, max_rows=50)
    assert len(tu) == len(pu) == 50 and not set(tu) & set(pu)
    with pytest.raises(DataError):
        D.role_split(10, (0.7, 0.5))
    with pytest.raises(DataError):
        D.role_split(10, (0.5, 0.5), y=y)


def test_take_train_on_text_and_arrays():
    b = D.Benchmark("t", ["a", "b", "c"], np.array(["x", "y", "x"]), [], np.array([]), ["x", "y"], "text")
    x, y = b.take_train(np.array([2, 0]))
    assert x == ["c", "a"] and y.tolist() == ["x", "x"]
    b.x_train = np.arange(6, dtype=np.float32).reshape(3, 2)
    x, _ = b.take_train([1])
    assert x.tolist() == [[2.0, 3.0]]
