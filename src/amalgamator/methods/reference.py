"""Reference rows that are not amalgamation proper (MUKI (`002`) §3.1 "Simple Baselines").

- ``ensemble``: no training; the teachers' logits placed side by side over the union
  (a label named by several teachers takes the max), argmax. Runs the teachers at
  prediction time, so it is a predictor, not a student: it has no weights to save.
- ``supervised``: the upper bound; the student architecture trained with cross-entropy on
  true labels (pass the pool with its labels as ``labeled=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Inputs
from ..errors import MethodError
from ..labels import LabelSpace
from ..teachers import Teacher
from .base import Context, Method, StudentOutput, place_in_union, register


@register
class Ensemble(Method):
    name = "ensemble"
    paper = (
        "Li et al. 2022, From Mimicking to Integrating: Knowledge Integration for Pre-Trained Language Models "
        "(Findings of EMNLP) §3.1: simple baseline"
    )
    family = "A: multi-class union"
    summary = "reference row: teachers' logits concatenated over the union, argmax (no training)"
    trains = False


class EnsemblePredictor:
    """The ensemble as a predictor with a student's inference surface."""

    kind = "multiclass"
    method = "ensemble"

    def __init__(self, teachers: Sequence[Teacher], batch_size: int = 256):
        self.teachers = list(teachers)
        self.union = LabelSpace.union([t.labels for t in self.teachers])
        self.labels = list(self.union)
        self.batch_size = batch_size

    def _logits(self, x: Any) -> torch.Tensor:
        inputs = x if isinstance(x, Inputs) else Inputs(x, what="x")
        parts = [
            (torch.as_tensor(self.union.positions(t.labels)), t.logits(inputs, self.batch_size)) for t in self.teachers
        ]
        return place_in_union(parts, len(self.union), "max")

    def predict_proba(self, x: Any) -> np.ndarray:
        return self._logits(x).softmax(-1).numpy()

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.labels, dtype=str)[self.predict_proba(x).argmax(1)]

    def save(self, path) -> None:
        raise MethodError("the ensemble is a reference row, not a student: it has no weights to save.")


@register
class Supervised(Method):
    name = "supervised"
    paper = (
        "upper bound, as "
        "Li et al. 2022, From Mimicking to Integrating: Knowledge Integration for Pre-Trained Language Models "
        "(Findings of EMNLP) Table 1 'Supervised'"
    )
    family = "A: multi-class union"
    summary = "reference row: the student trained on true labels (needs labeled=(x, y))"
    uses_labels = "required"

    def pieces(self, teacher: Teacher) -> list[str]:
        return []

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {"y": ctx.y.clamp_min(0)}

    def train_rows(self, ctx: Context) -> np.ndarray:
        return ctx.labeled.nonzero().flatten().numpy()

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return F.cross_entropy(out.logits, batch["y"])
