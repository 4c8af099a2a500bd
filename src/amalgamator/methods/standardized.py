"""Logit-standardised knowledge distillation over the union of teachers' labels.

Sun et al. (2024), "Logit Standardization in Knowledge Distillation" (CVPR), Algorithm 1
("Z-score logit standardization pre-process in knowledge distillation"): before the softmax of
the KD loss, the teacher's and the student's logit vectors are each standardised per example,

    Z(v; τ) = (v − mean(v)) / (std(v) · τ),

with a base temperature τ, so that the student matches the teacher's logit *relations* instead
of their range and variance (the paper's point: one temperature shared by teacher and student
forces the student to reproduce the teacher's logit scale). The loss is then plain KD on the
standardised logits, τ² · KL(softmax(Z(t; τ)) ‖ softmax(Z(s; τ))), without the labels' cross-
entropy term of the paper (amalgamation here is label-free). The equation numbers of the paper
were not available when this was written; the definitions above are the paper's Algorithm 1.

What this module does with several teachers over different label sets (``kd-std``):

1. Each teacher k's logits z_k (one row per example, over its own labels Y_k) are z-scored over
   Y_k alone: ẑ_k = (z_k − mean(z_k)) / max(std(z_k), 1e-6) / τ. Standardising per teacher, not
   over the union, is the paper's recipe applied to each teacher as the network it is: a
   teacher's logits are only defined on its own labels, and the scale of one teacher must not
   rescale another. std is the population standard deviation (divide by |Y_k|, the textbook
   z-score); the clamp keeps a constant row (and a one-label teacher) finite: it becomes all 0.
2. The ẑ_k are placed side by side in union order, a label named by several teachers taking the
   mean of their standardised logits, exactly as ``kd`` does with raw logits
   (:func:`base.place_in_union`). The soft target is softmax of that union row. Note that the
   union row itself is not re-standardised: it is a concatenation of standardised pieces.
3. The student's union logits s are z-scored over the whole union the same way,
   ŝ = (s − mean(s)) / max(std(s), 1e-6) / τ, and the loss is
   τ² · mean_rows KL(softmax(ẑ) ‖ softmax(ŝ)) (Hinton's τ² gradient scaling, as in ``kd``).

A consequence worth knowing when comparing: z-scoring removes each teacher's logit scale, so a
teacher's confidence reaches the target only through the shape of its logit vector (the largest
z-score of a |Y_k|-vector is at most sqrt(|Y_k| − 1)), not through how large its logits are.
"""

from __future__ import annotations

import torch

from .base import Context, Method, Positive, StudentOutput, place_in_union, register

#: smallest standard deviation a logit row is divided by (a constant row standardises to zeros)
MIN_STD = 1e-6


def zscore(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Per row: (z − mean(z)) / (max(std(z), 1e-6) · τ), std the population standard deviation."""
    centred = logits - logits.mean(-1, keepdim=True)
    std = logits.std(-1, keepdim=True, correction=0).clamp_min(MIN_STD)
    return centred / std / tau


def standardized_union_logits(ctx: Context, tau: float = 1.0) -> torch.Tensor:
    """Each teacher's logits z-scored over its own labels (and divided by τ), placed in union order
    (a label named by several teachers: the mean)."""
    parts = [(ctx.positions(i), zscore(ctx.logits(i), tau)) for i in range(len(ctx.teachers))]
    return place_in_union(parts, len(ctx.union), "mean")


def kd_std_loss(target_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """τ² · mean_rows KL(softmax(target) ‖ softmax(Z(student; τ))); ``target`` is already standardised."""
    t = target_logits.log_softmax(-1)
    s = zscore(student_logits, tau).log_softmax(-1)
    return (tau**2) * (t.exp() * (t - s)).sum(-1).mean()


@register
class KDStandardized(Method):
    name = "kd-std"
    paper = "Sun et al. 2024, Logit Standardization in Knowledge Distillation (CVPR), Algorithm 1"
    family = "A: multi-class union"
    summary = (
        "KD on z-scored logits: each teacher standardised over its own labels, the student over the union "
        "(overlaps: mean)"
    )
    defaults = {"tau": 1.0}
    rules = {"tau": Positive}

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {"target_logits": standardized_union_logits(ctx, float(self.options["tau"]))}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return kd_std_loss(batch["target_logits"], out.logits, float(self.options["tau"]))
