"""Teachers in the loop (bench only): the comparison the teacher-output store is measured against.

The published codes of the amalgamation papers run every teacher inside every training step: each batch goes
through each teacher (K Monte-Carlo dropout passes too, where the method reads them) before the student's loss.
The library runs each teacher once over the pool into the store instead. To time what the published way costs
with *our* engine, student and method, :class:`TeachersInLoop` wraps a method and, before its loss on each batch,
runs every teacher on that batch's raw rows, computing every piece the method reads from the store: logits,
feature taps, MC dropout statistics. A text teacher's sentence encoder really runs per step, through the
featurizer's uncached call (the store's pass goes through its on-disk embedding bank instead).

The targets still come from the store (the method's ``prepare``), so the wrapped run trains the very student
of the plain run: the live outputs are computed and dropped, under a forked RNG, so neither the weights nor
the dropout masks of the student change. Only the cost is added. ``live_steps`` runs the teachers on the first
steps only, to time a long run from a sample of its steps (:func:`extrapolate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..data import Batch, Inputs
from ..methods.base import Context, Method, StudentOutput, Trainer
from ..store import LOGITS, feature_piece
from ..teachers import Teacher


def mc_settings(piece: str) -> tuple[int, float | None]:
    """(K, dropout rate) of a store piece ``mc/k=K,p=P,seed=S,v=2`` (as the store parses it)."""
    params = dict(kv.split("=") for kv in piece.split("/", 1)[1].split(","))
    return int(params["k"]), (None if params["p"] == "None" else float(params["p"]))


@torch.no_grad()
def live_outputs(teacher: Teacher, raw: Batch, pieces: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every piece in ``pieces`` of ``teacher``'s output on one raw batch, computed now, without the store or
    the embedding bank: the teacher's preprocessing once (a sentence encoder through its uncached call), one
    eval-mode forward for the logits and any feature taps, and K dropout passes per MC piece."""
    inp = teacher._prepare(raw)  # the featurizer's __call__: MiniLM encodes these texts, nothing cached
    taps = any(p.startswith("features/") for p in pieces)
    logits, caught = teacher.run(inp, features=taps, prepared=True)
    out = {LOGITS: logits, **{feature_piece(k): v for k, v in caught.items()}}
    for piece in pieces:
        if piece.startswith("mc/"):
            k, p = mc_settings(piece)
            out[piece] = teacher.mc_probs(inp, k, p, prepared=True).mean(0)
    return out


def _inner(attr: str) -> Any:
    """A read-only property that reads ``attr`` of the wrapped method."""
    return property(lambda self: getattr(self.inner, attr))


class TeachersInLoop(Method):
    """``inner`` with every teacher run on each training batch before the loss (the published codes' way).

    Everything else is delegated to ``inner``: its name, options, pieces, targets, modules and loss, so the
    engine trains exactly what the plain method trains. Records the steps (every call of the student's loss),
    the steps whose teachers ran (the first ``live_steps``, or all when None), the seconds their forwards took,
    and the training rows of each such step (``rows``), for tests. A method's auxiliary engine passes with their
    own objective (TC's trust learner) are not wrapped."""

    def __init__(self, inner: Method, live_steps: int | None = None, keep_rows: bool = False):
        # no Method.__init__: the options are the inner method's, already checked
        self.inner = inner
        self.live_steps = live_steps
        self.keep_rows = keep_rows
        self.steps = 0
        self.teacher_seconds: list[float] = []
        self.rows: list[torch.Tensor] = []
        self._inputs: Inputs | None = None
        self._teachers: list[Teacher] = []
        self._pieces: list[list[str]] = []

    def __getattr__(self, attr: str) -> Any:  # what the run reads of a particular method (auto's ``choice``)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(attr)
        return getattr(inner, attr)

    # The inner method's identity (read-only, taken from it: ``Method``'s class attributes would shadow ``__getattr__``)
    name = _inner("name")
    uses_labels = _inner("uses_labels")
    trains = _inner("trains")
    needs = _inner("needs")
    kinds = _inner("kinds")
    options = _inner("options")
    student_taps = _inner("student_taps")
    optimizer_options = _inner("optimizer_options")
    variant = _inner("variant")
    diagnostics = _inner("diagnostics")

    def student_kind(self, kinds: set[str]) -> str:  # type: ignore[override]
        return self.inner.student_kind(kinds)

    def needs_of(self, teacher: Teacher) -> frozenset[str]:
        return self.inner.needs_of(teacher)

    def validate(self, teachers: list[Teacher]) -> None:
        self.inner.validate(teachers)

    def pieces(self, teacher: Teacher) -> list[str]:
        return self.inner.pieces(teacher)

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        return self.inner.prepare(ctx)

    def train_rows(self, ctx: Context) -> Any:
        return self.inner.train_rows(ctx)

    def modules(self) -> nn.Module | None:
        return self.inner.modules()

    # Training -------------------------------------------------------------------------------------------
    def run(self, ctx: Context, train: Trainer) -> Any:
        """The inner method's run; the engine calls this wrapper's ``loss`` for the student's steps."""
        self._inputs, self._teachers = ctx.inputs, list(ctx.teachers)
        self._pieces = [self.inner.pieces(t) for t in ctx.teachers]
        return self.inner.run(ctx, train)

    @property
    def live(self) -> int:
        """Steps whose teachers ran."""
        return len(self.teacher_seconds)

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        if self._inputs is None:
            raise RuntimeError("TeachersInLoop trains only through run(), which gives it the raw rows")
        if self.live_steps is None or self.live < self.live_steps:
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):  # MC dropout draws from the global RNG: the student's must
                raw = self._inputs.take(batch["index"])  # not move, or its dropout masks would differ
                for teacher, pieces in zip(self._teachers, self._pieces, strict=True):
                    live_outputs(teacher, raw, pieces)
            self.teacher_seconds.append(time.perf_counter() - t0)
            if self.keep_rows:
                self.rows.append(batch["index"].clone())
        self.steps += 1
        return self.inner.loss(batch, out)


def extrapolate(wall_s: float, wrapper: TeachersInLoop, extra_s: float = 0.0) -> dict[str, Any]:
    """The whole teachers-in-the-loop run from a run whose teachers ran on the first ``wrapper.live`` of its
    ``wrapper.steps`` steps: its wall time plus the mean teacher seconds of those steps for every step they
    skipped, plus ``extra_s`` (work the store run shares with its teacher pass but a live run pays apart, e.g.
    the student's sentence embeddings)."""
    live, steps = wrapper.live, wrapper.steps
    per_step = sum(wrapper.teacher_seconds) / live if live else 0.0
    total = wall_s + per_step * (steps - live) + extra_s
    return {"steps": steps, "live_steps": live, "teacher_s_per_step": per_step, "measured_wall_s": wall_s,
            "extra_s": extra_s, "total_s": total, "extrapolated": live < steps}  # fmt: skip
