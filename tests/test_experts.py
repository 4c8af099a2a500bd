"""Many narrow experts (issue 19): teachers carry feature statistics, and `mahalanobis` routes by them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.errors import AmalgamatorError, MethodError
from amalgamator.statistics import FeatureStatistics, fit_statistics, gaussian_log_density

from .conftest import fit_mlp

PAIRS = [[str(2 * i), str(2 * i + 1)] for i in range(5)]


@pytest.fixture(scope="module")
def experts(digits):
    """Five teachers of two digits each, with statistics of their own training rows."""
    x, y, t, _, _ = digits
    out = []
    for i, labels in enumerate(PAIRS):
        teacher = am.Teacher(fit_mlp(x[t], y[t], labels, 32, i), labels=labels, name=f"d{i}", features="1")
        own = t[np.isin(y[t], labels)]
        fit_statistics(teacher, x[own], y[own])
        out.append(teacher)
    return out


def _target_accuracy(res, y):
    union = list(res.student.labels)
    return float((np.asarray(union)[res.diagnostics["target"].argmax(1).numpy()] == y).mean())


def test_statistics_are_class_means_and_tied_covariance(digits, experts):
    x, y, t, _, _ = digits
    teacher = experts[0]
    own = t[np.isin(y[t], PAIRS[0])]
    h = torch.relu(teacher.model[0](torch.as_tensor(x[own]))).double()
    stats = teacher.statistics
    assert stats.space == "1" and stats.labels == PAIRS[0] and stats.dims == 32
    for c, label in enumerate(PAIRS[0]):
        rows = torch.as_tensor(y[own] == label)
        assert torch.allclose(stats.means[c], h[rows].mean(0), atol=1e-6)
        assert int(stats.counts[c]) == int(rows.sum())
    centred = h - stats.means[torch.as_tensor([PAIRS[0].index(v) for v in y[own]])]
    assert torch.allclose(stats.covariance, centred.T @ centred / (len(h) - 2), atol=1e-6)


def test_statistics_from_the_teachers_own_predictions_need_no_labels(digits, experts):
    x, y, t, _, _ = digits
    own = t[np.isin(y[t], PAIRS[1])]
    unlabeled = fit_statistics(experts[1], x[own])
    labeled = fit_statistics(experts[1], x[own], y[own])
    assert torch.allclose(unlabeled.means, labeled.means, atol=0.5)  # the teacher is right on its own rows


def test_statistics_save_load_and_refuse_a_foreign_file(experts, tmp_path):
    path = experts[2].statistics.save(tmp_path / "d2.safetensors")
    back = FeatureStatistics.load(path)
    assert back.labels == PAIRS[2] and back.space == "1"
    assert torch.equal(back.means, experts[2].statistics.means)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AmalgamatorError, match="not a readable statistics file"):
        FeatureStatistics.load(tmp_path / "bad.safetensors")


def test_statistics_refuse_labels_the_teacher_does_not_have(digits, experts):
    x, y, t, _, _ = digits
    with pytest.raises(AmalgamatorError, match="not among teacher 'd0'"):
        fit_statistics(experts[0], x[t], y[t])


def test_gaussian_log_density_matches_scipy():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov, means = a @ a.T + np.eye(3), rng.normal(size=(2, 3))
    h = rng.normal(size=(5, 3))
    expected = np.log(0.3 * multivariate_normal(means[0], cov).pdf(h) + 0.7 * multivariate_normal(means[1], cov).pdf(h))
    got = gaussian_log_density(torch.as_tensor(h), torch.as_tensor(means), torch.as_tensor(cov),
                               torch.tensor([0.3, 0.7], dtype=torch.float64))  # fmt: skip
    assert np.allclose(got.numpy() - 1.5 * np.log(2 * np.pi), expected, atol=1e-8)


def test_weighted_gaussians_tied_covariance_is_the_per_class_sum():
    from amalgamator.methods.mahalanobis import weighted_gaussians

    g = torch.Generator().manual_seed(0)
    h = (torch.randn(300, 12, generator=g) * 0.1 + 1e3).double()  # a large offset must not cancel the spread
    resp = torch.rand(300, 4, generator=g).double()
    means, cov, weights = weighted_gaussians(h, resp)
    mass = resp.sum(0)
    want = sum((resp[:, c : c + 1] * (h - means[c])).T @ (h - means[c]) for c in range(4)) / mass.sum()
    torch.testing.assert_close(cov, want, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(means, resp.T @ h / mass[:, None])
    torch.testing.assert_close(weights, mass / mass.sum())


def test_mahalanobis_routes_where_confidence_cannot(digits, experts):
    """Five teachers of two digits: the carried statistics route most rows to their owner, far more
    than calibrated's confidence-based gate, and the student follows."""
    x, y, _, pool, test = digits
    runs = {m: am.amalgamate(experts, data=x[pool], method=m, epochs=30, seed=0, progress=False)
            for m in ("mahalanobis", "calibrated")}  # fmt: skip
    routed = {m: _target_accuracy(r, y[pool]) for m, r in runs.items()}
    assert routed["mahalanobis"] > 0.85 and routed["mahalanobis"] > routed["calibrated"] + 0.1, routed
    acc = float((runs["mahalanobis"].student.predict(x[test]) == y[test]).mean())
    assert acc > 0.8, acc
    gate = runs["mahalanobis"].diagnostics["routing"]
    assert gate.shape == (len(pool), 5) and torch.allclose(gate.sum(1), torch.ones(len(pool)), atol=1e-5)


def test_mahalanobis_refuses_teachers_without_statistics(digits, teachers):
    x, _, _, pool, _ = digits
    with pytest.raises(MethodError, match=r"'low', 'high' carry none.*am.fit_statistics"):
        am.amalgamate(teachers, data=x[pool], method="mahalanobis", epochs=1, progress=False)


def test_mahalanobis_pool_variant_needs_no_statistics(digits, teachers):
    x, y, _, pool, _ = digits
    res = am.amalgamate(teachers, data=x[pool], method="mahalanobis", method_options={"statistics": "pool"},
                        epochs=1, progress=False)  # fmt: skip
    assert _target_accuracy(res, y[pool]) > 0.5


def test_mahalanobis_on_input_statistics_and_labeled_rows(digits):
    """A teacher without a feature tap carries statistics of its input; labeled rows learn their label."""
    x, y, t, pool, _ = digits
    bare = []
    for i, labels in enumerate(PAIRS):
        teacher = am.Teacher(fit_mlp(x[t], y[t], labels, 16, 10 + i), labels=labels, name=f"b{i}")
        own = t[np.isin(y[t], labels)]
        assert fit_statistics(teacher, x[own]).space == "input"
        bare.append(teacher)
    lab = pool[:20]
    res = am.amalgamate(bare, data=x[pool[20:]], labeled=(x[lab], y[lab]), method="mahalanobis", epochs=1,
                        progress=False)  # fmt: skip
    target = res.diagnostics["target"]
    union = list(res.student.labels)
    assert [union[i] for i in target[-20:].argmax(1).tolist()] == list(y[lab])
    assert torch.allclose(target[-20:].max(1).values, torch.ones(20))
    assert _target_accuracy(res, np.concatenate([y[pool[20:]], y[lab]])) > 0.7


def test_auto_routes_with_statistics_when_every_teacher_carries_them(digits, experts, teachers, capsys, monkeypatch):
    x, y, _, pool, _ = digits
    res = am.amalgamate(experts, data=x[pool], epochs=1, progress=False)
    choice = res.student.info["method_choice"]
    assert choice["method"] == "mahalanobis" and "carries feature statistics" in choice["why"], choice
    monkeypatch.delenv("AMALGAMATOR_QUIET")
    bare = [am.Teacher(t.model, labels=list(t.labels), name=t.name) for t in experts]  # same teachers, no statistics
    res = am.amalgamate(bare, data=x[pool], epochs=1, progress=False)
    assert res.student.info["method_choice"]["method"] != "mahalanobis"
    if res.student.info["method_choice"].get("risky"):
        assert "am.fit_statistics" in capsys.readouterr().err


def test_statistics_travel_with_a_saved_teacher_and_in_recipes(digits, experts, tmp_path):
    """A statistics file beside a saved teacher loads with it; Teacher(..., statistics=path) and a recipe's
    statistics: key attach one; the teacher then shows the capability."""
    x, y, _, pool, _ = digits
    teacher = experts[0]
    folder = tmp_path / "d0"
    student = am.train_classifier(x[:200], np.where(np.isin(y[:200], PAIRS[0]), y[:200], PAIRS[0][0]), labels=PAIRS[0],
                                  epochs=1, progress=False)  # fmt: skip
    student.save(folder)
    loaded = am.Teacher.from_pretrained(folder)
    assert loaded.statistics is None and "statistics" not in loaded.capabilities
    fit_statistics(loaded, x[:200], space="input").save(folder / "statistics.safetensors")
    again = am.Teacher.from_pretrained(folder)
    assert again.statistics is not None and "statistics" in again.capabilities
    path = teacher.statistics.save(tmp_path / "s.safetensors")
    wrapped = am.Teacher(teacher.model, labels=PAIRS[0], name="w", statistics=path)
    assert wrapped.features == ["1"] and torch.equal(wrapped.statistics.means, teacher.statistics.means)
    with pytest.raises(am.AmalgamatorError, match="statistics are for labels"):
        am.Teacher(teacher.model, labels=["x", "y"], name="w", statistics=path)


def test_recipe_teacher_takes_a_statistics_file(tmp_path, digits):
    from amalgamator.recipe import parse_recipe

    x, y, _, _, _ = digits
    keep = np.isin(y, PAIRS[0])
    student = am.train_classifier(x[keep], y[keep], labels=PAIRS[0], epochs=1, progress=False)
    student.save(tmp_path / "t")
    fit_statistics(am.Teacher.from_pretrained(tmp_path / "t"), x[keep], space="input").save(tmp_path / "t.safetensors")
    recipe = parse_recipe({"teachers": [{"path": "t", "statistics": "t.safetensors"}], "data": {"path": "d.csv"}},
                          source=tmp_path / "recipe.yaml")  # fmt: skip
    (teacher,) = recipe.build_teachers()
    assert teacher.statistics is not None and teacher.statistics.labels == PAIRS[0]
