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
