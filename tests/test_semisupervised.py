"""Family B on SYN control charts: the Teacher Coordinator and the thesis's semi-supervised baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.errors import DataError, LabelError, MethodError
from amalgamator.labels import LabelSpace
from amalgamator.methods import Context
from amalgamator.methods.base import StudentOutput
from amalgamator.methods.coordinator import amalgamated_target, expert_targets, trust_by_class
from amalgamator.methods.semisupervised import SupKD, labeled_cross_entropy

FAST = dict(student="cnn1d", student_options={"width": 16, "out_dim": 32}, epochs=10, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def syn():
    from amalgamator.bench.sequences import load_syn

    return load_syn()


@pytest.fixture(scope="module")
def syn_students(syn):
    """{1,2,3,4} and {3,4,5,6}: the thesis's overlapping SYN teachers (small 1-D CNNs, trained fast)."""
    c = list(syn.classes)
    out = []
    for i, labels in enumerate([c[0:4], c[2:6]]):
        keep = np.isin(syn.y_train, labels)
        out.append(
            am.train_classifier(
                syn.x_train[keep],
                syn.y_train[keep],
                student="cnn1d",
                labels=labels,
                epochs=30,
                batch_size=32,
                lr=3e-3,
                seed=i,
                student_options={"width": 16},
            )
        )
    return out


@pytest.fixture(scope="module")
def syn_teachers(syn_students):
    return [st.as_teacher(f"T{i + 1}") for i, st in enumerate(syn_students)]


def _run(syn, teachers, method: str, n_per_class: int, options: dict | None = None, rows: int | None = None, **kw):
    """Amalgamate SYN's training series with ``n_per_class`` labeled per class; (result, rest, labeled)."""
    rest, lab = _labeled(syn, n_per_class)
    res = am.amalgamate(
        teachers,
        syn.x_train[rest[:rows]],
        method=method,
        method_options=options,
        labeled=(syn.x_train[lab], syn.y_train[lab]),
        **{**FAST, **kw},
    )
    return res, rest, lab


def _labeled(syn, n_per_class: int = 2):
    idx = np.concatenate([np.flatnonzero(syn.y_train == c)[:n_per_class] for c in syn.classes])
    rest = np.setdiff1d(np.arange(len(syn.y_train)), idx)
    return rest, idx


def test_teachers_know_only_their_classes(syn, syn_teachers):
    for t in syn_teachers:
        own = np.isin(syn.y_test, t.labels)
        assert (t.predict(syn.x_test)[own] == syn.y_test[own]).mean() > 0.8


def test_expert_targets_are_eq9_multi_hot():
    union = LabelSpace(["a", "b", "c"])
    t1, t2 = _stub_teacher(["a", "b"]), _stub_teacher(["b", "c"])
    ctx = Context(teachers=[t1, t2], union=union, outputs=[], inputs=None, y=torch.tensor([0, 1, 2, -1]))
    assert expert_targets(ctx)[:3].tolist() == [[1, 0], [1, 1], [0, 1]]


def test_amalgamated_target_follows_eq11():
    """P(y_j|X) = Σ_k P_k(y_j|X) · trust_k over the teachers that know y_j, renormalised."""
    union = LabelSpace(["a", "b", "c"])
    t1, t2 = _stub_teacher(["a", "b"]), _stub_teacher(["b", "c"])
    p1, p2 = torch.tensor([[0.8, 0.2]]), torch.tensor([[0.3, 0.7]])
    ctx = Context(
        teachers=[t1, t2],
        union=union,
        outputs=[{"logits": p1.log()}, {"logits": p2.log()}],
        inputs=None,
        y=torch.tensor([-1]),
    )
    trust = torch.tensor([[0.25, 0.75]])
    expected = torch.tensor([[0.8 * 0.25, 0.2 * 0.25 + 0.3 * 0.75, 0.7 * 0.75]])
    torch.testing.assert_close(amalgamated_target(ctx, trust), expected / expected.sum())


def test_tc_learns_whom_to_trust_and_trains_a_student(syn, syn_teachers):
    res, rest, lab = _run(syn, syn_teachers, "tc", 3)
    trust = res.diagnostics["trust"]
    assert trust.shape == (300, 2)
    torch.testing.assert_close(trust.sum(1), torch.ones(300))
    y_rows = syn.y_train[np.concatenate([rest, lab])]
    per_class = trust_by_class(trust, y_rows, list(syn.classes))
    # classes only T1 knows get more trust in T1, classes only T2 knows more in T2
    assert (per_class[:2, 0] > per_class[:2, 1]).all() and (per_class[4:, 1] > per_class[4:, 0]).all()
    assert (res.student.predict(syn.x_test) == syn.y_test).mean() > 0.5
    assert res.student.info["rows"] == {"total": 300, "labeled": 18}


def test_tc_plus_labels_uses_true_targets_on_labeled_rows(syn, syn_teachers):
    res, _, lab = _run(syn, syn_teachers, "tc+labels", 1, {"min_steps": 5}, epochs=1)
    target = res.diagnostics["target"][-len(lab) :]  # labeled rows come last
    assert target.max(1).values.eq(1).all()
    assert [res.student.labels[i] for i in target.argmax(1)] == list(syn.y_train[lab])
    plain, _, _ = _run(syn, syn_teachers, "tc", 1, {"min_steps": 5}, epochs=1)
    assert plain.diagnostics["target"][-len(lab) :].max(1).values.lt(1).any()  # the surrogate is soft


def test_same_seed_gives_identical_tc_students(syn, syn_teachers):
    runs = [_run(syn, syn_teachers, "tc", 1, {"min_steps": 20}, rows=100, epochs=2)[0] for _ in range(2)]
    weights = [r.student.network.state_dict() for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_selftrain_adds_confident_pseudo_labels(syn, syn_teachers):
    res, _, lab = _run(syn, syn_teachers, "selftrain", 3, {"threshold": 0.5, "rounds": 2, "min_steps": 100})
    added = res.diagnostics["pseudo_labeled"].tolist()
    assert 1 <= len(added) <= 2 and added[0] > 0
    final_y = res.diagnostics["final_y"]
    assert (final_y[-len(lab) :] >= 0).all()  # labeled rows keep their labels
    assert int((final_y >= 0).sum()) == len(lab) + sum(added)


def test_sup_trains_on_labels_only_with_enough_steps(syn, syn_teachers):
    res, _, _ = _run(syn, syn_teachers, "sup", 2, {"min_steps": 40})
    assert len(res.history.loss) == 40  # one batch of 12 rows per epoch → 40 epochs for 40 steps


def test_supkd_adds_cross_entropy_on_labeled_rows_only():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    batch = {"target_logits": torch.zeros(2, 2), "y": torch.tensor([1, -1])}
    out = StudentOutput(logits, logits)
    kd_only = SupKD().loss({**batch, "y": torch.tensor([-1, -1])}, out)
    ce = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1]))
    torch.testing.assert_close(SupKD().loss(batch, out), kd_only + ce)
    assert labeled_cross_entropy({"y": torch.tensor([-1, -1])}, out) == 0


@pytest.mark.parametrize("method", ["supuhc", "kd", "muki-soft"])
def test_other_methods_run_with_a_labeled_part(syn, syn_teachers, method):
    res, _, _ = _run(syn, syn_teachers, method, 1, rows=60, epochs=1)
    assert res.student.predict(syn.x_test[:5]).shape == (5,)


def test_labeled_class_no_teacher_knows_is_a_clear_error(syn, syn_teachers):
    x = syn.x_train[:3]
    with pytest.raises(LabelError, match="'walking', which no teacher knows"):
        am.amalgamate(syn_teachers, syn.x_train, method="tc", labeled=(x, ["normal", "cyclic", "walking"]), **FAST)


def test_too_few_labels_warns_and_tc_without_labels_refuses(syn, syn_teachers):
    with pytest.warns(UserWarning, match="1 examples for 2 teachers"):
        am.amalgamate(
            syn_teachers,
            syn.x_train[:40],
            method="supkd",
            labeled=(syn.x_train[:1], syn.y_train[:1]),
            **{**FAST, "epochs": 1},
        )
    with pytest.raises(MethodError, match="labeled"):
        am.amalgamate(syn_teachers, syn.x_train[:40], method="tc", **FAST)


def test_tc_warns_when_no_label_belongs_to_a_teacher(syn, syn_teachers):
    only_t1 = np.flatnonzero(syn.y_train == "normal")[:4]
    with pytest.warns(UserWarning, match="no labeled example belongs to teacher 'T2'"):
        am.amalgamate(
            syn_teachers,
            syn.x_train[:40],
            method="tc",
            method_options={"min_steps": 5},
            labeled=(syn.x_train[only_t1], syn.y_train[only_t1]),
            **{**FAST, "epochs": 1},
        )


def test_sequences_with_other_channel_counts_are_refused(syn, syn_teachers):
    three_channels = np.repeat(syn.x_train[:6], 3, axis=1)
    with pytest.raises(DataError, match="channel"):
        am.amalgamate(syn_teachers, syn.x_train[:40], method="tc", labeled=(three_channels, syn.y_train[:6]), **FAST)
    with pytest.raises(DataError, match="channels"):
        am.amalgamate(syn_teachers, three_channels, method="kd", **FAST)


def _stub_teacher(labels):
    return am.Teacher(torch.nn.Linear(1, len(labels)), labels=labels)


def test_cli_runs_tc_from_a_recipe_with_a_labeled_file(syn, syn_students, tmp_path, capsys):
    from amalgamator import cli

    for i, st in enumerate(syn_students):
        st.save(tmp_path / f"t{i}")
    rest, lab = _labeled(syn, 2)
    np.savez(tmp_path / "pool.npz", x=syn.x_train[rest])
    np.savez(tmp_path / "few.npz", x=syn.x_train[lab], y=syn.y_train[lab])
    np.savez(tmp_path / "test.npz", x=syn.x_test, y=syn.y_test)
    (tmp_path / "recipe.yaml").write_text(
        "teachers: [{path: t0}, {path: t1}]\ndata: pool.npz\nlabeled: few.npz\ntest: test.npz\nmethod: tc\n"
        "method_options: {min_steps: 20}\nstudent: cnn1d\nstudent_options: {width: 16}\ntrain: {epochs: 3}\n"
    )
    with pytest.raises(SystemExit) as done:
        cli.main(["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")])
    assert not done.value.code
    assert (tmp_path / "out" / "student" / "model.safetensors").exists()
    assert "accuracy" in capsys.readouterr().out
