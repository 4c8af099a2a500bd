"""Adaptive Knowledge Amalgamation (AKA), the multi-label baseline of thesis `000` §4.6 (SPEC Family C).

What the thesis says, all of it (§4.6, "Compared Methods"): "AKA [93]: This method first trains an
individual network for each label, acting as a student, from the teacher that is most confident in
predicting such label. Then it trains one final student to combine all such networks, using them as
teachers. At each stage, these teachers' features and the student's feature are trained to be as most
similar." [93] is Shen, Xue, Wang, Song, Sun & Song (ICCV 2019), "Customizing Student Networks From
Heterogeneous Teachers via Adaptive Knowledge Amalgamation"; §5.2 adds that [93] makes "the corresponding
layers of the teachers and the student [...] similar through a transfer bridge" and uses "dual-stage
training by firstly training one student model per each individual task".

Where the thesis is vague, the simplest faithful choice, written down:

1. **Most confident teacher** (stage 1's target), per row and per label: among the teachers that know
   label j, the one whose probability p = σ(z) is farthest from 0.5, i.e. the largest |p − 0.5| (for one
   binary label this is the least ambiguous prediction, the selection rule of [93]); a tie keeps the
   teacher that comes first. The target is that teacher's probability p.
2. **Stage 1, one network per union label**: the student's architecture with a one-output head
   (``ctx.fresh_network(1)``), trained with BCE to the chosen teacher's p (Eq. 37's loss for one label).
   Its feature term: a *transfer bridge* per teacher, a linear map from the network's penultimate
   feature to that teacher's tapped feature (``Teacher(features=...)``, the last tap, flattened), and
   on every row the MSE between the bridged feature and the feature of the teacher chosen for that row.
   Rows whose chosen teacher has no feature tap add no feature term; with no taps at all stage 1 learns
   the predictions only (a warning says so).
3. **Stage 2, the student**: BCE to every label network's probability σ(N_j(x)), plus a transfer bridge
   per label network (linear, student feature → N_j's penultimate feature) and the MSE between bridged
   student feature and N_j's feature, averaged over the labels.
4. **Which features**: the final (penultimate) feature only. [93] matches several layers and needs
   teachers and student of equal depth; the thesis's wording ("these teachers' features and the
   student's feature") and its heterogeneous teachers leave one feature per network.
5. **Weights**: loss = BCE + λ · feature term at both stages, λ = ``feature_weight`` (default 1: the
   thesis gives no weight, so both terms count equally).

The label networks (and their training histories) are kept on the method instance (``label_networks``,
``label_histories``) for inspection; the student
does not need them after training. ``label_epochs`` sets stage 1's epochs (default: the run's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..progress import warn
from ..rows import RowView
from ..teachers import Teacher
from .base import Context, Count, Method, NonNegative, StudentOutput, Trainer, register
from .multilabel import FAMILY, MULTILABEL_KINDS, THESIS, Parts, bce_to_target, teacher_parts


def most_confident(parts: Parts, n_union: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row and union label, the probability of the teacher (among those that know the label) with the
    largest |σ(z) − 0.5|, and that teacher's index; ties keep the earlier teacher. Both (rows, n_union)."""
    n = len(parts[0][1])
    best = torch.full((n, n_union), -1.0)
    target = torch.zeros(n, n_union)
    chosen = torch.full((n, n_union), -1, dtype=torch.long)
    for k, (pos, z) in enumerate(parts):
        p = torch.sigmoid(z)
        conf = (p - 0.5).abs()
        better = conf > best[:, pos]
        best[:, pos] = torch.where(better, conf, best[:, pos])
        target[:, pos] = torch.where(better, p, target[:, pos])
        chosen[:, pos] = torch.where(better, torch.full_like(chosen[:, pos], k), chosen[:, pos])
    return target, chosen


@torch.no_grad()
def logits_and_features(
    net: nn.Module, x: torch.Tensor | RowView, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode logits and flattened penultimate features of ``net`` on every row of ``x``, a batch at a time
    (a row view is never densified whole)."""
    net.eval()
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        lg, f = net.forward_features(x[i : i + batch_size])
        logits.append(lg)
        feats.append(f.flatten(1))
    return torch.cat(logits), torch.cat(feats)


class LabelNetworkObjective(Method):
    """Stage 1's loss for the network of one label: BCE to the chosen teacher's probability, plus λ · the
    MSE between the bridged feature and the chosen teacher's feature (teachers with a tap only)."""

    name = "aka-label-network"

    def __init__(self, bridges: nn.ModuleDict, feature_weight: float):
        super().__init__()
        self.bridges = bridges  # key: str(teacher index)
        self.feature_weight = feature_weight

    def modules(self) -> nn.Module | None:
        return self.bridges

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        loss = bce_to_target(out.logits[:, 0], batch["target"])
        if self.feature_weight and len(self.bridges):
            chosen, f = batch["chosen"], out.features.flatten(1)
            err = out.logits.new_zeros(())
            for key, bridge in self.bridges.items():
                rows = chosen == int(key)
                if rows.any():
                    err = err + (bridge(f[rows]) - batch[f"teacher_feature_{key}"][rows]).pow(2).mean(1).sum()
            loss = loss + self.feature_weight * err / len(chosen)
        return loss


@register
class AKA(Method):
    name = "aka"
    paper = (
        f"{THESIS} §4.6: AKA, after Shen et al. 2019, Customizing Student Networks From Heterogeneous "
        "Teachers via Adaptive Knowledge Amalgamation (ICCV)"
    )
    family = FAMILY
    summary = "a network per label learns from its most confident teacher; the student learns from those networks"
    kinds = MULTILABEL_KINDS
    defaults = {"feature_weight": 1.0, "label_epochs": None}
    rules = {"feature_weight": NonNegative, "label_epochs": Count | None}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.bridges: nn.Module | None = None
        self.label_networks: list[nn.Module] = []
        self.label_histories: list[Any] = []

    def pieces(self, teacher: Teacher) -> list[str]:
        return self.tapped_pieces(teacher)

    def teacher_features(self, ctx: Context) -> dict[int, torch.Tensor]:
        """Each tapped teacher's last feature tap on every row, flattened: {teacher index: (rows, D_k)}."""
        return {i: self.tap(ctx, i).float().flatten(1) for i, t in enumerate(ctx.teachers) if t.features}

    def run(self, ctx: Context, train: Trainer) -> Any:
        """Stage 1: a network per union label; stage 2: the student from all of them."""
        w = float(self.options["feature_weight"])
        epochs = self.options["label_epochs"]
        rows = self.train_rows(ctx)
        target, chosen = most_confident(teacher_parts(ctx), len(ctx.union))
        feats = self.teacher_features(ctx)
        if w and not feats:
            warn(
                "aka: no teacher has a feature tap, so the label networks learn the teachers' predictions only; "
                "give Teacher(..., features='<module path>') to match features at both stages (thesis §4.6)."
            )
        width = math.prod(ctx.student_shapes()["features"])
        owners = ctx.owners
        probs, label_feats, self.label_networks, self.label_histories = [], [], [], []
        for j in range(len(ctx.union)):
            mine = [k for k in feats if bool(owners[k, j])] if w else []
            bridges = nn.ModuleDict({str(k): nn.Linear(width, feats[k].shape[1]) for k in mine})
            targets = {"target": target[:, j].contiguous(), "chosen": chosen[:, j].contiguous()}
            targets.update({f"teacher_feature_{k}": feats[k] for k in mine})
            net = ctx.fresh_network(1)
            history = train(targets, rows, stage=f"aka-label-{j:03d}", network=net,
                            objective=LabelNetworkObjective(bridges, w), epochs=epochs)  # fmt: skip
            logit, f = logits_and_features(net, ctx.features)
            probs.append(torch.sigmoid(logit[:, 0]))
            label_feats.append(f)
            self.label_networks.append(net)
            self.label_histories.append(history)
        label_target = torch.stack(probs, 1)
        label_features = torch.stack(label_feats, 1)  # (rows, labels, width)
        self.bridges = nn.Linear(width, len(ctx.union) * label_features.shape[2]) if w else None
        self.diagnostics = {"teacher_target": target, "chosen": chosen, "target": label_target}
        return train({"target": label_target, "label_features": label_features}, rows)

    def modules(self) -> nn.Module | None:
        return self.bridges

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        loss = bce_to_target(out.logits, batch["target"])
        w = float(self.options["feature_weight"])
        if w:
            assert self.bridges is not None, "run() builds the transfer bridges before training"
            want = batch["label_features"]
            got = self.bridges(out.features.flatten(1)).view_as(want)
            loss = loss + w * (got - want).pow(2).mean()
        return loss
