"""Featurizers: the frozen, deterministic step from raw inputs to the tensor a network reads.

A student (or a teacher loaded from a student folder) is ``featurizer → network``. The
featurizer never trains, so the engine applies it once to the whole training set. Each
featurizer saves as JSON config plus named tensors (stored beside the weights in
safetensors): no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

import torch

from ..data import Batch, Inputs
from ..errors import DataError

FEATURIZERS: dict[str, type[Featurizer]] = {}


def register_featurizer(cls: type[Featurizer]) -> type[Featurizer]:
    FEATURIZERS[cls.type] = cls
    return cls


class Featurizer:
    """Base class; subclasses set ``type`` and implement ``__call__``."""

    type: ClassVar[str] = ""

    def fit(self, inputs: Inputs) -> Featurizer:
        """Learn whatever the featurizer needs from the training inputs (default: nothing)."""
        return self

    def __call__(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Featurizer:
        return cls(**config)

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.type, self.config()], sort_keys=True).encode())
        for k, v in sorted(self.tensors().items()):
            h.update(k.encode())
            h.update(v.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def transform(self, inputs: Inputs, batch_size: int = 1024) -> torch.Tensor:
        """Featurize a whole dataset in batches."""
        return torch.cat([self(b) for b in inputs.batches(batch_size)])


@register_featurizer
class Identity(Featurizer):
    """Numeric rows cast to float32, optionally reshaped (e.g. flat 64 → (1, 8, 8) for a CNN)."""

    type = "identity"

    def __init__(self, shape: list[int] | tuple[int, ...] | None = None):
        self.shape = tuple(shape) if shape is not None else None

    def __call__(self, batch: Batch) -> torch.Tensor:
        if isinstance(batch, list):
            raise DataError("this model reads numeric arrays but got text; use student='text' for text data.")
        x = batch.float()
        if self.shape is not None:
            per_row = x[0].numel() if len(x) else 0
            need = int(torch.tensor(self.shape).prod())
            if per_row != need:
                raise DataError(f"rows have {per_row} values but the model expects shape {self.shape} ({need} values).")
            x = x.reshape(len(x), *self.shape)
        return x

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape) if self.shape is not None else None}
