"""Unifying Heterogeneous Classifiers (UHC).

Vongkulbhisal, Vinayavekhin & Visentini-Scarzanella (2019), "Unifying Heterogeneous
Classifiers with Distillation", as described in MUKI (`002`) §3.1 and the thesis (`000`)
§3.6: the student's union logits are split into each teacher's label subset; within each
subset the student's softmax is matched to that teacher's softmax by cross-entropy, and the
per-teacher losses are summed. No teacher's output is ever compared against labels it does
not know, which is what distinguishes UHC from KD over concatenated logits.
"""

from __future__ import annotations

import torch

from .base import Context, Method, Positive, StudentOutput, register, soft_cross_entropy


@register
class UHC(Method):
    name = "uhc"
    paper = (
        "Vongkulbhisal et al. 2019, Unifying Heterogeneous Classifiers with Distillation (CVPR); "
        "as the baseline in Li et al. 2022 (MUKI) §3.1 and Thadajarassiri 2023 §3.6"
    )
    family = "A: multi-class union"
    summary = "student's softmax restricted to each teacher's labels matches that teacher"
    defaults = {"tau": 1.0}
    rules = {"tau": Positive}

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        self._positions = [ctx.positions(i) for i in range(len(ctx.teachers))]
        tau = float(self.options["tau"])
        return {f"teacher_prob_{i}": (ctx.logits(i) / tau).softmax(-1) for i in range(len(ctx.teachers))}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        tau = float(self.options["tau"])
        total = out.logits.new_zeros(())
        for i, pos in enumerate(self._positions):
            total = total + soft_cross_entropy(batch[f"teacher_prob_{i}"], out.logits[:, pos] / tau)
        return (tau**2) * total
