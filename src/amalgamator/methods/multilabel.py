"""Multi-label union baselines: ``bl``, ``kd-ml`` and ``calibrated-ml`` (SPEC Family C).

Teachers are multi-label classifiers (kinds ``multilabel`` and ``chain``): one logit per label, a
sigmoid per label, hard prediction σ(z) > 0.5 (thesis `000` §4.5.1, after Eq. 16). The student
covers the union of the teachers' labels and learns per-label targets with binary cross-entropy,
the loss of thesis Eq. 37 (averaged over labels and rows rather than summed over labels, a constant
factor).

- ``bl``, thesis §4.6 "Baseline (BL)": "The student is trained from the combined hard predictions
  from all teachers. We aggregate their predictions using majority voting. However, if the votes
  are even, we assume the instance is positive." Per union label, the vote runs among the teachers
  that know the label, so a label only one teacher knows takes that teacher's hard prediction.
- ``kd-ml``, thesis §4.6 "TC": "TC trains the student to imitate the weighted average logits among
  the teachers. With only unlabeled data available, such weights are set equally. If a label
  appears in one teacher, its logi[t] is used directly." Target σ(mean of the logits of the
  teachers that know the label); BCE to it. No temperature: the thesis gives none.
- ``calibrated-ml`` (ours, not from a paper; see :class:`CalibratedML`): kd-ml's per-label
  integration with every teacher first temperature-scaled label-free, and the *probabilities*
  (not the logits) averaged, so that one teacher with a large logit range cannot outvote the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import Context, Method, StudentOutput, place_in_union, register

FAMILY = "C: multi-label union"
MULTILABEL_KINDS = frozenset({"multilabel", "chain"})
THESIS = "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) Ch. 4"

#: per teacher, the union positions of its labels and its logits (rows, |Y_k|)
Parts = Sequence[tuple[torch.Tensor, torch.Tensor]]


def teacher_parts(ctx: Context) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(union positions, stored logits) of every teacher, the input of the pure functions below."""
    return [(ctx.positions(i), ctx.logits(i).float()) for i in range(len(ctx.teachers))]


def bce_to_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 37: binary cross-entropy of σ(logits) against per-label probabilities, mean over rows and labels."""
    return F.binary_cross_entropy_with_logits(logits, target)


def majority_vote(parts: Parts, n_union: int) -> torch.Tensor:
    """BL's target (thesis §4.6): per union label, the majority of the hard predictions σ(z) > 0.5 of the
    teachers that know it; a tie counts as positive. (rows, n_union) of 0./1."""
    n = len(parts[0][1])
    positive, voters = torch.zeros(n, n_union), torch.zeros(n_union)
    for pos, z in parts:
        positive[:, pos] += (z > 0).float()  # σ(z) > 0.5 ⇔ z > 0
        voters[pos] += 1
    return (2 * positive >= voters).float()  # ties (2·pos = voters) → positive


def mean_probability(probs: Parts, n_union: int) -> torch.Tensor:
    """Per union label, the mean of the probabilities of the teachers that know it (``probs`` as ``Parts``)."""
    n = len(probs[0][1])
    total, count = torch.zeros(n, n_union), torch.zeros(n_union)
    for pos, p in probs:
        total[:, pos] += p
        count[pos] += 1
    return total / count


def peer_votes(parts: Parts, n_union: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each teacher, its labels that another teacher also knows, as (its columns, the other teachers'
    mean hard vote on them (rows, shared)): the label-free reference :func:`peer_temperatures` fits to."""
    n = len(parts[0][1])
    votes, count = torch.zeros(n, n_union), torch.zeros(n_union)
    for pos, z in parts:
        votes[:, pos] += (z > 0).float()
        count[pos] += 1
    out = []
    for pos, z in parts:
        cols = (count[pos] > 1).nonzero().flatten()
        others = votes[:, pos[cols]] - (z[:, cols] > 0).float()
        out.append((cols, others / (count[pos[cols]] - 1)))
    return out


def fit_inverse_temperature(z: torch.Tensor, y: torch.Tensor, lo: float = 1e-2, hi: float = 1e2) -> float:
    """β = 1/T minimising the mean BCE of σ(β z) against soft targets ``y`` (Guo et al. 2017's temperature
    scaling with one parameter and no bias). The loss is convex in β, so its derivative mean((σ(βz) − y) z)
    rises with β: bisection on log β. A derivative of one sign over all of [lo, hi] gives that end (a teacher
    its peers never contradict would be made infinitely sharp; ``hi`` stops it)."""

    def slope(beta: float) -> float:
        return float(((torch.sigmoid(beta * z) - y) * z).mean())

    if slope(lo) >= 0:
        return lo
    if slope(hi) <= 0:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(60):
        mid = (a + b) / 2
        if slope(math.exp(mid)) < 0:
            a = mid
        else:
            b = mid
    return math.exp((a + b) / 2)


def peer_temperatures(parts: Parts, n_union: int) -> torch.Tensor:
    """(teachers,) temperature T_k per teacher, fitted on the labels it shares with other teachers against
    their mean hard vote; 1 for a teacher that shares no label (nothing label-free to fit it to)."""
    temps = []
    for (_, z), (cols, target) in zip(parts, peer_votes(parts, n_union), strict=True):
        temps.append(1.0 if len(cols) == 0 else 1.0 / fit_inverse_temperature(z[:, cols], target))
    return torch.tensor(temps)


def calibrated_target(parts: Parts, n_union: int) -> tuple[torch.Tensor, torch.Tensor]:
    """calibrated-ml's target and the temperatures: per label, the mean of σ(z_k / T_k) over the teachers
    that know it."""
    temps = peer_temperatures(parts, n_union)
    probs = [(pos, torch.sigmoid(z / t)) for (pos, z), t in zip(parts, temps.tolist(), strict=True)]
    return mean_probability(probs, n_union), temps


class MultiLabelMethod(Method):
    """Shared surface of the Family C methods: multi-label teachers, a per-label BCE student."""

    family = FAMILY
    kinds = MULTILABEL_KINDS

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return bce_to_target(out.logits, batch["target"])


@register
class BaselineVote(MultiLabelMethod):
    name = "bl"
    paper = f"{THESIS} §4.6: Baseline (BL), majority vote of the teachers' hard predictions"
    summary = "student learns the majority vote of the teachers' hard predictions per label (ties positive)"

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        target = majority_vote(teacher_parts(ctx), len(ctx.union))
        self.diagnostics = {"target": target}
        return {"target": target}


@register
class KDMultiLabel(MultiLabelMethod):
    name = "kd-ml"
    paper = f"{THESIS} §4.6: TC (the thesis's Ch. 3 Teacher Coordinator) without labels, equal teacher weights"
    summary = "student learns sigmoid of the mean logit of the teachers that know each label (BCE)"

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        target = torch.sigmoid(place_in_union(teacher_parts(ctx), len(ctx.union), "mean"))
        self.diagnostics = {"target": target}
        return {"target": target}


@register
class CalibratedML(MultiLabelMethod):
    """``calibrated-ml`` (ours, not from a paper): kd-ml with label-free per-teacher temperatures.

    kd-ml averages logits, so a teacher whose logits span ±50 outvotes one whose logits span ±10 on every
    shared label, whatever either one knows (the thesis's "overconfident teachers", §3.4, in multi-label form).
    Here each teacher k gets one temperature T_k, then per label the *probabilities* σ(z_k / T_k) of the
    teachers that know it are averaged, and the student learns that with BCE.

    **Choosing T_k without labels.** The first rule we tried, "mean σ(z/T) over the pool equals the teacher's
    hard positive rate mean[σ(z) > 0.5]", is degenerate: as T → 0 the mean probability tends to the hard
    rate for any teacher, and for every T > 0 it sits above it on a pool with fewer positives than negatives
    (measured on synthetic teachers: a gap of +0.047 at T = 1, +0.001 at T = 0.1, 0 only in the limit), so
    the rule sends every teacher to T → 0, i.e. to hard votes. The rule used instead is temperature
    scaling (Guo et al. 2017) with the *other teachers' hard votes* as labels: on the labels teacher k shares
    with others, T_k minimises the BCE of σ(z_k / T_k) against the mean hard vote of the other teachers that
    know the label. A teacher whose logits are 5× larger but who agrees with its peers as often gets a
    T_k 5× larger: the fit reads how often a teacher is contradicted, not how loud it is.

    Assumptions, plainly: at least some labels are shared (a teacher that shares none keeps T = 1); a peer's
    errors are independent of the teacher's, so every teacher is made somewhat less confident than it
    deserves (agreement = accuracy² + (1 − accuracy)² for two equally good teachers), equally for all,
    which softens targets but does not move who wins a disagreement. One scalar per teacher, as in
    temperature scaling: it carries over to the labels the teacher alone knows. T is clamped to [0.01, 100].
    """

    name = "calibrated-ml"
    paper = (
        "ours: per-teacher temperature scaling (Guo et al. 2017, On Calibration of Modern Neural Networks) "
        "fitted to the other teachers' hard votes on shared labels, then kd-ml's per-label mean (of probabilities)"
    )
    summary = "teachers temperature-scaled to agree with their peers on shared labels, probabilities averaged (BCE)"

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        target, temps = calibrated_target(teacher_parts(ctx), len(ctx.union))
        self.diagnostics = {"temperatures": temps, "target": target}
        return {"target": target}
