"""Label-free amalgamation users can trust (issue 10): one-label teachers, EM prior, gate, temperatures."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.errors import MethodError

from .conftest import fit_mlp


@pytest.mark.parametrize("method", ["muki-hard", "muki-soft", "calibrated"])
def test_a_one_label_teacher_is_refused_where_confidence_routes(digits, method):
    """Its softmax is 1 everywhere: MUKI's uncertainty 0 and calibrated's excess confidence 1 on every row,
    so it would win every example. The refusal names the teacher and the way out."""
    x, y, t, p, _ = digits
    lone = am.Teacher(nn.Linear(64, 1), labels=["0"], name="lone")
    other = am.Teacher(fit_mlp(x[t], y[t], ["1", "2", "3"], 16, 0), labels=["1", "2", "3"], name="other")
    with pytest.raises(MethodError, match="teacher 'lone': it has a single label") as err:
        am.amalgamate([lone, other], data=x[p], method=method, epochs=1)
    assert "\n" not in str(err.value) and "kd" in str(err.value)
    am.amalgamate([lone, other], data=x[p], method="kd", epochs=1, progress=False)  # KD reads its raw logit


def _bayes_teachers(means: torch.Tensor) -> list[am.Teacher]:
    """Two Gaussian-Bayes teachers over {a, b} and {c, d}: logit_y(x) = x·μ_y − |μ_y|²/2 (+ a common term)."""
    out = []
    for name, idx in (("ab", [0, 1]), ("cd", [2, 3])):
        m = nn.Linear(means.shape[1], 2)
        with torch.no_grad():
            m.weight.copy_(means[idx])
            m.bias.copy_(-(means[idx] ** 2).sum(1) / 2)
        out.append(am.Teacher(m, labels=[["a", "b", "c", "d"][i] for i in idx], name=name))
    return out


def _pool(means: torch.Tensor, prior: list[float], n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
    return means[y] + torch.randn(n, means.shape[1], generator=g), y


@pytest.mark.parametrize("spelling", ["estimate", "em"])
def test_estimated_prior_at_the_method_level(spelling):
    """prior='estimate' (old spelling 'em') through amalgamate. Balanced pool: the estimate stays near uniform
    (it collapsed to 1.00/0.00 under EM) and costs under a point. Skewed pool: it leans toward the skew and
    its targets are more accurate. The skewed check runs without temperatures: on these well-separated
    linear teachers the temperature fit flattens every target to near uniform (T ≈ 11; lab notes), and no
    prior can then be read from them."""
    means = torch.tensor([[0.0, 0], [5, 0], [0, 5], [5, 5]])
    teachers = _bayes_teachers(means)

    def run(x, y, prior, temperature=True):
        res = am.amalgamate(teachers, data=x, method="calibrated", epochs=1, progress=False,
                            method_options={"prior": prior, "temperature": temperature})  # fmt: skip
        return float((res.diagnostics["target"].argmax(1) == y).float().mean()), res.method_object.calibration.prior

    x, y = _pool(means, [0.25] * 4)
    for temperature in (True, False):
        uniform, _ = run(x, y, "uniform", temperature)
        est, q = run(x, y, spelling, temperature)
        assert est >= uniform - 0.01 and float(q.min()) > 0.2, (temperature, est, uniform, q)
    skew = [0.55, 0.25, 0.15, 0.05]
    x, y = _pool(means, skew)
    uniform, _ = run(x, y, "uniform", False)
    est, q = run(x, y, spelling, False)
    assert est > uniform + 0.01, (est, uniform)
    assert float(q[0]) > float(q[1]) and float(q[2]) > float(q[3])  # within each teacher's labels


class _HonestTeacher(nn.Module):
    """A teacher over some of four Gaussian classes that knows what it does not know: its softmax is the Bayes
    posterior within its labels, mixed with uniform by the probability that the row is foreign."""

    def __init__(self, means: torch.Tensor, own: list[int]):
        super().__init__()
        self.register_buffer("means", means)
        self.own = own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        post = (-((x[:, None, :] - self.means[None]) ** 2).sum(-1) / 2).softmax(-1)
        mine = post[:, self.own].sum(1, keepdim=True)
        within = post[:, self.own] / mine
        return (mine * within + (1 - mine) / len(self.own)).log()


def _auto(teachers, x, **kw):
    res = am.amalgamate(teachers, data=x, epochs=2, progress=False, **kw)  # method defaults to "auto"
    return res, res.student.info["method_choice"]


def test_auto_is_the_default_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AMALGAMATOR_QUIET")
    means = torch.tensor([[0.0, 0], [4, 0], [0, 4], [4, 4]])
    x, y = _pool(means, [0.25] * 4, n=800)
    honest = [am.Teacher(_HonestTeacher(means, idx), labels=lb, name=nm)
              for nm, idx, lb in (("ab", [0, 1], ["a", "b"]), ("cd", [2, 3], ["c", "d"]))]  # fmt: skip
    res, choice = _auto(honest, x, out=tmp_path / "clean")
    assert res.method == "auto" and choice["method"] == "uhc" and not choice["risky"], choice
    assert "auto: uhc, because no labels and a clean pool" in capsys.readouterr().err
    assert "Method chosen by `auto`: `uhc`" in (tmp_path / "clean" / "report.md").read_text()

    _, choice = _auto(_bayes_teachers(means), x)  # linear teachers, sure on foreign rows too
    assert choice["method"] == "calibrated" and choice["risky"] and choice["overconfident"], choice

    lab = torch.arange(40)
    names = ["a", "b", "c", "d"]
    _, choice = _auto(honest, x, labeled=(x[lab], [names[int(v)] for v in y[lab]]))
    assert choice["method"] == "calibrated" and choice["labeled"] == 40, choice  # the labels confirm the targets
    assert choice["label_agreement"] >= 0.9 and "of the 40 labeled rows" in choice["why"], choice

    # linear teachers sure on foreign rows: calibrated's targets are right on about half the labeled rows
    res, choice = _auto(_bayes_teachers(means), x, labeled=(x[lab], [names[int(v)] for v in y[lab]]))
    assert choice["method"] == "supuhc" and choice["label_agreement"] < 0.9, choice
    assert "the labels correct them" in choice["why"]
    assert float((torch.as_tensor(res.student.predict_proba(x)).argmax(1) == y).float().mean()) > 0.8


def test_mixture_power_sets_where_the_temperatures_act():
    """The gate reads the tempered teachers; the mixture mixes each teacher at T ** mixture_power. With
    disjoint teachers and no prior balancing, the target restricted to a teacher's labels (renormalised)
    is that teacher's softmax at T ** a: its own at a = 0, fully tempered at a = 1, and √T by default."""
    means = torch.tensor([[0.0, 0], [3, 0], [0, 3], [3, 3]])
    x, _ = _pool(means, [0.25] * 4, n=500)
    teachers = _bayes_teachers(means)
    runs = {}
    for power in (0.0, 0.5, 1.0, None):
        opts = {"prior": "none", "iterations": 1} | ({} if power is None else {"mixture_power": power})
        runs[power] = am.amalgamate(teachers, data=x, method="calibrated", epochs=1, progress=False,
                                    method_options=opts).diagnostics  # fmt: skip
    temps = runs[1.0]["temperatures"]
    assert float(temps.min()) > 1.5 and all(torch.equal(temps, r["temperatures"]) for r in runs.values())
    torch.testing.assert_close(runs[None]["target"], runs[0.5]["target"])
    for k, t in enumerate(teachers):
        for power in (0.0, 0.5, 1.0):
            expected = (t.logits(x) / temps[k] ** power).softmax(-1)
            part = runs[power]["target"][:, 2 * k : 2 * k + 2]
            torch.testing.assert_close(part / part.sum(1, keepdim=True), expected, atol=1e-5, rtol=1e-4)
