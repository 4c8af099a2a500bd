"""Kinds: what a model's outputs mean (DESIGN.md, "Kinds").

The core knows kinds and no particular method. Each kind says how a model's outputs become
probabilities, which head a student of that kind needs, what ``predict`` returns, how user label
data becomes targets, and which metrics ``evaluate`` reports. Label spaces of every kind so far
unite by name (:meth:`LabelSpace.union`).

========== ============================ ============================ ==============================
kind       outputs                      student head                 ``predict``
========== ============================ ============================ ==============================
multiclass logits over exclusive labels linear, softmax              label names
multilabel one logit per label          linear, sigmoid per label    0/1 matrix, columns = labels
chain      as multilabel; also accepts  an order-free classifier     as multilabel
           a forced initial state       chain over the union

multitask  one binary head per task over   a backbone and one head per  0/1 matrix, columns = tasks
           a shared representation      union task (linear, sigmoid)
embedding  a vector per word (own        a meta-embedding table       vectors
           vocabulary and width)
========== ============================ ============================ ==============================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from .errors import DataError, MethodError

#: Every kind name a teacher may declare (the later families' kinds are accepted now, refused by methods).
KIND_NAMES = ("multiclass", "multilabel", "chain", "multitask", "embedding")


class Kind:
    """One kind of model output. Subclasses set ``name`` and override what differs."""

    name: ClassVar[str] = ""
    #: the kinds a student of this kind can learn from together (multilabel and chain mix)
    family: ClassVar[frozenset[str]] = frozenset()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, in_dim: int, n_labels: int, options: dict[str, Any] | None = None) -> nn.Module:
        """The student's union head on its backbone's features."""
        return nn.Linear(in_dim, n_labels)

    def head_spec(self, head: nn.Module) -> dict[str, Any] | None:
        """What ``student.json`` must record to rebuild the head (None: the weights' shapes suffice)."""
        return None

    def predict(self, proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class MultiClass(Kind):
    """Exclusive labels: softmax over the union, one label name per row."""

    name = "multiclass"
    family = frozenset({"multiclass"})

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def predict(self, proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        return np.asarray(list(labels), dtype=str)[proba.argmax(1)]


class MultiLabel(Kind):
    """Independent labels: a sigmoid per label, a 0/1 matrix per row set (columns = the labels)."""

    name = "multilabel"
    family = frozenset({"multilabel", "chain"})

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def predict(self, proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        return (proba > 0.5).astype(np.int64)


class Chain(MultiLabel):
    """An order-free classifier chain (thesis Ch. 4, Eq. 29–36): multilabel outputs, and a model that
    accepts a forced initial state ``init_probs``/``init_mask`` (ANT's Knowledge Transfer Module)."""

    name = "chain"

    def head(self, in_dim: int, n_labels: int, options: dict[str, Any] | None = None) -> nn.Module:
        from .models.chain import ChainHead

        return ChainHead(in_dim, n_labels, **(options or {}))

    def head_spec(self, head: nn.Module) -> dict[str, Any] | None:
        return {"in_dim": int(head.in_dim), "n_labels": int(head.n_labels), "hidden": int(head.hidden)}


class MultiTask(MultiLabel):
    """Binary tasks (thesis Ch. 5): one sigmoid head per task over a shared representation; as a
    multilabel model it predicts a 0/1 matrix, but it is scored per task (accuracy and ROC-AUC)."""

    name = "multitask"
    family = frozenset({"multitask"})


class Embedding(Kind):
    """Word vectors (thesis Ch. 2): a teacher is a word → vector table with its own vocabulary and width;
    the student is a meta-embedding table (:class:`amalgamator.metaembedding.MetaEmbedding`), whose
    ``vectors(words)`` is its prediction and whose metrics are word-similarity Spearman and analogies."""

    name = "embedding"
    family = frozenset({"embedding"})

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise MethodError("an embedding gives vectors, not probabilities.")

    def predict(self, proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        return proba


KINDS: dict[str, Kind] = {k.name: k for k in (MultiClass(), MultiLabel(), Chain(), MultiTask(), Embedding())}


def get_kind(name: str) -> Kind:
    """The kind called ``name``; a later family's kind says it has no students yet."""
    if name in KINDS:
        return KINDS[name]
    if name in KIND_NAMES:
        raise MethodError(f"kind {name!r} has no methods or students in this version; kinds with them: {list(KINDS)}.")
    raise DataError(f"kind {name!r} is unknown; use one of {list(KINDS)}.")


def teacher_kinds(teachers: Sequence[Any]) -> set[str]:
    """The set of kinds the teachers declare, refused when they cannot share one student."""
    kinds = {t.kind for t in teachers}
    families = {name: get_kind(name).family for name in kinds}
    for a in kinds:
        for b in kinds:
            if b not in families[a]:
                who = {k: [t.name for t in teachers if t.kind == k] for k in sorted(kinds)}
                raise MethodError(
                    f"teachers of kinds {sorted(kinds)} cannot be amalgamated into one student ({who}); "
                    "amalgamate each kind separately."
                )
    return kinds


def multilabel_targets(y: Any, labels: Sequence[str], what: str = "y") -> np.ndarray:
    """User label data for a multilabel model as a 0/1 matrix with one column per name in ``labels``.

    Accepts a 0/1 matrix whose columns follow ``labels`` (``student.labels``, the union's order), or one
    collection of label names per row (the row's positive labels)."""
    labels = [str(v) for v in labels]
    if isinstance(y, (list, tuple)) and (not y or not np.isscalar(y[0])) and _is_name_sets(y):
        index = {name: j for j, name in enumerate(labels)}
        out = np.zeros((len(y), len(labels)), dtype=np.int64)
        unknown = sorted({str(v) for row in y for v in row} - set(index))
        if unknown:
            raise DataError(
                f"{what} names labels the model does not have: {unknown[:5]}; its labels are {labels[:10]}"
                f"{' …' if len(labels) > 10 else ''}."
            )
        for i, row in enumerate(y):
            out[i, [index[str(v)] for v in row]] = 1
        return out
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[1] != len(labels):
        raise DataError(
            f"{what} must be a 0/1 matrix with one column per label ({len(labels)}: {labels[:6]}"
            f"{' …' if len(labels) > 6 else ''}) or one list of label names per row; got shape {arr.shape}."
        )
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold 0/1 numbers, not {arr.dtype} values.")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        values = sorted({float(v) for v in arr[bad].ravel()[:50]})
        raise DataError(
            f"{what} must hold only 0 and 1 (one column per label), but has {int(bad.sum())} other values, "
            f"e.g. {values[:5]}; threshold probabilities first (y > 0.5)."
        )
    return arr.astype(np.int64)


def _is_name_sets(y: Iterable[Any]) -> bool:
    """One collection of label names (strings) per row."""
    return all(isinstance(row, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in row) for row in y)


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Thesis Table 7's four: subset accuracy (1 − subset loss), Hamming loss, F1 micro and macro."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    if y_true.shape != y_pred.shape:
        raise DataError(f"y has shape {y_true.shape} but the predictions have shape {y_pred.shape}.")
    return {
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }


def multitask_metrics(y_true: np.ndarray, proba: np.ndarray, tasks: Sequence[str]) -> dict[str, Any]:
    """Thesis Table 10's figures: accuracy and ROC-AUC per task (threshold 0.5) and their means. A task
    whose test rows are all one class has no ROC-AUC (None), and the mean skips it."""
    from sklearn.metrics import roc_auc_score

    if y_true.shape != proba.shape:
        raise DataError(f"y has shape {y_true.shape} but the predictions have shape {proba.shape}.")
    acc = {t: float(((proba[:, j] > 0.5) == (y_true[:, j] == 1)).mean()) for j, t in enumerate(tasks)}
    auc: dict[str, float | None] = {}
    for j, t in enumerate(tasks):
        both = len(np.unique(y_true[:, j])) == 2
        auc[t] = float(roc_auc_score(y_true[:, j], proba[:, j])) if both else None
    scored = [v for v in auc.values() if v is not None]
    return {
        "accuracy_mean": float(np.mean(list(acc.values()))),
        "roc_auc_mean": float(np.mean(scored)) if scored else None,
        "accuracy": acc,
        "roc_auc": auc,
        "n": int(len(y_true)),
    }
