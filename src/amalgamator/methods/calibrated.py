"""``calibrated``: temperature-calibrated, prior-balanced teacher integration (ours, not from a paper).

Every label-free method decides, per unlabeled example, which teacher to believe, and fails when
a teacher is confidently wrong on classes it never saw (an "overconfident" teacher, thesis §3.4).
This method corrects the two symptoms without labels:

1. **Temperatures.** A calibrated teacher k owning a share π_k of the pool would be (nearly)
   certain on its own examples and near-uniform on foreign ones, so its mean top probability on
   the pool would be m_k = π_k · c + (1 − π_k) / |Y_k| (c = ``own_confidence``, default 1; for two
   balanced 5-class teachers, 0.5 · 1 + 0.5 · 1/5 = 0.6). We fit T_k so that the mean over the
   pool of max_y softmax(z_k / T_k) equals m_k (bisection; the top probability falls as T grows).
2. **Integration.** P(y | x) = Σ_{k: y ∈ Y_k} P(k | x) p_k(y | x; T_k), the form of TC's Eq. 11
   with a label-free gate P(k | x) ∝ π_k · e_k(x), where e_k(x) = (top_k − 1/|Y_k|) / (1 − 1/|Y_k|) is
   the calibrated teacher's excess confidence: after step 1 a teacher that recognises x answers
   sharply and one that does not answers flatly, on a scale comparable across label-set sizes.
3. **Shares, jointly.** π_k = the integrated (and balanced) posterior's pool mass on teacher k's
   labels (a label named by several teachers splits its mass evenly); iterate shares →
   temperatures → posterior until the shares stop moving. Initial shares: proportional to |Y_k|.
4. **Prior balancing.** A per-class bias b is added to log P and fitted until the pool-average
   prediction equals a class prior q: ``"uniform"`` over the union, a ``{label: p}`` dict from the
   user, or ``"em"``, the pool prior estimated by EM as in Saerens, Latinne & Decaestecker (2002),
   assuming the integrated model's own prior is uniform. This drains "sink" classes that absorb
   foreign examples. ``"none"`` switches it off.

The student learns the resulting soft targets with cross-entropy, as in KD.

Assumptions, plainly: the teachers are good on their own classes (c ≈ 1); a foreign example
should leave a teacher unsure; the pool's classes are (for ``"uniform"``) roughly balanced. When a
teacher is genuinely unsure on its own classes, lower ``own_confidence``; when the pool is skewed,
use ``prior="em"`` or give the prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import MethodError
from ..progress import warn
from ..teachers import Teacher
from .base import Context, Count, Flag, Method, NonNegative, Range, StudentOutput, register, soft_cross_entropy


def top_probability(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean over rows of the largest softmax probability at ``temperature``."""
    return float((logits / temperature).softmax(-1).max(1).values.mean())


def fit_temperature(logits: torch.Tensor, target: float, lo: float = 1e-2, hi: float = 1e3) -> float:
    """T such that the mean top probability of softmax(logits / T) is ``target`` (bisection on log T).

    The mean top probability falls monotonically from ~1 (T → 0) to 1/|Y| (T → ∞); targets outside
    the reachable range give the nearest end.
    """
    if logits.shape[1] < 2:
        return 1.0
    a, b = math.log(lo), math.log(hi)
    for _ in range(60):
        mid = (a + b) / 2
        if top_probability(logits, math.exp(mid)) > target:
            a = mid
        else:
            b = mid
    return math.exp((a + b) / 2)


def expected_top(share: float, n_labels: int, own_confidence: float = 1.0) -> float:
    """Mean top probability of a calibrated teacher owning ``share`` of the pool (step 1)."""
    return share * own_confidence + (1 - share) / n_labels


def excess_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(top − 1/|Y|) / (1 − 1/|Y|) per row, in [0, 1]: 0 for a uniform answer, 1 for a certain one
    (1 for a one-label teacher), comparable across teachers with different numbers of labels."""
    n = probs.shape[1]
    if n < 2:
        return torch.ones(len(probs))
    return ((probs.max(1).values - 1 / n) / (1 - 1 / n)).clamp(0, 1)


def integrate(probs: Sequence[torch.Tensor], positions: Sequence[torch.Tensor], shares: torch.Tensor,
              n_union: int) -> torch.Tensor:  # fmt: skip
    """Step 2: P(y|x) = Σ_k P(k|x) p_k(y|x) over the union, with P(k|x) ∝ π_k · e_k(x), e_k the
    calibrated teacher's excess confidence (a teacher that recognises x answers sharply)."""
    gate = torch.stack([excess_confidence(p) for p in probs], 1)
    gate = gate.clamp_min(1e-12)
    gate = gate / gate.sum(1, keepdim=True)
    out = torch.zeros(len(probs[0]), n_union)
    for k, (p, pos) in enumerate(zip(probs, positions, strict=True)):
        out[:, pos] += gate[:, k : k + 1] * p
    return out / out.sum(1, keepdim=True).clamp_min(1e-12)


def pool_shares(posterior: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """Step 3: each teacher's share of the pool's predicted mass (shared labels split evenly)."""
    mass = posterior.mean(0)  # (n_union,)
    split = owners.float() / owners.float().sum(0, keepdim=True).clamp_min(1)
    return (split * mass).sum(1)


def balance(posterior: torch.Tensor, prior: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """Step 4: softmax(log P + b) with the per-class bias b fitted so the pool mean equals ``prior``."""
    log_p = posterior.clamp_min(1e-12).log()
    b = torch.zeros(posterior.shape[1])
    log_q = prior.clamp_min(1e-12).log()
    for _ in range(iterations):
        mean = (log_p + b).softmax(-1).mean(0)
        step = log_q - mean.clamp_min(1e-12).log()
        b = b + step
        if float(step.abs().max()) < 1e-6:
            break
    return (log_p + b).softmax(-1)


def em_prior(posterior: torch.Tensor, model_prior: torch.Tensor | None = None, iterations: int = 500) -> torch.Tensor:
    """Saerens et al. (2002) EM: the class prior of a pool, given posteriors made under ``model_prior``
    (default uniform). E-step: P'(y|x) ∝ P(y|x) q(y)/q0(y); M-step: q = mean_x P'(y|x)."""
    q0 = model_prior if model_prior is not None else torch.full((posterior.shape[1],), 1 / posterior.shape[1])
    q = q0.clone()
    for _ in range(iterations):
        adjusted = posterior * (q / q0)
        adjusted = adjusted / adjusted.sum(1, keepdim=True).clamp_min(1e-12)
        new = adjusted.mean(0)
        if float((new - q).abs().max()) < 1e-7:
            return new
        q = new
    return q


@dataclass
class Calibration:
    """What the fit found: the soft targets and the quantities the diagnostics report."""

    target: torch.Tensor  # (rows, union)
    temperatures: torch.Tensor  # (teachers,)
    shares: torch.Tensor  # (teachers,)
    prior: torch.Tensor | None  # (union,) the prior balanced to, or None
    iterations: int
    collapsed: bool = False  # prior="em" and its estimate collapsed onto a few classes


def em_collapsed(prior: torch.Tensor | None, n_labels: int) -> bool:
    """Whether an EM prior estimate collapsed: some class got less than a tenth of a uniform share."""
    return prior is not None and float(prior.min()) < 0.1 / n_labels


def prior_vector(prior: Any, labels: Sequence[str], posterior: torch.Tensor) -> torch.Tensor | None:
    """The class prior the ``prior`` option names, over the union ``labels``."""
    if prior in (None, "none", False):
        return None
    if prior == "uniform":
        return torch.full((len(labels),), 1 / len(labels))
    if prior == "em":
        return em_prior(posterior)
    if isinstance(prior, dict):
        unknown = sorted(set(map(str, prior)) - set(labels))
        missing = [lb for lb in labels if lb not in prior]
        if unknown or missing:
            raise MethodError(
                f"calibrated prior names {unknown or 'no'} unknown labels and misses {missing or 'none'}; "
                f"give a probability for every union label: {list(labels)}."
            )
        q = torch.tensor([float(prior[lb]) for lb in labels])
        if (q < 0).any() or float(q.sum()) <= 0:
            raise MethodError("calibrated prior probabilities must be ≥ 0 and not all 0.")
        return q / q.sum()
    raise MethodError(f"calibrated option prior must be 'uniform', 'em', 'none' or a {{label: p}} dict; got {prior!r}.")


def calibrate(
    logits: Sequence[torch.Tensor],
    positions: Sequence[torch.Tensor],
    owners: torch.Tensor,
    labels: Sequence[str],
    temperature: bool = True,
    prior: Any = "uniform",
    own_confidence: float = 1.0,
    iterations: int = 20,
    warn_collapse: bool = True,
) -> Calibration:
    """Steps 1–4 on a pool's stored teacher logits; see the module docstring. A collapsed EM prior is
    flagged in the result (and warned about unless ``warn_collapse=False``)."""
    sizes = torch.tensor([float(len(p)) for p in positions])
    shares = sizes / sizes.sum()
    temps = torch.ones(len(logits))
    q, used = None, 0
    for _ in range(iterations):
        used += 1
        if temperature:
            temps = torch.tensor([fit_temperature(z, expected_top(float(s), z.shape[1], own_confidence))
                                  for z, s in zip(logits, shares, strict=True)])  # fmt: skip
        probs = [(z / t).softmax(-1) for z, t in zip(logits, temps, strict=True)]
        posterior = integrate(probs, positions, shares, len(labels))
        q = prior_vector(prior, labels, posterior)
        if q is not None:
            posterior = balance(posterior, q)
        new = pool_shares(posterior, owners)
        moved = float((new - shares).abs().max())
        shares = new
        if moved < 1e-4:
            break
    collapsed = prior == "em" and em_collapsed(q, len(labels))
    if collapsed and warn_collapse:
        warn(
            f"the EM prior estimate collapsed (smallest class prior {float(q.min()):.4f}): the teachers' integrated "
            "posterior is too biased for EM on this pool. Use prior='uniform' or give the prior as {label: p}."
        )
    return Calibration(posterior, temps, shares, q, used, collapsed)


@register
class Calibrated(Method):
    name = "calibrated"
    paper = (
        "ours: temperature calibration to pool shares + prior balancing; the EM prior after Saerens et al. 2002, "
        "Adjusting the Outputs of a Classifier to New a Priori Probabilities: A Simple Procedure (Neural Computation)"
    )
    family = "A: multi-class union"
    summary = "teachers temperature-scaled to their pool share, mixed by share, balanced to a class prior"
    defaults = {"temperature": True, "prior": "uniform", "own_confidence": 1.0, "iterations": 20}
    rules = {
        "temperature": Flag,
        "prior": Literal["uniform", "em", "none"] | dict[str, NonNegative],
        "own_confidence": Range(gt=0, le=1),
        "iterations": Count,
    }

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        self.refuse_single_label(teachers, "no temperature can make it unsure on foreign examples")

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        o = self.options
        cal = calibrate(
            [ctx.logits(i) for i in range(len(ctx.teachers))],
            [ctx.positions(i) for i in range(len(ctx.teachers))],
            ctx.owners,
            list(ctx.union),
            temperature=bool(o["temperature"]),
            prior=o["prior"],
            own_confidence=float(o["own_confidence"]),
            iterations=int(o["iterations"]),
        )
        self.calibration = cal
        self.diagnostics = {"temperatures": cal.temperatures, "shares": cal.shares, "target": cal.target}
        return {"target": cal.target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)
