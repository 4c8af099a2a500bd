"""Exact values of the method losses and targets, computed by hand on tiny tensors (issue 10, item 9).

Every expected value is computed here in float64 numpy from the definitions (thesis `000`, MUKI `002`,
SPEC), not with the package's helpers, and compared with the method's own ``prepare``/``loss`` to 1e-6,
so a changed scale (a forgotten τ², a sum for a mean, a mean over teachers for a sum) or a changed
label mapping fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amalgamator.data import Inputs
from amalgamator.labels import LabelSpace
from amalgamator.methods.base import Context, StudentOutput
from amalgamator.methods.calibrated import Calibrated, calibrate
from amalgamator.methods.coordinator import TrustLearning, expert_targets
from amalgamator.methods.kd import KD
from amalgamator.methods.semisupervised import SupUHC
from amalgamator.methods.uhc import UHC
from amalgamator.store import LOGITS

ATOL = 1e-6


class _Teacher:
    """Just what ``Context`` reads from a teacher: its labels (no network: the logits are given)."""

    def __init__(self, labels):
        self.labels = LabelSpace(labels)
        self.kind = "multiclass"
        self.name = "".join(labels)


def _ctx(label_sets, logits, y=None) -> Context:
    teachers = [_Teacher(labels) for labels in label_sets]
    union = LabelSpace.union([t.labels for t in teachers])
    outs = [{LOGITS: torch.tensor(z, dtype=torch.float32)} for z in logits]
    n = len(logits[0])
    y = torch.full((n,), -1) if y is None else torch.tensor(y)
    return Context(teachers, union, outs, Inputs(torch.zeros(n, 1)), y)


def _out(student_logits) -> StudentOutput:
    s = torch.tensor(student_logits, dtype=torch.float32)
    return StudentOutput(logits=s, features=torch.zeros(len(s), 1))


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(z))


# --- 1. UHC ------------------------------------------------------------------------------------

# A knows a, b, c; B knows d, c in that order (c is shared). Union, by first appearance: a, b, c, d.
UHC_LABELS = [("a", "b", "c"), ("d", "c")]
UHC_POSITIONS = [[0, 1, 2], [3, 2]]  # written out by hand: B's "d" is union column 3, its "c" column 2
UHC_TEACHERS = [
    [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [-2.0, 0.0, 0.5]],
    [[1.5, -0.5], [0.0, 2.0], [3.0, 1.0]],
]
UHC_STUDENT = [[1.0, 0.0, -0.5, 2.0], [-1.0, 0.5, 2.5, 0.0], [0.3, -0.7, 1.2, 2.2]]


def _uhc_by_hand(teachers, student, positions, tau: float) -> float:
    """τ² · Σ_teachers mean_rows −Σ_{y ∈ Y_i} softmax(z_i/τ)_y log softmax(s[Y_i]/τ)_y (module docstring)."""
    s = _np(student)
    total = 0.0
    for z, pos in zip(teachers, positions, strict=True):
        p = _softmax(_np(z) / tau)
        log_q = _log_softmax(s[:, pos] / tau)  # = log of S(y|x) / Σ_{y' ∈ Y_i} S(y'|x): restricted, renormalised
        total += float((-(p * log_q).sum(-1)).mean())
    return tau**2 * total


def test_uhc_restricted_renormalised_softmax_equals_softmax_of_restricted_logits():
    """The identity the code relies on (`002` Eq. 2–3 applied to the student)."""
    s = _np(UHC_STUDENT)
    full = _softmax(s)
    for pos in UHC_POSITIONS:
        renorm = full[:, pos] / full[:, pos].sum(1, keepdims=True)
        np.testing.assert_allclose(renorm, _softmax(s[:, pos]), atol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_uhc_loss_value(tau):
    ctx = _ctx(UHC_LABELS, UHC_TEACHERS)
    m = UHC(tau=tau)
    got = float(m.loss(m.prepare(ctx), _out(UHC_STUDENT)))
    want = _uhc_by_hand(UHC_TEACHERS, UHC_STUDENT, UHC_POSITIONS, tau)
    assert got == pytest.approx(want, abs=ATOL)
    # the pin discriminates: B's labels in union order instead of B's own order, a mean over the two teachers,
    # or no τ² would each be far off
    assert abs(got - _uhc_by_hand(UHC_TEACHERS, UHC_STUDENT, [[0, 1, 2], [2, 3]], tau)) > 1e-2
    assert abs(got - want / 2) > 1e-2
    if tau != 1:
        assert abs(got - want / tau**2) > 1e-2


def test_uhc_loss_one_row_by_arithmetic():
    """One row, teachers that are uniform: each term is log|Y_i| minus nothing when the student is uniform."""
    ctx = _ctx(UHC_LABELS, [[[0.0, 0.0, 0.0]], [[0.0, 0.0]]])
    m = UHC()
    got = float(m.loss(m.prepare(ctx), _out([[0.0, 0.0, 0.0, 0.0]])))
    assert got == pytest.approx(np.log(3) + np.log(2), abs=ATOL)


# --- 2. Teacher Trust Learner (thesis Eq. 9, corrected) ------------------------------------------


def test_expert_targets_are_label_set_membership():
    """Target for teacher k is 1 iff the row's true label is in Y_k (thesis §3.5.1), shared labels in both."""
    ctx = _ctx([("a", "b"), ("b", "c")], [[[0.0, 0.0]] * 4, [[0.0, 0.0]] * 4], y=[0, 1, 2, -1])
    e = expert_targets(ctx)[ctx.labeled]
    assert e.tolist() == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def test_trust_learner_loss_value():
    """Binary cross-entropy with logits, −[1_Tk log e_k + (1 − 1_Tk) log(1 − e_k)], e = σ(logit) (Eq. 7, 9).

    The code averages over rows *and* teachers (``F.binary_cross_entropy_with_logits``' default); Eq. 9
    sums over the p teachers of one instance, so the code's value is Eq. 9 / p (a constant factor)."""
    logits = [[2.0, -1.0], [0.5, 0.5], [-3.0, 1.5]]
    expert = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    got = float(
        TrustLearning().loss({"expert": torch.tensor(expert)}, StudentOutput(torch.tensor(logits), torch.zeros(3, 1)))
    )
    z, t = _np(logits), _np(expert)
    e = 1 / (1 + np.exp(-z))
    per = -(t * np.log(e) + (1 - t) * np.log(1 - e))
    assert got == pytest.approx(per.mean(), abs=ATOL)  # mean over the 3 rows × 2 teachers
    assert got * 2 == pytest.approx(per.sum(1).mean(), abs=ATOL)  # = Eq. 9 (sum over k) averaged over rows / p
    assert abs(got - per.sum(1).mean()) > 1e-2  # not the per-instance sum itself
    # the typo'd Eq. 9 as printed, (1 − 1_Tk) log(e_k), would give another value
    assert abs(got - (-(t * np.log(e) + (1 - t) * np.log(e))).mean()) > 1e-2


# --- 3. SupUHC = UHC on every row + cross-entropy on the labeled rows -----------------------------


def test_supuhc_is_uhc_plus_cross_entropy_over_labeled_rows():
    """SPEC Family B: "UHC loss on all data plus cross-entropy on D_l". ``labeled_cross_entropy`` averages
    over the batch's labeled rows only (not over all rows), with weight 1."""
    teachers = [UHC_TEACHERS[0] + [[0.7, -0.2, 0.1]], UHC_TEACHERS[1] + [[0.7, -0.2]]]  # a 4th row
    student = UHC_STUDENT + [[0.0, 1.0, -1.0, 0.5]]
    y = [-1, 0, -1, 3]  # rows 1 and 3 are labeled: "a" and "d"
    ctx = _ctx(UHC_LABELS, teachers, y=y)
    sup = SupUHC()
    got = float(sup.loss(sup.prepare(ctx), _out(student)))

    uhc = _uhc_by_hand(teachers, student, UHC_POSITIONS, 1.0)
    log_q = _log_softmax(_np(student))
    ce_rows = [-log_q[r, y[r]] for r in range(len(y)) if y[r] >= 0]
    want = uhc + float(np.mean(ce_rows))
    assert got == pytest.approx(want, abs=ATOL)
    assert abs(got - (uhc + sum(ce_rows) / len(y))) > 1e-2  # CE averaged over all rows would be smaller

    plain = UHC()
    assert got - float(plain.loss(plain.prepare(ctx), _out(student))) == pytest.approx(np.mean(ce_rows), abs=ATOL)


def test_supuhc_without_labeled_rows_is_uhc():
    ctx = _ctx(UHC_LABELS, UHC_TEACHERS)
    sup = SupUHC()
    got = float(sup.loss(sup.prepare(ctx), _out(UHC_STUDENT)))
    assert got == pytest.approx(_uhc_by_hand(UHC_TEACHERS, UHC_STUDENT, UHC_POSITIONS, 1.0), abs=ATOL)


# --- 4. KD: a shared label takes the mean of the teachers' logits; τ² · KL -------------------------


def test_kd_target_mean_on_shared_label_and_loss_with_tau_2():
    """A knows a, b; B knows b, c. The target logit for "b" is the mean of A's and B's "b" logits
    (SPEC Family A); the loss is τ² · mean_rows KL(softmax(t/τ) ‖ softmax(s/τ)) (Hinton's τ² scaling)."""
    za = [[1.0, 3.0], [-1.0, 0.5]]
    zb = [[5.0, 0.0], [2.0, -2.0]]
    ctx = _ctx([("a", "b"), ("b", "c")], [za, zb])
    assert list(ctx.union) == ["a", "b", "c"]
    m = KD(tau=2.0)
    target = m.prepare(ctx)["target_logits"]
    want_target = [[1.0, (3.0 + 5.0) / 2, 0.0], [-1.0, (0.5 + 2.0) / 2, -2.0]]
    torch.testing.assert_close(target, torch.tensor(want_target), atol=ATOL, rtol=0)

    student = [[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]]
    got = float(m.loss({"target_logits": target}, _out(student)))
    log_p = _log_softmax(_np(want_target) / 2)
    log_q = _log_softmax(_np(student) / 2)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    assert got == pytest.approx(4 * kl, abs=ATOL)  # τ² = 4
    assert abs(got - kl) > 1e-2  # a forgotten τ² fails


# --- 5. calibrated: the ablation switches ---------------------------------------------------------

CAL_LABELS = [("a", "b"), ("c", "d")]


def _skewed_pool():
    """18 rows, 12 of them clearly 'a'. Each teacher is sure (logit 4) on its own rows and only leans (logit 1)
    on the other teacher's, so that step 1's target top probabilities are reachable."""
    rows = (
        [([4.0, 0.0], [1.0, 0.0])] * 12  # 'a'
        + [([0.0, 4.0], [0.0, 1.0])] * 2  # 'b'
        + [([1.0, 0.0], [4.0, 0.0])] * 2  # 'c'
        + [([0.0, 1.0], [0.0, 4.0])] * 2  # 'd'
    )
    return [[r[0] for r in rows], [r[1] for r in rows]]


def _calibrated(ctx, **options):
    m = Calibrated(**options)
    target = m.prepare(ctx)["target"]
    return m, target


def test_calibrated_temperature_false_keeps_every_temperature_at_one():
    za, zb = _skewed_pool()
    zb = [[3 * v for v in row] for row in zb]  # B three times as sharp: with fitting, its T would move
    ctx = _ctx(CAL_LABELS, [za, zb])
    m, target = _calibrated(ctx, temperature=False)
    assert torch.equal(m.diagnostics["temperatures"], torch.ones(2))
    direct = calibrate(
        [ctx.logits(0), ctx.logits(1)],
        [ctx.positions(0), ctx.positions(1)],
        ctx.owners,
        list(ctx.union),
        temperature=False,
    )
    torch.testing.assert_close(target, direct.target, atol=0, rtol=0)
    torch.testing.assert_close(m.diagnostics["target"], target, atol=0, rtol=0)
    fitted, _ = _calibrated(ctx)
    assert (fitted.diagnostics["temperatures"] - 1).abs().max() > 0.1  # the switch does switch something


def test_calibrated_temperature_fitting_absorbs_a_teachers_logit_scale_and_false_does_not():
    """Step 1 fits T_k to a target top probability, so scaling teacher B's logits by 3 triples B's T and, with
    the temperatures everywhere (``mixture_power=1``), leaves the target as it was; with ``temperature=False``
    the sharper B changes the target."""
    za, zb = _skewed_pool()
    zb3 = [[3 * v for v in row] for row in zb]
    plain, scaled = _ctx(CAL_LABELS, [za, zb]), _ctx(CAL_LABELS, [za, zb3])
    m1, t1 = _calibrated(plain, mixture_power=1.0)
    m3, t3 = _calibrated(scaled, mixture_power=1.0)
    torch.testing.assert_close(t3, t1, atol=1e-4, rtol=0)
    assert float(m3.diagnostics["temperatures"][1] / m1.diagnostics["temperatures"][1]) == pytest.approx(3, rel=1e-3)
    _, u1 = _calibrated(plain, temperature=False)
    _, u3 = _calibrated(scaled, temperature=False)
    assert (u3 - u1).abs().max() > 1e-2


def test_calibrated_prior_none_leaves_the_skew_and_uniform_removes_it():
    ctx = _ctx(CAL_LABELS, _skewed_pool())
    uniform = torch.full((4,), 0.25)
    _, balanced = _calibrated(ctx, prior="uniform")  # default balance_sharpness 0.5: the decisions
    sharpened = (balanced.log() / 0.5).softmax(-1)
    torch.testing.assert_close(sharpened.mean(0), uniform, atol=1e-4, rtol=0)
    _, mass = _calibrated(ctx, prior="uniform", balance_sharpness=1.0)  # Saerens: the mass
    torch.testing.assert_close(mass.mean(0), uniform, atol=1e-4, rtol=0)
    _, raw = _calibrated(ctx, prior="none")
    assert (raw.mean(0) - uniform).abs().max() > 0.1  # 12 of 18 rows are 'a': the pool mean leans to 'a'
    assert int(raw.mean(0).argmax()) == 0
    torch.testing.assert_close(raw.sum(1), torch.ones(len(raw)), atol=1e-6, rtol=0)  # still distributions
