"""One view over the kinds of data users hand us: arrays, tensors, Datasets, lists of text.

Teachers, the store and the engine all take batches through :class:`Inputs`, so none of
them needs to know where the data came from. Each Inputs has a content fingerprint, which
keys the teacher-output store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError

Batch = torch.Tensor | list[str]


def _as_tensor(arr: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(arr)) if not isinstance(arr, torch.Tensor) else arr.detach().cpu()
    if t.dtype == torch.bool or t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        t = t.to(torch.int64)
    else:
        raise DataError(f"{what} has dtype {t.dtype}; give numbers (float or int) or a list of strings.")
    if t.ndim == 0:
        raise DataError(f"{what} is a scalar; give one row per example.")
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).reshape(len(t), -1).any(1).sum())
        raise DataError(f"{what} holds NaN or infinite values in {bad} rows; clean or drop them first.")
    return t.contiguous()


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
        if isinstance(data, Inputs):
            self.values: torch.Tensor | list[str] = data.values
        elif isinstance(data, (np.ndarray, torch.Tensor)):
            arr = data
            if isinstance(arr, np.ndarray) and arr.dtype.kind in "USO":
                self.values = [str(v) for v in arr.reshape(-1)]
            else:
                self.values = _as_tensor(arr, what)
        elif isinstance(data, Dataset):
            got = _materialize_dataset(data, what)
            self.values = got if isinstance(got, list) else _as_tensor(got, what)
        elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            if all(isinstance(v, str) for v in data):
                self.values = list(data)
            else:
                self.values = _as_tensor(np.asarray(data), what)
        else:
            raise DataError(
                f"{what} has type {type(data).__name__}; give a numpy array, a torch tensor, "
                "a torch Dataset, or a list of strings."
            )
        if len(self.values) == 0:
            raise DataError(f"{what} is empty: give at least one example.")
        self._fp: str | None = None

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
        if isinstance(idx, slice):
            return self.values[idx]  # type: ignore[index]
        return self.values[torch.as_tensor(np.asarray(idx), dtype=torch.long)]  # type: ignore[index]

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
            else:
                t: torch.Tensor = self.values  # type: ignore[assignment]
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes())
            self._fp = h.hexdigest()
        return self._fp

    @staticmethod
    def concat(parts: Sequence[Inputs]) -> Inputs:
        if any(p.is_text for p in parts) and not all(p.is_text for p in parts):
            raise DataError("cannot mix text and numeric inputs: give the labeled and unlabeled data the same type.")
        if parts[0].is_text:
            return Inputs([s for p in parts for s in p.values])
        shapes = {tuple(p.values.shape[1:]) for p in parts}  # type: ignore[union-attr]
        if len(shapes) > 1:
            raise DataError(f"labeled and unlabeled data have different row shapes {sorted(shapes)}; make them match.")
        return Inputs(torch.cat([p.values for p in parts]))  # type: ignore[misc]
