"""MUKI-Hard / MUKI-Soft (paper 002 §2.2): targets, weights, Monte-Carlo dropout, warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.errors import MethodError
from amalgamator.methods.muki import MUKIHard, MUKISoft, instance_weights, normalised_uncertainty

from .conftest import logits_context

_ctx = logits_context


def test_normalised_uncertainty_bounds():
    assert normalised_uncertainty(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(1.0)
    assert normalised_uncertainty(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert normalised_uncertainty(torch.tensor([[1.0]])).item() == 0.0


def test_hard_target_is_the_padded_most_certain_teacher():
    ctx = _ctx([[5.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 6.0]])
    out = MUKIHard(k=1).prepare(ctx)
    t = out["target"]
    assert torch.allclose(t[0, 2:], torch.zeros(2)) and t[0, 0] > 0.99 - 1e-2  # teacher a is sure of row 0
    assert torch.allclose(t[1, :2], torch.zeros(2)) and t[1, 3] > 0.99  # teacher b is sure of row 1
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_soft_target_weights_follow_eq_11():
    ctx = _ctx([[2.0, 0.0]], [[1.0, 0.0]])
    m = MUKISoft(k=1, tau=0.2)
    t = m.prepare(ctx)["target"][0]
    pa, pb = torch.tensor([2.0, 0.0]).softmax(0), torch.tensor([1.0, 0.0]).softmax(0)
    ca = 1 - normalised_uncertainty(pa[None])[0]
    cb = 1 - normalised_uncertainty(pb[None])[0]
    w = torch.stack([ca, cb]).div(0.2).softmax(0)
    assert torch.allclose(t, torch.cat([w[0] * pa, w[1] * pb]), atol=1e-6)
    assert m.diagnostics["confidence"].shape == (1, 2)


def test_overlapping_label_receives_the_sum_of_weighted_mass():
    ctx = _ctx([[3.0, 0.0]], [[3.0, 0.0]], labels_a=("a", "b"), labels_b=("a", "c"))
    t = MUKISoft(k=1).prepare(ctx)["target"][0]
    assert list(ctx.union) == ["a", "b", "c"]
    assert torch.allclose(t.sum(), torch.tensor(1.0)) and t[0] == pytest.approx(torch.tensor([3.0, 0.0]).softmax(0)[0])


def test_reweighting_is_the_confidence_margin():
    conf = torch.tensor([[0.9, 0.2, 0.5], [0.4, 0.4, 0.1]])
    assert torch.allclose(instance_weights(conf), torch.tensor([0.4, 0.0]))
    ctx = _ctx([[5.0, 0.0], [0.1, 0.0]], [[0.0, 0.0], [0.0, 0.2]])
    assert "weight" in MUKISoft(k=1).prepare(ctx) and "weight" not in MUKISoft(k=1, reweight=False).prepare(ctx)


def test_mc_dropout_changes_the_uncertainty(digits, teachers):
    x, _, _, p, _ = digits
    mc = am.amalgamate(teachers, data=x[p], method="muki-soft", epochs=1)
    plain = am.amalgamate(teachers, data=x[p], method="muki-soft", method_options={"k": 1}, epochs=1)
    assert mc.timings["mc"] > 0
    assert not torch.allclose(mc.diagnostics["uncertainty"], plain.diagnostics["uncertainty"])


def test_teacher_without_dropout_is_refused_unless_k_is_1(digits, tmp_path):
    """K > 1 needs dropout: refused, naming the ablation; K = 1 (the paper's ablation) runs when asked for."""
    x, y, t, p, _ = digits
    a = am.Teacher(nn.Sequential(nn.Linear(64, 5)), labels=list("01234"), name="nodrop")
    b = am.Teacher(nn.Sequential(nn.Linear(64, 5)), labels=list("56789"), name="nodrop2")
    with pytest.raises(MethodError, match="teacher 'nodrop' cannot give: its model has no dropout modules") as err:
        am.amalgamate([a, b], data=x[p][:50], method="muki-hard", epochs=1)
    assert "method_options={'k': 1}" in str(err.value) and "kd" in str(err.value).split("methods that work")[1]
    res = am.amalgamate([a, b], data=x[p][:50], method="muki-hard", method_options={"k": 1}, epochs=1,
                        out=tmp_path / "k1")  # fmt: skip
    assert res.timings["mc"] == 0.0
    assert "without Monte-Carlo dropout" in res.student.info["method_variant"]
    assert "Variant: muki-hard with K = 1, asked for" in (tmp_path / "k1" / "report.md").read_text()


@pytest.mark.parametrize("method", ["muki-hard", "muki-soft"])
def test_muki_students_beat_every_teacher(digits, teachers, method):
    x, y, _, p, s = digits
    res = am.amalgamate(teachers, data=x[p], method=method, epochs=15, batch_size=64, lr=3e-3)
    best = max(float(np.mean(t.predict(x[s]) == y[s])) for t in teachers)
    assert float(np.mean(res.student.predict(x[s]) == y[s])) > best + 0.2
    assert math.isfinite(res.history.loss[-1])
