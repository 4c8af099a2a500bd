"""``ant``: Adaptive Knowledge Transfer between multi-label chain teachers (thesis `000` Ch. 4, §4.5).

Teachers are order-free classifier chains (:mod:`amalgamator.models.chain`, Eq. 29–36), each
expert on its own label set; the student is a chain over the union. As settled in SPEC.md Family C:

- **Transfer Indicator** (§4.5.1, Eq. 15–16): the relations R = {(T_m, T_n, y_c)} are every teacher
  pair sharing a label y_c (:func:`relations`). Per row, where a pair disagrees on y_c (one
  p > 0.5, the other ≤ 0.5), the positive teacher is the *transferor* and the other the *transferee*.
- **Knowledge Transfer Module** (§4.5.2, Eq. 26): the transferee re-runs with y_c forced to the
  transferor's probability (the chain's initial state, ``Teacher.forced``), so its other labels are
  predicted conditioned on it. "This transfer process proceeds recursively" (end of §4.5.2): a round
  re-runs every transferee at once; the next round looks for the disagreements the re-runs created.
  It stops when a round finds none, or after ``rounds`` rounds (default N, the number of teachers).
  Choices the thesis leaves open, made here: the disagreements of a round are all found before any
  re-run (order-free, deterministic); a transferee given several labels in one round, by several
  transferors or relations, re-runs once with all of them forced; a label forced once stays forced
  at its first value (it is positive, so it cannot be a transferee on that label again, and the
  transfers are bounded); two transferors of the same label in one round give the larger probability
  (the Prediction Integrator's principle, Eq. 28). Only the disagreeing rows of a transferee re-run,
  in batches; the first pass comes from the teacher-output store (SPEC: a method that needs live
  teachers says so and caches what it can).
- **Prediction Integrator** (§4.5.3, Eq. 27–28, :func:`integrate`): per union label, over the
  candidate probabilities C_j of the teachers that know it (after transfer): min(C_j) if every
  candidate is ≤ 0.5, else max(C_j).
- **Student** (Eq. 29–37): a chain over the union (``student_kind`` is ``"chain"``, so the engine
  builds a :class:`~amalgamator.models.chain.ChainHead` on the student backbone) trained with binary
  cross-entropy between its final per-label probabilities Q(y_j|x) and P(y_j|x) of Eq. 28 (Eq. 37).
  Eq. 37 sums over labels; the loss here averages over labels and rows, the same objective up to
  the constant factor ℓ, which keeps the engine's gradient clipping on the scale of the other methods.

The targets are computed once in ``prepare``: teachers are frozen and deterministic.

Live teachers: the transfer re-runs chain teachers. A plain ``multilabel`` teacher cannot be forced;
where it would be a transferee, ANT falls back to integration alone for it (its first-pass
prediction enters Eq. 28 unchanged) and warns once per run, naming it.

Ablations. The thesis reports none for ANT: its Tables 7–9 compare methods, vary the number of
teachers (3–5, Table 8) and the share of labels the two teachers have in common (100 %…0 %,
Table 9: at 0 % R is empty and ANT is the Integrator alone). Exposed here: ``transfer=False``
("w/o transfer", integration alone, ours) and ``rounds`` (1 = a single transfer step, no recursion).

Diagnostics (``Result.diagnostics``): ``reruns`` (rows re-run per round, all teachers),
``reruns_by_teacher`` (rounds × teachers), ``transfers`` (forced (row, label) pairs per round),
``transferred`` (per row: forced labels over all teachers), ``unresolved`` (per row: relations still
disagreeing after the last round; a fallback teacher's disagreements stay here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import progress
from ..data import Inputs
from ..labels import LabelSpace
from ..teachers import Teacher
from .base import Context, Count, Flag, Method, StudentOutput, register

#: rows per forced re-run (the teacher store's batch size)
RERUN_BATCH = 256

#: ``rerun(t, rows, init_probs, init_mask) -> probabilities`` of teacher ``t`` on training rows ``rows``
#: with the masked labels forced: shape (len(rows), |Y_t|).
Rerun = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Relation(NamedTuple):
    """(T_m, T_n, y_c) of the Transfer Indicator, with y_c's column in each teacher's outputs."""

    m: int
    n: int
    label: str
    col_m: int
    col_n: int


def relations(spaces: Sequence[LabelSpace]) -> list[Relation]:
    """R of §4.5.1: every unordered teacher pair (m < n) and each label both know, in teacher order."""
    out = []
    for m in range(len(spaces)):
        for n in range(m + 1, len(spaces)):
            for label in spaces[m]:
                if label in spaces[n]:
                    out.append(Relation(m, n, label, spaces[m].index(label), spaces[n].index(label)))
    return out


def integrate(probs: Sequence[torch.Tensor], positions: Sequence[torch.Tensor], n_union: int) -> torch.Tensor:
    """Eq. 28: per union label, min of the candidates C_j (Eq. 27) if all are ≤ 0.5, else max.

    ``probs[t]`` is teacher t's (rows, |Y_t|) probabilities, ``positions[t]`` their union columns.
    Every union label must be known by some teacher."""
    n = len(probs[0])
    hi = torch.full((n, n_union), -torch.inf)
    lo = torch.full((n, n_union), torch.inf)
    for p, pos in zip(probs, positions, strict=True):
        hi[:, pos] = torch.maximum(hi[:, pos], p)
        lo[:, pos] = torch.minimum(lo[:, pos], p)
    return torch.where(hi > 0.5, hi, lo)


@dataclass
class Transfer:
    """What the Knowledge Transfer Module did: revised probabilities and the counts per round."""

    probs: list[torch.Tensor]  # per teacher, (rows, |Y_t|), after transfer
    forced: list[torch.Tensor]  # per teacher, (rows, |Y_t|) bool: labels forced by some transferor
    reruns: torch.Tensor  # (rounds, teachers) rows re-run
    transfers: torch.Tensor  # (rounds, teachers) (row, label) pairs newly forced
    skipped: torch.Tensor  # (teachers,) distinct (row, label) pairs a non-forceable transferee could not take
    unresolved: torch.Tensor  # (rows,) relations still disagreeing at the end


def disagreements(probs: Sequence[torch.Tensor], rels: Sequence[Relation]) -> torch.Tensor:
    """(rows, relations) bool: the pair's hard predictions (p > 0.5) on the shared label differ."""
    if not rels:
        return torch.zeros(len(probs[0]), 0, dtype=torch.bool)
    return torch.stack([(probs[r.m][:, r.col_m] > 0.5) ^ (probs[r.n][:, r.col_n] > 0.5) for r in rels], 1)


def knowledge_transfer(
    probs: Sequence[torch.Tensor],
    spaces: Sequence[LabelSpace],
    rerun: Rerun,
    forceable: Sequence[bool],
    rounds: int,
) -> Transfer:
    """The Transfer Indicator and the Knowledge Transfer Module (Eq. 26), repeated until a round finds
    no new transfer or ``rounds`` rounds have run. ``probs`` are the first-pass probabilities (Eq. 15–16)."""
    probs = [p.clone() for p in probs]
    rels = relations(spaces)
    n_teachers = len(probs)
    forced = [torch.zeros_like(p, dtype=torch.bool) for p in probs]
    values = [torch.zeros_like(p) for p in probs]
    skipped = [torch.zeros_like(p, dtype=torch.bool) for p in probs]
    reruns: list[torch.Tensor] = []
    transfers: list[torch.Tensor] = []
    for _ in range(rounds if rels else 0):
        new = [torch.zeros_like(f) for f in forced]
        best = [torch.zeros_like(p) for p in probs]  # the largest transferor probability per new entry
        for r in rels:
            pos_m, pos_n = probs[r.m][:, r.col_m] > 0.5, probs[r.n][:, r.col_n] > 0.5
            for src, dst, c_src, c_dst, rows in (
                (r.m, r.n, r.col_m, r.col_n, pos_m & ~pos_n),
                (r.n, r.m, r.col_n, r.col_m, pos_n & ~pos_m),
            ):
                rows = rows & ~forced[dst][:, c_dst]  # a forced label is positive: guard, never true in practice
                if not forceable[dst]:
                    skipped[dst][:, c_dst] |= rows
                    continue
                new[dst][:, c_dst] |= rows
                best[dst][:, c_dst] = torch.where(
                    rows, torch.maximum(best[dst][:, c_dst], probs[src][:, c_src]), best[dst][:, c_dst]
                )
        counts = torch.tensor([int(x.sum()) for x in new])
        if not counts.any():
            break
        done = torch.zeros(n_teachers, dtype=torch.long)
        for t in range(n_teachers):
            if not new[t].any():
                continue
            forced[t] |= new[t]
            values[t] = torch.where(new[t], best[t], values[t])
            rows = new[t].any(1).nonzero().squeeze(1)
            probs[t][rows] = rerun(t, rows, values[t][rows], forced[t][rows])
            done[t] = len(rows)
        reruns.append(done)
        transfers.append(counts)
    empty = torch.zeros(0, n_teachers, dtype=torch.long)
    return Transfer(
        probs=probs,
        forced=forced,
        reruns=torch.stack(reruns) if reruns else empty,
        transfers=torch.stack(transfers) if transfers else empty,
        skipped=torch.tensor([int(s.sum()) for s in skipped]),
        unresolved=disagreements(probs, rels).sum(1),
    )


def teacher_rerun(teachers: Sequence[Teacher], ctx: Context) -> Rerun:
    """Re-run chain teachers on training rows with a forced initial state, batched, on the rows as the
    store ran them (raw, or the teacher featurizer's output)."""
    sources: dict[int, Inputs] = {}

    def rerun(t: int, rows: torch.Tensor, init_probs: torch.Tensor, init_mask: torch.Tensor) -> torch.Tensor:
        teacher = teachers[t]
        if t not in sources:
            sources[t] = teacher.source(ctx.inputs)[0]
        source = sources[t]
        idx = rows.numpy()
        out = [
            teacher.forced(
                source.take(idx[s : s + RERUN_BATCH]),
                init_probs[s : s + RERUN_BATCH],
                init_mask[s : s + RERUN_BATCH],
            )
            for s in range(0, len(idx), RERUN_BATCH)
        ]
        return teacher.probabilities(torch.cat(out))

    return rerun


@register
class ANT(Method):
    name = "ant"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "Ch. 4 §4.5: Adaptive Knowledge Transfer, Eq. 15–37"
    )
    family = "C: multi-label union"
    summary = (
        "chain teachers that disagree on a shared label re-run with it forced to the positive teacher's "
        "probability; min/max integration; a chain student with BCE"
    )
    kinds = frozenset({"multilabel", "chain"})
    defaults = {"rounds": None, "transfer": True}
    rules = {"rounds": Count | None, "transfer": Flag}

    @classmethod
    def student_kind(cls, kinds: set[str]) -> str:
        """ANT's student is a classifier chain over the union (Eq. 29–36)."""
        return "chain"

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        """P(y_j|x) of Eq. 28 per training row, after transfer (Eq. 26); computed once, teachers are frozen."""
        teachers = ctx.teachers
        first = [teachers[i].probabilities(ctx.logits(i)) for i in range(len(teachers))]
        rounds = self.options["rounds"] or len(teachers)
        probs = first
        if self.options["transfer"]:
            forceable = [t.kind == "chain" for t in teachers]
            done = knowledge_transfer(first, ctx.spaces, teacher_rerun(teachers, ctx), forceable, rounds)
            probs = done.probs
            self._report(done, teachers, len(ctx))
        target = integrate(probs, [ctx.positions(i) for i in range(len(teachers))], len(ctx.union))
        return {"target": target}

    def _report(self, done: Transfer, teachers: Sequence[Teacher], n_rows: int) -> None:
        """Diagnostics, a one-line note, and the fallback warning (once per run)."""
        self.diagnostics = {
            "reruns": done.reruns.sum(1),
            "reruns_by_teacher": done.reruns,
            "transfers": done.transfers.sum(1),
            "transferred": torch.stack([f.sum(1) for f in done.forced], 1).sum(1),
            "unresolved": done.unresolved,
        }
        fell_back = [(t.name, int(s)) for t, s in zip(teachers, done.skipped, strict=True) if s > 0]
        if fell_back:
            who = ", ".join(f"{name!r} ({n} row-label pairs)" for name, n in fell_back)
            progress.warn(
                f"ant: teacher(s) {who} are plain multilabel, not chains, and cannot take a forced label; for them "
                "ANT falls back to integration alone (Eq. 28). Declare kind='chain' for a model that accepts "
                "model(x, init_probs=..., init_mask=...)."
            )
        per_round = done.reruns.sum(1).tolist()
        progress.note(
            f"ant: {int(done.transfers.sum())} transfers over {len(per_round)} round(s); rows re-run per round "
            f"{per_round} of {n_rows}; {int((done.unresolved > 0).sum())} rows still disagree."
        )

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        """Eq. 37: BCE between the chain's final probabilities and the integrated targets (mean over labels)."""
        return F.binary_cross_entropy_with_logits(out.logits, batch["target"])


__all__ = ["ANT", "Relation", "Transfer", "integrate", "knowledge_transfer", "relations"]
