"""Newer label-free baselines (issue 10): logit-standardised KD, MaxLogit and energy routing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.errors import MethodError
from amalgamator.methods import REGISTRY
from amalgamator.methods.base import StudentOutput
from amalgamator.methods.routing import EnergyRouting, MaxLogitRouting, free_energy
from amalgamator.methods.standardized import KDStandardized, kd_std_loss, zscore

from .conftest import HIGH, LOW, logits_context

NEW = ("kd-std", "max-logit", "energy")


_ctx = logits_context


def _acc(model, x, y):
    return float(np.mean(model.predict(x) == y))


def test_registered_as_label_free_multiclass_baselines():
    for name in NEW:
        cls = REGISTRY[name]
        assert cls.family == "A: multi-class union" and cls.uses_labels == "never" and cls.trains
        assert set(cls.rules) == set(cls.defaults)  # every option has a rule


# kd-std ------------------------------------------------------------------------------------------


def test_kd_std_targets_are_each_teacher_z_scored_over_its_own_labels():
    # teacher a: [1, 2, 3] → mean 2, population std sqrt(2/3) → z = [−sqrt(3/2), 0, sqrt(3/2)];
    # teacher b: a constant row → std clamped, z = [0, 0]; then everything divided by τ = 2.
    ctx = _ctx([[1.0, 2.0, 3.0]], [[10.0, 10.0]], labels_a=("a", "b", "c"), labels_b=("d", "e"))
    target = KDStandardized(tau=2.0).prepare(ctx)["target_logits"]
    r = math.sqrt(1.5) / 2
    assert torch.allclose(target, torch.tensor([[-r, 0.0, r, 0.0, 0.0]]), atol=1e-6)


def test_kd_std_targets_ignore_each_teachers_logit_scale():
    base = KDStandardized().prepare(_ctx([[1.0, 2.0, 3.0]], [[0.5, -1.0]], labels_a=("a", "b", "c")))
    shifted = KDStandardized().prepare(_ctx([[10.0, 13.0, 16.0]], [[-3.0, -6.0]], labels_a=("a", "b", "c")))
    assert torch.allclose(base["target_logits"], shifted["target_logits"], atol=1e-6)
    # and not for plain kd, whose targets keep the scale
    assert not torch.allclose(
        REGISTRY["kd"]().prepare(_ctx([[1.0, 2.0]], [[0.0, 0.0]]))["target_logits"], torch.zeros(1)
    )


def test_kd_std_shared_label_takes_the_mean_of_the_standardised_logits():
    # a: [0, 2] → z = [−1, 1] over (a, b); b: [4, 0] → z = [1, −1] over (b, c); union (a, b, c)
    ctx = _ctx([[0.0, 2.0]], [[4.0, 0.0]], labels_a=("a", "b"), labels_b=("b", "c"))
    target = KDStandardized().prepare(ctx)["target_logits"]
    assert list(ctx.union) == ["a", "b", "c"]
    assert torch.allclose(target, torch.tensor([[-1.0, 1.0, -1.0]]), atol=1e-6)


def test_kd_std_loss_on_a_tiny_batch_is_pinned():
    tau = 2.0
    ctx = _ctx([[1.0, 2.0, 3.0]], [[10.0, 10.0]], labels_a=("a", "b", "c"), labels_b=("d", "e"))
    method = KDStandardized(tau=tau)
    batch = method.prepare(ctx)
    student = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    loss = method.loss(batch, StudentOutput(student, torch.zeros(1, 1)))

    # by hand: target logits t = [−r, 0, r, 0, 0], r = sqrt(3/2)/τ; the student's row z-scored:
    # mean 2, population std sqrt(2) → ŝ = [−2, −1, 0, 1, 2] / sqrt(2) / τ; loss = τ² KL(softmax t ‖ softmax ŝ)
    r = math.sqrt(1.5) / tau
    t = [-r, 0.0, r, 0.0, 0.0]
    s = [v / math.sqrt(2) / tau for v in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    zt, zs = sum(math.exp(v) for v in t), sum(math.exp(v) for v in s)
    p = [math.exp(v) / zt for v in t]
    kl = sum(pi * (math.log(pi) - (si - math.log(zs))) for pi, si in zip(p, s, strict=True))
    assert loss.item() == pytest.approx(tau**2 * kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.5409, abs=1e-4)


def test_kd_std_loss_ignores_the_students_logit_scale_and_survives_a_constant_row():
    target = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.3, -0.2, 1.0], [5.0, 5.0, 5.0]])
    a = kd_std_loss(target, student)
    b = kd_std_loss(target, 7.0 * student - 3.0)
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-5)
    assert torch.equal(zscore(torch.full((1, 4), 3.0)), torch.zeros(1, 4))
    grad_in = torch.full((1, 3), 2.0, requires_grad=True)
    kd_std_loss(torch.zeros(1, 3), grad_in).backward()
    assert torch.isfinite(grad_in.grad).all()


def test_kd_std_student_beats_each_teacher(digits, teachers):
    x, y, _, p, s = digits
    solo = max(_acc(t, x[s], y[s]) for t in teachers)
    res = am.amalgamate(teachers, data=x[p], method="kd-std", epochs=15, batch_size=64, lr=3e-3)
    assert res.student.labels == LOW + HIGH
    acc = _acc(res.student, x[s], y[s])
    assert acc > solo + 0.2, (acc, solo)
    assert set(res.student.predict(x[s])) - set(LOW), "the student must predict labels of both teachers"
    assert math.isfinite(res.history.loss[-1])


# max-logit and energy routing --------------------------------------------------------------------

# row 0: a = [3, 3] (max 3, logsumexp 3 + log 2), b = [3.5, −10] (max 3.5, logsumexp ≈ 3.5):
#        MaxLogit picks b, energy (lower −logsumexp) picks a. Row 1: a is sure, row 2: b is sure.
ROWS_A = [[3.0, 3.0], [5.0, 0.0], [0.0, 0.0]]
ROWS_B = [[3.5, -10.0], [0.0, 0.0], [1.0, 6.0]]


def _padded(owner_rows):
    """Expected targets: the owner's softmax on its labels (a: columns 0-1, b: columns 2-3), zeros elsewhere."""
    out = torch.zeros(len(owner_rows), 4)
    for r, k in enumerate(owner_rows):
        logits = torch.tensor((ROWS_A, ROWS_B)[k][r])
        out[r, 2 * k : 2 * k + 2] = logits.softmax(0)
    return out


def test_max_logit_and_energy_route_rows_to_different_owners():
    ctx = _ctx(ROWS_A, ROWS_B)
    ml, en = MaxLogitRouting(), EnergyRouting()
    t_ml, t_en = ml.prepare(ctx)["target"], en.prepare(ctx)["target"]
    assert ml.diagnostics["owner"].tolist() == [1, 0, 1]
    assert en.diagnostics["owner"].tolist() == [0, 0, 1]
    assert torch.allclose(t_ml, _padded([1, 0, 1]), atol=1e-6)
    assert torch.allclose(t_en, _padded([0, 0, 1]), atol=1e-6)
    assert t_en[0].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert torch.allclose(t_ml.sum(1), torch.ones(3)) and torch.allclose(t_en.sum(1), torch.ones(3))
    # the scores are the published ones: max logit, and −E = T·logsumexp(z/T)
    assert ml.diagnostics["score"][0].tolist() == pytest.approx([3.0, 3.5])
    assert en.diagnostics["score"][0].tolist() == pytest.approx([3.0 + math.log(2.0), 3.5], abs=1e-5)


def test_energy_temperature_is_the_papers_t():
    z = torch.tensor([[1.0, 2.0, 0.5]])
    for t in (0.5, 1.0, 4.0):
        expected = -t * math.log(sum(math.exp(v / t) for v in (1.0, 2.0, 0.5)))
        assert free_energy(z, t).item() == pytest.approx(expected, rel=1e-6)
    # a cold T makes −E the max logit, so energy routing becomes MaxLogit routing
    cold = EnergyRouting(temperature=0.01)
    cold.prepare(_ctx(ROWS_A, ROWS_B))
    assert cold.diagnostics["owner"].tolist() == [1, 0, 1]


def test_routing_ties_go_to_the_first_teacher_and_shared_labels_get_the_owners_mass():
    ctx = _ctx([[2.0, 0.0]], [[2.0, 0.0]], labels_a=("a", "b"), labels_b=("b", "c"))
    m = MaxLogitRouting()
    target = m.prepare(ctx)["target"]
    assert m.diagnostics["owner"].tolist() == [0]
    p = torch.tensor([2.0, 0.0]).softmax(0)
    assert torch.allclose(target, torch.tensor([[p[0], p[1], 0.0]]))


def test_routing_loss_is_soft_cross_entropy_against_the_target():
    ctx = _ctx(ROWS_A, ROWS_B)
    m = MaxLogitRouting()
    batch = m.prepare(ctx)
    student = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 3)
    loss = m.loss(batch, StudentOutput(student, torch.zeros(3, 1)))
    expected = -(batch["target"] * student.log_softmax(-1)).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("method", ["max-logit", "energy"])
def test_routing_students_beat_each_teacher(digits, teachers, method):
    x, y, _, p, s = digits
    solo = max(_acc(t, x[s], y[s]) for t in teachers)
    res = am.amalgamate(teachers, data=x[p], method=method, epochs=15, batch_size=64, lr=3e-3)
    acc = _acc(res.student, x[s], y[s])
    assert acc > solo + 0.2, (method, acc, solo)
    owner = res.diagnostics["owner"].numpy()
    assert np.mean(owner == np.isin(y[p], HIGH)) > 0.8  # the owner is mostly the teacher that knows the class


# option errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options, says",
    [
        ("kd-std", {"tau": 0}, "option 'tau' must be greater than 0"),
        ("kd-std", {"tau": float("inf")}, "option 'tau' must be a finite number"),
        ("energy", {"temperature": -1}, "option 'temperature' must be greater than 0"),
        ("max-logit", {"tau": 1.0}, "has no option 'tau'"),
    ],
)
def test_bad_options_are_refused_in_one_line(digits, teachers, method, options, says):
    x, _, _, p, _ = digits
    with pytest.raises(MethodError, match=f"method '{method}'") as err:
        am.amalgamate(teachers, data=x[p], method=method, method_options=options, epochs=1)
    assert says in str(err.value) and "\n" not in str(err.value)
