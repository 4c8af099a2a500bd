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
   with a label-free gate P(k | x) ∝ e_k(x), where e_k(x) = (top_k − 1/|Y_k|) / (1 − 1/|Y_k|) is the
   calibrated teacher's excess confidence: after step 1 a teacher that recognises x answers sharply
   and one that does not answers flatly, on a scale comparable across label-set sizes. The gate has
   no share factor π_k: for teachers with disjoint labels, π_k multiplies every one of teacher k's
   labels in every row, which is a per-class bias that step 4 absorbs exactly (measured: identical
   accuracy on all twelve benchmark pools with and without it).
3. **Shares, jointly.** π_k = the integrated (and balanced) posterior's pool mass on teacher k's
   labels (a label named by several teachers splits its mass evenly); iterate shares →
   temperatures → posterior until the shares stop moving. Initial shares: proportional to |Y_k|.
   Under the default ``prior="uniform"`` (and disjoint labels) the balanced pool mass of teacher k
   is exactly |Y_k|/|Y|, so the loop stops after one pass with π_k = |Y_k|/|Y|: the temperatures then
   depend only on the label-set sizes. The loop matters for a given prior and for ``"none"``.
4. **Prior balancing.** A per-class bias b is added to log P and fitted until the pool-average
   prediction meets a class prior q: ``"uniform"`` over the union, a ``{label: p}`` dict from the
   user, or ``"estimate"`` (also spelt ``"em"``), the pool prior estimated from the teachers (below).
   This drains "sink" classes that absorb foreign examples. ``"none"`` switches it off.
   *What* meets the prior is ``balance_sharpness`` s (default 0.5): the pool mean of the posterior
   sharpened to temperature s. s = 1 balances the mass (Saerens et al.'s prior shift, exact for a
   calibrated posterior); smaller s balances the decisions (s → 0: argmax counts). The integration is
   not calibrated: a heavily tempered teacher spreads its classes' mass thinly over rows it never
   wins, so with s = 1 those classes get their share of mass and almost none of the predictions
   (letters with teachers of 4 and 22 classes: A–D predicted 29–128 times each, 308 expected).
   Measured on the 48 benchmark pools (posterior accuracy, ``bench/results/calibrated-lab.md``):
   s = 0.5 vs 1 gives 71.5 vs 70.0 on the pools as drawn (ahead on 12 of 16 cases, up to +5.2 on
   letters with 4 teachers; −1.0 on fortunes, whose classes are 2.6 : 1 unequal, −0.7 on HAPT overlap,
   −0.1 on HAPT exclusive), but 53.3 vs 55.6 on Zipf-skewed subsamples, where forcing uniform
   decisions costs more than uniform mass: on a pool known to be skewed, give the prior or use
   ``"estimate"``.
5. **Estimating the prior** (``"estimate"``). Saerens, Latinne & Decaestecker's (2002) EM, fed back
   into the share loop, collapsed on every benchmark pool and on synthetic pools of two well-behaved
   teachers: the integrated posterior is not calibrated across teachers, and each round moved mass
   from a losing teacher's share to its temperature and back. Even run once, without feedback, EM
   collapsed. The estimate used instead never feeds back: after steps 1–4 under the uniform prior,
   take one EM step from the uniform prior (the pool mean m of the unbalanced integrated posterior,
   exact for a calibrated posterior, pulled toward "sink" classes for a miscalibrated one) and
   shrink it toward uniform: q = λ · m + (1 − λ) / |Y|, λ = ē² with ē the balanced posterior's mean
   excess confidence, so a decisive integration is trusted and a flat one is not (λ ≤ 0.9: no class
   falls below a tenth of its uniform share). Then balance to q, on the mass (an EM estimate is a
   statement about mass). Measured on the benchmark pools (posterior accuracy): 69.9 on the pools as
   drawn (71.5 under ``"uniform"``) and 58.2 on Zipf-skewed subsamples (53.3 under ``"uniform"``); it is
   a small correction on balanced pools and ``"uniform"`` stays the default.

The student learns the resulting soft targets with cross-entropy, as in KD.

**Where the temperatures act** (``mixture_power`` a, default 0.5). The gate always reads the
tempered teachers (step 1 is about who recognises x). The mixture mixes each teacher's probabilities
at T_k^a: a = 1 is "temperatures everywhere", a = 0 the teachers' own (T = 1) probabilities. A
fitted T_k flattens a teacher on its own classes as much as on foreign ones, so a = 1 can leave
targets near uniform (T ≈ 11 for confidently extrapolating teachers, with the argmax then hanging on
the balancing bias), while a = 0 keeps them sharp but trusts an overconfident teacher's answer as
given. Measured on the 36 benchmark pools (posterior accuracy, ``bench/results/calibrated-lab.md``):
a = 0 / 0.5 / 1 and no temperatures give 74.4 / 74.6 / 70.8 / 72.1 on the balanced pools and
56.1 / 61.1 / 63.7 / 55.3 on Zipf-skewed subsamples scored under the (wrong) uniform prior; a = 0.5
is within 1 point of the better of "temperatures" and "no temperatures" on every case but HAPT
exclusive, where neither teacher is less sure on the other's rows (routing at chance for every variant).

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
from ..teachers import Teacher
from .base import (
    Context,
    Count,
    Flag,
    Method,
    NonNegative,
    Range,
    StudentOutput,
    register,
    soft_cross_entropy,
    softmax,
)


def _below_top(logits: torch.Tensor) -> torch.Tensor:
    """z − max_y z per row (≤ 0): the top probability at T is 1 / Σ_y exp((z − max z) / T)."""
    return logits - logits.amax(-1, keepdim=True)


def _mean_top(below: torch.Tensor, temperature: float) -> float:
    """Mean top probability at ``temperature`` from :func:`_below_top`'s gaps."""
    return float((below / temperature).exp().sum(1).reciprocal().mean())


def top_probability(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean over rows of the largest softmax probability at ``temperature``."""
    return _mean_top(_below_top(logits), temperature)


def fit_temperature(logits: torch.Tensor, target: float, lo: float = 1e-2, hi: float = 1e3) -> float:
    """T such that the mean top probability of softmax(logits / T) is ``target`` (bisection on log T).

    The mean top probability falls monotonically from ~1 (T → 0) to 1/|Y| (T → ∞); targets outside
    the reachable range give the nearest end. The bisection stops once the bracket is 1e-10 wide in log T
    (about 37 halvings of the default bracket), far below anything the targets can feel.
    """
    if logits.shape[1] < 2:
        return 1.0
    below = _below_top(logits)
    a, b = math.log(lo), math.log(hi)
    while b - a > 1e-10:
        mid = (a + b) / 2
        if _mean_top(below, math.exp(mid)) > target:
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


def integrate(
    probs: Sequence[torch.Tensor],
    positions: Sequence[torch.Tensor],
    n_union: int,
    mixed: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Step 2: P(y|x) = Σ_k P(k|x) p_k(y|x) over the union, with P(k|x) ∝ e_k(x), e_k the calibrated
    teacher's excess confidence (a teacher that recognises x answers sharply). The gate reads ``probs``;
    the mixture mixes ``mixed`` when given (the teachers at T_k^a, ``mixture_power`` a)."""
    gate = torch.stack([excess_confidence(p) for p in probs], 1)
    gate = gate.clamp_min(1e-12)
    gate = gate / gate.sum(1, keepdim=True)
    out = torch.zeros(len(probs[0]), n_union)
    for k, (p, pos) in enumerate(zip(mixed if mixed is not None else probs, positions, strict=True)):
        out[:, pos] += gate[:, k : k + 1] * p
    return out / out.sum(1, keepdim=True).clamp_min(1e-12)


def pool_shares(posterior: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
    """Step 3: each teacher's share of the pool's predicted mass (shared labels split evenly)."""
    mass = posterior.mean(0)  # (n_union,)
    split = owners.float() / owners.float().sum(0, keepdim=True).clamp_min(1)
    return (split * mass).sum(1)


def balance(
    posterior: torch.Tensor, prior: torch.Tensor, sharpness: float = 1.0, iterations: int = 400
) -> torch.Tensor:
    """Step 4: softmax(log P + b) with the per-class bias b fitted so that the pool mean of the
    posterior sharpened to temperature ``sharpness`` equals ``prior``.

    ``sharpness`` 1 balances the mass (Saerens et al.'s prior shift, exact for a calibrated posterior);
    below 1 it balances the decisions: as ``sharpness`` → 0 the argmax counts meet the prior. A
    miscalibrated integration spreads a class's mass thinly over many rows it never wins (a
    heavily tempered teacher), so balancing its mass leaves it rarely predicted.
    """
    log_p = posterior.clamp_min(1e-12).log()
    b = torch.zeros(posterior.shape[1])
    log_q = prior.clamp_min(1e-12).log()
    for _ in range(iterations):
        mean = softmax((log_p + b) / sharpness).mean(0)
        step = sharpness * (log_q - mean.clamp_min(1e-12).log())
        b = b + step
        if float(step.abs().max()) < 1e-6:
            break
    return softmax(log_p + b)


def estimate_prior(unbalanced: torch.Tensor, balanced: torch.Tensor) -> torch.Tensor:
    """Step 5: the pool's class prior, with no feedback into shares or temperatures.

    One EM step from the uniform prior (the pool mean of the ``unbalanced`` integrated posterior), shrunk
    toward uniform by λ = ē² (ē: the mean excess confidence of the uniform-``balanced`` posterior; λ ≤ 0.9):
    q = λ · mean + (1 − λ) / |Y|. Every class keeps at least a tenth of its uniform share.
    """
    n = unbalanced.shape[1]
    lam = min(0.9, float(excess_confidence(balanced).mean()) ** 2)
    return lam * unbalanced.mean(0) + (1 - lam) / n


@dataclass
class Calibration:
    """What the fit found: the soft targets and the quantities the diagnostics report."""

    target: torch.Tensor  # (rows, union)
    temperatures: torch.Tensor  # (teachers,)
    shares: torch.Tensor  # (teachers,)
    prior: torch.Tensor | None  # (union,) the prior balanced to, or None
    iterations: int


def prior_vector(prior: Any, labels: Sequence[str], posterior: torch.Tensor) -> torch.Tensor | None:
    """The class prior the ``prior`` option names, over the union ``labels``."""
    if prior in (None, "none", False):
        return None
    if prior == "uniform":
        return torch.full((len(labels),), 1 / len(labels))
    if prior in ("estimate", "em"):
        return torch.full((len(labels),), 1 / len(labels))  # the share loop runs under uniform; step 5 after it
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
    raise MethodError(
        f"calibrated option prior must be 'uniform', 'estimate', 'none' or a {{label: p}} dict; got {prior!r}."
    )


def calibrate(
    logits: Sequence[torch.Tensor],
    positions: Sequence[torch.Tensor],
    owners: torch.Tensor,
    labels: Sequence[str],
    temperature: bool = True,
    prior: Any = "uniform",
    own_confidence: float = 1.0,
    iterations: int = 20,
    mixture_power: float = 0.5,
    balance_sharpness: float = 0.5,
    estimate_sharpness: float = 1.0,
) -> Calibration:
    """Steps 1–5 on a pool's stored teacher logits; see the module docstring. The gate reads the
    teachers at T_k, the mixture at T_k ** ``mixture_power``."""
    sizes = torch.tensor([float(len(p)) for p in positions])
    shares = sizes / sizes.sum()
    temps = torch.ones(len(logits))
    q, used = None, 0
    for _ in range(iterations):
        used += 1
        if temperature:
            temps = torch.tensor([fit_temperature(z, expected_top(float(s), z.shape[1], own_confidence))
                                  for z, s in zip(logits, shares, strict=True)])  # fmt: skip
        probs = [softmax(z / t) for z, t in zip(logits, temps, strict=True)]
        mixed = [softmax(z / t**mixture_power) for z, t in zip(logits, temps, strict=True)]
        unbalanced = integrate(probs, positions, len(labels), mixed)
        q = prior_vector(prior, labels, unbalanced)
        posterior = balance(unbalanced, q, balance_sharpness) if q is not None else unbalanced
        new = pool_shares(posterior, owners)
        moved = float((new - shares).abs().max())
        shares = new
        if moved < 1e-4:
            break
    if prior in ("estimate", "em"):  # step 5, after the loop: the estimate never feeds back
        q = estimate_prior(unbalanced, posterior)
        posterior = balance(unbalanced, q, estimate_sharpness)
    return Calibration(posterior, temps, shares, q, used)


@register
class Calibrated(Method):
    name = "calibrated"
    paper = (
        "ours: temperature-calibrated excess-confidence gate and prior balancing; the prior estimate after "
        "Saerens et al. 2002, Adjusting the Outputs of a Classifier to New a Priori Probabilities (one damped EM step)"
    )
    family = "A: multi-class union"
    summary = "teachers temperature-scaled to their pool share, gated by excess confidence, balanced to a class prior"
    defaults = {
        "temperature": True,
        "mixture_power": 0.5,
        "balance_sharpness": 0.5,
        "prior": "uniform",
        "own_confidence": 1.0,
        "iterations": 20,
    }
    rules = {
        "temperature": Flag,
        "mixture_power": Range(ge=0, le=1),
        "balance_sharpness": Range(gt=0, le=1),
        "prior": Literal["uniform", "estimate", "em", "none"] | dict[str, NonNegative],
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
            mixture_power=float(o["mixture_power"]),
            balance_sharpness=float(o["balance_sharpness"]),
            prior=o["prior"],
            own_confidence=float(o["own_confidence"]),
            iterations=int(o["iterations"]),
        )
        self.calibration = cal
        self.diagnostics = {"temperatures": cal.temperatures, "shares": cal.shares, "target": cal.target}
        return {"target": cal.target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)
