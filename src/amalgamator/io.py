"""Reading data files for recipes and ``amalgamator evaluate --data``.

One entry point, :func:`load_table`, turns a file (``.npz``, ``.csv``, ``.tsv``, ``.parquet``,
``.jsonl``) into ``(x, y)``: x a float32 array or a list of texts, y label names as a str
array (or None when the file has no labels). Multi-label files give y as one list of label names
per row (the row's positive labels): an npz ``y`` matrix of 0/1 with a ``label_names`` array naming
its columns, table columns of 0/1 named by ``label_columns``, or jsonl fields holding lists.
Labels are always names, never indices, so ``3`` in a CSV and ``"3"`` in a teacher's label list
are the same label. ``.npz`` files are read with ``allow_pickle=False``: nothing from a data file is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

#: File endings load_table understands, in the order error messages list them.
SUPPORTED = (".npz", ".csv", ".csv.gz", ".tsv", ".parquet", ".jsonl")
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
    for key in ("feature_columns", "label_columns"):
        if isinstance(d.get(key), str):
            d[key] = [d[key]]
    return d


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    """``~`` expanded; a relative path is taken against ``base_dir`` (the recipe's folder)."""
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


def _labels(values: Any, where: str) -> np.ndarray:
    y = np.asarray(values)
    if y.ndim != 1:
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise DataError(f"labels in {where} have shape {y.shape}; give one label name per row.")
    return y.astype(str)


def _label_sets(matrix: Any, names: Sequence[str], where: str) -> list[list[str]]:
    """A 0/1 matrix with one column per label name → each row's positive label names."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[1] != len(names):
        raise DataError(f"{where}: the label matrix has shape {m.shape} for {len(names)} label names.")
    if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise DataError(
            f"{where}: multi-label columns must hold only 0 and 1; threshold probabilities first (y > 0.5)."
        )
    names = [str(v) for v in names]
    return [[names[j] for j in np.flatnonzero(row)] for row in m]


def _numeric(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind in "USO":
        return x
    if x.dtype.kind not in "biuf":
        raise DataError(f"features in {where} have dtype {x.dtype}; give numbers (float or int).")
    return x.astype(np.float32, copy=False)


def _check_rows(x: X, y: np.ndarray | None, where: str) -> None:
    if len(x) == 0:
        raise DataError(f"{where} holds no rows.")
    if y is not None and len(y) != len(x):
        raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)} labels; give one label per row.")


# npz ----------------------------------------------------------------------------


def _npz_array(data: Any, key: str, where: str) -> np.ndarray:
    if key not in data.files:
        raise DataError(f"{where} has no array {key!r}; arrays present: {sorted(data.files)}.")
    try:
        return data[key]
    except ValueError as exc:
        if "pickle" not in str(exc).lower():
            raise DataError(f"{where}: array {key!r} cannot be read ({exc}).") from None
        raise DataError(
            f"{where}: array {key!r} is an object array, which only pickle could load (refused for safety); "
            f"save numbers as a float array ({key}=np.asarray({key}, dtype=np.float32)) or texts as a unicode "
            f"string array ({key}=np.asarray({key}, dtype=str)) when calling np.savez."
        ) from None


def _load_npz(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    import zipfile

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a readable .npz file ({exc}).") from None
    with data:
        if spec.get("feature_columns"):
            cols = [_npz_array(data, k, where) for k in spec["feature_columns"]]
            x: X = np.column_stack([c.reshape(len(c), -1) if c.ndim > 1 else c for c in cols])
        else:
            x = _npz_array(data, spec.get("text_column") or "x", where)
        if isinstance(x, np.ndarray):
            if x.ndim == 0:
                raise DataError(f"{where}: x is a scalar; give one row per example.")
            x = _numeric(x, where)
            if x.dtype.kind in "US":
                x = [str(v) for v in x.reshape(-1)]
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
                y = _label_sets(raw, _npz_array(data, "label_names", where).tolist(), where)
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


def _from_frame(df: Any, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    columns = [str(c) for c in df.columns]
    df.columns = columns
    multi = list(spec.get("label_columns") or [])
    if multi:
        missing = [c for c in multi if c not in columns]
        if missing:
            raise DataError(f"{where} has no label column {missing[0]!r}; columns present: {columns}.")
        sets = _label_sets(df[multi].to_numpy(), multi, where)
        x, _ = _from_frame(df.drop(columns=multi), {**spec, "label_columns": None, "label_column": None}, where)
        return x, sets
    label = _pick_label(columns, spec, where)
    text = spec.get("text_column")
    wanted = [text] if text else list(spec.get("feature_columns") or [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{where} has no column {missing[0]!r}; columns present: {columns}.")
    y = None
    if label is not None:
        if df[label].isna().any():
            n = int(df[label].isna().sum())
            raise DataError(f"{where}: label column {label!r} is empty in {n} rows; fill or drop them.")
        y = _labels(df[label].astype(str).to_numpy(), where)
    if text:
        col = df[text]
        if col.isna().any():
            raise DataError(f"{where}: text column {text!r} is empty in {int(col.isna().sum())} rows.")
        return [str(v) for v in col.tolist()], y
    feats = wanted or [c for c in columns if c != label]
    if not feats:
        raise DataError(f"{where} has no feature columns besides the label {label!r}.")
    bad = [c for c in feats if df[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(
            f"{where}: feature columns must be numeric, but {bad[:5]} are not; "
            "name a text column with text_column, or list numeric ones with feature_columns."
        )
    return df[feats].to_numpy(dtype=np.float32), y


def _load_csv(path: Path, spec: dict[str, Any], where: str, sep: str) -> tuple[X, Y | None]:
    pd = _pandas(path.suffix)
    try:
        header = [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
        as_text = {c: str for c in (_pick_label(header, spec, where), spec.get("text_column")) if c in header}
        df = pd.read_csv(path, sep=sep, dtype=as_text)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
        raise DataError(
            f"{where} is not a readable table ({type(exc).__name__}: {str(exc).splitlines()[0]})."
        ) from None
    return _from_frame(df, spec, where)


def _load_parquet(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    pd = _pandas(".parquet")
    try:
        df = pd.read_parquet(path)
    except ImportError:
        raise DataError("reading .parquet files needs pyarrow: pip install 'amalgamator[tables]'.") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{where} is not a readable parquet file ({str(exc).splitlines()[0]}).") from None
    return _from_frame(df, spec, where)


# jsonl ---------------------------------------------------------------------------


def _load_jsonl(path: Path, spec: dict[str, Any], where: str) -> tuple[X, Y | None]:
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {i} is not valid JSON ({exc.msg}).") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where} line {i} is a {type(obj).__name__}; each line must be a JSON object.")
            rows.append((i, obj))
    if not rows:
        raise DataError(f"{where} holds no rows.")
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
    if label and all(isinstance(obj[label], list) for _, obj in rows):  # multi-label: a list of names per row
        y = [[str(v) for v in obj[label]] for _, obj in rows]
    elif label:
        y = _labels([str(obj[label]) for _, obj in rows], where)
    if feats:
        try:
            x: X = np.asarray([[float(obj[f]) for f in feats] for _, obj in rows], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{where}: feature fields {list(feats)} must hold numbers.") from None
        return x, y
    return [str(obj[fields[0]]) for _, obj in rows], y


def load_table(spec: Any, base_dir: str | Path | None = None) -> tuple[X, Y | None]:
    """Read a data file into ``(x, y)``; y is a str array of label names, one list of label names per
    row for multi-label files (see the module docstring), or None without labels.

    ``spec`` is a path or ``{path, text_column, feature_columns, label_column}``. Tables hold
    either numeric feature columns (all but the label, unless ``feature_columns`` names them)
    or one ``text_column``; the label column defaults to ``y`` or ``label`` when present.
    """
    d = _spec_dict(spec)
    path = resolve_path(d["path"], base_dir)
    if not path.exists():
        raise DataError(f"data file {path} does not exist.")
    if path.is_dir():
        raise DataError(f"data path {path} is a folder; give a file ({', '.join(SUPPORTED)}).")
    ext = _suffix(path)
    where = str(path)
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
