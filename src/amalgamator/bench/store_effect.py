"""Suite ``store``: what the teacher-output store saves.

The same 10-epoch ``kd`` run twice on the digits demo problem: once reading teacher
logits from the store (one teacher pass over the pool, then training), once with a KD
variant that runs both teachers on every training batch, as a method without a store
would. Both share the engine, student, seed and data order, and must give the same
student up to floating-point noise; the suite checks that before reporting times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..api import amalgamate
from ..data import Inputs
from ..demo import digits_splits, make_teachers
from ..methods.base import Context, StudentOutput
from ..methods.kd import KD, kd_loss
from .common import write_results


class LiveKD(KD):
    """KD that recomputes the teachers' logits for every batch (no store). Benchmark only."""

    name = "kd-live"

    def __init__(self, teachers, inputs: Inputs, **options):
        super().__init__(**options)
        self.teachers, self.inputs = teachers, inputs

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        self.positions = [ctx.positions(i) for i in range(len(ctx.teachers))]
        self.n_union = len(ctx.union)
        return {}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        raw = self.inputs.take(batch["index"])
        target = torch.zeros(len(raw), self.n_union)
        for t, pos in zip(self.teachers, self.positions, strict=True):
            target[:, pos] = t.run(raw)[0]  # disjoint label sets: concatenation
        return kd_loss(target, out.logits, float(self.options["tau"]))


def _timed_run(teachers, x, method, store_root, epochs):
    t0 = time.perf_counter()
    res = amalgamate(teachers, data=x, method=method, epochs=epochs, batch_size=64, seed=0, store=store_root)
    return time.perf_counter() - t0, res


def run(out: Path, quick: bool = False, seeds: int | None = None) -> dict:
    epochs, repeats = 10, (2 if quick else 5)
    splits = digits_splits(0)
    x = splits["pool"][0]
    times: dict[str, list[float]] = {"cold": [], "warm": [], "live": []}
    with tempfile.TemporaryDirectory() as tmp:
        teachers = make_teachers(splits, Path(tmp) / "teachers", 0)
        _timed_run(teachers, x, "kd", Path(tmp) / "warmup", 1)  # imports, thread pools, allocator
        for r in range(repeats):  # interleaved, so drifting machine load hits all three alike
            cold_s, _ = _timed_run(teachers, x, "kd", Path(tmp) / f"store{r}", epochs)  # fills the store
            warm_s, warm = _timed_run(teachers, x, "kd", Path(tmp) / f"store{r}", epochs)  # reads it
            live_s, live = _timed_run(teachers, x, LiveKD(teachers, Inputs(x)), Path(tmp) / f"none{r}", epochs)
            for k, v in (("cold", cold_s), ("warm", warm_s), ("live", live_s)):
                times[k].append(v)
    xs = splits["test"][0]
    diff = float(np.abs(warm.student.predict_proba(xs) - live.student.predict_proba(xs)).max())
    if diff > 1e-3:
        raise RuntimeError(f"store and live runs disagree (max prob diff {diff}); the comparison is invalid")
    med = {k: float(np.median(v)) for k, v in times.items()}
    steps = epochs * -(-len(x) // 64)
    rows = [
        ["kd, store already filled (reads logits from disk)", f"{med['warm']:.3f}", "1.00"],
        ["kd, store filled in this run (one teacher pass)", f"{med['cold']:.3f}", f"{med['cold'] / med['warm']:.2f}"],
        [f"kd, teachers run on every step ({steps} steps)", f"{med['live']:.3f}", f"{med['live'] / med['warm']:.2f}"],
    ]
    intro = (
        f"Digits demo problem (MLP teacher + CNN teacher, 800-image pool, MLP student, {epochs} epochs, "
        f"batch 64). Median wall time of the whole `amalgamate` call over {repeats} interleaved repetitions "
        f"(all runs: {', '.join(f'{k} {[round(v, 3) for v in vs]}' for k, vs in times.items())}); ratios relative "
        f"to the first row. The students of the store and live runs agree to {diff:.1e} in probability. The "
        "digits teachers are tiny, so this is the least the store can save; it grows with teacher size."
    )
    raw = {"seconds": times, "median": med, "max_prob_diff": diff, "epochs": epochs, "steps": steps}
    path = write_results(out, "store", "Bench: teacher-output store", intro, ["run", "seconds", "ratio"], rows, raw)
    Console().print(path.read_text())
    return raw
