"""``mahalanobis``: route each example to the teachers whose training distribution it belongs to.

As teachers multiply and each knows fewer classes, every output-based rule fails: a teacher is as
confident on classes it never saw as on its own (Letters, 13 teachers of two letters: max-probability,
energy, max-logit and input-noise stability all separate a teacher's own rows from foreign ones with
an AUROC near 0.74, and routing by them is right on about a third of the pool). The signal that
survives is *where* a teacher's training rows lie in its own feature space.

Each teacher carries :class:`~amalgamator.statistics.FeatureStatistics` of its training rows
(:func:`~amalgamator.statistics.fit_statistics`): class means μ_{k,c} and a tied covariance Σ_k in
its feature space h_k, the class-conditional Gaussian model of Lee et al. 2018, "A Simple Unified
Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks" (NeurIPS), Eq. 1. Their
Mahalanobis confidence score (Eq. 2) is the closest class's distance; here the whole mixture is kept
so that scores of different teachers, in different spaces, can be compared:

1. **Own density** (Lee et al. Eq. 1, mixed over classes by the training counts n_{k,c}):
   log p_k(h) = log Σ_c (n_{k,c}/n_k) N(h; μ_{k,c}, Σ_k).
2. **Pool density** in the same space: one Gaussian N(h; m_k, S_k) fitted to the pool's features h_k(x).
3. **Routing** by Bayes' rule with the density ratio r_k(x) = p_k(h_k(x)) / q_k(h_k(x)) = P(k | x) / P(k)
   in teacher k's view: P(k | x) ∝ π_k · r_k(x), π_k = |Y_k| / Σ_j |Y_j| (its share of the union,
   counted with multiplicity), normalised over the teachers. Eigenvalues of every covariance are
   floored at ``floor`` × the largest, so a direction that never varied in training (a dead unit)
   puts a foreign row far away instead of dividing by zero.
3b. **Balance** (``balance``, default on): the ratios of different teachers live in different spaces
   and need not be on one scale (fortunes, MiniLM vs TF-IDF teachers: one teacher took 95 % of the
   gate's mass and accuracy fell from 44.7 to 35.4). A per-teacher factor is fitted so that the pool
   mean of P(k | x) is π_k, the prior shift of Saerens et al. 2002 applied to teachers instead of
   classes (fortunes 44.8; Letters, 13 teachers: 84.4 vs 84.0 without).
4. **Target**: the routed mixture of the teachers' outputs placed in the union,
   t(y | x) = Σ_k P(k | x) · softmax(z_k(x))_y [y ∈ Y_k]; the student learns it with soft
   cross-entropy. Labeled rows, when given, learn their one-hot label instead (each counts once).

Teachers without statistics are refused with how to compute them. ``statistics="pool"`` instead fits
each teacher's Gaussians to the pool rows it claims (responsibilities from ``calibrated``'s posterior,
re-estimated ``iterations`` times), the variant the issue proposed for teachers shipped bare; on
Letters it does not help (see bench/results/experts.md).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import MethodError
from ..statistics import INPUT, gaussian_log_density, input_matrix
from ..store import LOGITS, feature_piece
from ..teachers import Teacher
from .base import Context, Count, Flag, Method, Positive, Range, StudentOutput, register, soft_cross_entropy, softmax
from .calibrated import calibrate


def teacher_space(ctx: Context, i: int) -> torch.Tensor:
    """Teacher ``i``'s pool features in the space its statistics were fitted in, (rows, dims) float64."""
    teacher = ctx.teachers[i]
    stats = getattr(teacher, "statistics", None)
    space = stats.space if stats is not None else (teacher.features[-1] if teacher.features else INPUT)
    if space == INPUT:
        return input_matrix(teacher, ctx.inputs)
    return ctx.outputs[i][feature_piece(space)].flatten(1).double()


def pool_gaussian(h: torch.Tensor, floor: float) -> torch.Tensor:
    """log q(h): one Gaussian fitted to the pool's features (step 2)."""
    centred = h - h.mean(0)
    cov = centred.T @ centred / max(len(h) - 1, 1)
    return gaussian_log_density(h, h.mean(0, keepdim=True), cov, floor=floor)


def weighted_gaussians(h: torch.Tensor, resp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class means, tied covariance and class weights from soft class responsibilities (rows, classes)."""
    mass = resp.sum(0).clamp(min=1e-9)
    means = resp.T @ h / mass[:, None]
    # Σ_c Σ_i r_ic (h_i − μ_c)(h_i − μ_c)ᵀ = Σ_i (Σ_c r_ic) h_i h_iᵀ − Σ_c m_c μ_c μ_cᵀ (as Σ_i r_ic h_i = m_c μ_c):
    # one product over the rows instead of one per class. Taken about the pool mean (the covariance does not
    # move with it), so the difference does not cancel large offsets.
    centre = h.mean(0)
    hc, mc = h - centre, means - centre
    cov = (hc * resp.sum(1, keepdim=True)).T @ hc - (mc * mass[:, None]).T @ mc
    return means, cov / mass.sum(), mass / mass.sum()


def route(log_ratio: torch.Tensor, shares: torch.Tensor, sharpness: float = 1.0, balanced: bool = True,
          iterations: int = 200) -> torch.Tensor:  # fmt: skip
    """Step 3: P(k | x) ∝ π_k · r_k(x)^sharpness, (rows, teachers); ``balanced``: times a per-teacher
    factor fitted so that the pool mean of P(k | x) is π_k (step 3b)."""
    logits = sharpness * log_ratio + shares.log()
    bias = torch.zeros(len(shares), dtype=logits.dtype)
    for _ in range(iterations if balanced else 0):
        step = shares.log() - softmax(logits + bias).mean(0).clamp(min=1e-12).log()
        bias = bias + step
        if float(step.abs().max()) < 1e-6:
            break
    return softmax(logits + bias)


def routed_mixture(ctx: Context, gate: torch.Tensor) -> torch.Tensor:
    """Step 4: Σ_k P(k | x) · softmax(z_k(x)) placed on teacher k's labels in the union."""
    target = torch.zeros(len(ctx), len(ctx.union), dtype=torch.float64)
    for i in range(len(ctx.teachers)):
        target[:, ctx.positions(i)] += gate[:, i : i + 1] * softmax(ctx.logits(i).double())
    return target


@register
class Mahalanobis(Method):
    name = "mahalanobis"
    paper = (
        "ours: routing by the density ratio of each teacher's carried class-conditional Gaussians (Lee et al. "
        "2018, A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks, "
        "Eq. 1) against the pool, by Bayes' rule; teacher shares balanced as in Saerens et al. 2002, Adjusting "
        "the Outputs of a Classifier to New a Priori Probabilities"
    )
    family = "A: multi-class union"
    summary = "each example learns from the teachers whose training-feature Gaussians (carried statistics) explain it"
    uses_labels = "optional"
    needs = frozenset({"outputs", "statistics"})
    needs_note = "statistics='pool': outputs only"
    defaults = {"statistics": "carried", "floor": 1e-6, "sharpness": 1.0, "balance": True, "iterations": 3}
    rules = {
        "statistics": Literal["carried", "pool"],
        "balance": Flag,
        "floor": Range(gt=0, lt=1),
        "sharpness": Positive,
        "iterations": Count,
    }

    def pieces(self, teacher: Teacher) -> list[str]:
        stats = getattr(teacher, "statistics", None)
        if self.options["statistics"] == "pool" or stats is None:
            return self.tapped_pieces(teacher)
        if stats is None or stats.space == INPUT:
            return [LOGITS]
        return [LOGITS, feature_piece(stats.space)]

    def needs_of(self, teacher: Teacher) -> frozenset[str]:
        return frozenset({"outputs", "statistics"} if self.options["statistics"] == "carried" else {"outputs"})

    def validate(self, teachers: list[Teacher]) -> None:
        if self.options["statistics"] == "carried":
            self._require_statistics(teachers)
        super().validate(teachers)

    def _require_statistics(self, teachers: list[Teacher]) -> None:
        bare = [t.name for t in teachers if getattr(t, "statistics", None) is None]
        if bare:
            raise MethodError(
                f"method 'mahalanobis' routes by the feature statistics each teacher carries of its own training "
                f"data, and {', '.join(repr(b) for b in bare)} carry none. Where each teacher's training data "
                "lives, run `am.fit_statistics(teacher, x_train)` and ship the file from `.save(path)` (load it "
                "with `Teacher(..., statistics=path)`); or use method_options={'statistics': 'pool'} (fits them "
                "on the pool, much weaker), or 'calibrated'."
            )
        for t in teachers:
            if [str(v) for v in t.statistics.labels] != [str(v) for v in t.labels]:
                raise MethodError(
                    f"teacher {t.name!r}'s statistics are for labels {t.statistics.labels}, not its labels "
                    f"{list(t.labels)}; recompute them with am.fit_statistics."
                )

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        floor = float(self.options["floor"])
        sizes = torch.tensor([float(len(t.labels)) for t in ctx.teachers], dtype=torch.float64)
        shares = sizes / sizes.sum()
        spaces = [teacher_space(ctx, i) for i in range(len(ctx.teachers))]
        background = [pool_gaussian(h, floor) for h in spaces]
        if self.options["statistics"] == "carried":
            own = [self._carried(t, h, floor) for t, h in zip(ctx.teachers, spaces, strict=True)]
            gate = route(torch.stack(own, 1) - torch.stack(background, 1), shares, float(self.options["sharpness"]),
                         bool(self.options["balance"]))  # fmt: skip
        else:
            gate = self._pool_fitted(ctx, spaces, background, shares, floor)
        target = routed_mixture(ctx, gate)
        labeled = ctx.labeled if ctx.y.ndim == 1 else torch.zeros(len(ctx), dtype=torch.bool)
        if labeled.any():
            target[labeled] = torch.nn.functional.one_hot(ctx.y[labeled], len(ctx.union)).double()
        target = target.float()
        self.diagnostics = {"routing": gate.float(), "target": target}
        return {"target": target}

    @staticmethod
    def _carried(teacher: Teacher, h: torch.Tensor, floor: float) -> torch.Tensor:
        stats = teacher.statistics
        if h.shape[1] != stats.dims:
            raise MethodError(
                f"teacher {teacher.name!r}: its statistics have {stats.dims} dimensions but its "
                f"{stats.space!r} output on the pool has {h.shape[1]}; recompute them with am.fit_statistics."
            )
        weights = stats.counts.double() / stats.counts.sum().clamp(min=1)
        return gaussian_log_density(h, stats.means.double(), stats.covariance.double(), weights, floor)

    def _pool_fitted(self, ctx: Context, spaces: list[torch.Tensor], background: list[torch.Tensor],
                     shares: torch.Tensor, floor: float) -> torch.Tensor:  # fmt: skip
        """Gaussians fitted to the pool rows each teacher claims, re-estimated from the routing."""
        n = len(ctx.teachers)
        logits = [ctx.logits(i) for i in range(n)]
        posterior = calibrate(logits, [ctx.positions(i) for i in range(n)], ctx.owners, list(ctx.union)).target
        gate = (posterior.double() @ ctx.owners.double().T).clamp(min=1e-9)
        gate = gate / gate.sum(1, keepdim=True)
        for _ in range(int(self.options["iterations"])):
            ratios = []
            for i, h in enumerate(spaces):
                resp = gate[:, i : i + 1] * softmax(logits[i].double())  # claimed rows, by class
                means, cov, weights = weighted_gaussians(h, resp)
                ratios.append(gaussian_log_density(h, means, cov, weights, floor) - background[i])
            gate = route(
                torch.stack(ratios, 1), shares, float(self.options["sharpness"]), bool(self.options["balance"])
            )
        return gate

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)


def routing_accuracy(gate: torch.Tensor, owners: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose most probable teacher owns the true class (for analysis and the bench)."""
    return float(owners[gate.argmax(1), y].float().mean())
