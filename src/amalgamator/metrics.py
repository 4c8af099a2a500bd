"""Metrics for each student kind, on scikit-learn where it has them.

Multiclass accuracy is counted over every test row, including rows whose true label the
model does not know (a single teacher alone is scored this way in the papers' tables).
Such rows are never counted silently: :func:`evaluate` warns, naming them, and reports
``accuracy_known`` (over the rows whose label the model knows) beside ``accuracy``. Test
labels become names as in training (``str`` of each value); a number whose name the model
lacks is matched by its integral twin when that twin is a model label (``1.0`` → ``"1"``,
``1`` → ``"1.0"``), so float label arrays score as they should.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import progress
from .errors import DataError


def multiclass_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over label names (macro over the true labels present)."""
    from sklearn.metrics import accuracy_score, f1_score

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
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str), labels=list(labels))


def _few(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … (+{len(names) - limit})" if len(names) > limit else "")


_INTEGRAL_FLOAT = re.compile(r"[+-]?\d+\.0*")
_INTEGER = re.compile(r"[+-]?\d+")


def _twin(name: str) -> str | None:
    """The other spelling of an integral number: ``"1.0"`` → ``"1"``, ``"1"`` → ``"1.0"``; else None."""
    if _INTEGRAL_FLOAT.fullmatch(name):
        return str(int(float(name)))
    if _INTEGER.fullmatch(name):
        return f"{int(name)}.0"
    return None


def label_names(y: Any, known: Iterable[str] | None = None) -> np.ndarray:
    """Test labels as names, the way training names them (``str`` of each value).

    With ``known`` (the model's labels), a name the model lacks whose integral twin it has
    is replaced by the twin (floats ``1.0`` for the name ``"1"``, and the reverse); a name
    the model has is never changed.
    """
    names = np.asarray([str(v) for v in np.asarray(y).reshape(-1)], dtype=str)
    if known is None:
        return names
    known = set(known)
    alias = {}
    for n in set(names.tolist()) - known:
        twin = _twin(n)
        if twin is not None and twin in known:
            alias[n] = twin
    if alias:
        names = np.asarray([alias.get(n, n) for n in names.tolist()], dtype=str)
    return names


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


def _no_known_label(y_names: np.ndarray, model_labels: list[str]) -> DataError:
    """Why nothing can be scored, with the likeliest cause."""
    test = list(dict.fromkeys(y_names.tolist()))
    if all(_NUMBER.fullmatch(n) for n in test) and not any(_NUMBER.fullmatch(n) for n in model_labels):
        cause = (
            "the test labels are numbers but the model's labels are names: if y holds indices, "
            "map them to names first (e.g. np.asarray(names)[y])"
        )
    elif any(_FLOAT.fullmatch(n) for n in test):
        cause = "the test labels look like floats, which match none of the model's label names: give y as those names"
    else:
        cause = "check that this is the right test set and that y holds the label names the model was trained with"
    return DataError(
        f"none of the {len(y_names)} test labels is a label the model knows, so nothing can be scored: "
        f"test labels {_few(test)} vs model labels {_few(model_labels)}; {cause}."
    )


def evaluate(model: Any, x: Any, y: Any) -> dict[str, float]:
    """Metrics for a student (or any object with ``predict`` and ``kind``) on labeled data.

    Multiclass: ``accuracy`` and ``f1_macro`` over every row and ``n``; for a model with ``labels``
    also ``unknown_labels`` (rows whose true label the model does not know: they count as
    errors in ``accuracy``, with a warning) and ``accuracy_known`` (over the other rows).
    No known test label at all is a DataError.

    Multilabel and chain: ``y`` is a 0/1 matrix with the model's ``labels`` as columns, or one list
    of label names per row; returns ``subset_accuracy``, ``hamming_loss``, ``f1_micro``, ``f1_macro``, ``n``.
    Multitask: ``y`` as for multilabel (tasks as columns); returns ``accuracy_mean``, ``roc_auc_mean``,
    and ``accuracy`` and ``roc_auc`` per task.
    """
    if len(y) == 0:
        raise DataError("y is empty: give at least one labeled example to evaluate on.")
    kind = getattr(model, "kind", "multiclass")
    if kind in ("multilabel", "chain"):
        return _evaluate_multilabel(model, x, y)
    if kind == "multitask":
        return _evaluate_multitask(model, x, y)
    if kind != "multiclass":
        raise DataError(f"evaluation for {kind!r} students arrives with that family; this version has none.")
    y_arr = np.asarray(y)
    labels = getattr(model, "labels", None)
    model_labels = [str(v) for v in labels] if labels is not None else None
    y_names = label_names(y_arr, model_labels)
    known = np.isin(y_names, model_labels) if model_labels is not None else None
    if known is not None and not known.any():
        raise _no_known_label(y_names, model_labels)  # type: ignore[arg-type]
    pred = np.asarray(model.predict(x))
    if len(pred) != len(y_names):
        raise DataError(f"x has {len(pred)} rows but y has {len(y_names)} labels; give one label per row.")
    metrics: dict[str, float] = multiclass_metrics(y_names, pred)
    if known is None:
        return metrics
    n_unknown = int((~known).sum())
    metrics["unknown_labels"] = n_unknown
    from sklearn.metrics import accuracy_score

    metrics["accuracy_known"] = float(accuracy_score(y_names[known], pred.astype(str)[known]))
    if n_unknown:
        unknown, counts = np.unique(y_names[~known], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        shown = ", ".join(f"{str(unknown[i])!r} ({int(counts[i])} rows)" for i in order[:5])
        more = f", … (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        progress.warn(
            f"{n_unknown} of {len(y_names)} test rows have a label the model does not know: {shown}{more}. "
            f"They count as errors in accuracy ({metrics['accuracy']:.4f}); accuracy_known "
            f"({metrics['accuracy_known']:.4f}) scores only the {len(y_names) - n_unknown} rows it can get right. "
            f"Model labels: {_few(model_labels, 10)}."  # type: ignore[arg-type]
        )
    return metrics


def _evaluate_multilabel(model: Any, x: Any, y: Any) -> dict[str, float]:
    """Thesis Table 7's metrics for a multilabel model; ``y`` checked to be 0/1 over its labels."""
    from .kinds import multilabel_metrics, multilabel_targets

    truth = multilabel_targets(y, [str(v) for v in model.labels], "y")
    pred = np.asarray(model.predict(x))
    if len(pred) != len(truth):
        raise DataError(f"x has {len(pred)} rows but y has {len(truth)}; give one label row per example.")
    return multilabel_metrics(truth, pred)


def _evaluate_multitask(model: Any, x: Any, y: Any) -> dict[str, Any]:
    """Accuracy and ROC-AUC per task and their means; ``y`` a 0/1 matrix with the tasks as columns."""
    from .kinds import multilabel_targets, multitask_metrics

    truth = multilabel_targets(y, [str(v) for v in model.labels], "y")
    proba = np.asarray(model.predict_proba(x))
    if len(proba) != len(truth):
        raise DataError(f"x has {len(proba)} rows but y has {len(truth)}; give one row of task labels per example.")
    return multitask_metrics(truth, proba, [str(v) for v in model.labels])
