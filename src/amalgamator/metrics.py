"""Metrics for each student kind, on scikit-learn where it has them.

Multiclass accuracy is counted over every test row, including rows whose true label the
model does not know (a single teacher alone is scored this way in the papers' tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from .errors import DataError


def multiclass_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over label names (macro over the true labels present)."""
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    if y_true.shape != y_pred.shape:
        raise DataError(f"y has {len(y_true)} labels but there are {len(y_pred)} predictions; give one label per row.")
    present = sorted(set(y_true))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts (len(labels), len(labels)); rows are true labels, columns predictions."""
    return confusion_matrix(np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str), labels=list(labels))


def evaluate(model: Any, x: Any, y: Sequence[str]) -> dict[str, float]:
    """Metrics for a student (or any object with ``predict`` and ``kind``) on labeled data."""
    y = np.asarray(y)
    if len(y) == 0:
        raise DataError("y is empty: give at least one labeled example to evaluate on.")
    kind = getattr(model, "kind", "multiclass")
    if kind != "multiclass":
        raise DataError(f"evaluation for {kind!r} students arrives with that family; only multiclass exists yet.")
    pred = model.predict(x)
    if len(pred) != len(y):
        raise DataError(f"x has {len(pred)} rows but y has {len(y)} labels; give one label per row.")
    return multiclass_metrics(y.astype(str), pred)
