"""FashionPairs (bench/fashion_pairs.py): determinism, what is placed where, roles and the task-set protocol.

Most tests read a small synthetic Fashion-MNIST (IDX files written here, found through
``$AMALGAMATOR_FASHION_MNIST``) so they are fast and run without the Debian package; one test reads the real
data when it is installed.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from amalgamator.bench import datasets as D
from amalgamator.bench import fashion_pairs as FP
from amalgamator.bench.yeast import teacher_label_sets
from amalgamator.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

_USER_CACHE = os.environ.get("AMALGAMATOR_CACHE")  # as it was before any fixture
N_TRAIN, N_TEST = 200, 60


def write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    path.write_bytes(gzip.compress(head + arr.astype(np.uint8).tobytes()))


def synthetic_items(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28×28 items whose class c is a bright band at rows 2c..2c+6 over dim noise (learnable, all distinct)."""
    y = np.arange(n) % 10
    x = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 7, 4:24] = rng.integers(180, 256, (7, 20))
    return x.astype(np.uint8), y


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for stem, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x, y = synthetic_items(n, rng)
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture(autouse=True)
def synthetic(monkeypatch, tmp_path_factory, synthetic_folder) -> Path:
    """Every test reads the synthetic Fashion-MNIST through an empty data cache (the user's is untouched)."""
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("AMALGAMATOR_FASHION_MNIST", str(synthetic_folder))
    return synthetic_folder


# ------------------------------------------------------------------------------------------------ images


def test_shapes_range_and_task_names():
    x, y, tasks = FP.fashion_pairs(40, 0)
    assert x.shape == (40, 1, 56, 56) and x.dtype == np.float32
    assert y.shape == (40, 10) and y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1}
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.7
    assert tasks == D.FASHION_LABELS == FP.TASKS
    assert (y.sum(1) >= 1).all() and (y.sum(1) <= 4).all()


def test_deterministic_per_seed_and_split():
    a = FP.fashion_pairs(30, 5)
    b = FP.fashion_pairs(30, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], FP.fashion_pairs(30, 6)[0])
    assert not np.array_equal(a[0], FP.fashion_pairs(30, 5, "test")[0])


def test_items_and_labels_match_what_was_placed():
    x, y, tasks, info = FP.fashion_pairs(300, 1, info=True)
    images, classes = FP.load_items()["train"]
    items, n_items = info["items"], info["n_items"]
    assert info["split"] == "train" and items.shape == (300, 4)
    assert set(n_items.tolist()) == {2, 3, 4}  # every count occurs, nothing outside 2..4
    np.testing.assert_array_equal((items >= 0).sum(1), n_items)
    assert items.max() < N_TRAIN
    # classes per cell are the placed items' Fashion-MNIST classes; the labels are recomputed from them
    np.testing.assert_array_equal(info["classes"], np.where(items >= 0, classes[np.maximum(items, 0)], -1))
    expect = np.zeros((300, 10), dtype=np.uint8)
    for i, row in enumerate(items):
        for it in row[row >= 0]:
            expect[i, classes[it]] = 1
    np.testing.assert_array_equal(y, expect)
    # each cell of the canvas is the item's pixels (uint8 / 255) or black
    for i in range(0, 300, 37):
        for cell in range(4):
            r, c = divmod(cell, 2)
            patch = x[i, 0, 28 * r : 28 * r + 28, 28 * c : 28 * c + 28]
            want = images[items[i, cell]] / np.float32(255) if items[i, cell] >= 0 else np.zeros((28, 28))
            np.testing.assert_array_equal(patch, want.astype(np.float32))
    # cells are seeded per image: every cell is used and left empty somewhere
    assert ((items >= 0).mean(0) > 0.5).all() and ((items < 0).mean(0) > 0.05).all()


def test_test_split_draws_test_items():
    _, y, _, info = FP.fashion_pairs(50, 0, "test", info=True)
    assert info["split"] == "test" and info["items"].max() < N_TEST
    _, test_classes = FP.load_items()["test"]
    assert (y.sum(1) == [len(set(test_classes[r[r >= 0]])) for r in info["items"]]).all()


@pytest.mark.parametrize(("args", "word"), [((0, 0), "n"), ((5, -1), "seed"), ((5, 0, "val"), "split")])
def test_bad_arguments(args, word):
    with pytest.raises(DataError, match=word):
        FP.fashion_pairs(*args)


# ------------------------------------------------------------------------------------------------ roles


def test_roles_are_disjoint_and_deterministic():
    r = FP.roles(3, n_teacher=40, n_pool=60, n_test=20, n_teachers=2)
    assert [len(p) for p in r.teachers] == [40, 40] and len(r.pool) == 60 and len(r.test) == 20
    assert r.tasks == FP.TASKS
    t0, t1, pool = (set(p.sources.tolist()) for p in (*r.teachers, r.pool))
    assert not (t0 & t1) and not (t0 & pool) and not (t1 & pool)
    assert len(t0 | t1 | pool) == N_TRAIN  # every training item has one role
    for part in (*r.teachers, r.pool):
        used = part.items[part.items >= 0]
        assert part.split == "train" and set(used.tolist()) <= set(part.sources.tolist())
        classes = FP.load_items()["train"][1]
        assert len(np.unique(classes[part.sources])) == 10  # class by class: each role has every class
    assert r.test.split == "test" and r.test.items.max() < N_TEST
    # the merged teacher part holds both teachers' images and no pool item
    assert len(r.teacher) == 80 and not set(r.teacher.items[r.teacher.items >= 0].tolist()) & pool
    again = FP.roles(3, n_teacher=40, n_pool=60, n_test=20, n_teachers=2)
    for a, b in zip((*r.teachers, r.pool, r.test), (*again.teachers, again.pool, again.test), strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(r.pool.x, FP.roles(4, 40, 60, 20, n_teachers=2).pool.x)


def test_roles_item_shares_follow_image_counts():
    r = FP.roles(0, n_teacher=30, n_pool=90, n_test=5)
    assert len(r.teachers) == 1 and r.teacher is r.teachers[0]
    assert len(r.teacher.sources) == pytest.approx(N_TRAIN / 4, abs=10)
    assert len(r.pool.sources) == pytest.approx(3 * N_TRAIN / 4, abs=10)


# --------------------------------------------------------------------------------------- task-set protocol


@pytest.mark.parametrize(
    ("fraction", "n_shared", "size"),
    [(0.3, 2, 6), (0.75, 6, 8), (0.5, 4, 7), (0.25, 2, 6)],  # Table 10; Table 11's 75 / 50 / 25 %
)
def test_two_teacher_task_sets(fraction, n_shared, size):
    sets = FP.teacher_task_sets(10, 2, fraction, seed=0)
    assert [len(s) for s in sets] == [size, size]  # equal task counts
    assert set(sets[0]) | set(sets[1]) == set(range(10))  # the union covers every task
    assert len(set(sets[0]) & set(sets[1])) == n_shared
    achieved = FP.shared_fractions(sets)
    assert achieved == [n_shared / size] * 2
    assert abs(achieved[0] - fraction) <= 0.1  # the nearest reachable fraction; 0.75 is exact
    assert sets == FP.teacher_task_sets(10, 2, fraction, seed=0) == teacher_label_sets(10, 2, fraction, 0)
    assert all(s == sorted(s) for s in sets)


def test_task_sets_vary_with_seed_and_cover_for_more_teachers():
    assert FP.teacher_task_sets(10, 2, 0.3, 0) != FP.teacher_task_sets(10, 2, 0.3, 1)
    sets = FP.teacher_task_sets(10, 3, 0.5, 0)
    assert len({len(s) for s in sets}) == 1 and set().union(*map(set, sets)) == set(range(10))
    core = set(sets[0]) & set(sets[1]) & set(sets[2])
    assert all(set(a) & set(b) == core for a in sets for b in sets if a is not b)  # shared = held by all
    names = [[FP.TASKS[i] for i in s] for s in sets]
    assert all(n in FP.TASKS for s in names for n in s)


# ------------------------------------------------------------------------------------------------ sources


def test_missing_fashion_mnist_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("AMALGAMATOR_FASHION_MNIST", str(tmp_path))
    for call in (lambda: FP.fashion_pairs(4, 0), lambda: FP.roles(0, 4, 4, 4)):
        with pytest.raises(DataError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg
        for word in ("FashionPairs", "dataset-fashion-mnist", "AMALGAMATOR_FASHION_MNIST", "scripts/bench-data.sh"):
            assert word in msg, (word, msg)


def test_real_fashion_mnist(monkeypatch):
    if not (D.FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST absent from {D.FASHION_DIR}: run scripts/bench-data.sh")
    monkeypatch.delenv("AMALGAMATOR_FASHION_MNIST")
    if _USER_CACHE is None:  # the user's own cache of the parsed files, as the benchmarks use it
        monkeypatch.delenv("AMALGAMATOR_CACHE")
    else:
        monkeypatch.setenv("AMALGAMATOR_CACHE", _USER_CACHE)
    x, y, tasks, info = FP.fashion_pairs(64, 0, "test", info=True)
    bench = D.load("fashion-mnist")
    assert x.shape == (64, 1, 56, 56) and 0 <= x.min() and x.max() <= 1
    for i in range(64):
        names = set(bench.y_test[info["items"][i][info["items"][i] >= 0]].tolist())
        assert {tasks[c] for c in np.flatnonzero(y[i])} == names
    i, cell = 0, int(np.flatnonzero(info["items"][0] >= 0)[0])
    r, c = divmod(cell, 2)
    patch = x[0, 0, 28 * r : 28 * r + 28, 28 * c : 28 * c + 28].reshape(-1)
    np.testing.assert_array_equal(patch, bench.x_test[info["items"][i, cell]])
