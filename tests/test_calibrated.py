"""``calibrated`` and the routing diagnosis on constructed teachers whose behaviour is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.errors import MethodError
from amalgamator.methods.calibrated import balance, estimate_prior, expected_top, fit_temperature, top_probability

CLASSES = ["a", "b", "c", "d"]


def _linear(weight: list[list[float]]) -> nn.Module:
    m = nn.Linear(4, len(weight), bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(weight))
    return m


@pytest.fixture(scope="module")
def pool():
    """Rows of four balanced classes: x = one-hot(class) + noise."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(CLASSES), 300)
    x = (np.eye(4)[[CLASSES.index(v) for v in y]] + rng.normal(0, 0.2, (len(y), 4))).astype(np.float32)
    return x, y


def _teachers(overconfident: bool) -> list[am.Teacher]:
    """A knows {a, b} and is unsure elsewhere; so is B for {c, d}, unless it is overconfident: then
    it answers with near certainty everywhere, 'c' / 'd' for a / b rows, the classes it never saw."""
    a = am.Teacher(_linear([[3, 0, 0, 0], [0, 3, 0, 0]]), labels=["a", "b"], name="A")
    own, foreign = (12.0, 12.0) if overconfident else (3.0, 0.0)
    b = am.Teacher(_linear([[foreign, 0, own, 0], [0, foreign, 0, own]]), labels=["c", "d"], name="B")
    return [a, b]


def test_calibrated_routes_an_overconfident_teacher_correctly_where_kd_does_not(pool):
    x, y = pool
    teachers = _teachers(overconfident=True)
    common = dict(student="mlp", student_options={"hidden": [16]}, epochs=15, batch_size=64, lr=1e-2, seed=0)
    kd = am.amalgamate(teachers, x, method="kd", **common)
    cal = am.amalgamate(teachers, x, method="calibrated", **common)
    own_a_b = np.isin(y, ["a", "b"])
    assert (kd.student.predict(x)[own_a_b] == y[own_a_b]).mean() < 0.1  # KD sends a/b rows to B's classes
    # measured: student 0.94, targets 0.93 (with the temperatures everywhere, mixture_power=1: 0.96 / 0.92)
    assert (cal.student.predict(x)[own_a_b] == y[own_a_b]).mean() > 0.85
    assert (cal.student.predict(x) == y).mean() > 0.92
    temps = cal.diagnostics["temperatures"]
    assert temps[1] > 5 * temps[0]  # the overconfident teacher is cooled much more


def test_ablations_switch_parts_off(pool):
    x, _ = pool
    teachers = _teachers(overconfident=True)
    res = am.amalgamate(
        teachers, x[:200], method="calibrated", method_options={"temperature": False, "prior": "none"}, epochs=1
    )
    assert res.diagnostics["temperatures"].tolist() == [1.0, 1.0]


def test_estimated_prior_leans_toward_the_skew_and_never_collapses():
    """Step 5: one EM step from uniform, shrunk toward uniform by the posterior's decisiveness; a flat
    posterior says nothing, and no class ever falls below a tenth of its uniform share."""
    torch.manual_seed(0)
    means = torch.tensor([[0.0, 0], [3, 0], [0, 3], [3, 3]])
    prior = torch.tensor([0.5, 0.3, 0.15, 0.05])
    y = torch.multinomial(prior, 20000, replacement=True)
    x = means[y] + torch.randn(20000, 2)
    posterior = (-((x[:, None, :] - means[None]) ** 2).sum(-1) / 2).softmax(-1)  # Bayes, under a uniform prior
    uniform = torch.full((4,), 0.25)
    q = estimate_prior(posterior, balance(posterior, uniform))
    assert (q - prior).abs().sum() < 0.75 * (uniform - prior).abs().sum()  # toward the truth
    assert q.argsort().tolist() == prior.argsort().tolist()
    acc = [float((balance(posterior, p).argmax(1) == y).float().mean()) for p in (uniform, q)]
    assert acc[1] > acc[0] + 0.02, acc
    flat = (uniform + 0.01 * torch.rand(1000, 4)).softmax(-1)
    torch.testing.assert_close(estimate_prior(flat, flat), uniform, atol=1e-3, rtol=0)
    sure = torch.eye(4)[torch.zeros(1000, dtype=torch.long)]  # one class only, perfectly sure
    assert float(estimate_prior(sure, sure).min()) >= 0.1 / 4 - 1e-6


def test_temperature_and_balance_hit_their_targets():
    torch.manual_seed(0)
    logits = torch.randn(500, 5) * 4
    assert expected_top(0.5, 5) == pytest.approx(0.6)  # two balanced 5-class teachers
    t = fit_temperature(logits, 0.6)
    assert top_probability(logits, t) == pytest.approx(0.6, abs=1e-4)
    q = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2])
    torch.testing.assert_close(balance(logits.softmax(-1), q).mean(0), q, atol=1e-4, rtol=0)


def test_balancing_the_decisions_predicts_a_diffuse_class():
    """A class whose mass is spread thinly (0.2-0.3 on every row, as from a heavily tempered teacher)
    gets its quarter of the mass under mass balancing but almost no predictions; balancing the
    sharpened posterior moves the predictions toward the prior, the more the sharper."""
    torch.manual_seed(0)
    n = 400
    others = (torch.randn(n, 3) * 4).softmax(-1)  # classes b, c, d: a confident teacher
    a = 0.2 + 0.1 * torch.rand(n, 1)
    posterior = torch.cat([a, (1 - a) * others], 1)
    uniform = torch.full((4,), 0.25)
    share_of_a = {}
    for s in (1.0, 0.5, 0.25):
        balanced = balance(posterior, uniform, sharpness=s)
        sharpened = (balanced.log() / s).softmax(-1)
        torch.testing.assert_close(sharpened.mean(0), uniform, atol=1e-4, rtol=0)  # what meets the prior
        share_of_a[s] = float((balanced.argmax(1) == 0).float().mean())
    assert share_of_a[1.0] < 0.01  # a quarter of the mass, 1 prediction in 400
    assert share_of_a[1.0] < share_of_a[0.5] < share_of_a[0.25]


def test_prior_option_errors_name_the_problem(pool):
    x, _ = pool
    teachers = _teachers(overconfident=False)
    with pytest.raises(MethodError, match="misses"):
        am.amalgamate(teachers, x[:50], method="calibrated", method_options={"prior": {"a": 1.0}}, epochs=1)
    with pytest.raises(MethodError, match="option .prior. must be"):
        am.amalgamate(teachers, x[:50], method="calibrated", method_options={"prior": "skewed"}, epochs=1)
    with pytest.raises(MethodError, match="own_confidence"):
        am.amalgamate(teachers, x[:50], method="calibrated", method_options={"own_confidence": 0}, epochs=1)
    skewed = {"a": 1, "b": 1, "c": 1, "d": 5}
    res = am.amalgamate(teachers, x[:50], method="calibrated", method_options={"prior": skewed}, epochs=1)
    assert res.method_object.calibration.prior.tolist() == pytest.approx([0.125, 0.125, 0.125, 0.625])


def test_diagnose_flags_the_overconfident_teacher_and_its_sinks(pool, tmp_path):
    x, _ = pool
    bad = am.diagnose(_teachers(overconfident=True), x)
    assert bad.risky and bad.risk > 0.3
    assert [t.name for t in bad.teachers if t.overconfident] == ["B"]
    assert set(bad.sinks) == {"c", "d"}
    assert any("calibrated" in a and "tc" in a for a in bad.advice)
    good = am.diagnose(_teachers(overconfident=False), x)
    assert not good.risky and not good.sinks and not any(t.overconfident for t in good.teachers)
    assert bad.risk > good.risk
    assert "RISKY" in bad.markdown() and "sink" in bad.markdown()
    assert bad.plot(tmp_path / "d.png").stat().st_size > 1000


def test_cli_inspect_with_data_prints_the_diagnosis(pool, tmp_path, capsys):
    from amalgamator import cli

    x, y = pool
    for t in _teachers(overconfident=True):
        am.Student(
            am.models.Identity(),
            _union_net(t),
            t.labels,
            architecture={"preset": "mlp", "options": {"in_dim": 4, "hidden": [], "dropout": 0.0}},
        ).save(tmp_path / t.name)
    np.savez(tmp_path / "pool.npz", x=x)
    (tmp_path / "recipe.yaml").write_text("teachers: [{path: A}, {path: B}]\ndata: pool.npz\nmethod: calibrated\n")
    with pytest.raises(SystemExit) as done:
        cli.main(["inspect", str(tmp_path / "recipe.yaml"), "--data", str(tmp_path / "pool.npz")])
    assert not done.value.code
    out = capsys.readouterr().out
    assert "RISKY" in out and "Overconfident on this pool: B" in out and "Sink classes" in out
    assert (tmp_path / "diagnosis.png").exists()


def _union_net(teacher: am.Teacher) -> nn.Module:
    """The teacher's linear map as a student network: an empty MLP backbone and the map as head."""
    from amalgamator.models import MLP
    from amalgamator.student import UnionNet

    net = UnionNet(MLP(4, [], 0.0), 4, len(teacher.labels))
    with torch.no_grad():
        net.head.weight.copy_(teacher.model.weight)
        net.head.bias.zero_()
    return net
