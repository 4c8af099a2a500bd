"""Word-embedding tables (word → vector): read them from anywhere, check them once, write them back.

Meta-embedding combines several pre-trained tables, each with its own vocabulary and width, so the
first job is to get every table into one shape: a :class:`WordVectors` (a word list plus a float32
matrix) that has been checked for the problems that would otherwise surface much later as a NaN
loss or a silently misaligned row. :func:`read_word_vectors` accepts the formats tables actually
come in (word2vec text and binary files, GloVe text, a dict, a gensim ``KeyedVectors``, a spaCy
``Vocab``/``Language``) and :func:`write_word2vec` writes the word2vec format that every tool reads.

Files are streamed: a 1M × 300 table is read into one preallocated float32 array (or fixed-size
chunks when the file has no header), never into Python lists of floats. Bad input raises
:class:`~amalgamator.errors.DataError` naming the file, the line and the fix. Nothing is unpickled.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import stat
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import DataError, first_line

#: File endings read_word_vectors understands (each may also end in .gz).
TEXT_SUFFIXES = (".txt", ".vec")
BINARY_SUFFIXES = (".bin",)
SUPPORTED = (".txt", ".vec", ".bin", ".txt.gz", ".vec.gz", ".bin.gz")
#: Rows per block when a file's size is unknown (no header) and for chunked whole-table work.
CHUNK_ROWS = 65_536
#: Text lines parsed per numpy call: large enough to amortise the call, small enough to stay in cache.
_BATCH_LINES = 2048
#: Bytes read at a time from a binary file.
_READ_BYTES = 1 << 20
#: A binary word longer than this means the file is not word2vec binary (or is misaligned).
_MAX_WORD_BYTES = 10_000
#: A header promising a table larger than this is checked against the file's size before allocating.
_PROMISE_BYTES = 1 << 26
#: Bytes a text vector is made of: a .bin file whose first vector is only these is really text.
_TEXT_BYTES = b"0123456789.-+eE \t\r\n"


class UnknownWordError(DataError, KeyError):
    """A word is not in the table: a DataError that ``except KeyError`` also catches."""

    __str__ = BaseException.__str__  # KeyError would quote the message


class WordVectors:
    """A frozen word → vector table with its own vocabulary and width.

    ``vectors`` is a read-only float32 C-contiguous view (the input array is converted only when it
    is not float32 C-contiguous already, so a big table is not copied). Duplicate words keep their
    first row; how many later rows were dropped is in ``duplicates`` (tables scraped from the web
    often repeat a word, and refusing the whole table for it helps nobody).
    """

    words: list[str]
    vectors: np.ndarray
    name: str | None
    duplicates: int

    def __init__(self, words: Sequence[str], vectors: np.ndarray, name: str | None = None) -> None:
        label = name or "word vectors"
        if isinstance(words, (str, bytes)):
            raise DataError(f"{label}: words must be a list of strings, not one string.")
        words = list(words)
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{label}: vectors must be a 2-D array of numbers, one row per word ({first_line(exc)})."
            ) from None
        if arr.ndim != 2:
            raise DataError(f"{label}: vectors must be a 2-D array (one row per word), not shape {arr.shape}.")
        if not words or arr.shape[0] == 0:
            raise DataError(f"{label} is empty: give at least one word and its vector.")
        if arr.shape[0] != len(words):
            raise DataError(
                f"{label}: {len(words)} words but {arr.shape[0]} vector rows; give exactly one row per word."
            )
        if arr.shape[1] < 1:
            raise DataError(f"{label}: vectors have width 0; each word needs at least one number.")
        index: dict[str, int] = {}
        dropped: list[int] = []
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise DataError(f"{label}: word {i + 1} is {w!r}; every word must be a non-empty string.")
            if index.setdefault(w, i) != i:
                dropped.append(i)
        _check_finite(arr, lambda i: f"{label}: the vector for {words[i]!r} (row {i + 1})")
        if dropped:
            keep = np.ones(len(words), dtype=bool)
            keep[dropped] = False
            arr = arr[keep]
            words = [w for w, k in zip(words, keep.tolist(), strict=True) if k]
            index = {w: i for i, w in enumerate(words)}
        view = np.ascontiguousarray(arr).view()
        view.flags.writeable = False
        self.words = words
        self.vectors = view
        self.name = name
        self.duplicates = len(dropped)
        self._index = index
        self._fingerprint: str | None = None
        self._normalized: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Width of every vector."""
        return int(self.vectors.shape[1])

    @property
    def index(self) -> dict[str, int]:
        """word → row, built once (do not modify it)."""
        return self._index

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word in self._index

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return f"WordVectors({name}{len(self)} words × {self.dim})"

    def rows(self, words: Sequence[str]) -> np.ndarray:
        """int64 row of each word, -1 where it is out of vocabulary: the lookup vectorised code wants."""
        if isinstance(words, str):
            raise DataError("rows() takes a list of words; for a single word use vector(word).")
        get = self._index.get
        return np.fromiter((get(w, -1) for w in words), dtype=np.int64, count=len(words))

    def vector(self, word: str) -> np.ndarray:
        """The (read-only) vector of one word; an unknown word raises UnknownWordError (a DataError and a KeyError)."""
        row = self._index.get(word) if isinstance(word, str) else None
        if row is None:
            label = f"{self.name}: " if self.name else ""
            raise UnknownWordError(
                f"{label}{word!r} is not in the vocabulary ({len(self)} words); check its spelling and case, "
                "or use rows(), which gives -1 for unknown words."
            )
        return self.vectors[row]

    def fingerprint(self) -> str:
        """sha256 hex of words, vectors and shape: identifies the table's content in caches and reports."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update("\n".join(self.words).encode("utf-8"))
            h.update(b"\0")
            data = self.vectors if sys.byteorder == "little" else self.vectors.astype("<f4")
            h.update(memoryview(np.ascontiguousarray(data)).cast("B"))
            h.update(f"{len(self)}x{self.dim}".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def normalized(self) -> np.ndarray:
        """Rows scaled to unit L2 norm (zero rows stay zero), read-only and cached: cosine similarity by dot product."""
        if self._normalized is None:
            out = np.empty_like(self.vectors)
            for start in range(0, len(self), CHUNK_ROWS):
                block = self.vectors[start : start + CHUNK_ROWS]
                norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
                norms[norms == 0] = 1.0
                out[start : start + CHUNK_ROWS] = block / norms[:, None]
            out.flags.writeable = False
            self._normalized = out
        return self._normalized


def _check_finite(arr: np.ndarray, where: Any) -> None:
    """Raise for the first row holding NaN or ±inf; chunked so a big table needs no full-size mask."""
    for start in range(0, arr.shape[0], CHUNK_ROWS):
        ok = np.isfinite(arr[start : start + CHUNK_ROWS]).all(axis=1)
        if not ok.all():
            i = start + int(np.argmin(ok))
            raise DataError(f"{where(i)} has a NaN or infinite value; fix or drop that row.")


# reading ------------------------------------------------------------------------------------------


def read_word_vectors(source: Any, *, name: str | None = None, limit: int | None = None) -> WordVectors:
    """Read a word → vector table from a file, a dict, gensim or spaCy.

    ``source`` may be a path to a word2vec/GloVe text file (.txt, .vec) or a word2vec binary file
    (.bin), each optionally gzipped; a dict ``{word: vector}``; a gensim ``KeyedVectors`` (or a model
    with ``.wv``); a spaCy ``Vocab`` or ``Language`` (or a ``Vectors`` table whose own string store
    knows its words). ``limit`` keeps only the first ``limit`` words and stops reading a file there
    (word2vec files are usually sorted by frequency, so this keeps the common words).
    ``name`` defaults to the file name without its extension.
    """
    limit = _check_limit(limit)
    if isinstance(source, WordVectors):
        if limit is None or limit >= len(source):
            return source if name is None or name == source.name else WordVectors(source.words, source.vectors, name)
        return WordVectors(source.words[:limit], source.vectors[:limit], name or source.name)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source).expanduser(), name, limit)
    if isinstance(source, Mapping):
        return _from_mapping(source, name, limit)
    kv = source if hasattr(source, "index_to_key") else getattr(source, "wv", None)
    if kv is not None and hasattr(kv, "index_to_key") and hasattr(kv, "vectors"):
        return _from_gensim(kv, name, limit)
    if _is_spacy(source):
        return _from_spacy(source, name, limit)
    raise DataError(
        f"cannot read word vectors from a {type(source).__name__}; give a file path ({', '.join(SUPPORTED)}), "
        "a dict {word: vector}, a gensim KeyedVectors, or a spaCy Vocab or Language."
    )


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"limit must be a positive whole number of words (or None for all), not {limit!r}.")
    return int(limit)


def _file_kind(path: Path) -> tuple[bool, bool]:
    """(binary, gzipped) from the file name; refuses names the reader does not know."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    for ext in TEXT_SUFFIXES + BINARY_SUFFIXES:
        if stem.endswith(ext):
            return ext in BINARY_SUFFIXES, gz
    raise DataError(
        f"{path.name}: unknown word-vector file type; read are {', '.join(TEXT_SUFFIXES)} (word2vec/GloVe text) "
        f"and {', '.join(BINARY_SUFFIXES)} (word2vec binary), optionally gzipped (.gz): rename the file to match."
    )


def _read_path(path: Path, name: str | None, limit: int | None) -> WordVectors:
    from .io import file_problem

    problem = file_problem(path)
    if problem:
        raise DataError(f"cannot read the word-vector file {str(path)!r}: {problem}.")
    if not path.exists():
        raise DataError(f"no such word-vector file: {path}; check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the word-vector file inside it.")
    binary, gz = _file_kind(path)
    label = path.name
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            size = None if gz else path.stat().st_size  # bounds what a header may promise
            words, arr = (_read_binary if binary else _read_text)(f, label, limit, size)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{label} cannot be read ({first_line(exc)}); check the file is complete (re-download or re-write it)."
        ) from None
    if name is None:
        stem = path.name[:-3] if gz else path.name
        name = stem[: stem.rfind(".")] if "." in stem else stem
    return WordVectors(words, arr, name)


class _Rows:
    """float32 rows filled block by block: one preallocated array when the count is known,
    else fixed-size chunks concatenated once at the end (peak ≈ 2× the table, never Python floats)."""

    def __init__(self, dim: int, total: int | None, label: str) -> None:
        self.dim, self.n = dim, 0
        self.chunks: list[np.ndarray] = []
        try:
            if total is not None:
                self.arr = np.empty((total, dim), dtype=np.float32)
            else:
                self.arr = np.empty((CHUNK_ROWS, dim), dtype=np.float32)
        except (MemoryError, ValueError):
            raise DataError(
                f"{label}: a {total} × {dim} float32 table does not fit in memory; pass limit= to read fewer words "
                "(or fix the header if its count is wrong)."
            ) from None
        self.fixed = total is not None
        self.fill = 0  # rows used in self.arr

    def add(self, block: np.ndarray) -> None:
        k = block.shape[0]
        if self.fixed:
            self.arr[self.fill : self.fill + k] = block
            self.fill += k
        else:
            done = 0
            while done < k:
                take = min(k - done, self.arr.shape[0] - self.fill)
                self.arr[self.fill : self.fill + take] = block[done : done + take]
                self.fill += take
                done += take
                if self.fill == self.arr.shape[0]:
                    self.chunks.append(self.arr)
                    self.arr = np.empty((CHUNK_ROWS, self.dim), dtype=np.float32)
                    self.fill = 0
        self.n += k

    def result(self) -> np.ndarray:
        if self.fixed:
            return self.arr[: self.fill]
        if not self.chunks:
            return self.arr[: self.fill].copy()
        out = np.concatenate([*self.chunks, self.arr[: self.fill]])
        self.chunks.clear()
        return out


def _text_lines(f: Iterable[bytes], label: str) -> Iterator[tuple[int, str]]:
    """(line number, text without trailing whitespace) of each non-blank line; blank lines only at the end."""
    blank = 0
    for lineno, raw in enumerate(f, 1):
        try:
            text = raw.decode("utf-8").rstrip()
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{label}, line {lineno}: not valid UTF-8 (byte {exc.start + 1} of the line); save the file as "
                "UTF-8, or if it is a binary word2vec file name it .bin."
            ) from None
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text:
            blank = blank or lineno
            continue
        if blank:
            raise DataError(
                f"{label}, line {blank} is blank but more lines follow; remove blank lines inside the file."
            )
        yield lineno, text


def _is_int(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _check_promise(label: str, count: int, dim: int, want: int, row_bytes: int, size: int | None) -> None:
    """Refuse a header promising more rows than the file's size can hold, before allocating a large table for
    them (a small one is allocated and the reader names the line where the file falls short)."""
    if size is not None and want * dim * 4 > _PROMISE_BYTES and want * row_bytes - 1 > size:
        raise DataError(
            f"{label}, line 1: the header promises {count} words of width {dim}, which take at least "
            f"{want * row_bytes - 1:,} bytes, but the file has {size:,}; the file is truncated (re-download it) "
            "or the header is wrong."
        )


def _read_text(f: IO[bytes], label: str, limit: int | None, size: int | None = None) -> tuple[list[str], np.ndarray]:
    """word2vec text ("<count> <dim>" header) or GloVe text (no header), parsed in batches of lines."""
    lines = _text_lines(f, label)
    first = next(lines, None)
    if first is None:
        raise DataError(f"{label} is empty; a word-vector file needs a line per word (word, then its numbers).")
    lineno, text = first
    parts = text.replace("\t", " ").split(" ")
    count: int | None = None
    if len(parts) == 2 and _is_int(parts[0]) and _is_int(parts[1]):
        count, dim = int(parts[0]), int(parts[1])
        if count < 1 or dim < 1:
            raise DataError(
                f"{label}, line 1: the header {text!r} promises {count} words of width {dim}; both must be at "
                "least 1 (an empty table cannot be used)."
            )
        width_from = "as the header on line 1 says"
        body: Iterator[tuple[int, str]] = lines
    else:
        dim = len(parts) - 1
        if dim < 1:
            raise DataError(
                f"{label}, line {lineno}: expected a word followed by its numbers, found only {text[:40]!r}; "
                "separate the word and the numbers by single spaces."
            )
        width_from = f"as on line {lineno}"
        body = itertools.chain([first], lines)
    want = count if limit is None else (limit if count is None else min(count, limit))
    if count is not None and want is not None:
        _check_promise(label, count, dim, want, 2 + 2 * dim, size)  # "w 0 0\n" is the shortest line
    rows = _Rows(dim, want if count is not None else None, label)
    words: list[str] = []
    batch_words: list[str] = []
    rests: list[str] = []
    batch_first = 0
    last_line = lineno
    for lineno, text in body:
        if want is not None and len(words) + len(batch_words) >= want:
            if count is not None and want == count:
                raise DataError(
                    f"{label}, line {lineno}: the header on line 1 promises {count} words but more lines follow; "
                    "fix the count in the header (or delete the header line to let the reader count)."
                )
            break
        last_line = lineno
        if "\t" in text:
            text = text.replace("\t", " ")
        word, _, rest = text.partition(" ")
        if not batch_words:
            batch_first = lineno
        batch_words.append(word)
        rests.append(rest)
        if len(batch_words) == _BATCH_LINES:
            rows.add(_parse_batch(batch_words, rests, dim, label, batch_first, width_from))
            words.extend(batch_words)
            batch_words, rests = [], []
    if batch_words:
        rows.add(_parse_batch(batch_words, rests, dim, label, batch_first, width_from))
        words.extend(batch_words)
    if count is not None and want is not None and len(words) < want:
        raise DataError(
            f"{label}: the header on line 1 promises {count} words but the file ends after {len(words)} "
            f"(line {last_line}); the file is truncated (re-download it) or the header count is wrong."
        )
    return words, rows.result()


def _parse_batch(words: list[str], rests: list[str], dim: int, label: str, first: int, width_from: str) -> np.ndarray:
    """The numbers of a batch of lines: one fast C parse, or line by line to say exactly what is wrong."""
    block = None if "" in words else _fast_parse(rests, dim)
    if block is None or not np.isfinite(block).all():  # re-read line by line: the first problem wins
        # each line's width is checked before its numbers are stored, so a header claiming a huge width costs
        # nothing (a (lines, dim) block allocated up front would take dim × 4 bytes per line first)
        pairs = enumerate(zip(words, rests, strict=True))
        lines = [_parse_line(w, r, dim, label, first + i, width_from) for i, (w, r) in pairs]
        block = np.stack(lines) if lines else np.empty((0, dim), dtype=np.float32)
    ok = np.isfinite(block).all(axis=1)
    if not ok.all():
        i = int(np.argmin(ok))
        col = int(np.argmin(np.isfinite(block[i])))
        token = rests[i].split(" ")[col]
        raise DataError(
            f"{label}, line {first + i}: {token!r} (number {col + 1} of {words[i]!r}) is not a finite number; "
            "NaN and infinity are not allowed (values beyond ±3.4e38 overflow float32): fix or drop that line."
        )
    return block


#: Batches at least this long use pandas' C parser when pandas is installed (about twice numpy's speed);
#: smaller files are not worth importing pandas for.
_PANDAS_MIN_LINES = 256
_PANDAS: list[Any] = []


def _pandas() -> Any:
    if not _PANDAS:
        try:
            import pandas
        except ImportError:
            pandas = None
        _PANDAS.append(pandas)
    return _PANDAS[0]


def _fast_parse(rests: list[str], dim: int) -> np.ndarray | None:
    """(len(rests), dim) float32 from space-separated numbers, or None on any irregularity (the caller
    then parses line by line and reports it). Both parsers round-trip 9-digit float32 text exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pd = _pandas() if len(rests) >= _PANDAS_MIN_LINES else None
            if pd is not None:
                import csv
                import io

                block = pd.read_csv(
                    io.StringIO("\n".join(rests)),
                    sep=" ",
                    header=None,
                    index_col=False,
                    dtype=np.float32,
                    engine="c",
                    quoting=csv.QUOTE_NONE,
                    na_filter=False,
                ).to_numpy(dtype=np.float32)
            else:
                block = np.loadtxt(rests, dtype=np.float32, delimiter=" ", comments=None, quotechar=None, ndmin=2)
        except Exception:  # any complaint: the line-by-line parser names it precisely
            return None
    return block if block.shape == (len(rests), dim) else None


def _parse_line(word: str, rest: str, dim: int, label: str, lineno: int, width_from: str) -> np.ndarray:
    where = f"{label}, line {lineno}"
    if not word:
        raise DataError(f"{where} starts with a space: the word is missing; every line is a word, then its numbers.")
    parts = rest.split(" ") if rest else []
    if "" in parts:
        raise DataError(
            f"{where}: two separators in a row after {word!r}; separate the word and numbers by single spaces."
        )
    if len(parts) != dim:
        raise DataError(
            f"{where}: expected a word and {dim} numbers ({width_from}), found {len(parts)} numbers; "
            "every line needs the same width (check for a truncated or wrapped line)."
        )
    try:
        with np.errstate(over="ignore"):  # 1e39 becomes inf, reported by the caller with its line
            return np.asarray(parts, dtype=np.float32)
    except ValueError:
        for col, token in enumerate(parts):
            try:
                float(token)
            except ValueError:
                raise DataError(
                    f"{where}: {token!r} is not a number (number {col + 1} of {word!r}); "
                    "every field after the word must be a number."
                ) from None
        raise DataError(f"{where}: the numbers of {word!r} cannot be read as float32.") from None


def _read_binary(f: IO[bytes], label: str, limit: int | None, size: int | None = None) -> tuple[list[str], np.ndarray]:
    """word2vec binary: "<count> <dim>\\n", then per word its UTF-8 bytes, a space, dim little-endian float32."""
    header = f.readline(256)
    parts = header.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise DataError(
            f"{label}, line 1: a word2vec binary file starts with a header line '<count> <dim>', found "
            f"{header[:40]!r}; if this is a text file name it .txt or .vec."
        )
    count, dim = int(parts[0]), int(parts[1])
    if count < 1 or dim < 1:
        raise DataError(f"{label}, line 1: the header promises {count} words of width {dim}; both must be at least 1.")
    want = count if limit is None else min(count, limit)
    nbytes = 4 * dim
    _check_promise(label, count, dim, want, 2 + nbytes, size)  # a 1-byte word, a space, the vector
    arr = _Rows(dim, want, label).arr
    words: list[str] = []
    buf, pos, eof = b"", 0, False
    for i in range(want):
        while True:
            sp = buf.find(b" ", pos)
            if sp >= 0 and len(buf) - sp - 1 >= nbytes:
                break
            if sp < 0 and len(buf) - pos > _MAX_WORD_BYTES or sp - pos > _MAX_WORD_BYTES:
                raise DataError(
                    f"{label}, word {i + 1}: no space within {_MAX_WORD_BYTES} bytes where a word should end; "
                    "this is not a word2vec binary file (or its header width is wrong)."
                )
            if eof:
                rest = buf[pos:].strip()
                if not rest:
                    raise DataError(
                        f"{label}: the header on line 1 promises {count} words but the file ends after {i}; "
                        "the file is truncated (re-download it) or the header count is wrong."
                    )
                word = (rest if sp < 0 else buf[pos:sp].lstrip(b"\r\n")).decode("utf-8", errors="replace")
                have = 0 if sp < 0 else len(buf) - sp - 1
                raise DataError(
                    f"{label}, word {i + 1} ({word[:40]!r}): the file ends mid-vector, {have} of {nbytes} bytes "
                    f"({dim} float32 numbers); the file is truncated: download or write it again."
                )
            more = f.read(max(_READ_BYTES, min(2 * nbytes, 1 << 28)))  # bounded: a header may lie about dim
            if more:
                buf, pos = buf[pos:] + more, 0
            else:
                eof = True
        word = buf[pos:sp].lstrip(b"\r\n").decode("utf-8", errors="replace")
        if not word:
            raise DataError(f"{label}, word {i + 1} is empty (two spaces in a row?); the file is damaged.")
        if i == 0 and not buf[sp + 1 : sp + 1 + nbytes].translate(None, _TEXT_BYTES):
            raise DataError(f"{label}: the vectors are written as text, not binary; name the file .txt or .vec.")
        arr[i] = np.frombuffer(buf, dtype="<f4", count=dim, offset=sp + 1)
        words.append(word)
        pos = sp + 1 + nbytes
    if want == count and (buf[pos:] + f.read(64)).strip():
        raise DataError(
            f"{label}: the header on line 1 promises {count} words but more data follows word {count}; "
            "fix the count in the header."
        )
    _check_finite(arr, lambda i: f"{label}, word {i + 1} ({words[i]!r})")
    return words, arr


def _from_mapping(table: Mapping[Any, Any], name: str | None, limit: int | None) -> WordVectors:
    items = itertools.islice(table.items(), limit)
    words: list[str] = []
    arr: np.ndarray | None = None
    label = name or "word vectors"
    n = len(table) if limit is None else min(len(table), limit)
    for i, (word, value) in enumerate(items):
        try:
            vec = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{label}: the vector for {word!r} is not a list of numbers.") from None
        if vec.ndim != 1:
            raise DataError(f"{label}: the vector for {word!r} has shape {vec.shape}; give a flat list of numbers.")
        if arr is None:
            if vec.size < 1:
                raise DataError(f"{label}: the vector for {word!r} is empty; each word needs at least one number.")
            arr = np.empty((n, vec.size), dtype=np.float32)
        elif vec.size != arr.shape[1]:
            raise DataError(
                f"{label}: the vector for {word!r} has {vec.size} numbers but the one for {words[0]!r} has "
                f"{arr.shape[1]}; every vector needs the same width."
            )
        arr[i] = vec
        words.append(word)
    if arr is None:
        raise DataError(f"{label}: the word → vector dict is empty; give at least one word.")
    return WordVectors(words, arr, name)


def _from_gensim(kv: Any, name: str | None, limit: int | None) -> WordVectors:
    words = list(kv.index_to_key[:limit] if limit is not None else kv.index_to_key)
    vectors = np.asarray(kv.vectors)
    if vectors.ndim != 2 or vectors.shape[0] < len(words):
        raise DataError(
            f"gensim KeyedVectors has {len(words)} keys but vectors of shape {vectors.shape}; the object is damaged."
        )
    return WordVectors(words, vectors[: len(words)], name)


def _is_spacy(source: Any) -> bool:
    if hasattr(source, "key2row") and hasattr(source, "data"):  # Vectors
        return True
    vocab = getattr(source, "vocab", source)  # Language → Vocab
    return hasattr(vocab, "strings") and hasattr(getattr(vocab, "vectors", None), "key2row")


def _from_spacy(source: Any, name: str | None, limit: int | None) -> WordVectors:
    """spaCy keeps words as hashes, several of which may share one row: each key becomes an entry."""
    if hasattr(source, "key2row"):
        vectors, strings, what = source, getattr(source, "strings", None), "spaCy Vectors table"
    else:
        vocab = getattr(source, "vocab", source)
        vectors, strings, what = vocab.vectors, vocab.strings, "spaCy vocab"
    if getattr(vectors, "mode", "default") == "floret":
        raise DataError(
            f"{what} holds floret vectors (hashed subwords), which have no word list; use a model with "
            "ordinary word vectors, or look words up with spaCy and pass a dict {word: vector}."
        )
    key2row = dict(vectors.key2row)
    if not key2row:
        raise DataError(
            f"{what} has no word vectors (blank pipelines and small *_sm models have none); use a model with "
            "vectors such as en_core_web_md or en_core_web_lg."
        )
    entries = sorted(key2row.items(), key=lambda kv: kv[1])[:limit]
    missing = 0
    words: list[str] = []
    if strings is not None:
        for key, _ in entries:
            try:
                words.append(strings[key])
            except (KeyError, IndexError, TypeError, ValueError):
                missing += 1
    if strings is None or missing:
        raise DataError(
            f"{what}: {missing or len(entries)} of {len(entries)} keys have no text in its string store "
            "(spaCy keys vectors by hash); pass the Vocab or the Language (nlp.vocab or nlp) that owns the "
            "vectors instead."
        )
    data = vectors.data
    if not isinstance(data, np.ndarray) and hasattr(data, "get"):  # cupy array on a GPU
        data = data.get()
    data = np.asarray(data, dtype=np.float32)
    rows = np.fromiter((row for _, row in entries), dtype=np.int64, count=len(entries))
    return WordVectors(words, data[rows], name)


# writing ------------------------------------------------------------------------------------------


def write_word2vec(
    path: str | os.PathLike[str], words: Sequence[str], vectors: np.ndarray, binary: bool = False
) -> Path:
    """Write the word2vec format ("<count> <dim>" header), text or binary, optionally gzipped (.gz).

    Readable by gensim's ``KeyedVectors.load_word2vec_format(path, binary=...)`` and by
    :func:`read_word_vectors`. Text numbers use 9 significant digits, which round-trip float32
    exactly. The file is written next to its destination and moved into place, so a crash never
    leaves a half-written table behind.
    """
    p = Path(path).expanduser()
    is_binary, gz = _file_kind(p)
    if is_binary != bool(binary):
        want = "binary=True" if is_binary else "binary=False"
        raise DataError(
            f"{p.name}: the name says {'binary' if is_binary else 'text'} but binary={bool(binary)}; pass {want} "
            "or name the file .bin (binary) or .txt/.vec (text)."
        )
    if isinstance(words, (str, bytes)):
        raise DataError(f"{p.name}: words must be a list of strings, not one string.")
    words = list(words)
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{p.name}: vectors must be a 2-D array of numbers ({first_line(exc)}).") from None
    if arr.ndim != 2 or arr.shape[0] != len(words) or arr.shape[1] < 1 or not words:
        raise DataError(
            f"{p.name}: need one vector row (width ≥ 1) per word; got {len(words)} words and vectors of shape "
            f"{arr.shape}."
        )
    for i, w in enumerate(words):
        if not isinstance(w, str) or w.split() != [w]:
            raise DataError(
                f"{p.name}: word {i + 1} ({w!r}) is empty or contains whitespace, which the word2vec format "
                "cannot hold (fields are separated by spaces); rename it, e.g. replace spaces by '_'."
            )
    _check_finite(arr, lambda i: f"{p.name}: the vector for {words[i]!r} (row {i + 1})")
    if not p.parent.is_dir():
        raise DataError(f"cannot write {p}: the folder {p.parent} does not exist; create it first.")
    mode = stat.S_IMODE(p.stat().st_mode) if p.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", filename=p.name[:-3]) if gz else _NoClose(raw) as out:
                out.write(f"{len(words)} {arr.shape[1]}\n".encode())
                _write_rows(out, words, arr, binary)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


class _NoClose:
    """The raw file as a context manager that leaves closing to its owner."""

    def __init__(self, f: IO[bytes]) -> None:
        self.write = f.write

    def __enter__(self) -> _NoClose:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _write_rows(out: Any, words: list[str], arr: np.ndarray, binary: bool) -> None:
    step = 4096
    fmt = " ".join(["%.9g"] * arr.shape[1])
    for start in range(0, len(words), step):
        block = arr[start : start + step]
        chunk = words[start : start + step]
        if binary:
            le = block.astype("<f4", copy=False)
            out.write(
                b"".join(w.encode("utf-8") + b" " + row.tobytes() + b"\n" for w, row in zip(chunk, le, strict=True))
            )
        else:
            out.write(
                "".join(f"{w} {fmt % tuple(row)}\n" for w, row in zip(chunk, block.tolist(), strict=True)).encode()
            )
