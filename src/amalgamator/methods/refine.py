"""``refine``: transductive refinement, alternating between the routing and a student trained on it.

A label-free routing is wrong on some rows in a way no single row shows; a student trained on the
whole pool smooths over the input space and disagrees with the isolated mistakes. Refinement after
the pseudo-label family (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning
Method for Deep Neural Networks", ICML workshop; Xie et al. 2020, "Self-training with Noisy Student
Improves ImageNet Classification", CVPR §2: a student trained on the teacher's soft targets becomes
the next round's labeller), adapted to amalgamation: the student never replaces the teachers, it
re-weights their routed target.

Round r = 1 … R, with the epoch budget split evenly over the rounds (total cost ≈ the base method's):

1. train the student on the current targets t_r (soft cross-entropy; t_1 is the base method's);
2. s(y | x) = the student's softmax on every pool row;
3. t_{r+1}(y | x) ∝ t_1(y | x) · s(y | x)^β (``power`` β), then balanced back to t_1's pool class mass
   with ``calibrated``'s step 4 (a per-class bias), so the refinement moves rows between classes
   without letting a class the student over-predicts swallow the pool.

The base is any method that produces a ``target`` in ``prepare`` (``calibrated`` by default,
``mahalanobis`` for teachers that carry statistics).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..teachers import Teacher
from .base import (
    Context,
    Count,
    Method,
    Positive,
    StudentOutput,
    Trainer,
    get_method,
    network_outputs,
    register,
    soft_cross_entropy,
)
from .calibrated import balance
from .semisupervised import _merge


@register
class Refine(Method):
    name = "refine"
    paper = (
        "ours: transductive refinement of a base routing by the student trained on it, after Lee 2013 "
        "(Pseudo-Label) and Xie et al. 2020, Self-training with Noisy Student Improves ImageNet Classification, §2"
    )
    family = "A: multi-class union"
    summary = "alternates training the student on the base method's targets and re-weighting them by its predictions"
    uses_labels = "optional"
    defaults = {"base": "calibrated", "rounds": 2, "power": 1.0}
    rules = {"base": Literal["calibrated", "mahalanobis"], "rounds": Count, "power": Positive}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.base = get_method(self.options["base"])()

    def pieces(self, teacher: Teacher) -> list[str]:
        return self.base.pieces(teacher)

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        self.base.validate(teachers)

    def run(self, ctx: Context, train: Trainer) -> Any:
        first = self.base.prepare(ctx)["target"].float()
        mass = first.mean(0)
        rounds = int(self.options["rounds"])
        per_round = max(1, int(ctx.config.epochs) // rounds)
        rows = np.arange(len(ctx))
        target, histories = first, []
        for r in range(rounds):
            stage = f"round-{r}" if r else ""
            histories.append(train({"target": target}, rows, stage=stage, epochs=per_round))
            if r == rounds - 1:
                break
            student = network_outputs(ctx.student.network, ctx.features).softmax(-1)
            target = balance(first * student.pow(float(self.options["power"])), mass)
            if ctx.y.ndim == 1 and ctx.labeled.any():  # labeled rows keep their label
                target[ctx.labeled] = torch.nn.functional.one_hot(ctx.y[ctx.labeled], len(ctx.union)).float()
        self.diagnostics = {**self.base.diagnostics, "target": target, "base_target": first}
        return _merge(histories)

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)
