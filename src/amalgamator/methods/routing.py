"""Routing by out-of-distribution scores: each example learns from the one teacher whose OOD
score says the example is most in-distribution for it.

Both methods score every teacher on every example from its stored logits z_k (over its own labels
Y_k), give the example to the teacher with the best score (its "owner"; a tie goes to the teacher
listed first), and build the target as the owner's softmax placed on its labels in the union,
zeros elsewhere:

    target_j = softmax(z_{k*})_j   for union label j named by teacher k*,   0 otherwise.

The student learns it with soft cross-entropy, −Σ_j target_j log softmax(s)_j
(:func:`base.soft_cross_entropy`; equal to KL(target ‖ student) up to a constant). The target is
the teacher's plain (T = 1) softmax in both methods; only the routing differs.

- ``max-logit``: Hendrycks et al. (2022), "Scaling Out-of-Distribution Detection for Real-World
  Settings" (ICML), the MaxLogit score: S_k(x) = max_{y ∈ Y_k} z_{k,y}(x), the negative of the
  paper's anomaly score −max_y z_y. Owner: argmax_k S_k(x).
- ``energy``: Liu et al. (2020), "Energy-based Out-of-distribution Detection" (NeurIPS), the free
  energy score of a classifier's logits, E_k(x; T) = −T · log Σ_{y ∈ Y_k} exp(z_{k,y}(x) / T) (option
  ``temperature`` is the paper's T, default 1; the paper's equation numbers were not at hand when
  this was written, so none are cited). Lower energy means more in-distribution
  (the paper flags x as OOD when −E is below a threshold), so the owner is argmin_k E_k(x).

The two rules differ when one teacher has one large logit and another has several moderately
large ones: max-logit prefers the single peak, energy the mass of the whole row (logsumexp is a
soft maximum that adds log(number of near-maximal logits)).

These are the published scores, used as baselines exactly as published. Neither was designed to
compare *different* networks: S_k and E_k live on each teacher's own logit scale, and
logsumexp grows with the number of labels (by up to log|Y_k| at uniform logits), so a teacher
with many labels, or with large logits, tends to win examples regardless of whether it knows
their class. No correction for |Y_k| or for scale is made here; the ``calibrated`` method exists
for that.
"""

from __future__ import annotations

import torch

from .base import Context, Method, Positive, StudentOutput, register, soft_cross_entropy


def routed_target(ctx: Context, owner: torch.Tensor) -> torch.Tensor:
    """(rows, union): each row's owner's softmax placed on the owner's labels, zeros elsewhere."""
    target = torch.zeros(len(ctx), len(ctx.union))
    for i in range(len(ctx.teachers)):
        rows = (owner == i).nonzero().flatten()
        if len(rows):
            pos = ctx.positions(i)
            target[rows[:, None], pos[None, :]] = ctx.logits(i)[rows].softmax(-1)
    return target


class _Routing(Method):
    family = "A: multi-class union"

    def scores(self, ctx: Context) -> torch.Tensor:
        """(rows, teachers): how in-distribution each row is for each teacher (higher: more)."""
        raise NotImplementedError

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        scores = self.scores(ctx)
        owner = scores.argmax(1)  # torch's argmax returns the first maximum: ties go to the first teacher
        self.diagnostics = {"score": scores, "owner": owner}
        return {"target": routed_target(ctx, owner)}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """MaxLogit score per row: the largest logit (higher: more in-distribution)."""
    return logits.max(-1).values


def free_energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """E(x; T) = −T · logsumexp(z / T) per row (lower: more in-distribution)."""
    return -temperature * torch.logsumexp(logits / temperature, -1)


@register
class MaxLogitRouting(_Routing):
    name = "max-logit"
    paper = (
        "Hendrycks et al. 2022, Scaling Out-of-Distribution Detection for Real-World Settings (ICML), "
        "the MaxLogit score"
    )
    summary = "each example learns the softmax of the teacher with the largest maximum logit"

    def scores(self, ctx: Context) -> torch.Tensor:
        return torch.stack([max_logit(ctx.logits(i)) for i in range(len(ctx.teachers))], 1)


@register
class EnergyRouting(_Routing):
    name = "energy"
    paper = "Liu et al. 2020, Energy-based Out-of-distribution Detection (NeurIPS), the free-energy score"
    summary = "each example learns the softmax of the teacher with the lowest free energy −T·logsumexp(z/T)"
    defaults = {"temperature": 1.0}
    rules = {"temperature": Positive}

    def scores(self, ctx: Context) -> torch.Tensor:
        t = float(self.options["temperature"])
        return torch.stack([-free_energy(ctx.logits(i), t) for i in range(len(ctx.teachers))], 1)
