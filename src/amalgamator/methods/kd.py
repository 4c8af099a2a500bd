"""Vanilla knowledge distillation over the union of teachers' labels.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", as used for
amalgamation in MUKI (`002`) §3.1 and the thesis (`000`) §3.6. The soft target is the
softmax over the union of the teachers' logits placed side by side (SPEC Family A: a label
named by several teachers takes the mean of their logits). The student minimises
τ² · KL(softmax(z/τ) ‖ softmax(s/τ)) (Hinton's Eq. 2 gradient scaling).
"""

from __future__ import annotations

import torch

from .base import Context, Method, Positive, StudentOutput, register, union_logits


def kd_loss(target_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """τ² · mean_rows KL(softmax(target/τ) ‖ softmax(student/τ))."""
    t = (target_logits / tau).log_softmax(-1)
    s = (student_logits / tau).log_softmax(-1)
    return (tau**2) * (t.exp() * (t - s)).sum(-1).mean()


@register
class KD(Method):
    name = "kd"
    paper = (
        "Hinton et al. 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531); "
        "as the baseline in Li et al. 2022 (MUKI) §3.1"
    )
    family = "A: multi-class union"
    summary = "student mimics the softmax of the teachers' logits concatenated over the union"
    defaults = {"tau": 1.0}
    rules = {"tau": Positive}

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {"target_logits": union_logits(ctx, "mean")}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return kd_loss(batch["target_logits"], out.logits, float(self.options["tau"]))
