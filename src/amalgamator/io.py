"""Reading data files for recipes and ``amalgamator evaluate --data``.

One entry point, :func:`load_table`, turns a file (``.npz``, ``.csv``, ``.tsv``, ``.parquet``,
``.jsonl``) into ``(x, y)``: x a float32 array or a list of texts, y label names as a str
array (or None when the file has no labels). Multi-label files give y as one list of label names
per row (the row's positive labels): an npz ``y`` matrix of 0/1 with a ``label_names`` array naming
its columns, table columns of 0/1 named by ``label_columns``, or jsonl fields holding lists.
Labels are always names, never indices, so ``3`` in a CSV and ``"3"`` in a teacher's label list
are the same label. ``.npz`` files are read with ``allow_pickle=False``: nothing from a data file is ever unpickled.

Hostile files get a :class:`~amalgamator.errors.DataError` naming the file, the place and the fix, never a crash or
silent garbage: feature values must be finite float32 numbers (NaN is allowed only as end padding of an ``.npz``
array of sequences, shape ``(n, channels, length)``, which :class:`~amalgamator.data.Inputs` checks); column names
must be unique and non-blank; texts must be strings and labels strings or finite numbers (named by ``str``: ``3.0``
is the label ``"3.0"``, which evaluation matches with a model's ``"3"``; a csv/tsv label is the cell's text as
written); a blank or NaN label is a missing label. Label names are otherwise taken verbatim: unicode, inner and
surrounding spaces included (``" cat"`` is not ``"cat"``). In csv/tsv files only an empty cell is missing from a
label or text column: a label or text ``NA``, ``None`` or ``nan`` is that string.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, first_line

#: File endings load_table understands, in the order error messages list them.
SUPPORTED = (".npz", ".csv", ".csv.gz", ".tsv", ".parquet", ".jsonl", ".npy")
#: Numeric .parquet and .jsonl files at least this large are streamed into a .npy pool (see ``_stream_to_npy``).
STREAM_BYTES = 256 << 20
#: Rows converted at a time when streaming.
STREAM_ROWS = 65_536
#: Keys a dict spec may have.
SPEC_KEYS = ("path", "text_column", "feature_columns", "label_column", "label_columns")
#: Label columns (or npz arrays, or jsonl fields) used when none is named.
DEFAULT_LABELS = ("y", "label")

X = np.ndarray | list[str]
#: label names per row (multiclass), or the positive label names of each row (multi-label)
Y = np.ndarray | list[list[str]]


def _spec_dict(spec: Any) -> dict[str, Any]:
    """Accept a path, a mapping, or any object with the spec's attributes (a pydantic model)."""
    if isinstance(spec, (str, Path)):
        return {"path": str(spec)}
    if isinstance(spec, Mapping):
        d = dict(spec)
    elif hasattr(spec, "path"):
        d = {k: getattr(spec, k, None) for k in SPEC_KEYS}
    else:
        raise DataError(f"a data spec is a file path or a mapping with keys {list(SPEC_KEYS)}, not {spec!r}.")
    unknown = sorted(set(d) - set(SPEC_KEYS))
    if unknown:
        from .errors import suggest

        raise DataError(f"data spec has unknown key {unknown[0]!r}.{suggest(unknown[0], SPEC_KEYS)} Keys: {SPEC_KEYS}.")
    if not d.get("path"):
        raise DataError(f"data spec {d!r} has no path.")
    if not isinstance(d["path"], (str, Path)):
        raise DataError(f"data spec path must be a string, not {type(d['path']).__name__} ({d['path']!r}).")
    for key in ("text_column", "label_column"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise DataError(f"data spec {key} must be a column name (a string), not {d[key]!r}.")
    for key in ("feature_columns", "label_columns"):
        if isinstance(d.get(key), str):
            d[key] = [d[key]]
        value = d.get(key)
        if value is not None and (
            not isinstance(value, (list, tuple)) or not all(isinstance(c, str) and c for c in value)
        ):
            raise DataError(f"data spec {key} must be a list of column names (strings), not {value!r}.")
    return d


def file_problem(path: str | Path) -> str | None:
    """What makes ``path`` unusable before anything opens it, or None (a missing path is None too: each reader
    says so in its own words): a NUL character in the name, a name the system refuses (too long, a symlink loop,
    no permission), or something that is neither a file nor a folder (a pipe or device would block or never end).
    """
    import stat

    if "\x00" in str(path):
        return "its name contains a NUL character, which no file name can hold"
    try:
        mode = Path(path).stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"the system cannot look it up ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "it is not a regular file but a pipe, socket or device, which could block or never end"


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    """``~`` expanded; a relative path is taken against ``base_dir`` (the recipe's folder)."""
    if "\x00" in str(path):
        raise DataError(f"cannot use the path {str(path)!r}: {file_problem(path)}.")
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p.resolve()


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(SUPPORTED, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _name(value: Any, what: str, where: str, row: int | None = None) -> str:
    """One label (or label name) as a string: str, bytes (UTF-8), or ``str`` of a number (``3`` is "3", ``3.0`` is
    "3.0", as training names them; evaluation matches such twins); NaN, blanks and other objects are refused."""
    at = f"{what} in row {row}" if row is not None else what
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where}: {at} is not valid UTF-8 text ({bytes(value)[:20]!r}).") from None
    if isinstance(value, (str, np.str_)):
        text = str(value)
        if not text.strip():
            raise DataError(f"{where}: {at} is blank; give every row a label name, or drop the row.")
        if "\x00" in text:  # numpy's str arrays drop a trailing NUL: "a\x00" would silently become "a"
            raise DataError(f"{where}: {at} ({text!r}) contains a NUL character; remove it from the label name.")
        return text
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise DataError(f"{where}: {at} is {float(value)}; give every row a label name.")
        return str(value)
    raise DataError(
        f"{where}: {at} is a {type(value).__name__} ({_short(value)}); labels must be names (strings) or numbers."
    )


def _short(value: Any) -> str:
    import reprlib

    return reprlib.repr(value)


def _labels(values: Any, where: str) -> np.ndarray:
    y = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if y.ndim != 1:
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise DataError(f"labels in {where} have shape {y.shape}; give one label name per row.")
    if y.dtype.kind not in "USObiuf":
        raise DataError(f"labels in {where} have dtype {y.dtype}; give label names (strings) or numbers.")
    if y.dtype.kind == "U":
        blank = np.flatnonzero(np.char.strip(y) == "")
        if len(blank):
            raise DataError(
                f"{where}: the label is blank in {len(blank)} rows (first: row {int(blank[0]) + 1}); give every "
                "row a label name, or drop those rows."
            )
        nul = next((i for i, v in enumerate(y.tolist()) if "\x00" in v), None)  # (np.char.find sees "" in "\x00")
        if nul is not None:
            raise DataError(f"{where}: the label in row {nul + 1} ({y[nul]!r}) contains a NUL character; remove it "
                            "from the label name.")  # fmt: skip
        return y
    if y.dtype.kind in "iub":
        return y.astype(str)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            raise DataError(
                f"{where}: the label is {y[bad[0]]} in {len(bad)} rows (first: row {int(bad[0]) + 1}); give every row "
                "a label name, or drop those rows."
            )
        return y.astype(str)
    names = [_name(v, "the label", where, i + 1) for i, v in enumerate(y.tolist())]
    return np.asarray(names, dtype=str) if names else np.asarray([], dtype=str)


def _label_sets(matrix: Any, names: Sequence[str], where: str) -> list[list[str]]:
    """A 0/1 matrix with one column per label name → each row's positive label names."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[1] != len(names):
        raise DataError(f"{where}: the label matrix has shape {m.shape} for {len(names)} label names.")
    if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise DataError(
            f"{where}: multi-label columns must hold only 0 and 1; threshold probabilities first (y > 0.5)."
        )
    names = [_name(v, "label name", where, i + 1) for i, v in enumerate(names)]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise DataError(f"{where}: the label name {dup!r} is given twice; label names must be unique.")
    return [[names[j] for j in np.flatnonzero(row)] for row in m]


def _numeric(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind in "USO":
        return x
    if x.dtype.kind not in "biuf":
        raise DataError(f"features in {where} have dtype {x.dtype}; give numbers (float or int).")
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(np.float32, copy=False)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        bad = ~np.isfinite(out)
        rows = bad.reshape(len(out), -1).any(1) if out.ndim > 1 else bad
        first = int(np.argmax(rows))
        if np.isinf(out).any():
            big = np.isinf(out) & np.isfinite(x) if x.dtype.kind == "f" else np.isinf(out)
            what = "values beyond the float32 range (±3.4e38)" if big.any() else "infinite values"
            raise DataError(
                f"{where}: features hold {what} in {int(rows.sum())} rows (first: row {first + 1}); "
                "clean, rescale or drop them."
            )
        if out.ndim != 3:  # NaN is end padding only in (n, channels, length) sequences, which Inputs checks
            raise DataError(
                f"{where}: features hold NaN (missing values) in {int(rows.sum())} rows (first: row {first + 1}); "
                "fill or drop them."
            )
    return out


def _check_rows(x: X, y: Y | None, where: str) -> None:
    if len(x) == 0:
        raise DataError(f"{where} holds no rows.")
    if isinstance(x, np.ndarray) and x.ndim > 1 and 0 in x.shape[1:]:
        raise DataError(f"{where}: rows have shape {x.shape[1:]}, which holds no values; give at least one feature.")
    if y is not None and len(y) != len(x):
        raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)} labels; give one label per row.")


# npz ----------------------------------------------------------------------------


def _npz_array(data: Any, key: str, where: str) -> np.ndarray:
    if key not in data.files:
        raise DataError(f"{where} has no array {key!r}; arrays present: {sorted(data.files)}.")
    try:
        arr = data[key]
    except MemoryError:
        raise DataError(f"{where}: array {key!r} is too large to read into memory.") from None
    except Exception as exc:  # torn or foreign: BadZipFile, zlib.error, EOFError, SyntaxError (a damaged header), ...
        if not (isinstance(exc, ValueError) and "pickle" in str(exc).lower()):
            raise DataError(
                f"{where}: array {key!r} cannot be read ({first_line(exc)}); write the file again."
            ) from None
        name = key if key.isidentifier() else "x"  # the hint is code: a key like "\n" would break the line
        raise DataError(
            f"{where}: array {key!r} is an object array, which only pickle could load (refused for safety); "
            f"save numbers as a float array ({name}=np.asarray({name}, dtype=np.float32)) or texts as a unicode "
            f"string array ({name}=np.asarray({name}, dtype=str)) when calling np.savez."
        ) from None
    if not isinstance(arr, np.ndarray):  # a zip member that is not a .npy array: np.load hands back its bytes
        raise DataError(f"{where}: {key!r} is not a numpy array (a foreign file in the archive); save with np.savez.")
    return arr


def _load_npz(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    try:
        data = np.load(path, allow_pickle=False)
    except MemoryError:
        raise DataError(f"{where} is too large to read into memory.") from None
    except Exception as exc:  # a torn or foreign file: BadZipFile, EOFError, ValueError, NotImplementedError (a zip
        # of a newer version), RuntimeError (encrypted), SyntaxError or TokenError (a damaged .npy header), ...
        raise DataError(f"{where} is not a readable .npz file ({first_line(exc)}).") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where} holds a single .npy array, not an .npz archive; save with np.savez(path, x=x, y=y) "
            "(an .npz file names its arrays)."
        )
    with data:
        if spec.get("feature_columns"):
            cols = [_npz_array(data, k, where) for k in spec["feature_columns"]]
            for k, c in zip(spec["feature_columns"], cols, strict=True):
                if c.ndim == 0 or c.dtype.kind not in "biuf" or 0 in c.shape:
                    raise DataError(
                        f"{where}: feature array {k!r} has shape {c.shape} and dtype {c.dtype}; feature arrays "
                        "must hold numbers, one value (or row) per example."
                    )
            lengths = sorted({len(c) for c in cols})
            if len(lengths) > 1:
                raise DataError(f"{where}: the feature arrays {spec['feature_columns']} have different lengths "
                                f"{lengths}; give each one value per example.")  # fmt: skip
            x: X = np.column_stack([c.reshape(len(c), -1) if c.ndim > 1 else c for c in cols])
        else:
            x = _npz_array(data, spec.get("text_column") or "x", where)
        if isinstance(x, np.ndarray):
            if x.ndim == 0:
                raise DataError(f"{where}: x is a scalar; give one row per example.")
            x = _numeric(x, where)
            if x.dtype.kind in "US":
                from .data import text_array  # the one text check, shared with Inputs

                x = text_array(x, f"{where}: the text array")
        label_key = spec.get("label_column")
        if label_key is None:
            label_key = next((k for k in DEFAULT_LABELS if k in data.files), None)
        y: Y | None = None
        if label_key is not None:
            raw = _npz_array(data, label_key, where)
            if raw.ndim == 2 and raw.shape[1] > 1 and raw.dtype.kind in "biuf":  # multi-label 0/1 matrix
                if "label_names" not in data.files:
                    raise DataError(
                        f"{where}: {label_key!r} is a {raw.shape} matrix (multi-label) but the file has no "
                        "'label_names' array naming its columns; save one: "
                        "np.savez(..., label_names=np.asarray(names))."
                    )
                names = _npz_array(data, "label_names", where)
                if names.ndim != 1:
                    raise DataError(f"{where}: 'label_names' has shape {names.shape}; give one name per column.")
                y = _label_sets(raw, names.tolist(), where)
            else:
                y = _labels(raw, where)
    return x, y


# csv / tsv / parquet -----------------------------------------------------------


def _pandas(ext: str):
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"reading {ext} files needs pandas: pip install 'amalgamator[tables]'.") from None
    return pd


def _pick_label(columns: list[str], spec: dict[str, Any], where: str) -> str | None:
    label = spec.get("label_column")
    if label is not None:
        if label not in columns:
            raise DataError(f"{where} has no label column {label!r}; columns present: {columns}.")
        return label
    if spec.get("label_columns") is not None:  # an explicit multi-label spec was consumed: no single label
        return None
    return next((c for c in DEFAULT_LABELS if c in columns), None)


def _feature_matrix(df: Any, feats: list[str], where: str, first_row: int) -> np.ndarray:
    """The feature columns as finite float32, or a DataError naming the first bad column and row.

    ``first_row`` is the file line (csv) or row number of the frame's first row, for messages."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = df[feats].to_numpy(dtype=np.float32, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: feature columns cannot be read as numbers ({first_line(exc)}).") from None
    ok = np.isfinite(x)
    if not ok.all():
        i, j = (int(v) for v in np.argwhere(~ok)[0])
        raw = df[feats[j]].iloc[i]
        n = int((~ok).any(1).sum())
        try:
            value = float(raw)
        except (TypeError, ValueError):  # pandas' NA in a nullable column
            value = float("nan")
        if np.isnan(value):
            what = "is missing"
        elif np.isinf(value):
            what = f"is {value}"
        else:
            what = f"is {raw!r}, beyond the float32 range (±3.4e38)"
        raise DataError(
            f"{where}: feature column {feats[j]!r} {what} in row {first_row + i} ({n} rows hold NaN, infinite or "
            "out-of-range values); fill, rescale or drop them."
        )
    return x


def _from_frame(df: Any, spec: dict[str, Any], where: str, first_row: int = 1) -> tuple[X, Y | None]:
    columns = [str(c) for c in df.columns]
    dup = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if dup is not None:
        raise DataError(f"{where}: the column {dup!r} appears twice; give every column a unique name.")
    df.columns = columns
    if len(df) == 0:
        raise DataError(f"{where} holds no rows (only a header).")
    multi = list(spec.get("label_columns") or [])
    if multi:
        missing = [c for c in multi if c not in columns]
        if missing:
            raise DataError(f"{where} has no label column {missing[0]!r}; columns present: {columns}.")
        sets = _label_sets(df[multi].to_numpy(), multi, where)
        rest = {**spec, "label_columns": None, "label_column": None}
        x, _ = _from_frame(df.drop(columns=multi), rest, where, first_row)
        return x, sets
    label = _pick_label(columns, spec, where)
    text = spec.get("text_column")
    wanted = [text] if text else list(spec.get("feature_columns") or [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{where} has no column {missing[0]!r}; columns present: {columns}.")
    y = None
    if label is not None:
        col = df[label]
        if col.isna().any():
            n, first = int(col.isna().sum()), int(np.argmax(col.isna().to_numpy()))
            raise DataError(
                f"{where}: label column {label!r} is empty in {n} rows (first: row {first_row + first}); "
                "fill or drop them."
            )
        y = _labels(col.to_numpy(dtype=object), where)
    if text:
        col = df[text]
        if col.isna().any():
            raise DataError(f"{where}: text column {text!r} is empty in {int(col.isna().sum())} rows.")
        values = col.tolist()
        bad = next((i for i, v in enumerate(values) if not isinstance(v, (str, bytes))), None)
        if bad is not None:
            raise DataError(
                f"{where}: text column {text!r} holds a {type(values[bad]).__name__} in row {first_row + bad}; "
                "a text column holds strings."
            )
        from .data import text_array

        return text_array(np.asarray(values, dtype=object), f"{where}: text column {text!r}"), y
    feats = wanted or [c for c in columns if c != label]
    if not feats:
        raise DataError(f"{where} has no feature columns besides the label {label!r}.")
    bad = [c for c in feats if df[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(
            f"{where}: feature columns must be numeric, but {bad[:5]} are not; "
            "name a text column with text_column, or list numeric ones with feature_columns."
        )
    return _feature_matrix(df, feats, where, first_row), y


#: What pandas reads as a missing value in a numeric column (its defaults); label and text columns treat only
#: an empty cell as missing, so a label "NA", "None" or "nan" is that string.
_NA_NUMBERS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
               "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")  # fmt: skip


def _load_csv(path: Path, spec: dict[str, Any], where: str, sep: str) -> tuple[X, Y | None]:
    import gzip
    import zlib

    pd = _pandas(path.suffix)
    try:
        first = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
        header = [str(c) for c in first.iloc[0].tolist()] if len(first) else []
        blank = [i + 1 for i, c in enumerate(header) if not c.strip()]
        if blank:
            raise DataError(
                f"{where}: column {blank[0]} has no name in the header line (an index written by "
                "DataFrame.to_csv? save with index=False); give every column a name."
            )
        dup = next((c for i, c in enumerate(header) if c in header[:i]), None)
        if dup is not None:
            raise DataError(f"{where}: the column {dup!r} appears twice in the header; give each column its own name.")
        as_text = [c for c in (_pick_label(header, spec, where), spec.get("text_column")) if c in header]
        na = {c: ([""] if c in as_text else list(_NA_NUMBERS)) for c in header}
        df = pd.read_csv(
            path, sep=sep, dtype={c: str for c in as_text}, keep_default_na=False, na_values=na, on_bad_lines="error"
        )
    except DataError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{where} is not a readable gzip file (torn or not gzip: {first_line(exc)}); compress the table again."
        ) from None
    except (ValueError, OSError, UnicodeDecodeError, OverflowError) as exc:  # pandas' parser errors are ValueErrors
        raise DataError(f"{where} is not a readable table ({first_line(exc)}).") from None
    return _from_frame(df, spec, where, first_row=2)


def _load_parquet(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    _pandas(".parquet")  # the install hint when pandas is missing
    try:
        import pyarrow.parquet as pq

        names = [str(c) for c in pq.read_schema(path).names]
        dup = next((c for i, c in enumerate(names) if c in names[:i]), None)
        if dup is not None:
            raise DataError(f"{where}: the column {dup!r} appears twice; give every column a unique name.")
        table = pq.read_table(path)
        table.validate(full=True)  # invalid UTF-8 in a string column would otherwise fail later, inside pandas
        df = table.to_pandas()
    except ImportError:
        raise DataError("reading .parquet files needs pyarrow: pip install 'amalgamator[tables]'.") from None
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ArrowTypeError, ...) for a bad file
        raise DataError(f"{where} is not a readable parquet file ({first_line(exc)}).") from None
    return _from_frame(df, spec, where)


# jsonl ---------------------------------------------------------------------------


class _RepeatedField(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedField(f"the field {key!r} is given twice; give each field once")
        obj[key] = value
    return obj


def _jsonl_label(value: Any, where: str, i: int) -> str | list[str]:
    """A row's label: a name (str, int, whole float) or, for multi-label files, a list of names."""
    at = f"{where} line {i}"
    if isinstance(value, list):
        names: list[str] = []
        for v in value:
            if isinstance(v, (list, dict)) or v is None:
                raise DataError(f"{at}: a label list holds {_short(v)}; give a list of label names.")
            name = _name(v, "a label name", at)
            if name not in names:
                names.append(name)
        return names
    if value is None or isinstance(value, dict):
        raise DataError(f"{at}: the label is {_short(value)}; give a label name (or a list of them).")
    return _name(value, "the label", at)


def _load_jsonl(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    rows = [row for chunk in _jsonl_chunks(path, where, None) for row in chunk]
    if not rows:
        raise DataError(f"{where} holds no rows.")
    return _jsonl_table(rows, spec, where)


def _jsonl_chunks(path: Path, where: str, size: int | None):
    """The file's objects as ``(line number, object)``, ``size`` at a time (None: all in one list)."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{where} line {i} is not valid UTF-8 (byte {exc.start + 1}); save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {i} is not valid JSON ({exc.msg}).") from None
            except RecursionError:
                raise DataError(f"{where} line {i} is nested too deeply to be a row of data.") from None
            except _RepeatedField as exc:
                raise DataError(f"{where} line {i}: {exc}.") from None
            except ValueError:  # an integer with thousands of digits
                raise DataError(
                    f"{where} line {i} holds a number with thousands of digits; give numbers as floats."
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{where} line {i} is a {type(obj).__name__}; each line must be a JSON object.")
            rows.append((i, obj))
            if size is not None and len(rows) == size:
                yield rows
                rows = []
    if rows:
        yield rows


def _jsonl_table(rows: list[tuple[int, dict[str, Any]]], spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    """``(x, y)`` of parsed jsonl rows: every row checked, with its line number in any complaint."""
    first = rows[0][1]
    label = spec.get("label_column")
    if label is None:
        label = next((k for k in DEFAULT_LABELS if k in first), None)
    feats = spec.get("feature_columns")
    fields = list(feats) if feats else [spec.get("text_column") or "text"]
    for i, obj in rows:
        missing = [f for f in [*fields, *([label] if label else [])] if f not in obj]
        if missing:
            raise DataError(f"{where} line {i} has no field {missing[0]!r}; fields present: {sorted(obj)}.")
    y: Y | None = None
    if label:
        got = [(i, _jsonl_label(obj[label], where, i)) for i, obj in rows]
        lists = [isinstance(v, list) for _, v in got]
        if all(lists):  # multi-label: a list of names per row
            y = [v for _, v in got]  # type: ignore[misc]
        elif any(lists):
            i = got[lists.index(not lists[0])][0]
            raise DataError(
                f"{where} line {i}: the label is {'a list' if lists[0] is False else 'a single name'} but line "
                f"{got[0][0]} has {'a list' if lists[0] else 'a single name'}; give every row a list of label "
                "names (multi-label) or every row one name."
            )
        else:
            y = np.asarray([v for _, v in got], dtype=str)
    if feats:
        x = np.empty((len(rows), len(feats)), dtype=np.float32)
        for r, (i, obj) in enumerate(rows):
            for c, f in enumerate(feats):
                v = obj[f]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DataError(
                        f"{where} line {i}: feature field {f!r} is {_short(v)}; feature fields must hold numbers."
                    )
                try:
                    with np.errstate(over="ignore"):
                        x[r, c] = np.float32(float(v))
                except OverflowError:
                    x[r, c] = np.inf
                if not np.isfinite(x[r, c]):
                    raise DataError(
                        f"{where} line {i}: feature field {f!r} is {_short(v)}; features must be finite numbers "
                        "within the float32 range (±3.4e38)."
                    )
        return x, y
    texts = []
    for i, obj in rows:
        v = obj[fields[0]]
        if not isinstance(v, str):
            raise DataError(f"{where} line {i}: the text field {fields[0]!r} is {_short(v)}; it must be a string.")
        texts.append(v)
    return texts, y


def _check_npy(path: Path, where: str) -> None:
    """A ``.npy`` file's header, read now so that a bad file fails before any teacher runs: an object array (only
    pickle could load it) or anything that is not a .npy array is refused; the rows are checked as they are read."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{where} is not a readable .npy array ({first_line(exc)}).") from None
    if not isinstance(arr, np.ndarray) or arr.ndim < 2 or arr.dtype.kind not in "biuf":
        what = f"an array of shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray) else "not an array"
        raise DataError(
            f"{where} is {what}; a pool on disk is a 2-D (or more) numeric .npy array, one row per example."
        )


# streaming large numeric tables into a .npy pool ----------------------------------------


def _streams(path: Path, spec: dict[str, Any]) -> bool:
    """A numeric table large enough to stream: at least STREAM_BYTES, and no text column (texts stay a list)."""
    if spec.get("text_column"):
        return False
    if path.suffix.lower() == ".jsonl" and not spec.get("feature_columns"):
        return False  # a jsonl file without feature_columns is read as text
    return path.stat().st_size >= STREAM_BYTES


def _file_key(path: Path, spec: dict[str, Any]) -> str:
    """SHA-256 of the file's content and the spec's columns, read in chunks: the converted pool's cache name."""
    import hashlib

    h = hashlib.sha256(json.dumps({k: spec.get(k) for k in SPEC_KEYS if k != "path"}, sort_keys=True).encode())
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:40]


def _table_chunks(path: Path, spec: dict[str, Any], where: str, ext: str):
    """``(x, y)`` of STREAM_ROWS rows at a time, each checked as a small table of its own would be."""
    if ext == ".jsonl":
        for rows in _jsonl_chunks(path, where, STREAM_ROWS):
            yield _jsonl_table(rows, spec, where)
        return
    _pandas(".parquet")
    try:
        import pyarrow.parquet as pq

        first = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=STREAM_ROWS):
            batch.validate(full=True)
            df = batch.to_pandas()
            yield _from_frame(df, spec, where, first)
            first += len(df)
    except ImportError:
        raise DataError("reading .parquet files needs pyarrow: pip install 'amalgamator[tables]'.") from None
    except DataError:
        raise
    except Exception as exc:  # pyarrow's own types for a damaged file
        raise DataError(f"{where} is not a readable parquet file ({first_line(exc)}).") from None


def _stream_to_npy(path: Path, spec: dict[str, Any], where: str, ext: str) -> tuple[Path, Y | None]:
    """A large numeric .parquet or .jsonl table converted once, a chunk at a time, into a float32 ``.npy`` pool in
    the cache (named by the file's content), which the run then reads as it goes: the table is never in memory
    whole. Returns the pool's path and the labels, if the table has them (they are small)."""
    from .store import cache_home

    folder = cache_home() / "pools"
    target = folder / f"{_file_key(path, spec)}.npy"
    labels_file = target.with_suffix(".labels.json")
    if target.exists():
        y = json.loads(labels_file.read_text()) if labels_file.exists() else None
        return target, (np.asarray(y, dtype=str) if y is not None and not any(isinstance(v, list) for v in y) else y)
    folder.mkdir(parents=True, exist_ok=True)
    raw, tmp = target.with_suffix(f".{os.getpid()}.raw"), target.with_suffix(f".{os.getpid()}.tmp")
    labels: list[Any] = []
    width, rows = None, 0
    try:
        with raw.open("wb") as out:
            for x, y in _table_chunks(path, spec, where, ext):
                x = np.ascontiguousarray(x, dtype=np.float32)
                if width is not None and x.shape[1:] != width:
                    raise DataError(f"{where}: rows change width from {width} to {x.shape[1:]} at row {rows + 1}.")
                width = x.shape[1:]
                out.write(x.tobytes())
                rows += len(x)
                if y is not None:
                    labels.extend(y.tolist() if isinstance(y, np.ndarray) else y)
        if rows == 0 or width is None:
            raise DataError(f"{where} holds no rows.")
        if labels and len(labels) != rows:
            raise DataError(f"{where}: some rows have a label and others not; label every row or none.")
        header = np.lib.format.header_data_from_array_1_0(np.empty((0, *width), np.float32))
        header["shape"] = (rows, *width)
        with tmp.open("wb") as out, raw.open("rb") as body:
            np.lib.format.write_array_header_1_0(out, header)
            for chunk in iter(lambda: body.read(1 << 22), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if labels:
            labels_file.write_text(json.dumps(labels))  # before the pool: a pool never shows without its labels
        os.replace(tmp, target)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    from . import progress

    progress.note(f"{where}: {rows:,} rows converted to {target} (read as they are used; kept for the next run).")
    return target, (np.asarray(labels, dtype=str) if labels and not isinstance(labels[0], list) else labels or None)


def load_table(spec: Any, base_dir: str | Path | None = None) -> tuple[X, Y | None]:
    """Read a data file into ``(x, y)``; y is a str array of label names, one list of label names per
    row for multi-label files (see the module docstring), or None without labels.

    ``spec`` is a path or ``{path, text_column, feature_columns, label_column}``. Tables hold
    either numeric feature columns (all but the label, unless ``feature_columns`` names them)
    or one ``text_column``; the label column defaults to ``y`` or ``label`` when present.
    """
    d = _spec_dict(spec)
    path = resolve_path(d["path"], base_dir)
    problem = file_problem(path)
    if problem:
        raise DataError(f"cannot read the data file {str(path)!r}: {problem}.")
    if not path.exists():
        raise DataError(f"data file {path} does not exist.")
    if path.is_dir():
        raise DataError(f"data path {path} is a folder; give a file ({', '.join(SUPPORTED)}).")
    ext = _suffix(path)
    where = str(path)
    if ext == ".npy":  # a pool on disk: read as it is used (Inputs), never loaded whole; it has no labels
        _check_npy(path, where)
        return path, None
    if ext in (".parquet", ".jsonl") and _streams(path, d):
        return _stream_to_npy(path, d, where, ext)
    if ext == ".npz":
        x, y = _load_npz(path, d, where)
    elif ext in (".csv", ".csv.gz"):
        x, y = _load_csv(path, d, where, ",")
    elif ext == ".tsv":
        x, y = _load_csv(path, d, where, "\t")
    elif ext == ".parquet":
        x, y = _load_parquet(path, d, where)
    elif ext == ".jsonl":
        x, y = _load_jsonl(path, d, where)
    else:
        raise DataError(f"{where}: unknown file type {ext or '(none)'!r}; supported: {', '.join(SUPPORTED)}.")
    _check_rows(x, y, where)
    return x, y


def require_labels(y: Y | None, spec: Any, role: str, base_dir: str | Path | None = None) -> Y:
    """The labels of a file that must have them (labeled / test / evaluate data), or a DataError."""
    if y is None:
        path = resolve_path(_spec_dict(spec)["path"], base_dir)
        raise DataError(
            f"{role} file {path} has no labels: add a 'y' array (npz), a 'y' or 'label' column / field, "
            "or name one with label_column."
        )
    return y


# Writing -------------------------------------------------------------------------


def save_tensors(tensors: Mapping[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` with the mode a plain ``open()`` gives (0666 & ~umask).

    safetensors creates files with mode 0600 whatever the umask; a student folder shared with a
    team must be as readable as the JSON beside it, so every safetensors file goes through here.
    """
    import os

    from safetensors.torch import save_file

    path = Path(path)
    save_file(dict(tensors), str(path), metadata=metadata)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


__all__ = ["DEFAULT_LABELS", "SUPPORTED", "load_table", "require_labels", "resolve_path", "save_tensors"]
