"""The speed suite's teachers-in-the-loop wrapper (amalgamator.bench.inloop): it runs every teacher once per
training step on exactly that step's rows, and trains the very student of the plain method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.bench.inloop import TeachersInLoop, extrapolate, live_outputs
from amalgamator.methods import get_method
from amalgamator.store import LOGITS, mc_piece

from .conftest import HIGH, LOW

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:.*optimiser steps")]


class Counting(nn.Module):
    """A teacher network that keeps every batch it is given (the rows it ran on)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


def _teachers(seed: int = 0) -> list[am.Teacher]:
    torch.manual_seed(seed)
    return [
        am.Teacher(Counting(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 5))),
                   labels=labels, name=name)
        for name, labels in (("low", LOW), ("high", HIGH))
    ]  # fmt: skip


def _run(teachers, x, method, store) -> am.Result:
    return am.amalgamate(teachers, data=x, method=method, epochs=2, batch_size=64, seed=3, store=store,
                         progress=False, threads=1)  # fmt: skip


def test_in_loop_runs_each_teacher_once_per_step_on_its_rows_and_trains_the_same_student(digits, tmp_path):
    x = digits[0][:300]
    teachers = _teachers()
    plain = _run(teachers, x, "kd", tmp_path)  # fills the store: the wrapped run reads the same targets
    for t in teachers:
        t.model.seen.clear()
    wrapper = TeachersInLoop(get_method("kd")(), keep_rows=True)
    live = _run(teachers, x, wrapper, tmp_path)
    assert wrapper.steps == 2 * 5 == wrapper.live == len(wrapper.rows)  # 300 rows, batches of 64: 5 per epoch
    for t in teachers:
        seen = t.model.seen
        assert len(seen[0]) == 2 and len(seen) == 1 + wrapper.steps  # amalgamate's 2-row probe, then one per step
        for rows, batch in zip(wrapper.rows, seen[1:], strict=True):
            assert torch.equal(batch, torch.as_tensor(x)[rows])
    assert sorted(torch.cat(wrapper.rows[:5]).tolist()) == list(range(300))  # an epoch sees every row once
    assert live.store.computed == 0 and live.method == "kd"
    for a, b in zip(
        plain.student.network.state_dict().values(), live.student.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_in_loop_mc_passes_leave_the_student_alone_and_live_steps_bound_the_teacher_work(digits, tmp_path):
    x = digits[0][:256]
    teachers = _teachers(1)
    options = {"k": 4}
    plain = _run(teachers, x, get_method("muki-soft")(**options), tmp_path)
    wrapper = TeachersInLoop(get_method("muki-soft")(**options), live_steps=3)
    live = _run(teachers, x, wrapper, tmp_path)
    assert wrapper.steps == 8 and wrapper.live == 3  # the MC passes drew from a forked RNG: same dropout masks
    for a, b in zip(
        plain.student.network.state_dict().values(), live.student.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(plain.diagnostics["confidence"], live.diagnostics["confidence"])
    piece = mc_piece(4, 0.1)
    out = live_outputs(teachers[0], torch.as_tensor(x[:10]), [LOGITS, piece])
    assert out[LOGITS].shape == (10, 5) and out[piece].shape == (10, 5)
    assert torch.allclose(out[piece].sum(1), torch.ones(10))
    whole = extrapolate(10.0, wrapper, extra_s=1.0)
    per = float(np.mean(wrapper.teacher_seconds))
    assert whole["total_s"] == pytest.approx(10.0 + 5 * per + 1.0) and whole["extrapolated"]


def test_method_case_measures_every_part_and_renders(monkeypatch):
    """The per-method machinery end to end on digits, one row, one epoch: the shared store's first call pays the
    teacher pass, the cold call its own; the floor, the extrapolated in-loop run and the table come out."""
    import dataclasses

    from amalgamator.bench import speed

    case = dataclasses.replace(speed.DIGITS_QUICK, rows=("kd", "muki-soft"), epochs=1, live_steps=2, key_live_steps=2)
    got = speed.method_case(case, quick=True)
    kd, muki = got["rows"]["kd"], got["rows"]["muki-soft"]
    assert kd["shared"]["computed"] == 2 and kd["shared"]["teacher_s"] > 0 and kd["shared"]["mc_s"] == 0
    assert muki["shared"]["hits"] == 2 and muki["shared"]["mc_s"] > 0 and muki["uses_mc"] and not kd["uses_mc"]
    assert kd["cold"]["computed"] == 2 and kd["warm"]["computed"] == 0
    assert kd["in_loop"]["live_steps"] == 2 and kd["in_loop"]["steps"] == 15 and kd["in_loop"]["extrapolated"]
    assert muki["floor_s"] > kd["floor_s"] > got["floor"]["fit_s"] > 0
    md = "\n".join(speed._methods_markdown(got))
    assert "| kd |" in md and "### Teachers in the loop" in md and "### Monte-Carlo dropout (MUKI)" in md


def test_speed_parts_recompute_into_the_last_result_and_name_their_errors(tmp_path, monkeypatch):
    import json

    from amalgamator.bench import speed
    from amalgamator.errors import AmalgamatorError

    with pytest.raises(AmalgamatorError, match="no part 'fortune'.*fortunes"):
        speed.run(tmp_path, rows=["fortune"])
    with pytest.raises(AmalgamatorError, match="run `amalgamator bench speed` whole first"):
        speed.run(tmp_path, rows=["startup"])
    last = {"machine": "m", "quick": False, "cores": 2, "suite_s": 60.0, "startup": {"old": 1},
            "kd_digits": {"kept": True}, "methods": {}}  # fmt: skip
    (tmp_path / "speed.json").write_text(json.dumps(last))
    monkeypatch.setattr(speed, "startup_times", lambda repeats: {"new": repeats})
    monkeypatch.setattr(speed, "markdown", lambda r: "md")
    got = speed.run(tmp_path, rows=["startup"])
    assert got["startup"] == {"new": 5} and got["kd_digits"] == {"kept": True} and got["suite_s"] == 60.0
    assert got["recomputed"]["parts"] == ["startup"]
    assert json.loads((tmp_path / "speed.json").read_text())["startup"] == {"new": 5}
