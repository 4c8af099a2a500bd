"""Family D (thesis `000` Ch. 5): venus, must, kd-mt, and cfl with multi-task teachers.

Synthetic problem: 8 Gaussian inputs through one fixed tanh layer of 12 units, five binary tasks
y_k = [w_k · h(x) > 0]. Teacher "ta" knows a, b, c and teacher "tc" knows c, d, e (c shared); each is a
``MultiTaskNet`` (a two-layer shared body, tapped at "body", and one linear head per task) fitted with BCE
on its own 800 rows (0.87–0.98 per task on its tasks). Pool 600 rows, test 400. Measured mean accuracy on
the test rows (seeds 0–2, MLP student with one hidden layer of 32, batch 128, lr 1e-2, 40 epochs; cfl 20):
either teacher alone over the union (its unknown tasks predicted 0) about 0.76; venus 0.925–0.930, kd-mt
0.927–0.931, must 0.924–0.928, cfl 0.919–0.922. The floors keep 3 points of headroom.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import AmalgamatorError, MethodError
from amalgamator.labels import LabelSpace
from amalgamator.methods.base import Context, StudentOutput
from amalgamator.methods.venus import (
    VENUS,
    FeatureConsolidator,
    KDMultiTask,
    MuST,
    consensus_target,
    feature_loss,
    pool_feature,
    venus_loss,
)
from amalgamator.store import LOGITS
from amalgamator.student import Student

TASKS = ["a", "b", "c", "d", "e"]
TRAIN = dict(student="mlp", student_options={"hidden": [32]}, batch_size=128, lr=1e-2, progress=False, seed=0)
EPOCHS = {"venus": 40, "kd-mt": 40, "must": 40, "cfl": 20}
FLOOR = {"venus": 0.89, "kd-mt": 0.89, "must": 0.89, "cfl": 0.89}
#: small test runs make fewer optimiser steps than the engine's warning threshold, on purpose
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*optimiser steps.*:UserWarning"),
    pytest.mark.usefixtures("one_thread"),  # one CPU thread (conftest)
]


class MultiTaskNet(nn.Module):
    """Shared body (its output, module "body", is the final shared representation) + one head per task."""

    def __init__(self, n_tasks: int, width: int, n_heads: int | None = None):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_heads or n_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return torch.cat([h(f) for h in self.heads], 1)


def problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 8) and y (n, 5): five tasks read off one shared non-linear layer."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(99)
    w1, w2 = torch.randn(8, 12, generator=g), torch.randn(12, 5, generator=g)
    y = (torch.tanh(x @ w1 / 2) @ w2 > 0).float()
    return x.numpy(), y.numpy()


def fit_teacher(tasks: list[str], seed: int, width: int) -> am.Teacher:
    x, y = problem(800, seed)
    cols = [TASKS.index(t) for t in tasks]
    torch.manual_seed(seed)
    m = MultiTaskNet(len(tasks), width)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y[:, cols])
    for _ in range(200):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(m(xt), yt).backward()
        opt.step()
    return am.Teacher(m.eval(), labels=tasks, name=f"t{tasks[0]}", kind="multitask", features="body")


@pytest.fixture(scope="module")
def teachers() -> list[am.Teacher]:
    return [fit_teacher(["a", "b", "c"], 1, 16), fit_teacher(["c", "d", "e"], 2, 24)]


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xp, _ = problem(600, 10)
    xs, ys = problem(400, 11)
    return xp, xs, ys


def context(logits: list[list[list[float]]], tasks: list[list[str]]) -> Context:
    """A Context over stand-in multi-task teachers with the given stored logits (no models, no store)."""

    class _T:
        def __init__(self, names: list[str], i: int):
            self.labels, self.kind, self.name, self.features = LabelSpace(names), "multitask", f"t{i}", []

    ts = [_T(names, i) for i, names in enumerate(tasks)]
    union = LabelSpace.union([t.labels for t in ts])
    outs = [{LOGITS: torch.tensor(z, dtype=torch.float32)} for z in logits]
    n = len(logits[0])
    return Context(ts, union, outs, Inputs(torch.zeros(n, 1)), torch.full((n, len(union)), -1.0))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# Targets (Eq. 50; must's hard pseudo-labels) ----------------------------------------------------------

TABLE = context(
    [[[1.0, 2.0], [-2.0, 0.0], [0.5, -3.0]], [[-1.0, 3.0], [4.0, -1.0], [-0.2, 0.0]]],  # A: a, s; B: s, b
    [["a", "s"], ["s", "b"]],
)


def test_consensus_target_is_sigmoid_of_the_mean_logit_of_the_teachers_that_know_the_task():
    assert list(TABLE.union) == ["a", "s", "b"]
    target = KDMultiTask().prepare(TABLE)["target"]
    want = torch.sigmoid(torch.tensor([[1.0, 0.5, 3.0], [-2.0, 2.0, -1.0], [0.5, -1.6, 0.0]]))  # s: mean of A, B
    assert torch.allclose(target, want)
    assert target[0].tolist() == pytest.approx([0.7310586, 0.6224593, 0.9525741], abs=1e-6)  # σ(1), σ(0.5), σ(3)
    parts = [(TABLE.positions(i), TABLE.logits(i)) for i in range(2)]
    assert torch.equal(consensus_target(parts, 3), target)


def test_must_learns_the_hard_consensus():
    target = MuST().prepare(TABLE)["target"]
    # σ(0) = 0.5 is not > 0.5: negative (row 3, b)
    assert target.tolist() == [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    out = StudentOutput(torch.tensor([[0.3, -0.2, 1.0]]), torch.zeros(1, 4))
    loss = MuST().loss({"target": target[:1]}, out)
    assert float(loss) == pytest.approx(float(F.binary_cross_entropy_with_logits(out.logits, target[:1])))


# Feature Consolidator (Eq. 45–46) and the total loss (Eq. 52) -----------------------------------------


def test_adaptor_is_relu_of_an_affine_map_to_the_teacher_width():
    fc = FeatureConsolidator(2, [3, 1])
    assert [tuple(a.weight.shape) for a in fc.adaptors] == [(3, 2), (1, 2)]
    with torch.no_grad():
        fc.adaptors[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
        fc.adaptors[1].bias.fill_(0.5)
    out = fc(torch.tensor([[2.0, 1.0], [0.0, 3.0]]))
    assert out[1].tolist() == [[1.5], [0.0]]  # ReLU(2 − 1 + 0.5), ReLU(0 − 3 + 0.5) = 0


def test_feature_loss_and_total_loss_with_equal_weights_on_fixed_tensors():
    adapted = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0], [1.0]])]
    teacher = [torch.tensor([[0.0, 2.0], [3.0, 6.0]]), torch.tensor([[2.0], [3.0]])]
    # teacher 1: (1 + 0 + 0 + 4) / 4 = 1.25; teacher 2: (1 + 4) / 2 = 2.5; mean over the m = 2 teachers
    assert float(feature_loss(adapted, teacher)) == pytest.approx(1.875)
    total, feat = venus_loss(adapted, teacher, torch.zeros(2, 3), torch.full((2, 3), 0.5))
    assert float(feat) == pytest.approx(1.875)
    assert float(total) == pytest.approx(1.875 + float(np.log(2.0)), abs=1e-6)  # BCE(σ(0), 0.5) = log 2


def test_kd_mt_is_venus_without_the_feature_term():
    torch.manual_seed(0)
    venus = VENUS()
    venus.consolidator = FeatureConsolidator(4, [3, 2])
    batch = {
        "target": torch.rand(5, 3),
        "venus_feature_0": torch.rand(5, 3),
        "venus_feature_1": torch.rand(5, 2),
    }
    out = StudentOutput(torch.randn(5, 3), torch.randn(5, 4))
    with torch.no_grad():
        feat = feature_loss(venus.consolidator(out.features), [batch["venus_feature_0"], batch["venus_feature_1"]])
    task = KDMultiTask().loss(batch, out)
    assert float(venus.loss(batch, out).detach()) == pytest.approx(float((feat + task).detach()))
    assert float(task) == pytest.approx(float(F.binary_cross_entropy_with_logits(out.logits, batch["target"])))
    assert venus.feature_log == [pytest.approx(float(feat))]


def test_teacher_feature_maps_and_sequences_are_average_pooled():
    m = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(pool_feature(m), m.mean((2, 3)))
    s = torch.rand(2, 5, 4)
    assert torch.equal(pool_feature(s), s.mean(1))
    with pytest.raises(MethodError, match="final shared layer"):
        pool_feature(torch.rand(2, 1, 1, 1, 1))


# VENUS end to end: adaptors train, then stay out of the saved student ---------------------------------


def test_venus_adaptors_train_and_are_dropped_from_the_saved_student(teachers, pool, tmp_path):
    xp = pool[0]
    res = am.amalgamate(teachers, data=xp, method="venus", epochs=EPOCHS["venus"], **TRAIN)
    method = res.method_object
    consolidator = method.modules()
    assert isinstance(consolidator, FeatureConsolidator)
    assert [tuple(a.weight.shape) for a in consolidator.adaptors] == [(16, 32), (24, 32)]  # F_s → each F_c^j
    log = method.feature_log
    assert len(log) == EPOCHS["venus"] * 5  # one entry per optimiser step (600 rows / 128)
    assert np.mean(log[-5:]) < 0.25 * np.mean(log[:5]), (log[:5], log[-5:])

    res.student.save(tmp_path / "venus")
    saved = load_file(str(tmp_path / "venus" / "model.safetensors"))
    adaptor_names = {f"extra.{k}" for k in consolidator.state_dict()} | set(consolidator.state_dict())
    assert not adaptor_names & set(saved), sorted(saved)
    assert not [k for k in saved if "adaptor" in k or "extra" in k]
    torch.manual_seed(0)
    plain = Student.create("mlp", Inputs(xp), TASKS, "multitask", {"hidden": [32]})
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in plain.network.parameters())
    assert np.array_equal(am.load_student(tmp_path / "venus").predict_proba(xp), res.student.predict_proba(xp))


def test_venus_is_deterministic_for_a_seed(teachers, pool):
    xp, xs, _ = pool
    runs = [am.amalgamate(teachers, data=xp[:256], method="venus", epochs=2, **{**TRAIN, "seed": s}) for s in (3, 3, 4)]
    probs = [r.student.predict_proba(xs) for r in runs]
    assert np.array_equal(probs[0], probs[1])
    assert not np.array_equal(probs[0], probs[2])


@pytest.mark.parametrize("method", ["venus", "kd-mt", "must", "cfl"])
def test_each_method_learns_every_task_of_the_union(teachers, pool, method):
    xp, xs, ys = pool
    solo = []
    for t in teachers:
        pred = np.zeros_like(ys)
        pred[:, [TASKS.index(v) for v in t.labels]] = t.predict(xs)
        solo.append(float((pred == ys).mean()))
    start = time.perf_counter()
    res = am.amalgamate(teachers, data=xp, method=method, epochs=EPOCHS[method], **TRAIN)
    seconds = time.perf_counter() - start
    assert res.student.kind == "multitask" and list(res.student.labels) == TASKS
    assert res.student.predict(xs).shape == (400, 5)
    m = am.evaluate(res.student, xs, ys)
    assert set(m["roc_auc"]) == set(TASKS) and all(v is not None and v > 0.8 for v in m["roc_auc"].values()), m
    assert m["accuracy_mean"] > FLOOR[method], (method, m["accuracy_mean"])
    assert m["accuracy_mean"] > max(solo) + 0.1, (method, m["accuracy_mean"], solo)
    assert res.history.loss[-1] < res.history.loss[0]
    assert seconds < 15, (method, seconds)


# Refusals ----------------------------------------------------------------------------------------------


def test_a_teacher_whose_head_count_differs_from_its_task_names_is_refused_with_both_numbers():
    torch.manual_seed(0)
    bad = am.Teacher(MultiTaskNet(2, 8, n_heads=3).eval(), labels=["a", "b"], kind="multitask", features="body")
    with pytest.raises(AmalgamatorError) as err:
        am.amalgamate([bad], data=np.zeros((20, 8), np.float32), method="kd-mt", epochs=1, progress=False)
    msg = _one_line(err)
    assert "3 logits" in msg and "2 labels" in msg, msg


def test_venus_refuses_a_teacher_without_a_feature_tap(teachers, pool):
    bare = am.Teacher(teachers[0].model, labels=list(teachers[0].labels), name="bare", kind="multitask")
    with pytest.raises(MethodError) as err:
        am.amalgamate([bare, teachers[1]], data=pool[0], method="venus", epochs=1, progress=False)
    msg = _one_line(err)
    assert "'bare'" in msg and "features='<final shared layer>'" in msg, msg


@pytest.mark.parametrize("method", ["venus", "must", "kd-mt"])
def test_multi_task_methods_refuse_multiclass_teachers_naming_the_methods_that_fit(method):
    mc = [am.Teacher(nn.Linear(8, 2), ["a", "b"], name="mc")]
    with pytest.raises(MethodError) as err:
        am.amalgamate(mc, data=np.zeros((20, 8), np.float32), method=method, epochs=1, progress=False)
    msg = _one_line(err)
    assert f"method {method!r} amalgamates multitask teachers" in msg and "'mc' is multiclass" in msg, msg
    assert "methods for these teachers:" in msg and "kd" in msg.split("methods for these teachers:")[1], msg


def test_kd_refuses_multitask_teachers_naming_venus(teachers, pool):
    with pytest.raises(MethodError) as err:
        am.amalgamate(teachers, data=pool[0], method="kd", epochs=1, progress=False)
    msg = _one_line(err)
    fit = msg.split("methods for these teachers:")[1]
    assert "is multitask" in msg and all(m in fit for m in ("venus", "must", "kd-mt", "cfl")), msg
