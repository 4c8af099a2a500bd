"""Feature statistics a teacher carries from its own training data: where its classes live.

A teacher that never saw a class is often confidently wrong on it, and nothing in its outputs on the
pool says so (max-probability, energy and input-noise stability separate own from foreign rows with
an AUROC near 0.74 on Letters). What does separate them is the teacher's *training distribution*:
class-conditional Gaussians with a tied covariance in a feature space, the generative model behind
the Mahalanobis detector of Lee et al. 2018 ("A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", Eq. 1: μ_c and a shared Σ estimated on the
training rows). They are a few kilobytes, computed in one pass where the training data lives, and
reveal no row; the team that trained the teacher ships them with it, as a network with batch norm
already ships running means and variances.

The space is a feature tap of a torch teacher (its penultimate layer by default), or the teacher's
(preprocessed) input for teachers without taps (scikit-learn, ONNX, callables on numeric data).
Classes are the teacher's own predictions unless labels are given, so the owner needs no labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Inputs
from .errors import AmalgamatorError, DataError, first_line
from .io import file_problem

#: the space name of statistics computed on a teacher's (preprocessed) input rather than a feature tap
INPUT = "input"


@dataclass
class FeatureStatistics:
    """Per-class means and a tied within-class covariance of one teacher's training rows, in ``space``."""

    space: str  # a feature tap path of the teacher, or "input"
    labels: list[str]  # the teacher's labels, in its order; a class unseen in the data has count 0
    means: torch.Tensor  # (classes, dims) float64
    covariance: torch.Tensor  # (dims, dims) float64, tied across classes
    counts: torch.Tensor  # (classes,) rows per class

    @property
    def dims(self) -> int:
        return int(self.means.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file (tensors, and the space and labels as metadata)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"space": self.space, "labels": json.dumps(self.labels), "format": "amalgamator-statistics-1"}
        tensors = {"means": self.means.contiguous(), "covariance": self.covariance.contiguous(),
                   "counts": self.counts.contiguous()}  # fmt: skip
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStatistics:
        """Read a file written by :meth:`save`; a file that is not one, or whose parts do not fit together
        (shapes, labels, NaN), gets a :class:`~amalgamator.errors.DataError` naming it. Nothing is unpickled."""
        from safetensors import safe_open

        path = Path(path)
        fix = "recompute it with am.fit_statistics and save it again"
        problem = file_problem(path)
        if problem:
            raise DataError(f"cannot read the statistics file {str(path)!r}: {problem}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as exc:  # safetensors raises several types for a corrupt or foreign file
            raise DataError(f"{path} is not a readable statistics file ({first_line(exc)}); {fix}.") from None
        if meta.get("format") != "amalgamator-statistics-1" or set(tensors) != {"means", "covariance", "counts"}:
            raise DataError(f"{path} is a safetensors file but not teacher statistics from am.fit_statistics.")

        def bad(detail: str) -> DataError:
            return DataError(f"{path}: the teacher statistics are damaged: {detail}; {fix}.")

        try:
            labels = json.loads(meta.get("labels", ""))
        except (ValueError, RecursionError):
            raise bad("their label list is not valid JSON") from None
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
            raise bad("their label list is not a list of label names")
        space = meta.get("space")
        if not isinstance(space, str) or not space:
            raise bad("they name no feature space")
        means, cov, counts = tensors["means"], tensors["covariance"], tensors["counts"]
        for name, t in tensors.items():
            if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
                raise bad(f"{name} has dtype {t.dtype}, not numbers")
        if means.ndim != 2 or means.shape[0] != len(labels) or means.shape[1] < 1:
            raise bad(f"means have shape {tuple(means.shape)}, not ({len(labels)} labels, dims)")
        dims = means.shape[1]
        if tuple(cov.shape) != (dims, dims):
            raise bad(f"the covariance has shape {tuple(cov.shape)}, not ({dims}, {dims})")
        if tuple(counts.shape) != (len(labels),):
            raise bad(f"counts have shape {tuple(counts.shape)}, not ({len(labels)},)")
        means, cov, counts = means.double(), cov.double(), counts.double()
        for name, t in (("means", means), ("covariance", cov), ("counts", counts)):
            if not torch.isfinite(t).all():
                raise bad(f"{name} hold NaN or infinite values")
        if (counts < 0).any():
            raise bad("counts are negative")
        return cls(space, labels, means, cov, counts)


def default_space(teacher: Any) -> str:
    """The teacher's last feature tap if it has one, else its input."""
    taps = list(getattr(teacher, "features", None) or [])
    return taps[-1] if taps else INPUT


def teacher_features(teacher: Any, x: Any, space: str, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features as (rows, dims) float) of ``teacher`` on ``x`` in ``space``, batch by batch."""
    inputs = x if isinstance(x, Inputs) else Inputs(x, what="x")
    if space != INPUT and space not in (getattr(teacher, "features", None) or []):
        raise AmalgamatorError(
            f"teacher {teacher.name!r} has no feature tap {space!r}; its taps: {list(teacher.features or [])} "
            f"(give one with Teacher(..., features=...), or use space={INPUT!r})."
        )
    logits = teacher.logits(inputs, batch_size=batch_size)
    if space == INPUT:
        return logits, input_matrix(teacher, inputs)
    source, prepared = teacher.source(inputs)
    feats = [teacher.run(b, features=True, prepared=prepared)[1][space] for b in source.batches(batch_size)]
    return logits, torch.cat(feats).flatten(1).double()


def input_matrix(teacher: Any, inputs: Inputs) -> torch.Tensor:
    """The teacher's view of ``inputs`` as a numeric (rows, dims) matrix: its featurizer's output when
    it preprocesses (text encoders), else the rows themselves."""
    source, prepared = teacher.source(inputs) if hasattr(teacher, "source") else (inputs, False)
    rows = source.take(slice(0, len(source))) if prepared else inputs.take(slice(0, len(inputs)))
    try:
        return torch.as_tensor(np.asarray(rows, dtype=np.float64)).flatten(1)
    except (TypeError, ValueError) as exc:
        raise AmalgamatorError(
            f"teacher {teacher.name!r}: its inputs are not numeric ({exc}); input statistics need numeric rows "
            "or a teacher with a feature tap."
        ) from exc


def fit_statistics(
    teacher: Any, x: Any, y: Any = None, space: str | None = None, batch_size: int = 256
) -> FeatureStatistics:
    """Class means and the tied covariance of ``teacher``'s features on its own training rows ``x``.

    Classes are ``y`` (the teacher's labels) when given, else the teacher's own predictions. Sets and
    returns ``teacher.statistics``; save it with ``.save(path)`` to ship beside the teacher.
    """
    space = space or default_space(teacher)
    logits, h = teacher_features(teacher, x, space, batch_size)
    labels = [str(v) for v in teacher.labels]
    if y is None:
        cls = logits.argmax(1)
    else:
        y = [str(v) for v in np.asarray(y).tolist()]
        unknown = sorted(set(y) - set(labels))
        if unknown:
            raise AmalgamatorError(
                f"fit_statistics: labels {unknown[:5]} are not among teacher {teacher.name!r}'s labels {labels}; "
                "give the rows of the teacher's own classes (its training data)."
            )
        if len(y) != len(h):
            raise AmalgamatorError(f"fit_statistics: {len(y)} labels for {len(h)} rows.")
        cls = torch.as_tensor([labels.index(v) for v in y])
    if len(h) < 2:
        raise AmalgamatorError("fit_statistics needs at least two rows of the teacher's training data.")
    counts = torch.bincount(cls, minlength=len(labels)).double()
    onehot = torch.nn.functional.one_hot(cls, len(labels)).double()
    means = (onehot.T @ h) / counts.clamp(min=1)[:, None]
    centred = h - means[cls]
    covariance = centred.T @ centred / max(len(h) - int((counts > 0).sum()), 1)
    stats = FeatureStatistics(space, labels, means, covariance, counts)
    if hasattr(teacher, "attach_statistics"):
        teacher.attach_statistics(stats)
    else:
        teacher.statistics = stats
    return stats


def gaussian_log_density(
    h: torch.Tensor, means: torch.Tensor, covariance: torch.Tensor, weights: torch.Tensor | None = None,
    floor: float = 1e-6,
) -> torch.Tensor:  # fmt: skip
    """log Σ_c w_c N(h; μ_c, Σ) per row, up to the constant −d/2·log 2π (it cancels in ratios taken in one
    space). Σ's eigenvalues are floored at ``floor`` × the largest, so directions that never varied in
    training (dead units) score a foreign row far away instead of dividing by zero."""
    evals, evecs = torch.linalg.eigh(covariance)
    evals = evals.clamp(min=floor * float(evals.max().clamp(min=1e-12)))
    half_logdet = 0.5 * evals.log().sum()
    proj_h = h @ evecs
    proj_m = means @ evecs
    scaled_h, scaled_m = proj_h / evals.sqrt(), proj_m / evals.sqrt()
    dist = torch.cdist(scaled_h, scaled_m).pow(2)  # (rows, classes) squared Mahalanobis distances
    w = weights if weights is not None else torch.full((len(means),), 1 / len(means), dtype=h.dtype)
    return torch.logsumexp(-0.5 * dist + w.clamp(min=1e-300).log(), 1) - half_logdet
