"""TargetNet (Ye et al. 2019, `001` §3; SPEC Family D): block-wise training, branch-out, the assembled student.

Synthetic images: 12×12, one channel, Gaussian noise plus a bright 3×3 square in each quadrant with
probability 1/2; task "q<j>" asks whether quadrant j holds one. Teacher "A" knows q0, q1, q2 and teacher "B"
knows q2, q3, each a plainnet (width 4, three blocks of one convolution) trained with BCE on its own 400
images (8 epochs: 0.99–1.0 accuracy per task on 300 test images). Pool 300 images.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.bench.multitask import as_teacher, train_multitask
from amalgamator.data import Inputs
from amalgamator.errors import DataError, MethodError
from amalgamator.methods.targetnet import (
    BlockObjective,
    Customised,
    StageNet,
    TargetNet,
    assemble,
    branch_out,
    teacher_blocks,
)
from amalgamator.models.branched import BranchedNet, ChannelFilter
from amalgamator.student import Student

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*optimiser steps.*:UserWarning"),  # tiny runs, on purpose
    pytest.mark.usefixtures("one_thread"),
]

OPT = {"width": 4, "blocks": 3, "layers": 1}
TRAIN = dict(student="plainnet", student_options=OPT, batch_size=32, lr=1e-2, progress=False, seed=0)


def images(n: int, seed: int, side: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, side, side) noisy images and (n, 4) 0/1 tasks: a bright square in quadrant j."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, size=(n, 1, side, side)).astype(np.float32)
    y = rng.random((n, 4)) < 0.5
    h = side // 2
    for q in range(4):
        r0, c0 = (q // 2) * h, (q % 2) * h
        for i in np.nonzero(y[:, q])[0]:
            r, c = r0 + rng.integers(0, h - 2), c0 + rng.integers(0, h - 2)
            x[i, 0, r : r + 3, c : c + 3] += 1.5
    return x, y.astype(np.uint8)


@pytest.fixture(scope="module")
def trained():
    """Two trained plainnet teachers (A: q0–q2, B: q2–q3) and the pool."""
    xa, ya = images(400, 0)
    xb, yb = images(400, 1)
    a = train_multitask("plainnet", xa, ya[:, :3], ["q0", "q1", "q2"], OPT, epochs=8, batch_size=32, lr=1e-2, seed=0)
    b = train_multitask("plainnet", xb, yb[:, 2:], ["q2", "q3"], OPT, epochs=8, batch_size=32, lr=1e-2, seed=1)
    return [as_teacher(a, "A"), as_teacher(b, "B")], images(300, 2)[0]


def untrained(preset: str, tasks: list[str], name: str, seed: int = 0, **options) -> am.Teacher:
    """A randomly initialised multi-task teacher with random batch-norm statistics (so eval mode matters)."""
    torch.manual_seed(seed)
    st = Student.create(preset, Inputs(np.zeros((2, 1, 12, 12), np.float32)), tasks, "multitask", {**OPT, **options})
    for m in st.network.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return st.as_teacher(name)


# Eq. 9: branch-out ------------------------------------------------------------------------------------------


def test_branch_out_takes_the_block_of_least_loss_per_task():
    losses = np.array(
        [
            [0.30, 0.10, 0.50, 0.20],  # block 1
            [0.20, 0.40, 0.45, 0.20],  # block 2 (task 4: a tie with block 1 keeps block 1)
            [0.25, 0.30, 0.40, 0.90],  # block 3
        ]
    )
    np.testing.assert_array_equal(branch_out(losses), [2, 1, 3, 1])
    np.testing.assert_array_equal(branch_out(torch.tensor(losses)), [2, 1, 3, 1])


def test_assembled_structure_follows_the_branch_out_blocks():
    ta, tb = untrained("plainnet", ["a", "b", "c"], "A", 0), untrained("plainnet", ["d", "e"], "B", 1)
    views = [teacher_blocks(ta), teacher_blocks(tb)]
    c = Customised.of(["e", "a", "c", "d"], [list(ta.labels), list(tb.labels)])
    assert (c.owner, c.row, c.used) == ([1, 0, 0, 1], [1, 0, 2, 0], [0, 1])
    losses = np.array([[0.9, 0.1, 0.5, 0.9], [0.1, 0.5, 0.2, 0.9], [0.5, 0.5, 0.6, 0.1]])
    at = branch_out(losses)
    assert at.tolist() == [2, 1, 2, 3]
    trunk = list(views[0].blocks)  # any blocks of the right architecture stand in for the trained student's
    filters = {(k, n): ChannelFilter(w, 2) for k, w in enumerate([4, 8, 16], 1) for n in (0, 1)}
    net, arch = assemble("plainnet", {**OPT, "image_shape": [1, 12, 12]}, None, trunk, filters, views, c, at)
    bb = net.backbone
    assert isinstance(bb, BranchedNet) and len(bb.trunk) == 3  # max S = 3: no student block dropped
    # one branch per (teacher, S): e@2 (B), a@1 (A), c@2 (A), d@3 (B); teacher blocks S+1..B follow each filter
    assert [(b.at, len(b.blocks)) for b in bb.branches] == [(2, 1), (1, 2), (2, 1), (3, 0)]
    assert [(b["teacher"], b["tasks"]) for b in arch["options"]["branches"]] == [
        ("B", ["e"]),
        ("A", ["a"]),
        ("A", ["c"]),
        ("B", ["d"]),
    ]
    assert net.head.weight.shape == (4, 4 * 16) and net(torch.rand(2, 1, 12, 12)).shape == (2, 4)
    # early branch-out everywhere: the student's blocks after block 1 are dropped, tasks of A at 1 share a branch
    net1, _ = assemble("plainnet", {**OPT, "image_shape": [1, 12, 12]}, None, trunk, filters, views, c, [1, 1, 1, 1])
    assert len(net1.backbone.trunk) == 1 and [len(b.blocks) for b in net1.backbone.branches] == [2, 2]


# Eq. 10: the assembled model --------------------------------------------------------------------------------


def test_identity_filters_and_the_teachers_blocks_reproduce_the_teacher(tmp_path):
    t = untrained("resnet", ["a", "b", "c", "d"], "T", 3)
    view = teacher_blocks(t)
    c = Customised.of(["d", "a", "b"], [list(t.labels)])
    at = [1, 3, 2]  # every kind of branch: after block 1, after block 2, and after the last block
    filters = {(k, 0): ChannelFilter(w, 2) for k, w in enumerate(view.widths, 1)}  # new filters are the identity
    trunk = list(view.blocks)  # the student's blocks := the teacher's
    feat = t.preprocess
    net, arch = assemble("resnet", {**OPT, "image_shape": [1, 12, 12]}, feat, trunk, filters, [view], c, at)
    st = Student(feat, net, c.tasks, "multitask", arch)
    x = np.random.default_rng(0).normal(size=(20, 1, 12, 12)).astype(np.float32)
    with torch.no_grad():
        want = torch.sigmoid(t.model(torch.as_tensor(x)))[:, [3, 0, 1]].numpy()
    np.testing.assert_allclose(st.predict_proba(x), want, atol=1e-6)
    st.save(tmp_path / "s")
    back = am.load_student(tmp_path / "s")
    assert back.labels == ["d", "a", "b"] and back.kind == "multitask"
    np.testing.assert_array_equal(back.predict_proba(x), st.predict_proba(x))
    np.testing.assert_array_equal(back.predict(x), (want > 0.5).astype(np.int64))


def test_a_filter_gate_scales_channels_and_starts_at_one():
    f = ChannelFilter(6, 3)
    x = torch.rand(2, 6, 5, 5)
    torch.testing.assert_close(f(x), x)  # zero-initialised second layer: gate 2·σ(0) = 1
    torch.nn.init.normal_(f.excite.weight)
    g = f.gate(x)
    assert g.shape == (2, 6) and bool(((g > 0) & (g < 2)).all())
    torch.testing.assert_close(f(x), x * g[:, :, None, None])


# Block-wise training pieces ---------------------------------------------------------------------------------


def test_stage_keeps_earlier_blocks_frozen_and_in_eval_mode():
    t = untrained("plainnet", ["a"], "T")
    blocks = [b for b in t.model.backbone.blocks]
    for b in blocks:
        b.requires_grad_(True)
    net = StageNet(blocks[:2]).train()
    assert not blocks[0].training and blocks[1].training
    assert not any(p.requires_grad for p in blocks[0].parameters()) and all(
        p.requires_grad for p in blocks[1].parameters()
    )
    before = {k: v.clone() for k, v in blocks[0].state_dict().items()}
    f, _ = net.forward_features(torch.rand(4, 1, 12, 12))
    f.sum().backward()
    assert all(torch.equal(v, blocks[0].state_dict()[k]) for k, v in before.items())  # BN statistics unmoved too
    assert all(p.grad is None for p in blocks[0].parameters()) and blocks[1][1].weight.grad is not None


def test_block_loss_is_eq7_bce_to_the_teachers_predictions_through_their_remaining_blocks():
    ta, tb = untrained("plainnet", ["a", "b"], "A", 0), untrained("plainnet", ["c"], "B", 1)
    views = [teacher_blocks(ta), teacher_blocks(tb)]
    c = Customised.of(["c", "b"], [["a", "b"], ["c"]])
    filters = torch.nn.ModuleDict({"0": ChannelFilter(8, 2), "1": ChannelFilter(8, 2)})
    obj = BlockObjective(2, filters, views, c, {})
    x = torch.rand(5, 1, 12, 12)
    f_u = views[0].blocks[1](views[0].blocks[0](x))  # stands for the student's block-2 output
    target = torch.rand(5, 2)
    with torch.no_grad():
        z_c = tb.model.head(tb.model.backbone.readout(tb.model.backbone.blocks[2](f_u)))[:, 0]
        z_b = ta.model.head(ta.model.backbone.readout(ta.model.backbone.blocks[2](f_u)))[:, 1]
    z = torch.stack([z_c, z_b], 1)
    want = -(target * torch.log(torch.sigmoid(z)) + (1 - target) * torch.log(1 - torch.sigmoid(z))).mean()
    from amalgamator.methods.base import StudentOutput

    got = obj.loss({"target": target}, StudentOutput(f_u, f_u))
    torch.testing.assert_close(got, want)
    got.backward()  # the gradient reaches the filters through the frozen teacher
    assert filters["1"].excite.weight.grad is not None and not any(p.grad is not None for p in tb.model.parameters())


# Refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [("resnet", {}), ("plainnet", {"blocks": 2}), ("plainnet", {"width": 6}), ("plainnet", {"layers": 2})],
    ids=["plainnet+resnet", "block-count", "widths", "layers"],
)
def test_heterogeneous_teachers_are_refused_in_one_line_naming_venus(second):
    ta, tb = untrained("plainnet", ["a"], "A"), untrained(second[0], ["b"], "B", 1, **second[1])
    x = np.random.default_rng(0).normal(size=(16, 1, 12, 12)).astype(np.float32)
    with pytest.raises(MethodError) as err:
        am.amalgamate([ta, tb], x, method="targetnet", epochs=1, **TRAIN)
    msg = str(err.value)
    assert "\n" not in msg and "homogeneous" in msg and "venus" in msg, msg


def test_a_student_whose_blocks_differ_from_the_teachers_is_refused():
    ta, tb = untrained("plainnet", ["a"], "A"), untrained("plainnet", ["b"], "B", 1)
    x = np.random.default_rng(0).normal(size=(16, 1, 12, 12)).astype(np.float32)
    for student, options in [("resnet", OPT), ("plainnet", {**OPT, "width": 8}), ("cnn", {})]:
        with pytest.raises(MethodError, match="teachers' blocks|block network") as err:
            am.amalgamate([ta, tb], x, method="targetnet", epochs=1, **{**TRAIN, "student": student,
                                                                        "student_options": options})  # fmt: skip
        assert "\n" not in str(err.value)


def test_a_teacher_that_reads_other_inputs_than_the_student_is_refused():
    t = untrained("plainnet", ["a"], "A")
    doubled = am.Teacher(t.model, ["a"], name="A2", kind="multitask", preprocess=lambda b: 2 * b.float())
    x = np.random.default_rng(0).normal(size=(16, 1, 12, 12)).astype(np.float32)
    with pytest.raises(MethodError, match="do not reproduce its outputs on the student's inputs"):
        am.amalgamate([doubled], x, method="targetnet", epochs=1, **TRAIN)
    with pytest.raises(DataError, match="not one to train from scratch"):
        am.amalgamate([t], x, method="targetnet", epochs=1, **{**TRAIN, "student": "branched", "student_options": {}})


def test_unknown_or_repeated_tasks_are_refused():
    ta = untrained("plainnet", ["q0", "q1"], "A")
    with pytest.raises(MethodError, match="'q9' is not a task"):
        TargetNet(tasks=["q0", "q9"]).validate([ta])
    with pytest.raises(MethodError, match="twice"):
        TargetNet(tasks=["q0", "q0"]).validate([ta])
    with pytest.raises(MethodError, match="block by block"):
        TargetNet().validate([am.Teacher(torch.nn.Linear(4, 2), ["a", "b"], name="flat", kind="multitask")])


# End to end -------------------------------------------------------------------------------------------------


def test_end_to_end_trains_saves_loads_and_records_block_losses(trained, tmp_path):
    teachers, x = trained
    t0 = time.perf_counter()
    res = am.amalgamate(teachers, x, method="targetnet", epochs=3, method_options={"tasks": ["q3", "q0"]},
                        out=tmp_path / "run", store=tmp_path / "store", **TRAIN)  # fmt: skip
    seconds = time.perf_counter() - t0
    st, m = res.student, res.method_object
    assert st.labels == ["q3", "q0"] and st.kind == "multitask" and st.architecture["preset"] == "branched"
    assert m.owners == {"q3": "B", "q0": "A"}
    table = m.loss_table()
    assert set(table) == {"q3", "q0"} and all(len(v) == 3 and all(np.isfinite(v)) for v in table.values())
    assert m.branch_points == {t: int(np.argmin(v)) + 1 for t, v in table.items()}
    assert res.diagnostics["block_losses"].shape == (3, 2) and res.diagnostics["branch_out"].tolist() == list(
        m.branch_points.values()
    )
    assert len(res.history.loss) == 9 and len(m.stage_histories) == 3  # three blocks × three epochs
    assert all((tmp_path / "run" / f"block{k}" / "checkpoints").is_dir() for k in (1, 2, 3))
    back = am.load_student(tmp_path / "run" / "student")
    xt, yt = images(200, 5)
    np.testing.assert_array_equal(back.predict_proba(xt), st.predict_proba(xt))
    np.testing.assert_array_equal(back.predict(xt), st.predict(xt))
    acc = (st.predict(xt) == yt[:, [3, 0]]).mean(0)
    print(
        f"targetnet e2e: {seconds:.2f} s; losses per block {table}; branch-out {m.branch_points}; "
        f"parameters {m.parameters} (student/teachers {m.parameters['student'] / m.parameters['teachers']:.2f}); "
        f"accuracy q3, q0 = {acc}"
    )
    assert m.parameters["student"] > 0 and m.parameters["teachers"] == sum(
        p.numel() for t in teachers for p in t.model.parameters()
    )
    assert acc.min() > 0.8  # a few epochs on 300 images; the teachers score 0.99+
    # resume: every block stage reads its finished checkpoints back, and the student is the same
    again = am.amalgamate(teachers, x, method="targetnet", epochs=3, method_options={"tasks": ["q3", "q0"]},
                          out=tmp_path / "run", store=tmp_path / "store", resume=True, **TRAIN)  # fmt: skip
    assert again.history.resumed_from == 9 and again.timings["train"] == 0.0
    np.testing.assert_array_equal(again.student.predict_proba(xt), st.predict_proba(xt))


def test_default_tasks_are_the_whole_union_and_a_seeded_run_repeats(trained, tmp_path):
    teachers, x = trained
    runs = [am.amalgamate(teachers, x[:96], method="targetnet", epochs=1, store=tmp_path, **TRAIN) for _ in range(2)]
    assert runs[0].student.labels == ["q0", "q1", "q2", "q3"]
    assert runs[0].method_object.owners["q2"] == "A"  # a shared task comes from the first teacher naming it
    xt, _ = images(50, 6)
    np.testing.assert_array_equal(runs[0].student.predict_proba(xt), runs[1].student.predict_proba(xt))
    np.testing.assert_array_equal(runs[0].method_object.block_losses, runs[1].method_object.block_losses)


def test_student_at_assembles_every_task_at_one_block(trained):
    """The per-block students of Fig. 3: every task branches at the given block."""
    teachers, x = trained
    res = am.amalgamate(teachers, x[:96], method="targetnet", epochs=1, method_options={"tasks": ["q3", "q0"]},
                        **TRAIN)  # fmt: skip
    m = res.method_object
    for k in range(1, len(m.block_losses) + 1):
        st = m.student_at(k)
        assert st.kind == "multitask" and st.labels == ["q3", "q0"]
        assert all(b["at"] == k for b in st.architecture["options"]["branches"])
        assert st.predict_proba(x[:5]).shape == (5, 2)
    with pytest.raises(MethodError, match="block must be"):
        m.student_at(0)
