"""``auto``: pick a method from what the run has, by a stated rule, and say why (ours, issue 10).

The rule reads two things, both available before any training: whether labeled rows were given,
and the label-free routing diagnosis (:func:`amalgamator.diagnose`) computed from the teachers'
stored logits over every training row.

0. **Every teacher carries feature statistics** of its training data (:func:`amalgamator.fit_statistics`)
   → ``mahalanobis``: it routes by where each teacher's training rows lie, the one signal that holds
   as teachers multiply (Letters, 13 two-letter teachers: 84 % against ``calibrated``'s 33 %), and
   no worse than ``calibrated`` with two broad teachers; labeled rows, when given, learn their label.
1. **Labeled rows given**: the labels check the label-free targets. ``calibrated``'s posterior (the
   one the diagnosis estimates the truth with) is scored on the labeled rows. If it names the true
   class on at least ``AGREE`` (90 %) of them, the labels confirm it → ``calibrated``: a dozen
   labeled rows' cross-entropy would only pull the student off targets that are already right (on
   the semi-supervised benchmark, SYN overlap, ``supuhc`` 89.7 vs label-free ``calibrated`` 96.9).
   Otherwise the targets are measurably wrong → ``supuhc``: UHC on every row plus cross-entropy on
   the labeled rows, which corrects them (SYN exclusive 85.4 vs 81.1, overconfident 92.4 vs 82.3).
   The trust learner (``tc``) is not chosen: it swings with the handful of labels it learns from
   (per-seed routing 60–98 % at 2 %).
2. **No labels, a risky pool** (the diagnosis flags an overconfident teacher, a sink class, or an
   estimated mis-routing above 30 %) → ``calibrated``, which corrects exactly those symptoms.
3. **No labels, a clean pool** → ``uhc``: with teachers that are unsure outside their classes,
   matching each teacher on its own labels needs no calibration.

Other kinds choose by what the teachers offer (no diagnosis yet; labeled rows are not used):

4. **Multilabel teachers, all chains** → ``ant``: its transfer re-runs chains with a shared label
   forced; **otherwise** → ``kd-ml`` (ANT without chains is its integrator alone).
5. **Multitask teachers, every one with a feature tap** → ``venus`` (it consolidates their final
   shared representations); **otherwise** → ``kd-mt``, its task targets alone.
6. **Word-embedding teachers** → ``simme`` (thesis Ch. 2).

The choice, the reason and the diagnosis figures are recorded in the method's ``choice`` (and so in
``student.json`` and ``report.md``) and printed as one line.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..progress import note
from ..teachers import Teacher
from .base import Context, Method, StudentOutput, Trainer, get_method, register

#: the share of labeled rows on which ``calibrated``'s posterior must name the true class for the labels
#: to confirm the label-free targets (rule 1)
AGREE = 0.9


def choose_by_kind(teachers: list[Teacher]) -> tuple[str, str] | None:
    """Rules 4–5 for teachers that are not multiclass: (method, why), or None for multiclass teachers."""
    kinds = {t.kind for t in teachers}
    if kinds <= {"multilabel", "chain"}:
        if kinds == {"chain"}:
            return "ant", "multilabel chain teachers: ANT's transfer can use their label dependencies"
        plain = [t.name for t in teachers if t.kind != "chain"]
        return "kd-ml", f"multilabel teachers of which {', '.join(plain)} are not chains, so ANT could not transfer"
    if kinds == {"embedding"}:
        return "simme", "word-embedding teachers: SimME keeps each source's word-pair similarities (maskout for OOV)"
    if kinds == {"multitask"}:
        bare = [t.name for t in teachers if not t.features]
        if not bare:
            return "venus", "multitask teachers with feature taps: VENUS consolidates their shared representations"
        return "kd-mt", f"multitask teachers, {', '.join(bare)} without a feature tap, so VENUS could not consolidate"
    return None


def choose(ctx: Context) -> tuple[str, str, dict[str, Any]]:
    """(method name, the reason in words, the diagnosis figures) for this run; see the module docstring."""
    from ..diagnose import RISKY, diagnose_with_posterior  # it reads calibrated, which imports this package

    by_kind = choose_by_kind(ctx.teachers)
    if by_kind is not None and not hasattr(ctx, "labeled"):  # an embedding run has no rows, so no labels
        return by_kind[0], by_kind[1], {}
    labeled = int(ctx.labeled.sum())
    if by_kind is not None:
        unused = f"; the {labeled} labeled rows are not used" if labeled else ""
        return by_kind[0], by_kind[1] + unused, {"labeled": labeled}
    logits = [ctx.logits(i) for i in range(len(ctx.teachers))]
    d, posterior = diagnose_with_posterior([t.name for t in ctx.teachers], ctx.spaces, logits)
    over = [t.name for t in d.teachers if t.overconfident]
    figures = {"risk": round(d.risk, 4), "risky": d.risky, "overconfident": over, "sinks": d.sinks,
               "labeled": labeled}  # fmt: skip
    seen = f"estimated mis-routing {100 * d.risk:.1f} %"
    if over:
        seen += f", overconfident {', '.join(over)}"
    if d.sinks:
        seen += f", sinks {', '.join(d.sinks[:5])}{' …' if len(d.sinks) > 5 else ''}"
    if all(getattr(t, "statistics", None) is not None for t in ctx.teachers):
        given = f"; its {labeled} labeled rows learn their label" if labeled else ""
        return "mahalanobis", f"every teacher carries feature statistics ({seen}){given}", figures
    if labeled:
        rows = ctx.labeled
        agree = float((posterior[rows].argmax(1) == ctx.y[rows]).float().mean())
        figures["label_agreement"] = round(agree, 4)
        checked = f"calibrated's targets name the true class on {100 * agree:.0f} % of the {labeled} labeled rows"
        if agree >= AGREE:
            return "calibrated", f"{checked}, at least {100 * AGREE:.0f} %: the labels confirm them ({seen})", figures
        return "supuhc", f"{checked}, below {100 * AGREE:.0f} %: the labels correct them ({seen})", figures
    if d.risky:
        return "calibrated", f"no labels and a risky pool ({seen}; risky above {100 * RISKY:.0f} %)", figures
    return "uhc", f"no labels and a clean pool ({seen})", figures


def statistics_advice(teachers: list[Teacher], risky: bool) -> str:
    """What to do when routing is the risk and the teachers carry no statistics (printed by ``auto``)."""
    if not risky or all(getattr(t, "statistics", None) is not None for t in teachers):
        return ""
    return (" Routing is the risk here: teachers that carry feature statistics of their training data "
            "(am.fit_statistics where that data lives) let auto route with 'mahalanobis' instead.")  # fmt: skip


@register
class Auto(Method):
    name = "auto"
    paper = "ours: a method chosen from the routing diagnosis and the labels given (see methods/auto.py)"
    family = "A to D: chooses among the others"
    summary = (
        "multiclass: mahalanobis when every teacher carries feature statistics; "
        "labels given: calibrated if its targets agree with them (≥ 90 %), else supuhc; "
        "no labels: calibrated on a risky pool, uhc on a clean one; "
        "multilabel: ant (chains) or kd-ml; multitask: venus (feature taps) or kd-mt; embedding: simme (prints why)"
    )
    uses_labels = "optional"
    kinds = frozenset({"multiclass", "multilabel", "chain", "multitask", "embedding"})

    @classmethod
    def student_kind(cls, kinds: set[str]) -> str:
        return "chain" if kinds == {"chain"} else super().student_kind(kinds)

    def pieces(self, teacher: Teacher) -> list[str]:
        """What any choice for this teacher reads (a multitask teacher's tap for VENUS, the tap of carried
        statistics for mahalanobis)."""
        if teacher.kind == "multitask" and teacher.features:
            return get_method("venus")().pieces(teacher)
        if getattr(teacher, "statistics", None) is not None:  # rule 0 may choose mahalanobis
            return get_method("mahalanobis")().pieces(teacher)
        return super().pieces(teacher)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.chosen: Method | None = None
        self.choice: dict[str, Any] = {}

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        by_kind = choose_by_kind(teachers)
        names = (by_kind[0],) if by_kind is not None else ("supuhc", "calibrated", "uhc")
        if by_kind is None and all(getattr(t, "statistics", None) is not None for t in teachers):
            names = ("mahalanobis",)
        for name in names:  # refuse now what any choice would refuse later
            get_method(name)().validate(teachers)

    def run(self, ctx: Context, train: Trainer) -> Any:
        method, why, figures = choose(ctx)
        self.chosen = get_method(method)()
        self.choice = {"method": method, "why": why, **figures}
        note(f"auto: {method}, because {why}.{statistics_advice(ctx.teachers, bool(figures.get('risky')))}")
        history = self.chosen.run(ctx, train)
        self.diagnostics = dict(self.chosen.diagnostics)
        return history

    # The engine trains with the chosen method's parts -------------------------------------------------
    def _active(self) -> Method:
        if self.chosen is None:
            raise RuntimeError("auto trains only through run(), which chooses the method first")
        return self.chosen

    @property
    def student_taps(self) -> list[str]:  # type: ignore[override]
        return self.chosen.student_taps if self.chosen is not None else []

    @property
    def optimizer_options(self) -> dict[str, Any]:  # type: ignore[override]
        return self.chosen.optimizer_options if self.chosen is not None else {}

    def modules(self) -> nn.Module | None:
        return self._active().modules()

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return self._active().loss(batch, out)
