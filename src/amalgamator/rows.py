"""Row matrices a network reads without holding the whole pool dense in memory.

The engine, the methods and the student's featurized pool (``Context.features``) take either a tensor or a
:class:`RowView`: something with a length, a row shape, rows by index (a slice, or a tensor or array of
indices, giving a dense float tensor) and a fingerprint. Two views exist: :class:`FeatureView` (a featurizer
applied to the batch asked for, for pools on disk) and :class:`SparseRows` (a sparse matrix densified one
batch at a time, e.g. TF-IDF). ``rows_fingerprint`` and ``all_rows`` treat tensors and views alike.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

#: bytes hashed (and, for a pool on disk, read) at a time: a fingerprint never copies the whole pool
CHUNK_BYTES = 64 << 20


@runtime_checkable
class RowView(Protocol):
    """Rows on demand: ``view[idx]`` is a dense float tensor of the rows at ``idx``."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, idx: Any) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


def hash_bytes(h: Any, t: torch.Tensor) -> None:
    """Feed a tensor's bytes to ``h`` in chunks: the digest of hashing them all at once, without copying the
    whole tensor (``tobytes`` would, which doubles the memory of a large pool)."""
    flat = t.detach().cpu().contiguous().view(-1)
    if flat.numel():
        raw = flat.view(torch.uint8).numpy()
        for start in range(0, len(raw), CHUNK_BYTES):
            h.update(memoryview(raw[start : start + CHUNK_BYTES]))


def tensor_fingerprint(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    hash_bytes(h, t)
    return h.hexdigest()


def rows_fingerprint(x: torch.Tensor | RowView) -> str:
    """The identity of a row matrix: its content for a tensor, the view's own fingerprint otherwise."""
    return tensor_fingerprint(x) if isinstance(x, torch.Tensor) else x.fingerprint()


def all_rows(x: torch.Tensor | RowView, batch_size: int = 4096) -> torch.Tensor:
    """Every row as one dense tensor: for the few computations that need the whole matrix at once."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.cat([x[i : i + batch_size] for i in range(0, len(x), batch_size)])


def _index(idx: Any) -> Any:
    """A slice as it is; anything else as an int64 numpy array."""
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, torch.Tensor):
        return idx.numpy().astype(np.int64, copy=False)
    return np.asarray(idx, dtype=np.int64)


class FeatureView:
    """A featurizer applied to the rows asked for, when they are asked for: the student's inputs for a pool
    too large to featurize whole (or read whole: ``inputs`` may be backed by a file)."""

    def __init__(self, inputs: Any, featurizer: Any):
        self.inputs, self.featurizer = inputs, featurizer
        first = featurizer(inputs.take(slice(0, 1)))
        self.shape = (len(inputs), *first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return self.featurizer(self.inputs.take(_index(idx)))

    def fingerprint(self) -> str:
        key = f"features|{self.inputs.fingerprint()}|{self.featurizer.fingerprint()}"
        return hashlib.sha256(key.encode()).hexdigest()


class SparseRows:
    """A scipy sparse matrix (CSR) as rows: each batch densified to float32 as it is read."""

    def __init__(self, matrix: Any):
        self.matrix = matrix.tocsr()
        self.shape = tuple(self.matrix.shape)
        self.dtype = torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return torch.from_numpy(self.matrix[_index(idx)].toarray().astype(np.float32, copy=False))

    def fingerprint(self) -> str:
        m = self.matrix
        h = hashlib.sha256(f"csr{m.shape}{m.dtype}".encode())
        for part in (m.indptr, m.indices, m.data):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    def numpy(self) -> np.ndarray:
        return self.matrix.toarray().astype(np.float32, copy=False)
