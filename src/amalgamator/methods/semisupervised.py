"""The thesis's semi-supervised baselines (`000` §3.6, "Compared Methods"), SPEC Family B.

- ``sup`` (SupLSTM): the student trained on the few labeled examples D_l alone.
- ``selftrain`` (the thesis's [86]): train on D_l, then repeatedly add the unlabeled examples
  the student predicts with confidence ≥ ``threshold`` (default 0.9) as pseudo-labeled rows and
  train on, for at most ``rounds`` rounds (default 5) or until no new row passes. Added rows keep
  their pseudo-label, as in classic self-training.
- ``supkd``: the KD loss (Hinton 2015) on D_l ∪ D_u plus cross-entropy on D_l, equal weights.
- ``supuhc``: the UHC loss (Vongkulbhisal 2019) on D_l ∪ D_u plus cross-entropy on D_l.

Training on a handful of rows gives one batch per epoch, so ``sup`` and ``selftrain`` take at
least ``min_steps`` optimiser steps per stage (see :func:`~amalgamator.methods.base.epochs_for`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Context, Range, Steps, StudentOutput, Trainer, epochs_for, network_outputs, register
from .kd import KD
from .reference import Supervised
from .uhc import UHC

FAMILY_B = "B: semi-supervised multi-class union"


def labeled_cross_entropy(batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
    """Cross-entropy over the batch's labeled rows (y ≥ 0); zero when the batch has none."""
    mask = batch["y"] >= 0
    if not bool(mask.any()):
        return out.logits.new_zeros(())
    return F.cross_entropy(out.logits[mask], batch["y"][mask])


@register
class Sup(Supervised):
    name = "sup"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "§3.6: SupLSTM baseline"
    )
    family = FAMILY_B
    summary = "the student trained on the few labeled examples alone"
    defaults = {"min_steps": 300}
    rules = {"min_steps": Steps}

    def run(self, ctx: Context, train: Trainer):
        rows = self.train_rows(ctx)
        epochs = epochs_for(len(rows), ctx.config.batch_size, ctx.config.epochs, int(self.options["min_steps"]))
        return train(self.prepare(ctx), rows, epochs=epochs)


@register
class SelfTrain(Supervised):
    name = "selftrain"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "§3.6: SelfTrain baseline, after "
        "Rosenberg et al. 2005, Semi-Supervised Self-Training of Object Detection Models (WACV/MOTION)"
    )
    family = FAMILY_B
    summary = "train on the labels, then add confident pseudo-labels of the pool, round after round"
    defaults = {"threshold": 0.9, "rounds": 5, "min_steps": 300}
    rules = {"threshold": Range(gt=0, le=1), "rounds": Steps, "min_steps": Steps}

    def run(self, ctx: Context, train: Trainer):
        y = ctx.y.clone()
        threshold, min_steps = float(self.options["threshold"]), int(self.options["min_steps"])
        added_per_round: list[int] = []
        histories = []
        for rnd in range(int(self.options["rounds"]) + 1):
            rows = (y >= 0).nonzero().flatten().numpy()
            epochs = epochs_for(len(rows), ctx.config.batch_size, ctx.config.epochs, min_steps)
            histories.append(train({"y": y.clamp_min(0)}, rows, stage=f"round-{rnd}" if rnd else "", epochs=epochs))
            if rnd == int(self.options["rounds"]):
                break
            new = self._confident_unlabeled(ctx, y, threshold)
            added_per_round.append(len(new[0]))
            if not len(new[0]):
                break
            y[new[0]] = new[1]
        self.diagnostics = {"pseudo_labeled": torch.as_tensor(added_per_round), "final_y": y}
        return _merge(histories)

    @staticmethod
    def _confident_unlabeled(ctx: Context, y: torch.Tensor, threshold: float) -> tuple[np.ndarray, torch.Tensor]:
        """Rows still unlabeled whose predicted class has probability ≥ threshold, and that class."""
        rest = (y < 0).nonzero().flatten()
        if not len(rest):
            return np.array([], dtype=np.int64), torch.zeros(0, dtype=torch.long)
        conf, pred = network_outputs(ctx.student.network, ctx.features, rows=rest).softmax(-1).max(1)
        keep = conf >= threshold
        return rest[keep].numpy(), pred[keep]


def _merge(histories: list):
    """One History for a run made of several engine passes (losses and times in order)."""
    merged = histories[-1]
    if len(histories) > 1:
        merged = type(merged)(
            loss=[v for h in histories for v in h.loss],
            seconds=[v for h in histories for v in h.seconds],
            resumed_from=histories[0].resumed_from,
        )
    return merged


class _PlusLabeledCrossEntropy:
    """Mixin: the parent method's loss on every row plus cross-entropy on the labeled rows."""

    uses_labels = "required"

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {**super().prepare(ctx), "y": ctx.y}  # type: ignore[misc]

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return super().loss(batch, out) + labeled_cross_entropy(batch, out)  # type: ignore[misc]


@register
class SupKD(_PlusLabeledCrossEntropy, KD):
    name = "supkd"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "§3.6: SupKD baseline"
    )
    family = FAMILY_B
    summary = "KD on all rows plus cross-entropy on the labeled rows"


@register
class SupUHC(_PlusLabeledCrossEntropy, UHC):
    name = "supuhc"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "§3.6: SupUHC baseline"
    )
    family = FAMILY_B
    summary = "UHC on all rows plus cross-entropy on the labeled rows"
