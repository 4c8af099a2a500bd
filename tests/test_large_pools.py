"""Pools read from disk (issue 14): a ``.npy`` pool is read row by row from its file as it is used, and gives the
same store entries and the same student as the array in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import DataError
from amalgamator.rows import FeatureView, SparseRows, all_rows, rows_fingerprint
from amalgamator.store import LOGITS, TeacherStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pool_file(digits, tmp_path) -> tuple[np.ndarray, Path]:
    x = np.ascontiguousarray(digits[0][digits[3]])
    path = tmp_path / "pool.npy"
    np.save(path, x)
    return x, path


def test_a_npy_pool_reads_like_the_array(pool_file):
    x, path = pool_file
    mapped, memory = Inputs(path), Inputs(x)
    assert mapped.mapped and not memory.mapped and len(mapped) == len(x) and mapped.shape == memory.shape
    assert mapped.fingerprint() == memory.fingerprint()  # same content, same store entries
    for idx in (slice(0, 7), slice(590, 700), slice(5, 50, 3), [3, 1, 599, -1], np.array([10, 10, 0]),
                torch.tensor([4, 2])):  # fmt: skip
        assert torch.equal(mapped.take(idx), memory.take(idx)), idx
    assert torch.equal(mapped.part(100, 200).take(slice(0, 100)), memory.take(slice(100, 200)))
    assert torch.equal(mapped.part(100, 200).take([0, 99]), memory.take([100, 199]))
    with pytest.raises(IndexError):
        mapped.take([len(x)])


def test_a_npy_pool_trains_the_same_student_and_shares_the_store(digits, teachers, pool_file, tmp_path):
    x, path = pool_file
    store = tmp_path / "store"
    a = am.amalgamate(teachers, data=x, method="kd", epochs=3, seed=0, store=store, progress=False)
    b = am.amalgamate(teachers, data=path, method="kd", epochs=3, seed=0, store=store, progress=False)
    assert b.store.computed == 0  # the file's rows hit the array's entries
    wa, wb = a.student.network.state_dict(), b.student.network.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = am.amalgamate(teachers, data=str(path), method="calibrated", epochs=2, seed=0, store=store, progress=False)
    assert c.student.labels == a.student.labels


def test_a_npy_pool_with_nan_or_pickles_is_refused_clearly(tmp_path):
    bad = np.zeros((100, 4), dtype=np.float32)
    bad[57, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN or infinite values \\(first in row 57\\)"):
        Inputs(tmp_path / "nan.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array"):
        Inputs(tmp_path / "objects.npy")
    with pytest.raises(DataError, match="does not exist"):
        Inputs(tmp_path / "missing.npy")
    (tmp_path / "pool.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a .npy file"):
        Inputs(tmp_path / "pool.csv")


def test_other_dtypes_and_slices_of_a_mapping_are_read_into_memory(tmp_path):
    x = np.arange(60, dtype=np.float64).reshape(20, 3)
    np.save(tmp_path / "f64.npy", x)
    f64 = Inputs(tmp_path / "f64.npy")
    assert not f64.mapped and torch.equal(f64.values, torch.as_tensor(x, dtype=torch.float32))
    np.save(tmp_path / "f32.npy", x.astype(np.float32))
    part = np.load(tmp_path / "f32.npy", mmap_mode="r")[5:9]  # a slice: its offset is not the file's
    assert not Inputs(part).mapped and torch.equal(Inputs(part).values, torch.as_tensor(x[5:9], dtype=torch.float32))
    whole = Inputs(np.load(tmp_path / "f32.npy", mmap_mode="r"))
    assert whole.mapped and torch.equal(whole.take(slice(0, 20)), torch.as_tensor(x, dtype=torch.float32))


def test_row_views_index_like_tensors(pool_file):
    from scipy import sparse

    from amalgamator.models.featurize import Identity

    x, path = pool_file
    view = FeatureView(Inputs(path), Identity())
    assert view.shape == x.shape and len(view) == len(x)
    assert torch.equal(view[torch.tensor([5, 1])], torch.as_tensor(x[[5, 1]]))
    assert torch.equal(all_rows(view), torch.as_tensor(x)) and rows_fingerprint(view) == view.fingerprint()
    m = sparse.random(50, 30, density=0.1, format="csr", random_state=0, dtype=np.float32)
    rows = SparseRows(m)
    assert torch.equal(rows[slice(3, 9)], torch.as_tensor(m[3:9].toarray()))
    assert torch.equal(rows[np.array([7, 0])], torch.as_tensor(m[[7, 0]].toarray()))
    assert rows.fingerprint() == SparseRows(m.copy()).fingerprint() != SparseRows(m * 2).fingerprint()


def test_teacher_pass_over_a_file_equals_the_array(teachers, pool_file, tmp_path):
    x, path = pool_file
    got = TeacherStore(tmp_path / "a", batch_size=64).get(teachers[1], Inputs(path), [LOGITS, "features/1"])
    want = TeacherStore(tmp_path / "b", batch_size=64).get(teachers[1], Inputs(x), [LOGITS, "features/1"])
    for piece in want:
        assert torch.equal(got[piece], want[piece])


def test_a_pass_over_a_file_reads_every_row_through_one_small_buffer(pool_file):
    x, path = pool_file
    rows = Inputs(path)._file
    assert rows is not None
    seen = [(start, chunk.clone(), chunk.untyped_storage().data_ptr()) for start, chunk in rows.chunks(1000)]
    assert len(seen) > 3 and len({ptr for _, _, ptr in seen}) == 1  # one buffer, reused
    assert torch.equal(torch.cat([c for _, c, _ in seen]), torch.as_tensor(x))
    assert [s for s, _, _ in seen] == list(range(0, len(x), 1000 // rows.row_bytes))
    part = rows.part(100, 250)
    assert torch.equal(torch.cat([c.clone() for _, c in part.chunks(1000)]), torch.as_tensor(x[100:250]))


def test_a_method_lets_go_of_the_teachers_outputs_before_the_student_trains(teachers, pool_file, tmp_path):
    """kd's targets hold everything its loss reads: the stored logits (on disk) need not stay in memory too."""
    from amalgamator.labels import LabelSpace
    from amalgamator.methods.base import Context, place_in_union
    from amalgamator.methods.kd import KD

    x, path = pool_file
    inputs = Inputs(path)
    outputs = [TeacherStore(tmp_path / "store").get(t, inputs) for t in teachers]
    union = LabelSpace.union([t.labels for t in teachers])
    ctx = Context(teachers=list(teachers), union=union, outputs=outputs, inputs=inputs, y=torch.full((len(x),), -1))
    n, parts = len(x), [(ctx.positions(i), ctx.logits(i)) for i in range(len(teachers))]
    total, count = torch.zeros(n, len(union)), torch.zeros(len(union))
    for pos, lg in parts:  # the union target as it was computed before it was computed in place
        total[:, pos] += lg
        count[pos] += 1
    assert torch.equal(place_in_union(parts, len(union), "mean"), total / count)
    seen = {}

    def train(targets, rows):
        seen.update(targets=targets, rows=rows, held=[dict(o) for o in outputs])
        return "history"

    assert KD().run(ctx, train) == "history"
    assert seen["held"] == [{}, {}] and torch.equal(seen["targets"]["target_logits"], total / count)
    assert np.array_equal(seen["rows"], np.arange(n))


@pytest.fixture
def streaming(monkeypatch, tmp_path):
    """Stream every numeric table, 7 rows at a time, into a cache of this test's own."""
    from amalgamator import io

    monkeypatch.setattr(io, "STREAM_BYTES", 0)
    monkeypatch.setattr(io, "STREAM_ROWS", 7)
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path / "cache"))
    return io


@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_a_large_table_streams_into_a_npy_pool_equal_to_reading_it_whole(streaming, tmp_path, ext):
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    y = np.array([f"c{i % 4}" for i in range(50)])
    path = tmp_path / f"pool{ext}"
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    if ext == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    spec = {"path": str(path), "feature_columns": ["a", "b", "c"]}
    got, labels = streaming.load_table(spec)
    assert isinstance(got, Path) and got.suffix == ".npy" and got.parent == tmp_path / "cache" / "pools"
    assert labels.tolist() == y.tolist()
    assert np.array_equal(np.load(got), x) and Inputs(got).mapped
    stamp = got.stat().st_mtime_ns
    assert streaming.load_table(spec)[0] == got and got.stat().st_mtime_ns == stamp  # converted once
    streaming.STREAM_BYTES = 1 << 40  # small files are read whole, as before
    whole, whole_y = streaming.load_table(spec)
    assert np.array_equal(whole, x) and whole_y.tolist() == y.tolist()


def test_a_bad_row_deep_in_a_streamed_table_is_named(streaming, tmp_path):
    lines = [f'{{"a": {i}.0, "b": 1.0}}' for i in range(30)]
    lines[23] = '{"a": "oops", "b": 1.0}'
    (tmp_path / "pool.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 24: feature field 'a'"):
        streaming.load_table({"path": str(tmp_path / "pool.jsonl"), "feature_columns": ["a", "b"]})
    assert not list((tmp_path / "cache" / "pools").glob("*.npy"))  # nothing half-written left as a pool


def test_a_recipe_takes_a_npy_pool(digits, tmp_path):
    from amalgamator.recipe import load_recipe
    from amalgamator.recipe import run as run_recipe

    x, y, t, p, s = digits
    for name, labels in (("low", [str(i) for i in range(5)]), ("high", [str(i) for i in range(5, 10)])):
        keep = np.isin(y[t], labels)
        am.train_classifier(x[t][keep], y[t][keep], labels=labels, epochs=30, progress=False).save(tmp_path / name)
    np.save(tmp_path / "pool.npy", np.ascontiguousarray(x[p]))
    np.savez(tmp_path / "test.npz", x=x[s], y=y[s])
    (tmp_path / "r.yaml").write_text("teachers: [low, high]\ndata: pool.npy\ntest: test.npz\nmethod: kd\n"
                                     "train: {epochs: 20}\n")  # fmt: skip
    result, metrics = run_recipe(load_recipe(tmp_path / "r.yaml"), out=tmp_path / "out")
    assert metrics["accuracy"] > 0.3 and result.store.computed == 2
    (tmp_path / "r2.yaml").write_text("teachers: [low, high]\ndata: pool.npz\ntest: pool.npy\nmethod: kd\n")
    np.savez(tmp_path / "pool.npz", x=x[p])
    with pytest.raises(DataError, match="label"):
        run_recipe(load_recipe(tmp_path / "r2.yaml"), out=tmp_path / "out2")
