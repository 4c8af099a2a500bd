"""``propagate``: a few labeled rows route their neighbours, through the pool's own structure.

With one labeled row per class, training on those rows adds a few dozen examples to thousands; used
for *routing* they say much more, because rows of one class sit close together (Letters: 80 % of a
row's ten nearest pool neighbours share its class) while the teachers' confident mistakes do not
follow that structure. Label spreading of Zhou et al. 2004, "Learning with Local and Global
Consistency" (NeurIPS), §2, on a k-nearest-neighbour graph of the pool:

1. W: the symmetrised k-NN graph (``neighbours``) of the student's input features, reduced to at most
   64 principal components (keeps the neighbour search cheap on images) and standardised; sparse features
   (TF-IDF) instead by cosine distance on the sparse rows themselves (dense principal components of a
   vocabulary-wide matrix would cost what sparsity saves); S = D^{-1/2} W D^{-1/2}.
2. F* = (I − αS)^{-1} Y (their Eq. 1's fixed point; α = ``alpha``), Y the one-hot labeled rows, solved
   by conjugate gradients per class; each row's spread distribution f(y | x) = F*_y / Σ F*.
3. The target multiplies the spread labels with the teachers' evidence and renormalises:
   t(y | x) ∝ f(y | x)^γ · b(y | x) (γ = ``weight``), b the base method's target (``mahalanobis`` when
   every teacher carries feature statistics, else ``calibrated``); labeled rows learn their label.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..errors import MethodError
from ..rows import SparseRows, all_rows
from ..teachers import Teacher
from .base import Context, Count, Method, Positive, Range, StudentOutput, get_method, register, soft_cross_entropy


def knn_operator(features: Any, neighbours: int) -> Any:
    """S = D^{-1/2} W D^{-1/2} for the symmetrised k-NN graph of ``features`` (step 1), sparse. ``features``
    is a dense array, or a scipy sparse matrix whose neighbours are found by cosine distance as it is."""
    import scipy.sparse as sp
    from sklearn import config_context
    from sklearn.decomposition import PCA
    from sklearn.neighbors import kneighbors_graph

    k = min(neighbours, features.shape[0] - 1)
    if sp.issparse(features):
        with config_context(working_memory=128):  # MB of distances per chunk of rows: the graph stays small
            w = kneighbors_graph(features, k, mode="connectivity", metric="cosine", include_self=False)
    else:
        z = features.reshape(len(features), -1).astype(np.float64)
        if z.shape[1] > 64:
            z = PCA(64, random_state=0).fit_transform(z)
        z = (z - z.mean(0)) / np.maximum(z.std(0), 1e-9)
        w = kneighbors_graph(z, k, mode="connectivity", include_self=False)
    w = w.maximum(w.T)
    inv_sqrt = sp.diags(1 / np.sqrt(np.maximum(np.asarray(w.sum(1)).ravel(), 1e-12)))
    return inv_sqrt @ w @ inv_sqrt


def spread(s: Any, seeds: np.ndarray, seed_labels: np.ndarray, n_labels: int, alpha: float) -> np.ndarray:
    """Step 2: (rows, labels) spread label distributions, F* = (I − αS)^{-1} Y, rows normalised."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg

    a = sp.eye(s.shape[0]) - alpha * s
    f = np.zeros((s.shape[0], n_labels))
    for c in range(n_labels):
        y = np.zeros(s.shape[0])
        y[seeds[seed_labels == c]] = 1.0
        if y.any():
            f[:, c] = cg(a, y, rtol=1e-6, maxiter=300)[0]
    f = np.maximum(f, 0) + 1e-12
    return f / f.sum(1, keepdims=True)


@register
class Propagate(Method):
    name = "propagate"
    paper = (
        "ours: teachers' routing multiplied by label spreading from the labeled rows (Zhou et al. 2004, "
        "Learning with Local and Global Consistency, §2)"
    )
    family = "B: a few labels"
    summary = "spreads the few labeled rows over the pool's neighbour graph and uses them to route the teachers"
    uses_labels = "required"
    defaults = {"base": "auto", "neighbours": 10, "alpha": 0.99, "weight": 1.0}
    rules = {
        "base": Literal["auto", "calibrated", "mahalanobis"],
        "neighbours": Count,
        "alpha": Range(gt=0, lt=1),
        "weight": Positive,
    }

    def _base(self, teachers: list[Teacher]) -> Method:
        name = self.options["base"]
        if name == "auto":
            carried = all(getattr(t, "statistics", None) is not None for t in teachers)
            name = "mahalanobis" if carried else "calibrated"
        return get_method(name)()

    def pieces(self, teacher: Teacher) -> list[str]:
        return self._base([teacher]).pieces(teacher)

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        self._base(teachers).validate(teachers)

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        labeled = ctx.labeled
        if not labeled.any():
            raise MethodError("method 'propagate' spreads labeled rows: give labeled=(x, y) with at least one row.")
        base = self._base(ctx.teachers)
        evidence = base.prepare(ctx)["target"].double()
        feats = ctx.features
        feats = feats.matrix if isinstance(feats, SparseRows) else all_rows(feats).numpy()
        s = knn_operator(feats, int(self.options["neighbours"]))
        seeds = labeled.nonzero().flatten().numpy()
        spread_labels = torch.as_tensor(
            spread(s, seeds, ctx.y[labeled].numpy(), len(ctx.union), float(self.options["alpha"]))
        )
        target = spread_labels.pow(float(self.options["weight"])) * evidence
        target = target / target.sum(1, keepdim=True).clamp(min=1e-300)
        target[labeled] = torch.nn.functional.one_hot(ctx.y[labeled], len(ctx.union)).double()
        target = target.float()
        self.diagnostics = {**base.diagnostics, "target": target, "spread": spread_labels.float()}
        return {"target": target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)
