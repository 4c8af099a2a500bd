"""The Yeast multi-label dataset and the thesis's teacher protocol for multi-label amalgamation.

Source: Elisseeff and Weston, "A kernel method for multi-labelled classification", NeurIPS 2001; the MULAN
version (2,417 genes, 103 micro-array expression and phylogenetic-profile features, 14 functional classes,
4.24 labels per gene on average; thesis Table 6). The copy used here is ``river/datasets/yeast.csv.gz`` from the
PyPI package ``river`` (the ``bench`` extra): a header ``Att1..Att103,Class1..Class14`` and one row per gene,
labels written as ``0``/``1``. The file is located with ``find_spec`` and read with :mod:`gzip` and numpy,
so river itself (and its dependencies) is never imported, nothing is downloaded and nothing is unpickled.
``$AMALGAMATOR_YEAST`` may point at another ``.csv`` or ``.csv.gz`` with the same 103 + 14 columns.

The teacher protocol follows the thesis (Thadajarassiri, Ch. 4 "Amalgamating label dependencies", Sec. 4.6):
:func:`teacher_label_sets` builds the label sets of Tables 7-9 and :func:`teacher_data_split` gives each
teacher its own rows ("trained on different data"); see their docstrings for what the thesis says and where
it is silent.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

N_ROWS = 2_417
N_FEATURES = 103
N_LABELS = 14
ENV_VAR = "AMALGAMATOR_YEAST"
_INSTALL_HINT = (
    "pip install 'amalgamator[bench]' (or make setup), or set AMALGAMATOR_YEAST to a yeast .csv/.csv.gz "
    f"with {N_FEATURES} feature and {N_LABELS} label columns"
)
# Independent random streams per purpose, so one seed does not give correlated permutations.
_STREAM_SPLIT, _STREAM_LABELS, _STREAM_TEACHER_ROWS = 1, 2, 3


def _rng(stream: int, seed: int) -> np.random.Generator:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}.")
    return np.random.default_rng([stream, int(seed)])


# ------------------------------------------------------------------------------------------------------ loading


def source_path() -> tuple[Path, bool]:
    """``($AMALGAMATOR_YEAST, False)`` if set, else ``(river's bundled yeast.csv.gz, True)``.

    The flag says whether the file must be the full dataset (2,417 rows): an override may be a subset. river is
    located with ``find_spec`` and not imported, since only its data file is needed.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise DataError(f"${ENV_VAR} points at {path}, which is not a file; unset it or fix the path.")
        return path, False
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the Yeast data needs the river package (its bundled yeast.csv.gz): {_INSTALL_HINT}.")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "yeast.csv.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed river package; reinstall it: {_INSTALL_HINT}.")
    return path, True


def _read_text(path: Path) -> str:
    """The file's text, gunzipped if it starts with the gzip magic bytes (whatever its suffix)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the Yeast csv {path}: {type(exc).__name__}: {exc}") from None


def parse(path: Path, full: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse a Yeast csv into (features float32, labels uint8, label names), checking the layout.

    ``full`` also requires the 2,417 rows of the published dataset; without it any non-empty number of rows is
    accepted (an ``$AMALGAMATOR_YEAST`` subset).
    """
    header, _, body = _read_text(path).lstrip("\ufeff").partition("\n")
    names = [c.strip() for c in header.strip().split(",")]
    n_cols = N_FEATURES + N_LABELS
    if len(names) != n_cols:
        raise DataError(
            f"{path} has {len(names)} header columns; a Yeast csv has {N_FEATURES} features then {N_LABELS} labels."
        )
    label_names = names[N_FEATURES:]
    if any(not n for n in label_names) or len(set(label_names)) != N_LABELS:
        raise DataError(f"{path} has empty or duplicated label column names: {label_names}.")
    if not body.strip():
        raise DataError(f"{path} has a header but no data rows.")
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path} is not a numeric Yeast csv: {str(exc).splitlines()[0]}") from None
    if table.shape[0] == 0 or table.shape[1] != n_cols:
        raise DataError(f"{path} holds a {table.shape} table; expected rows of {n_cols} numbers.")
    if full and table.shape[0] != N_ROWS:
        raise DataError(f"{path} has {table.shape[0]} rows; the Yeast dataset has {N_ROWS}.")
    x, y = table[:, :N_FEATURES], table[:, N_FEATURES:]
    if not np.isfinite(x).all():
        raise DataError(f"{path} has missing or non-finite feature values.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"{path} has label values other than 0 and 1: {np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]}.")
    return x.astype(np.float32), y.astype(np.uint8), label_names


def load_yeast() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Yeast as ``(x, y, label_names)``: x float32 (2417, 103), y uint8 0/1 (2417, 14), names ``Class1..14``.

    Reads river's bundled csv (or ``$AMALGAMATOR_YEAST``); raises a one-line DataError naming the fix when the
    file is absent or malformed. Parsing takes a fraction of a second, so nothing is cached.
    """
    path, full = source_path()
    return parse(path, full=full)


def yeast_splits(seed: int, test_fraction: float = 0.3) -> dict[str, Any]:
    """A seeded train/test split with features standardised by the train split's mean and std.

    A plain seeded permutation: the thesis names no split scheme, and with 198 distinct label sets (many seen
    once) stratifying on label sets is not possible; iterative stratification was left out. Standardising
    by train statistics only keeps the test split unseen; a constant feature (std 0) is divided by 1.
    Returns ``x_train``, ``y_train``, ``x_test``, ``y_test`` (float32 / uint8), ``train`` and ``test`` (sorted
    row indices into :func:`load_yeast`), ``labels``, and the ``mean`` and ``std`` used.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}.")
    x, y, labels = load_yeast()
    n = len(x)
    n_test = min(max(1, round(test_fraction * n)), n - 1) if n > 1 else 0
    if n_test == 0:
        raise DataError(f"cannot split {n} row(s) into train and test.")
    perm = _rng(_STREAM_SPLIT, seed).permutation(n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    mean = x[train].astype(np.float64).mean(axis=0)
    std = x[train].astype(np.float64).std(axis=0)
    std[std == 0] = 1.0

    def scale(rows: np.ndarray) -> np.ndarray:
        return ((x[rows] - mean) / std).astype(np.float32)

    return {
        "x_train": scale(train),
        "y_train": y[train],
        "x_test": scale(test),
        "y_test": y[test],
        "train": train,
        "test": test,
        "labels": labels,
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
    }


# ------------------------------------------------------------------------------------------- teacher protocol


def label_set_sizes(n_labels: int, n_teachers: int, shared_fraction: float) -> tuple[int, int]:
    """``(n_shared, n_per_teacher)`` for :func:`teacher_label_sets`: the equal-size plan nearest the fraction.

    With ``s`` shared labels (held by every teacher) and ``e`` labels of its own per teacher, every teacher has
    ``k = s + e`` labels and the union is ``s + n_teachers * e = n_labels``, so ``s`` must leave a remainder
    divisible by ``n_teachers``. Among those ``s``, the one whose ``s / k`` is nearest ``shared_fraction`` wins
    (ties: fewer shared). When ``0 < shared_fraction < 1`` the plan keeps a partial overlap (``0 < s <
    n_labels``) whenever one exists, so "some sharing" never degenerates into disjoint or identical sets.
    """
    if not isinstance(n_teachers, int | np.integer) or n_teachers < 2:
        raise DataError(f"the protocol needs at least two teachers, got n_teachers={n_teachers!r}.")
    if not isinstance(n_labels, int | np.integer) or n_labels < n_teachers:
        raise DataError(f"cannot give {n_teachers} teachers distinct label sets from {n_labels!r} labels.")
    if not 0.0 <= shared_fraction <= 1.0:
        raise DataError(f"shared_fraction must be between 0 and 1, got {shared_fraction}.")
    shared = list(range(n_labels % n_teachers, n_labels + 1, n_teachers))
    if 0 < shared_fraction < 1 and any(0 < s < n_labels for s in shared):
        shared = [s for s in shared if 0 < s < n_labels]

    def frac(s: int) -> float:
        return s / (s + (n_labels - s) // n_teachers)

    s = min(shared, key=lambda s: (abs(frac(s) - shared_fraction), s))
    return s, s + (n_labels - s) // n_teachers


def teacher_label_sets(n_labels: int, n_teachers: int, shared_fraction: float, seed: int) -> list[list[int]]:
    """The teachers' label sets (sorted label indices) for the thesis's multi-label experiments.

    What the thesis says (Ch. 4, Sec. 4.6 "Experiments and Results"):

    - Table 7 (all eight datasets, Yeast included): "we train a student from two teachers trained on different
      data—from each original dataset—that cover different subsets of labels. For each dataset, teachers learn
      from an equal number of labels with half of their labels overlapping." -> ``n_teachers=2,
      shared_fraction=0.5``.
    - Table 9 (SCENE): "we vary the proportion of labels shared between two teachers from 100% (identical label
      sets) to 0% (completely distinct label sets)", shown at 100, 75, 50, 25 and 0 %.
    - Table 8 (YELP): "we conduct experiments using three, four, and five teachers"; the label sizes and
      overlap for more than two teachers are not stated.

    Choices made where the thesis is silent or cannot be met exactly:

    - ``shared_fraction`` is read as the fraction of *each teacher's* labels that the other teachers also hold
      ("half of their labels overlapping"; 100 % = identical sets, 0 % = disjoint). The authors' public ANT
      code shows the same reading in its example: labels 1-4 and 3-6, two of each teacher's four shared.
    - For more than two teachers the shared labels form one core held by *every* teacher, plus a block of
      labels of each teacher's own (for two teachers this is the only structure). Table 8 gives no fraction;
      use 0.5 as in Table 7.
    - The union always covers all ``n_labels`` labels and every teacher has the same number of labels. With 14
      labels the fraction cannot always be exact (two teachers at 50 % would need 14 = 1.5 k): the plan of
      :func:`label_set_sizes` takes the nearest achievable fraction. For Yeast: 2 teachers at 1.0/0.75/0.5/
      0.25/0.0 share 14/8/4/2/0 labels of 14/11/9/8/7 (fractions 1, .73, .44, .25, 0); 3/4/5 teachers at 0.5
      share 5/2/4 of 8/5/6 (.63, .40, .67). :func:`shared_fractions` reports the achieved values.
    - Which labels are shared and which teacher owns which block is a seeded random permutation of the labels
      (the thesis does not say how labels were picked); the same arguments always give the same sets.
    """
    n_shared, size = label_set_sizes(n_labels, n_teachers, shared_fraction)
    own = size - n_shared
    perm = _rng(_STREAM_LABELS, seed).permutation(n_labels)
    core = perm[:n_shared].tolist()
    blocks = [perm[n_shared + t * own : n_shared + (t + 1) * own].tolist() for t in range(n_teachers)]
    return [sorted(core + block) for block in blocks]


def shared_fractions(label_sets: list[list[int]]) -> list[float]:
    """Per teacher, the fraction of its labels that at least one other teacher also holds."""
    out = []
    for t, labels in enumerate(label_sets):
        others = set().union(*(set(s) for u, s in enumerate(label_sets) if u != t))
        out.append(sum(1 for label in labels if label in others) / len(labels) if labels else 0.0)
    return out


def teacher_data_split(n_rows: int, n_teachers: int, seed: int) -> list[np.ndarray]:
    """Disjoint, near-equal parts of ``n_rows`` training rows, one per teacher (sorted indices).

    The thesis trains the teachers "on different data—from each original dataset" (Table 7) and picks YELP for
    three to five teachers "because it has many instances, which allows us to train more independent
    teachers" (Table 8): each teacher gets its own rows. It states no proportions, so the rows are shuffled
    with ``seed`` and dealt into equal parts (sizes differ by at most one). Carve the student's unlabeled pool
    and the test split off before calling this (e.g. :func:`yeast_splits`, then
    :func:`amalgamator.bench.datasets.role_split`), as the thesis does not say whether they overlap.
    """
    if not isinstance(n_teachers, int | np.integer) or n_teachers < 1:
        raise DataError(f"n_teachers must be a positive integer, got {n_teachers!r}.")
    if not isinstance(n_rows, int | np.integer) or n_rows < n_teachers:
        raise DataError(f"cannot give {n_teachers} teachers disjoint non-empty parts of {n_rows!r} rows.")
    perm = _rng(_STREAM_TEACHER_ROWS, seed).permutation(int(n_rows))
    return [np.sort(part) for part in np.array_split(perm, n_teachers)]
