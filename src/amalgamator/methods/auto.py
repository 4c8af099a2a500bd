"""``auto``: pick a method from what the run has, by a stated rule, and say why (ours, issue 10).

The rule reads two things, both available before any training: whether labeled rows were given,
and the label-free routing diagnosis (:func:`amalgamator.diagnose`) computed from the teachers'
stored logits over every training row.

1. **Labeled rows given** → ``supuhc``: UHC on every row plus cross-entropy on the labeled rows.
   On the semi-supervised benchmark (SYN and HAPT, 2–8 % labels) it was never far from the best
   row that needs no test labels, while the trust learner (``tc``) swings with the handful of
   labels it learns from (per-seed routing 60–98 % at 2 %).
2. **No labels, a risky pool** (the diagnosis flags an overconfident teacher, a sink class, or an
   estimated mis-routing above 30 %) → ``calibrated``, which corrects exactly those symptoms.
3. **No labels, a clean pool** → ``uhc``: with teachers that are unsure outside their classes,
   matching each teacher on its own labels needs no calibration.

Only multi-class teachers have methods so far; other kinds are refused here as everywhere. The
choice, the reason and the diagnosis figures are recorded in the method's ``choice`` (and so in
``student.json`` and ``report.md``) and printed as one line.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..progress import note
from ..teachers import Teacher
from .base import Context, Method, StudentOutput, Trainer, get_method, register


def choose(ctx: Context) -> tuple[str, str, dict[str, Any]]:
    """(method name, the reason in words, the diagnosis figures) for this run; see the module docstring."""
    from ..diagnose import RISKY, diagnose_logits  # the diagnosis reads calibrated, which imports this package

    labeled = int(ctx.labeled.sum())
    d = diagnose_logits([t.name for t in ctx.teachers], ctx.spaces, [ctx.logits(i) for i in range(len(ctx.teachers))])
    over = [t.name for t in d.teachers if t.overconfident]
    figures = {"risk": round(d.risk, 4), "risky": d.risky, "overconfident": over, "sinks": d.sinks,
               "labeled": labeled}  # fmt: skip
    seen = f"estimated mis-routing {100 * d.risk:.1f} %"
    if over:
        seen += f", overconfident {', '.join(over)}"
    if d.sinks:
        seen += f", sinks {', '.join(d.sinks[:5])}{' …' if len(d.sinks) > 5 else ''}"
    if labeled:
        return "supuhc", f"{labeled} labeled rows are given ({seen})", figures
    if d.risky:
        return "calibrated", f"no labels and a risky pool ({seen}; risky above {100 * RISKY:.0f} %)", figures
    return "uhc", f"no labels and a clean pool ({seen})", figures


@register
class Auto(Method):
    name = "auto"
    paper = "ours: a method chosen from the routing diagnosis and the labels given (see methods/auto.py)"
    family = "A and B: chooses among the others"
    summary = "labels given: supuhc; no labels: calibrated on a risky pool, uhc on a clean one (prints why)"
    uses_labels = "optional"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.chosen: Method | None = None
        self.choice: dict[str, Any] = {}

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        for name in ("supuhc", "calibrated", "uhc"):  # refuse now what any choice would refuse later
            get_method(name)().validate(teachers)

    def run(self, ctx: Context, train: Trainer) -> Any:
        method, why, figures = choose(ctx)
        self.chosen = get_method(method)()
        self.choice = {"method": method, "why": why, **figures}
        note(f"auto: {method}, because {why}.")
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

    def modules(self) -> nn.Module | None:
        return self._active().modules()

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return self._active().loss(batch, out)
