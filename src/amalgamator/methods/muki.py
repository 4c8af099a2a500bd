"""MUKI: Model Uncertainty-aware Knowledge Integration (Li et al. 2022, paper `002`, §2.2).

The golden distribution over the union is T(y|x) = T_i(y|x) · T(y ∈ Y_i | x) (Eq. 2–3): a
teacher's prediction is right only in proportion to how likely x lies in its speciality.
MUKI estimates that from model uncertainty under Monte-Carlo dropout:

- Eq. 4–5: p̄_i = (1/K) Σ_k softmax(T_i(x; W_k)), K dropout-perturbed passes (store piece
  ``mc/k=K,p=p``; only dropout modules are in train mode, batch-norm stays in eval).
- Eq. 6: u_i = H(p̄_i), normalised by log|Y_i|.
- MUKI-Hard, Eq. 7–9: i* = argmin_i u_i / log|Y_i|; target = Pad(T_{i*}(x)).
- MUKI-Soft, Eq. 10–12: c_i = 1 − u_i / log|Y_i|; w = softmax(c / τ); target = Σ_i w_i Pad(T_i(x)).
- Re-weighting, Eq. 13–14: per-instance weight v(x) = c_max − c_second, normalised to mean 1
  over the batch (SPEC).

Pad uses the deterministic (eval-mode) teacher softmax T_i(x) (SPEC). Eq. 1 and 13 write
KL(S ‖ T), which is infinite against zero-padded targets; like the authors' code we train
with KL(T ‖ S), i.e. soft cross-entropy. A label named by several teachers receives the sum
of their weighted mass (SPEC). ``k=1`` is the paper's "w/o Monte-Carlo Dropout" ablation
(Table 2): a single deterministic forward pass, i.e. plain prediction entropy (Fig. 2, left). K > 1
needs dropout in every teacher (``needs``): a teacher without it is refused, and the ablation runs only when
asked for with ``k=1``, never as a silent fallback.
"""

from __future__ import annotations

import math

import torch

from ..progress import note
from ..store import LOGITS, mc_piece
from ..teachers import Teacher
from .base import Context, Count, Flag, Method, Positive, Range, StudentOutput, register, soft_cross_entropy


def normalised_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """Eq. 6 divided by log|Y_i|: entropy of each row in [0, 1]. A one-label teacher is certain (0)."""
    n_labels = probs.shape[1]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    return entropy / math.log(n_labels) if n_labels > 1 else torch.zeros_like(entropy)


def instance_weights(confidence: torch.Tensor) -> torch.Tensor:
    """Eq. 14: v(x) = c_max − c_second per row of (rows, teachers) confidences (1 for one teacher)."""
    if confidence.shape[1] < 2:
        return torch.ones(confidence.shape[0])
    top2 = confidence.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


class _MUKI(Method):
    family = "A: multi-class union"
    paper = (
        "Li et al. 2022, From Mimicking to Integrating: Knowledge Integration for Pre-Trained Language Models "
        "(Findings of EMNLP) §2.2"
    )
    defaults = {"k": 16, "p": 0.1, "tau": 0.2, "reweight": True, "mc_seed": 0}
    rules = {
        "k": Count,
        "p": Range(ge=0, lt=1),
        "tau": Positive,
        "reweight": Flag,
        "mc_seed": int,
    }

    #: K > 1 Monte-Carlo passes need dropout in every teacher; K = 1 (the ablation) needs only outputs
    needs = frozenset({"outputs", "dropout"})
    needs_note = "dropout for k > 1; k = 1 is the paper's ablation without Monte-Carlo dropout"

    def needs_of(self, teacher: Teacher) -> frozenset[str]:
        return self.needs if int(self.options["k"]) > 1 else frozenset({"outputs"})

    def variant_without(self, capability: str) -> str:
        if capability != "dropout":
            return ""
        return (
            "MUKI without Monte-Carlo dropout (one deterministic pass per teacher, the paper's own ablation, "
            "Table 2) runs when asked for: method_options={'k': 1}"
        )

    def _k(self, teacher: Teacher) -> int:
        return int(self.options["k"]) if teacher.has_dropout else 1

    def validate(self, teachers: list[Teacher]) -> None:
        self.check_kinds(teachers)
        self.refuse_single_label(teachers, "its uncertainty is 0: it would own every example")
        self.check_capabilities(teachers)  # K > 1 without dropout is refused, never silently K = 1
        if int(self.options["k"]) == 1:
            self.variant = (
                f"{self.name} with K = 1, asked for: MUKI without Monte-Carlo dropout (the paper's ablation, "
                "Table 2); the uncertainty is the entropy of one deterministic pass."
            )
            note(self.variant)

    def pieces(self, teacher: Teacher) -> list[str]:
        k = self._k(teacher)
        extra = [mc_piece(k, float(self.options["p"]), int(self.options["mc_seed"]))] if k > 1 else []
        return [LOGITS, *extra]

    def _mc_mean(self, ctx: Context, i: int) -> torch.Tensor:
        """Eq. 4–5: mean softmax over K dropout passes (K = 1: the deterministic softmax)."""
        t = ctx.teachers[i]
        k = self._k(t)
        if k == 1:
            return ctx.logits(i).softmax(-1)
        return ctx.outputs[i][mc_piece(k, float(self.options["p"]), int(self.options["mc_seed"]))]

    def _integrate(self, confidence: torch.Tensor, padded: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        n_teachers = len(ctx.teachers)
        uncertainty = torch.stack([normalised_uncertainty(self._mc_mean(ctx, i)) for i in range(n_teachers)], 1)
        confidence = 1.0 - uncertainty  # Eq. 10
        padded = []
        for i in range(n_teachers):  # Eq. 9: Pad(T_i(x)) with the deterministic teacher softmax
            full = torch.zeros(len(ctx), len(ctx.union))
            full[:, ctx.positions(i)] = ctx.logits(i).softmax(-1)
            padded.append(full)
        target = self._integrate(confidence, padded)
        self.diagnostics = {"uncertainty": uncertainty, "confidence": confidence}
        out = {"target": target}
        if self.options["reweight"]:
            out["weight"] = instance_weights(confidence)  # Eq. 14
        return out

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        weight = None
        if "weight" in batch:  # Eq. 13, weights normalised to mean 1 over the batch (SPEC)
            weight = batch["weight"] / batch["weight"].mean().clamp_min(1e-8)
        return soft_cross_entropy(batch["target"], out.logits, weight)


@register
class MUKIHard(_MUKI):
    name = "muki-hard"
    summary = "each example learns from the teacher with the lowest Monte-Carlo-dropout uncertainty"

    def _integrate(self, confidence: torch.Tensor, padded: list[torch.Tensor]) -> torch.Tensor:
        best = confidence.argmax(1)  # Eq. 7: argmin of normalised uncertainty = argmax of confidence
        stacked = torch.stack(padded, 1)  # (rows, teachers, union)
        return stacked[torch.arange(len(best)), best]  # Eq. 8


@register
class MUKISoft(_MUKI):
    name = "muki-soft"
    summary = "teachers' predictions weighted by softmax of Monte-Carlo-dropout confidence / τ"

    def _integrate(self, confidence: torch.Tensor, padded: list[torch.Tensor]) -> torch.Tensor:
        w = (confidence / float(self.options["tau"])).softmax(1)  # Eq. 11
        return sum(w[:, i : i + 1] * p for i, p in enumerate(padded))  # Eq. 12 (overlaps add up)
