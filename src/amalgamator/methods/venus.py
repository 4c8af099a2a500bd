"""Multi-task union (SPEC Family D): ``venus``, and the baselines ``must`` and ``kd-mt``.

Thesis `000` Ch. 5 (AmalMTH). Every task is binary; a multi-task teacher j has shared layers ending in its
*final shared representation* F_c^j (Eq. 38, the teacher's feature tap) and one head per task giving a
logit ℓ_k^j (Eq. 39–40). The student is a backbone H producing the common feature F_s (Eq. 41–43, the
student's penultimate feature) and one sigmoid head per union task, q_k = σ(ℓ_k) (Eq. 47–49).

- Consensus target (Eq. 50), shared by all three: p_k = σ(mean of the logits of the teachers that know
  task k); a task one teacher knows takes σ of its own logit (:func:`consensus_target`).
- Task loss (Eq. 51): BCE(q_k, p_k), averaged over tasks and rows. The thesis prints only −p_k log q_k;
  SPEC settles it as the binary cross-entropy (the printed term alone is minimised by q_k → 1).
- ``venus``, Feature Consolidator (§5.5.2): per teacher j an adaptor F̂_c^j = ReLU(W^j F_s + b^j) (Eq. 45),
  feature loss (1/m) Σ_j MSE(F̂_c^j, F_c^j) (Eq. 46, :func:`feature_loss`); total loss Eq. 52 =
  feature loss + task loss, with equal weights: the thesis gives no coefficient between the two terms,
  so neither do we. The adaptors train with the student (``modules()``) and are dropped afterwards
  ("these adaptors can be removed at the inference time"): they never enter the student network, so a
  saved student holds none of their weights.
- ``must`` (thesis §5.6 baseline, after Ghiasi et al. 2021, MuST): pseudo-labels, the hard 0/1
  consensus [p_k > 0.5], learned with BCE.
- ``kd-mt`` (thesis §5.6 baseline "KD"): BCE to p_k, no feature loss (= ``venus`` without Eq. 46).

F_c^j of shape (C, H, W) (a convolutional teacher) is global-average-pooled to a C-vector, and a sequence
(L, d) is averaged over its L positions, so every adaptor is one linear layer + ReLU as Eq. 45 writes it
(W^j maps F_s to the teacher's width). Pooling happens once, in ``prepare``, on the stored taps; the
alternative (an adaptor producing the full C·H·W map) would need a weight matrix H·W times larger for
spatial detail the student's vector F_s does not have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MethodError
from ..teachers import Teacher
from .base import Context, Method, StudentOutput, place_in_union, register
from .multilabel import Parts, bce_to_target, teacher_parts

FAMILY = "D: multi-task union"
MULTITASK_KINDS = frozenset({"multitask"})
THESIS = "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) Ch. 5"


def consensus_target(parts: Parts, n_union: int) -> torch.Tensor:
    """Eq. 50: p_k = σ(mean of the logits of the teachers that know task k), (rows, n_union)."""
    return torch.sigmoid(place_in_union(parts, n_union, "mean"))


def pool_feature(f: torch.Tensor) -> torch.Tensor:
    """A teacher's final shared representation as one vector per row: (B, d) as is, (B, L, d) averaged
    over positions, (B, C, H, W) global-average-pooled over H, W."""
    if f.ndim == 2:
        return f
    if f.ndim == 3:
        return f.mean(1)
    if f.ndim == 4:
        return f.mean((2, 3))
    raise MethodError(
        f"a teacher's feature tap has per-row shape {tuple(f.shape[1:])}; venus reads vectors (d,), "
        "sequences (L, d) or maps (C, H, W): tap the teacher's final shared layer."
    )


class FeatureConsolidator(nn.Module):
    """Eq. 45: one adaptor per teacher, F̂_c^j = ReLU(W^j F_s + b^j), from the student's width to teacher j's."""

    def __init__(self, student_dim: int, teacher_dims: Sequence[int]):
        super().__init__()
        self.adaptors = nn.ModuleList(nn.Linear(student_dim, d) for d in teacher_dims)

    def forward(self, f_s: torch.Tensor) -> list[torch.Tensor]:
        return [F.relu(a(f_s)) for a in self.adaptors]


def feature_loss(adapted: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 46: (1/m) Σ_j MSE(F̂_c^j, F_c^j), each MSE a mean over rows and feature entries (the widths of
    the teachers may differ, so each teacher weighs the same whatever its width)."""
    terms = [F.mse_loss(a, t) for a, t in zip(adapted, teacher_features, strict=True)]
    return torch.stack(terms).mean()


def venus_loss(
    adapted: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 52 with the thesis's equal weights: feature loss (Eq. 46) + task loss (Eq. 51 as BCE). Returns
    (total, feature loss)."""
    feat = feature_loss(adapted, teacher_features)
    return feat + bce_to_target(logits, target), feat


class MultiTaskMethod(Method):
    """Shared surface of Family D: multi-task teachers, one sigmoid head per union task, BCE to ``target``."""

    family = FAMILY
    kinds = MULTITASK_KINDS

    def target(self, ctx: Context) -> torch.Tensor:
        return consensus_target(teacher_parts(ctx), len(ctx.union))

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        target = self.target(ctx)
        self.diagnostics = {"target": target}
        return {"target": target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return bce_to_target(out.logits, batch["target"])  # Eq. 51 (BCE, SPEC)


@register
class KDMultiTask(MultiTaskMethod):
    name = "kd-mt"
    paper = (
        "Hinton et al. 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531), "
        f"as the KD baseline of {THESIS} §5.6"
    )
    summary = "student learns sigmoid of the mean logit of the teachers that know each task (BCE), no features"


@register
class MuST(MultiTaskMethod):
    name = "must"
    paper = (
        "Ghiasi et al. 2021, Multi-Task Self-Training for Learning General Representations (ICCV), "
        f"as the MuST baseline of {THESIS} §5.6"
    )
    summary = "student learns the teachers' hard consensus pseudo-labels per task (p > 0.5, BCE)"

    def target(self, ctx: Context) -> torch.Tensor:
        return (super().target(ctx) > 0.5).float()


@register
class VENUS(MultiTaskMethod):
    """VENUS (thesis §5.5): the task loss of ``kd-mt`` plus the Feature Consolidator's feature loss.

    Each teacher needs a feature tap on its final shared layer. ``feature_log`` keeps the feature loss
    (Eq. 46) of every training step, to see the student's F_s being pulled toward the teachers'.
    """

    name = "venus"
    paper = f"{THESIS} §5.5: Versatile Common Feature Consolidator (VENUS), Eq. 45–52"
    summary = "per-teacher adaptors pull the student's feature toward each teacher's shared layer, plus BCE"
    needs = frozenset({"outputs", "features"})  # a tap on each teacher's final shared layer
    tap_layer = "final shared layer"

    def __init__(self, **options):
        super().__init__(**options)
        self.consolidator: FeatureConsolidator | None = None
        self.feature_log: list[float] = []

    def pieces(self, teacher: Teacher) -> list[str]:
        return self.tapped_pieces(teacher)

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        targets = super().prepare(ctx)
        feats = [pool_feature(self.tap(ctx, i).float()) for i in range(len(ctx.teachers))]
        (student_dim,) = ctx.student_shapes()["features"]  # the student's F_s is a flattened vector
        self.consolidator = FeatureConsolidator(student_dim, [f.shape[1] for f in feats])
        self.feature_log = []
        targets.update({f"venus_feature_{j}": f for j, f in enumerate(feats)})
        return targets

    def modules(self) -> nn.Module | None:
        return self.consolidator

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        assert self.consolidator is not None, "prepare() builds the adaptors before training"
        teacher_features = [batch[f"venus_feature_{j}"] for j in range(len(self.consolidator.adaptors))]
        total, feat = venus_loss(self.consolidator(out.features), teacher_features, out.logits, batch["target"])
        self.feature_log.append(float(feat.detach()))
        return total
