"""Teacher Coordinator (TC): semi-supervised knowledge amalgamation, thesis (`000`) Ch. 3, §3.5.

Step 1, the Teacher Trust Learner (TTL, §3.5.1): a network of the student's architecture (an
LSTM for sequences, Eq. 6) with one sigmoid output per teacher, e = σ(W_a h_a + b_a) (Eq. 7),
trained on the few labeled examples D_l as a multi-label problem: the target for teacher k is
1 iff the true label is in Y_k. Loss: binary cross-entropy (Eq. 9; the thesis prints the
second term as (1−1_{T_k}) log(e_k), a typo for (1−1_{T_k}) log(1−e_k), see SPEC Family B).

Step 2, the Knowledge Amalgamator (§3.5.2): trust P(y ∈ Y_k | X) = softmax(e) over teachers
(Eq. 8); teacher k's softmax is P(y_j | y_j ∈ Y_k, X) (Eq. 10); the surrogate target is
P(y_j | X) = Σ_{k: y_j ∈ Y_k} P(y_j | y_j ∈ Y_k, X) · P(y ∈ Y_k | X) (Eq. 11), renormalised to
sum to 1. The student (Eq. 12–13) is trained on D_l ∪ D_u with cross-entropy to that target
(Eq. 14). The thesis uses the surrogate target on labeled rows too (``tc``); ``tc+labels`` uses
the true one-hot target there instead and the surrogate elsewhere.

Eq. 8 applies a softmax to sigmoid outputs, which lie in [0, 1], so trust is never sharper than
e/(e + 1) ≈ 0.73 between two teachers; that is the paper's formula and the default. The option
``trust="normalized"`` uses e_k / Σ e instead (sharper), for ablation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MethodError
from ..progress import warn
from ..rows import RowView
from .base import (
    Context,
    Count,
    Method,
    Positive,
    Steps,
    StudentOutput,
    Trainer,
    epochs_for,
    network_outputs,
    register,
    soft_cross_entropy,
)


class TrustLearning(Method):
    """The TTL's own training objective (Eq. 9, corrected), driven by the same engine as students."""

    name = "teacher-trust-learner"

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.logits, batch["expert"])


def expert_targets(ctx: Context) -> torch.Tensor:
    """(rows, teachers) multi-hot: 1 where the row's true label is one of teacher k's labels."""
    owners = ctx.owners.float()  # (teachers, union)
    return owners[:, ctx.y.clamp_min(0)].T.contiguous()


def train_trust_learner(ctx: Context, train: Trainer, epochs: int, lr: float, min_steps: int) -> nn.Module:
    """Step 1: fit a fresh student-architecture network to the labeled rows' expert targets, through the
    engine's ``train`` (its own checkpoints under ``out/trust/``)."""
    rows = ctx.labeled.nonzero().flatten().numpy()
    net = ctx.fresh_network(len(ctx.teachers))
    epochs = epochs_for(len(rows), ctx.config.batch_size, epochs, min_steps)
    train({"expert": expert_targets(ctx)}, rows, stage="trust", epochs=epochs, network=net,
          objective=TrustLearning(), lr=lr)  # fmt: skip
    return net


def trust_scores(net: nn.Module, features: torch.Tensor | RowView) -> torch.Tensor:
    """e = σ(W_a h_a + b_a) for every row (Eq. 7)."""
    return torch.sigmoid(network_outputs(net, features))


def amalgamated_target(ctx: Context, trust: torch.Tensor) -> torch.Tensor:
    """Eq. 11: Σ_k P(y_j | y_j ∈ Y_k, X) · P(y ∈ Y_k | X) over the union, renormalised."""
    target = torch.zeros(len(ctx), len(ctx.union))
    for k in range(len(ctx.teachers)):
        target[:, ctx.positions(k)] += ctx.logits(k).softmax(-1) * trust[:, k : k + 1]
    return target / target.sum(1, keepdim=True).clamp_min(1e-12)


def check_labeled_cover(ctx: Context, method: str) -> None:
    """TC learns whom to trust from D_l alone: refuse no labels, warn about teachers it never sees."""
    if not bool(ctx.labeled.any()):
        raise MethodError(f"method {method!r} learns whom to trust from labeled examples: pass labeled=(x, y).")
    seen = expert_targets(ctx)[ctx.labeled].sum(0)
    for k in (seen == 0).nonzero().flatten().tolist():
        warn(
            f"no labeled example belongs to teacher {ctx.teachers[k].name!r}'s labels; "
            "the trust learner will learn never to trust it. Label a few examples of its classes."
        )


@register
class TeacherCoordinator(Method):
    name = "tc"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "Ch. 3 §3.5: Teacher Coordinator, Eq. 6–14"
    )
    family = "B: semi-supervised multi-class union"
    summary = "trust learner on the few labels weights each teacher per example; student mimics the blend"
    uses_labels = "required"
    defaults = {"ttl_epochs": 50, "ttl_lr": None, "min_steps": 300, "trust": "softmax"}
    rules = {
        "ttl_epochs": Count,
        "ttl_lr": Positive | None,
        "min_steps": Steps,
        "trust": Literal["softmax", "normalized"],
    }
    #: whether labeled rows train on their true one-hot label instead of the surrogate target
    true_labels_on_labeled = False

    def run(self, ctx: Context, train: Trainer) -> Any:
        """Train the trust learner (Eq. 9), then the student on the amalgamated target (Eq. 14)."""
        check_labeled_cover(ctx, self.name)
        lr = float(self.options["ttl_lr"] or ctx.config.lr)  # default: the student's learning rate
        ttl = train_trust_learner(ctx, train, int(self.options["ttl_epochs"]), lr, int(self.options["min_steps"]))
        return train(self.targets(ctx, ttl), self.train_rows(ctx))

    def targets(self, ctx: Context, ttl: nn.Module) -> dict[str, torch.Tensor]:
        """The per-row targets once the trust learner is trained (Eq. 7, 8, 10-11)."""
        e = trust_scores(ttl, ctx.features)
        trust = e.softmax(-1) if self.options["trust"] == "softmax" else e / e.sum(1, keepdim=True).clamp_min(1e-12)
        target = amalgamated_target(ctx, trust)
        if self.true_labels_on_labeled:
            lab = ctx.labeled
            target[lab] = F.one_hot(ctx.y[lab], len(ctx.union)).float()
        self.diagnostics = {"trust": trust, "expert_score": e, "target": target}
        self.trust_learner = ttl
        return {"target": target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)  # Eq. 14


@register
class TeacherCoordinatorLabels(TeacherCoordinator):
    name = "tc+labels"
    summary = "tc, but labeled rows train on their true label instead of the surrogate target"
    true_labels_on_labeled = True


def trust_by_class(trust: torch.Tensor | np.ndarray, y: np.ndarray, classes: list[str]) -> np.ndarray:
    """Mean trust per teacher for each true class, (classes, teachers): did the TTL learn whom to trust?"""
    trust = np.asarray(trust)
    return np.stack([trust[y == c].mean(0) if (y == c).any() else np.full(trust.shape[1], np.nan) for c in classes])
