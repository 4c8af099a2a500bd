"""Routing diagnostics: will amalgamating these teachers on this pool fail, before any training?

Every label-free method decides, per example, which teacher to believe. It fails when a teacher
is confidently wrong about classes it never saw: that teacher wins the examples it should lose,
and a few of its classes become "sinks" that absorb foreign examples. :func:`diagnose` measures
this on the unlabeled pool alone:

- per teacher, its mean top probability on the pool against what a calibrated teacher owning its
  share of the pool would show (``calibrated``'s step 1), and the temperature that closes the gap;
  a teacher far above its expectation is flagged *overconfident*;
- per class, the mass of the naive integration (softmax over the teachers' logits side by side,
  the KD target) against the class prior; a class holding much more than its prior is a *sink*;
- a **risk score**: the estimated fraction of the pool whose most confident teacher (the naive
  routing rule) does not own the true class, with the truth estimated by ``calibrated``'s
  posterior: risk = 1 − mean_x Σ_{y ∈ Y_{k*(x)}} P_cal(y | x), k*(x) = argmax_k top_k(x). It is
  meant for ranking pools and teacher sets (on the benchmark it ranks the cases in the order of
  their measured routing accuracy), not as a calibrated rate: it errs on the high side.

With ``prior="estimate"`` (or ``"em"``) the class prior is estimated from the teachers as
``calibrated`` does (its step 5, which never collapses onto a few classes: every class keeps at
least a tenth of its uniform share).

Only the stored teacher logits are needed (the teacher-output store caches them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Inputs
from .labels import LabelSpace, owner_mask
from .methods.base import place_in_union
from .methods.calibrated import calibrate, expected_top, top_probability
from .report import markdown_table
from .store import LOGITS, TeacherStore
from .teachers import Teacher

#: above this estimated mis-routing rate, amalgamation without labels is flagged as risky. The estimate is
#: biased upwards (the calibrated posterior's own uncertainty counts as possible mis-routing): two
#: well-behaved teachers on a clean pool score about 0.2, the benchmark's failing cases 0.4 to 0.7.
RISKY = 0.3
#: a teacher whose mean top probability exceeds its calibrated expectation by this much is overconfident
OVERCONFIDENT_MARGIN = 0.1
#: a class holding this many times its prior mass under the naive integration is a sink
SINK_RATIO = 1.5


@dataclass
class TeacherReport:
    name: str
    labels: int
    share: float  # estimated fraction of the pool in this teacher's classes
    mean_top: float  # raw mean top probability on the pool
    expected_top: float  # what a calibrated teacher owning ``share`` would show
    temperature: float  # the temperature that makes mean_top equal expected_top
    overconfident: bool


@dataclass
class Diagnosis:
    """The outcome of :func:`diagnose`; ``markdown()`` for a table, ``plot(path)`` for a bar chart."""

    teachers: list[TeacherReport]
    labels: list[str]
    prior: list[float]
    naive_mass: list[float]  # pool-average KD-style prediction per class
    calibrated_mass: list[float]  # pool-average ``calibrated`` posterior per class
    sinks: list[str]
    risk: float
    advice: list[str] = field(default_factory=list)

    @property
    def risky(self) -> bool:
        return self.risk > RISKY or any(t.overconfident for t in self.teachers) or bool(self.sinks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "risky": self.risky}

    def markdown(self) -> str:
        teachers = markdown_table(
            ["teacher", "labels", "pool share", "mean top prob", "calibrated expectation", "temperature", "flag"],
            [[t.name, t.labels, f"{t.share:.2f}", f"{t.mean_top:.3f}", f"{t.expected_top:.3f}",
              f"{t.temperature:.2f}", "overconfident" if t.overconfident else ""] for t in self.teachers],
        )  # fmt: skip
        classes = markdown_table(
            ["class", "prior", "naive mass", "calibrated mass", "flag"],
            [[lb, f"{p:.3f}", f"{m:.3f}", f"{c:.3f}", "sink" if lb in self.sinks else ""]
             for lb, p, m, c in zip(self.labels, self.prior, self.naive_mass, self.calibrated_mass, strict=True)],
        )  # fmt: skip
        verdict = "RISKY" if self.risky else "ok"
        lines = [f"Routing risk: {100 * self.risk:.1f} % of the pool estimated mis-routed by confidence, "
                 f"{100 * (1 - self.risk):.1f} % routable ({verdict}).", "",
                 teachers, "", classes, "", *[f"- {a}" for a in self.advice]]  # fmt: skip
        return "\n".join(lines)

    def figure(self):
        """The chart of :meth:`plot` as a matplotlib Figure (the caller closes it): class mass of the
        naive and the calibrated integration against the prior, and each teacher's mean top
        probability against its calibrated expectation. Legends sit outside the axes and class and
        teacher names are shown whole (rotated), so nothing covers a bar or cuts a name."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        width = max(11.0, 4.0 + 0.3 * len(self.labels) + 0.4 * len(self.teachers))
        fig, (ax1, ax2) = plt.subplots(
            1, 2, figsize=(width, 4.2), layout="constrained", gridspec_kw={"width_ratios": [3, 1]}
        )
        idx = np.arange(len(self.labels))
        ax1.bar(idx - 0.2, self.naive_mass, 0.4, label="naive (KD) mass", color="tab:red")
        ax1.bar(idx + 0.2, self.calibrated_mass, 0.4, label="calibrated mass", color="tab:green")
        ax1.step(np.r_[idx - 0.5, idx[-1] + 0.5], np.r_[self.prior, self.prior[-1]], where="post", color="k",
                 label="prior")  # fmt: skip
        ax1.set_xticks(idx, self.labels, rotation=60, fontsize=7, ha="right", rotation_mode="anchor")
        ax1.set_ylabel("pool-average probability")
        prior = "prior"
        sinks = ", ".join(self.sinks[:3]) + (f" and {len(self.sinks) - 3} more" if len(self.sinks) > 3 else "")
        ax1.set_title(f"class mass vs {prior} (sinks: {sinks or 'none'})", fontsize=9)
        ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        t_idx = np.arange(len(self.teachers))
        ax2.bar(t_idx - 0.2, [t.mean_top for t in self.teachers], 0.4, label="mean top prob", color="tab:red")
        ax2.bar(t_idx + 0.2, [t.expected_top for t in self.teachers], 0.4, label="calibrated", color="tab:green")
        ax2.set_xticks(t_idx, [t.name for t in self.teachers], rotation=30, fontsize=7, ha="right",
                       rotation_mode="anchor")  # fmt: skip
        ax2.set_ylim(0, 1)
        ax2.set_title(f"teachers (risk {100 * self.risk:.0f} %)", fontsize=9)
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        return fig

    def plot(self, path: str | Path) -> Path:
        """Write :meth:`figure` as a PNG at ``path`` (cropped to everything drawn, labels included)."""
        import matplotlib.pyplot as plt

        path = Path(path)
        fig = self.figure()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path


def diagnose(
    teachers: Sequence[Teacher],
    data: Any,
    prior: Any = "uniform",
    own_confidence: float = 1.0,
    store: TeacherStore | str | Path | None = None,
) -> Diagnosis:
    """Diagnose the teachers' routing on an unlabeled pool ``data`` (see the module docstring)."""
    from .api import _check_teachers

    teachers = _check_teachers(teachers)
    inputs = Inputs(data, what="data")
    store_obj = store if isinstance(store, TeacherStore) else TeacherStore(store)
    logits = [store_obj.get(t, inputs, [LOGITS])[LOGITS] for t in teachers]
    return diagnose_logits([t.name for t in teachers], [t.labels for t in teachers], logits, prior, own_confidence)


def diagnose_logits(
    names: Sequence[str],
    spaces: Sequence[Sequence[str]],
    logits: Sequence[torch.Tensor],
    prior: Any = "uniform",
    own_confidence: float = 1.0,
) -> Diagnosis:
    """:func:`diagnose` on teachers' logits already computed over the pool (``method="auto"`` reads them
    from the store): ``names`` and label ``spaces`` per teacher, in the order of ``logits``."""
    return diagnose_with_posterior(names, spaces, logits, prior, own_confidence)[0]


def diagnose_with_posterior(
    names: Sequence[str],
    spaces: Sequence[Sequence[str]],
    logits: Sequence[torch.Tensor],
    prior: Any = "uniform",
    own_confidence: float = 1.0,
) -> tuple[Diagnosis, torch.Tensor]:
    """:func:`diagnose_logits` and the calibrated posterior it estimated the truth with, (rows, union),
    so that ``auto`` can check it against labeled rows without fitting it twice."""
    union = LabelSpace.union(spaces)
    positions = [torch.as_tensor(union.positions(s)) for s in spaces]
    owners = torch.as_tensor(owner_mask(union, spaces))
    cal = calibrate(logits, positions, owners, list(union), prior=prior, own_confidence=own_confidence)
    q = cal.prior if cal.prior is not None else torch.full((len(union),), 1 / len(union))
    naive = place_in_union(list(zip(positions, logits, strict=True)), len(union), "mean").softmax(-1).mean(0)
    reports = []
    for name, space, z, share, temp in zip(names, spaces, logits, cal.shares, cal.temperatures, strict=True):
        mean_top, expected = top_probability(z), expected_top(float(share), z.shape[1], own_confidence)
        reports.append(TeacherReport(name, len(space), float(share), mean_top, expected, float(temp),
                                     mean_top > expected + OVERCONFIDENT_MARGIN))  # fmt: skip
    pairs = zip(union, naive.tolist(), q.tolist(), strict=True)
    sinks = [lb for lb, m, p in pairs if m > SINK_RATIO * p and m > p + 0.01]
    diag = Diagnosis(reports, list(union), q.tolist(), naive.tolist(), cal.target.mean(0).tolist(), sinks,
                     routing_risk(logits, owners, cal.target))  # fmt: skip
    diag.advice = advice(diag)
    return diag, cal.target


def routing_risk(logits: Sequence[torch.Tensor], owners: torch.Tensor, posterior: torch.Tensor) -> float:
    """1 − mean_x P(the most confident teacher owns the true class), the truth taken from ``posterior``."""
    top = torch.stack([z.softmax(-1).max(1).values for z in logits], 1)
    chosen = owners[top.argmax(1)].float()  # (rows, union): the labels the chosen teacher knows
    return float(1 - (chosen * posterior).sum(1).mean())


def advice(d: Diagnosis) -> list[str]:
    """What to do about it, in words."""
    out: list[str] = []
    if not d.risky:
        return out + ["The teachers look calibrated on this pool: any label-free method should route well (kd, "
                      "uhc, muki-soft)."]  # fmt: skip
    over = [t.name for t in d.teachers if t.overconfident]
    if over:
        out.append(f"Overconfident on this pool: {', '.join(over)} (confident on examples outside its classes).")
    if d.sinks:
        out.append(f"Sink classes absorbing foreign examples under naive integration: {', '.join(d.sinks)}.")
    out.append(
        f"About {100 * d.risk:.0f} % of the pool would be routed to a teacher that does not know its class. "
        "Use method='calibrated' (no labels needed), or label a few hundred examples and use method='tc'."
    )
    out.append(
        "Best of all, where each teacher's training data lives, compute its feature statistics "
        "(am.fit_statistics(teacher, x_train)) and use method='mahalanobis': it routes by where each teacher's "
        "training rows lie, which holds as teachers multiply."
    )
    return out
