"""One view over the kinds of data users hand us: arrays, tensors, Datasets, lists of text.

Teachers, the store and the engine all take batches through :class:`Inputs`, so none of
them needs to know where the data came from. Each Inputs has a content fingerprint, which
keys the teacher-output store.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError, first_line
from .rows import CHUNK_BYTES, RowView, hash_bytes

Batch = torch.Tensor | list[str]


def _as_tensor(arr: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(arr, torch.Tensor):
        arr = _native_numbers(np.asarray(arr), what)
        if any(s < 0 for s in arr.strides) or not arr.flags.writeable:  # a reversed or read-only view (x[::-1],
            arr = np.array(arr, order="C")  # pandas' copy-on-write frames): torch cannot safely share it, so copy
    t = torch.as_tensor(arr) if not isinstance(arr, torch.Tensor) else arr.detach().cpu()
    if t.dtype == torch.bool or t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        t = t.to(torch.int64)
    else:
        raise DataError(f"{what} has dtype {t.dtype}; give numbers (float or int) or a list of strings.")
    if t.ndim == 0:
        raise DataError(f"{what} is a scalar; give one row per example.")
    if t.ndim > 1 and 0 in t.shape[1:]:
        raise DataError(f"{what} has rows of shape {tuple(t.shape[1:])}, which hold no values; give at least one.")
    if t.is_floating_point() and not _all_finite(t) and not _is_nan_padding(t):
        bad = int((~torch.isfinite(t)).reshape(len(t), -1).any(1).sum())
        raise DataError(
            f"{what} holds NaN or infinite values in {bad} rows; clean or drop them first "
            "(variable-length sequences: pad with NaN only at the end, all channels at once; see pad_sequences)."
        )
    return t.contiguous()


_KIND_HINTS = {
    "c": "complex numbers (give their real part, or real and imaginary parts as two features)",
    "M": "dates (convert them to numbers first)",
    "m": "time spans (convert them to numbers first)",
    "V": "structured records (give one numeric field per column)",
}


def _native_numbers(arr: np.ndarray, what: str) -> np.ndarray:
    """A numeric array torch can take: native byte order, unsigned ints widened; anything else a DataError."""
    kind = arr.dtype.kind
    if kind not in "biuf":
        hint = _KIND_HINTS.get(kind, f"values of dtype {arr.dtype}")
        raise DataError(f"{what} holds {hint}; give numbers (float or int) or a list of strings.")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if kind == "u" and arr.dtype.itemsize > 1:
        if arr.dtype.itemsize == 8 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{what} holds unsigned integers beyond the int64 range; give floats or smaller numbers.")
        arr = arr.astype(np.int64)
    return arr


def text_array(arr: np.ndarray, what: str) -> list[str]:
    """A 1-D (or (n, 1)) array of strings, bytes (UTF-8) or str objects as a list of texts; else a DataError."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{what} is an array of strings of shape {arr.shape}; give one text per row (1-D).")
    values = arr.tolist()
    if arr.dtype.kind == "S" or (arr.dtype.kind == "O" and all(isinstance(v, bytes) for v in values)):
        try:
            return [bytes(v).decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise DataError(f"{what} holds bytes that are not UTF-8 text; give a list of str.") from None
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise DataError(
            f"{what} mixes texts and {type(values[bad]).__name__} values (row {bad}: {values[bad]!r:.40}); "
            "give a list of strings, or a numeric array."
        )
    return [str(v) for v in values]


def _object_array(arr: np.ndarray, what: str) -> list[str] | torch.Tensor:
    """An object array: texts when it holds strings, numbers when every element is one; else a DataError."""
    flat = arr.reshape(-1).tolist()
    if flat and all(isinstance(v, (str, bytes)) for v in flat):
        return text_array(arr, what)
    if all(isinstance(v, (int, float, np.number, np.bool_)) for v in flat):
        try:
            return _as_tensor(arr.astype(np.float64), what)
        except (OverflowError, TypeError, ValueError):
            pass
    bad = next((v for v in flat if not isinstance(v, (int, float, np.number, str, bytes))), flat[0] if flat else None)
    raise DataError(
        f"{what} is an object array holding {type(bad).__name__} values ({bad!r:.40}); give a numeric array "
        "or a list of strings."
    )


def _sequence(data: Sequence[Any], what: str) -> list[str] | torch.Tensor:
    """A list (or tuple) of rows: texts when every item is a string, else numbers of one shape."""
    if all(isinstance(v, str) for v in data):
        return list(data)
    if any(isinstance(v, str) for v in data):
        i = next(i for i, v in enumerate(data) if not isinstance(v, str))
        raise DataError(
            f"{what} mixes strings and {type(data[i]).__name__} values (item {i}); give a list of strings or numbers."
        )
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{what}: its rows have different shapes or are not numbers ({first_line(exc)}); pad sequences to one "
            "length (pad_sequences) or give a numeric array."
        ) from None
    if arr.dtype.kind in "USO":
        return _object_array(arr, what) if arr.dtype.kind == "O" else text_array(arr, what)
    return _as_tensor(arr, what)


def _is_nan_padding(t: torch.Tensor) -> bool:
    """Whether the non-finite values of an (n, channels, length) tensor are only NaN end padding:
    a time step is either NaN in every channel or in none, padded steps come after every real one,
    and each row keeps at least one real step."""
    if t.ndim != 3 or torch.isinf(t).any():
        return False
    nan = torch.isnan(t)
    padded = nan.all(1)  # (n, length)
    if not torch.equal(nan, padded.unsqueeze(1).expand_as(nan)) or padded[:, 0].any():
        return False
    return bool((padded[:, :-1] <= padded[:, 1:]).all())  # once padded, padded to the end


def pad_sequences(sequences: Sequence[Any], what: str = "sequences") -> np.ndarray:
    """Stack variable-length sequences, each ``(channels, length_i)`` (or ``(length_i,)`` for one
    channel), into one float32 ``(n, channels, max_length)`` array padded with NaN at the end.

    NaN padding carries each row's length inside the array itself, so padded data flows through the
    store, the engine and any teacher unchanged; the sequence models read lengths back with
    :func:`sequence_lengths`.
    """
    arrays = [np.asarray(s, dtype=np.float32) for s in sequences]
    if not arrays:
        raise DataError(f"{what} is empty: give at least one sequence.")
    arrays = [a[None, :] if a.ndim == 1 else a for a in arrays]
    bad = [i for i, a in enumerate(arrays) if a.ndim != 2 or a.shape[1] == 0]
    if bad:
        raise DataError(f"{what}[{bad[0]}] has shape {arrays[bad[0]].shape}; give (channels, length) per sequence.")
    channels = sorted({a.shape[0] for a in arrays})
    if len(channels) > 1:
        first = {c: next(i for i, a in enumerate(arrays) if a.shape[0] == c) for c in channels}
        raise DataError(
            f"{what} have different channel counts {channels} (e.g. rows {list(first.values())}); "
            "every sequence needs the same channels."
        )
    if any(not np.isfinite(a).all() for a in arrays):
        raise DataError(f"{what} hold NaN or infinite values; clean them before padding.")
    out = np.full((len(arrays), channels[0], max(a.shape[1] for a in arrays)), np.nan, dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, :, : a.shape[1]] = a
    return out


def sequence_lengths(x: torch.Tensor) -> torch.Tensor:
    """Real length of each row of an ``(n, channels, length)`` batch padded with NaN at the end."""
    return (~torch.isnan(x[:, 0, :])).sum(1)


def _materialize_dataset(ds: Dataset, what: str) -> torch.Tensor | list[str]:
    items = [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]
    if not items:
        raise DataError(f"{what} is an empty Dataset.")
    xs = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    if all(isinstance(v, str) for v in xs):
        return list(xs)
    try:
        return torch.stack([torch.as_tensor(np.asarray(v)) for v in xs])
    except RuntimeError as exc:
        raise DataError(f"{what}: Dataset items have different shapes ({exc}); pad them first.") from None


class Inputs:
    """Indexable, fingerprinted inputs: a tensor (rows are examples) or a list of strings."""

    def __init__(self, data: Any, what: str = "data"):
        fingerprint = None
        self.what = what  # how error messages name this part ("data", "labeled x", "test x")
        self._file: RowFile | None = None  # the file of a pool read from disk (see ``mapped``)
        if isinstance(data, Inputs):
            self.values: torch.Tensor | list[str] = data.values
            self._file = data._file
            fingerprint = data._fp  # same content: keep its hash
        elif isinstance(data, Path) or (isinstance(data, str) and data.lower().endswith(".npy")):
            self.values, self._file = _open_npy(Path(data), what)
        elif isinstance(data, np.memmap) and data.filename and isinstance(data.base, mmap.mmap) and _mappable(data):
            # a whole mapped file (np.load(mmap_mode=...), np.memmap); a slice of one is copied like any array
            self.values, self._file = _file_rows(data, what)
        elif isinstance(data, (np.ndarray, torch.Tensor)):
            arr = data
            if isinstance(arr, np.ndarray) and arr.dtype.kind == "O":
                self.values = _object_array(arr, what)
            elif isinstance(arr, np.ndarray) and arr.dtype.kind in "US":
                self.values = text_array(arr, what)
            else:
                self.values = _as_tensor(arr, what)
        elif isinstance(data, RowView):  # featurized rows densified a batch at a time (sparse TF-IDF)
            self.values = data  # type: ignore[assignment]
        elif isinstance(data, Dataset):
            got = _materialize_dataset(data, what)
            self.values = got if isinstance(got, list) else _as_tensor(got, what)
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            self.values = _sequence(data, what)
        else:
            raise DataError(
                f"{what} has type {type(data).__name__}; give a numpy array, a torch tensor, "
                "a torch Dataset, a list of strings, or the path of a .npy file."
            )
        if len(self.values) == 0:
            raise DataError(f"{what} is empty: give at least one example.")
        self._fp: str | None = fingerprint

    @property
    def mapped(self) -> bool:
        """Rows read from a file as they are used (a ``.npy`` pool): never held in memory whole."""
        return self._file is not None

    @property
    def is_text(self) -> bool:
        return isinstance(self.values, list)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.values),) if self.is_text else tuple(self.values.shape)  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self.values)

    def take(self, idx: Sequence[int] | np.ndarray | torch.Tensor | slice) -> Batch:
        """Rows at ``idx`` as a tensor or list of strings."""
        if self.is_text:
            if isinstance(idx, slice):
                return self.values[idx]  # type: ignore[return-value]
            return [self.values[int(i)] for i in idx]  # type: ignore[index]
        if self._file is not None:  # read from the file, never through its mapping (see RowFile)
            return self._file.take(idx, len(self))
        if isinstance(idx, slice):
            return self.values[idx]  # type: ignore[index]
        return self.values[torch.as_tensor(np.asarray(idx), dtype=torch.long)]  # type: ignore[index]

    def part(self, start: int, stop: int) -> Inputs:
        """Rows ``start`` to ``stop`` as Inputs of their own (one rank's share of a teacher pass): a view, not a
        copy, already checked as part of this data, with its own fingerprint."""
        sub = Inputs.__new__(Inputs)
        sub.what, sub.values, sub._fp = f"{self.what} rows {start}-{stop}", self.values[start:stop], None
        sub._file = self._file.part(start, stop) if self._file is not None else None
        return sub

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self.take(slice(start, start + batch_size))

    def fingerprint(self) -> str:
        """SHA-256 of the content (and shape and dtype), so equal data share store entries."""
        if self._fp is None:
            h = hashlib.sha256()
            if self.is_text:
                h.update(b"text\0")
                for s in self.values:  # type: ignore[union-attr]
                    h.update(s.encode("utf-8"))
                    h.update(b"\0")
            elif isinstance(self.values, RowView):
                h.update(f"rows{self.values.fingerprint()}".encode())
            else:
                t: torch.Tensor = self.values  # type: ignore[assignment]
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                if self._file is not None:  # the same bytes in the same order as the tensor's
                    for _, chunk in self._file.chunks():
                        hash_bytes(h, chunk)
                else:
                    for start, stop in _row_chunks(t):  # views in chunks: no copy of the whole pool
                        hash_bytes(h, t[start:stop])
            self._fp = h.hexdigest()
        return self._fp

    @staticmethod
    def concat(parts: Sequence[Inputs]) -> Inputs:
        if any(p.is_text for p in parts) and not all(p.is_text for p in parts):
            raise DataError("cannot mix text and numeric inputs: give the labeled and unlabeled data the same type.")
        if parts[0].is_text:
            return Inputs([s for p in parts for s in p.values])
        shapes = {tuple(p.values.shape[1:]) for p in parts}  # type: ignore[union-attr]
        if len({s[:1] for s in shapes}) > 1 and all(len(s) == 2 for s in shapes):
            raise DataError(
                f"labeled and unlabeled sequences have different channel counts {sorted(s[0] for s in shapes)}; "
                "give both the same channels."
            )
        if len(shapes) > 1 and all(len(s) == 2 for s in shapes):  # sequences of different padded lengths
            return Inputs(_pad_to_common_length([p.values for p in parts]))  # type: ignore[misc]
        if len(shapes) > 1:
            raise DataError(f"labeled and unlabeled data have different row shapes {sorted(shapes)}; make them match.")
        return Inputs(torch.cat([p.values for p in parts]))  # type: ignore[misc]


#: bytes read at a time in a pass over a pool on disk (NaN check, fingerprint), into one buffer reused for the
#: whole pass: large short-lived buffers raise glibc's mmap threshold and stay resident in its heap once freed
READ_BYTES = 1 << 20


class RowFile:
    """The rows of a ``.npy`` file read with ``pread``, for a pool too large to hold in memory.

    ``Inputs.values`` still maps the file (code that indexes it directly keeps working), but the library reads
    rows through here: pages that a mapping faults in count in the process's resident memory, and on file
    systems with large page-cache folios (ext4 on recent kernels) one scattered row maps a whole 2 MB folio, so
    a single random batch would map the pool whole. Read this way, memory stays flat in the pool's size;
    scattered rows cost a system call each (~1 µs)."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], first: int = 0):
        self.path, self.offset, self.dtype, self.shape, self.first = path, offset, np.dtype(dtype), shape, first
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _handle(self) -> int:
        if self._fd is None:  # opened on first use, in the process that reads (a forked worker gets its own)
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def part(self, start: int, stop: int) -> RowFile:
        return RowFile(self.path, self.offset, self.dtype, (stop - start, *self.shape[1:]), self.first + start)

    def _fill(self, out: np.ndarray, row: int) -> None:
        """Read rows from ``row`` on into ``out`` (contiguous)."""
        view, fd, at = memoryview(out).cast("B"), self._handle(), self.offset + (self.first + row) * self.row_bytes
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], at + done)
            if got <= 0:
                raise DataError(f"{self.path} ended early: it was changed or truncated while in use.")
            done += got

    def chunks(self, size: int = READ_BYTES) -> Iterator[tuple[int, torch.Tensor]]:
        """Every row in order as ``(first row, rows)``, about ``size`` bytes at a time, read into one buffer that
        the next chunk overwrites (use each before asking for the next): a pass allocates one small buffer."""
        n = self.shape[0]
        step = max(1, size // max(1, self.row_bytes))
        buf = np.empty((min(step, n), *self.shape[1:]), dtype=self.dtype)
        for start in range(0, n, step):
            out = buf[: min(step, n - start)]
            self._fill(out, start)
            yield start, torch.from_numpy(out)

    def take(self, idx: Any, n: int) -> torch.Tensor:
        """Rows at ``idx`` (a slice, or indices) as a new tensor."""
        if isinstance(idx, slice):
            start, stop, step = idx.indices(n)
            if step == 1:
                out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
                if len(out):
                    self._fill(out, start)
                return torch.from_numpy(out)
            idx = np.arange(start, stop, step)
        rows = np.asarray(idx.numpy() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for j, row in enumerate(rows.tolist()):
            self._fill(out[j : j + 1], row)
        return torch.from_numpy(out)


def _row_chunks(t: torch.Tensor, size: int = CHUNK_BYTES) -> list[tuple[int, int]]:
    """Row ranges of about ``size`` bytes each."""
    per_row = max(1, t[0].numel() * t.element_size()) if len(t) else 1
    step = max(1, size // per_row)
    return [(i, min(len(t), i + step)) for i in range(0, len(t), step)]


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every value is finite, checked a chunk of rows at a time: no mask the size of the data."""
    return all(bool(torch.isfinite(t[start:stop]).all()) for start, stop in _row_chunks(t, READ_BYTES))


def _mappable(arr: np.ndarray) -> bool:
    """A mapped array whose rows torch can read in place: native float32 or int64, C order."""
    return arr.dtype in (np.float32, np.int64) and arr.dtype.isnative and arr.flags.c_contiguous and arr.ndim >= 2


def _open_npy(path: Path, what: str) -> tuple[torch.Tensor, RowFile | None]:
    """A ``.npy`` pool read from its file as it is used, or read whole when its dtype needs converting. No
    pickle: object arrays are refused."""
    from .io import file_problem

    problem = file_problem(path)
    if problem:
        raise DataError(f"cannot use {what} {str(path)!r}: {problem}.")
    if path.suffix.lower() != ".npy":
        raise DataError(
            f"{what} {str(path)!r} is not a .npy file; a pool on disk is a .npy array (np.save), or load other "
            "files first (amalgamator's recipes read .npz, .csv, .parquet and .jsonl)."
        )
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{what} file {str(path)!r} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{what} file {str(path)!r} is not a readable .npy array ({first_line(exc)}).") from None
    if isinstance(arr, np.memmap) and _mappable(arr):
        return _file_rows(arr, what)
    return _as_tensor(np.asarray(arr), what), None  # another dtype or layout: converted in memory


def _file_rows(arr: np.memmap, what: str) -> tuple[torch.Tensor, RowFile]:
    """A tensor over a mapped array (no copy) and the RowFile the library reads its rows through, after a check
    of every row in chunks."""
    if not arr.flags.writeable:  # torch warns on read-only memory: map it again copy-on-write (never written)
        arr = np.memmap(arr.filename, dtype=arr.dtype, mode="c", shape=arr.shape, offset=arr.offset)
    t = torch.from_numpy(arr)
    if len(t) == 0:
        raise DataError(f"{what} is empty: give at least one example.")
    if 0 in t.shape[1:]:
        raise DataError(f"{what} has rows of shape {tuple(t.shape[1:])}, which hold no values; give at least one.")
    rows = RowFile(Path(arr.filename), int(arr.offset), arr.dtype, tuple(arr.shape))
    if t.is_floating_point():
        for start, chunk in rows.chunks():
            finite = torch.isfinite(chunk).reshape(len(chunk), -1).all(1)
            if not finite.all():
                bad = start + int((~finite).nonzero()[0, 0])
                raise DataError(f"{what} holds NaN or infinite values (first in row {bad}); clean or drop them first.")
    return t, rows


def _pad_to_common_length(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate (n_i, channels, length_i) parts, NaN-padding the shorter ones at the end."""
    length = max(p.shape[2] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, length - p.shape[2]), value=float("nan")) for p in parts])
