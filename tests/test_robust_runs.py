"""Runs that survive what happens to real runs (issue 15): a kill at any moment, two processes at once, a full
disk, a teacher folder changed on disk.

Crash safety: a run starts in a forked subprocess with ``AMALGAMATOR_FAULT`` set (``amalgamator.faults``, a
no-op unless set), which SIGKILLs it at a chosen point of the store build or of checkpointing (or the parent
SIGKILLs it after a random delay). The run is then resumed, and its student must be bit-identical to an
uninterrupted run's, with nothing corrupt or temporary left behind. Three methods: ``kd`` (multi-class),
``tc`` (semi-supervised: a trust-learner stage, then the student) and ``kd-ml`` (multi-label). A few kill
points run by default; ``make test-slow`` strikes every kind of point (see ``test_every_kill_point``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

import amalgamator as am
from amalgamator import durable, faults
from amalgamator.data import Inputs
from amalgamator.errors import AmalgamatorError, DataError, StoreError
from amalgamator.store import LOGITS, TeacherStore, feature_piece

from .conftest import HIGH, LOW
from .test_cli import _teacher_folder
from .test_multilabel_methods import fit_teacher, problem

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*optimiser steps.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:nothing to resume:UserWarning"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks"),
]
FORK = mp.get_context("fork") if hasattr(os, "fork") else None
COMMON = dict(seed=5, threads=1, progress=False)
STORE_POINTS = ("store-data", "store-meta", "store-entry")
CKPT_POINTS = ("ckpt-files", "ckpt-publish", "ckpt-saved", "ckpt-pruned")


# The three runs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases(digits, teachers) -> dict[str, dict]:
    """amalgamate() arguments of each run, without out and store."""
    x, y, _, p, _ = digits
    ml_teachers = [fit_teacher(["a", "b", "c"], 1), fit_teacher(["c", "d", "e"], 2)]
    return {
        "kd": dict(teachers=teachers, data=x[p], method="kd", epochs=3, batch_size=64, **COMMON),
        "tc": dict(
            teachers=teachers,
            data=x[p],
            labeled=(x[p[:60]], y[p[:60]]),
            method="tc",
            epochs=2,
            batch_size=64,
            method_options={"ttl_epochs": 2, "min_steps": 0},
            **COMMON,
        ),
        "kd-ml": dict(
            teachers=ml_teachers,
            data=problem(400, 1)[0],
            method="kd-ml",
            epochs=3,
            batch_size=128,
            student_options={"hidden": [32]},
            lr=1e-2,
            **COMMON,
        ),
    }


class Reference:
    """An uninterrupted run: its student's weights, its losses, how often it reached each fault point."""

    def __init__(self, kw: dict, folder: Path):
        with pytest.MonkeyPatch.context() as mp_:
            mp_.setenv(faults.ENV, "count")
            mp_.setenv("AMALGAMATOR_QUIET", "1")
            faults.reset()
            t0 = time.perf_counter()
            res = am.amalgamate(**kw, out=folder / "out", store=folder / "store")
            self.seconds = time.perf_counter() - t0
            self.hits = faults.hits()
            faults.reset()
        self.weights = {k: v.clone() for k, v in res.student.network.state_dict().items()}
        self.loss = list(res.history.loss)


@pytest.fixture(scope="module")
def reference(cases, tmp_path_factory):
    made: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in made:
            made[name] = Reference(cases[name], tmp_path_factory.mktemp(f"ref-{name}"))
        return made[name]

    return get


# The harness -------------------------------------------------------------------------------------

_children: list = []


def fork(target) -> mp.Process:
    """Start ``target`` in a forked child with one torch thread (an OpenMP pool the parent started does not
    survive a fork: a child that used it would hang). Daemonic and killed after its test, so a failing test
    never leaves pytest waiting for a child at exit."""

    def run() -> None:
        torch.set_num_threads(1)
        target()

    proc = FORK.Process(target=run, daemon=True)
    proc.start()
    _children.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    yield
    while _children:
        proc = _children.pop()
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def strike(kw: dict, fault: str | None = None, delay: float | None = None, timeout: float = 120) -> str:
    """Run ``amalgamate(**kw)`` in a forked child. With ``fault`` the child SIGKILLs itself there (see
    amalgamator.faults); with ``delay`` the parent SIGKILLs it after that many seconds. "killed" or "finished"."""

    def child() -> None:
        faults.reset()
        if fault:
            os.environ[faults.ENV] = fault
        else:
            os.environ.pop(faults.ENV, None)
        am.amalgamate(**kw)

    proc = fork(child)
    if delay is not None:
        proc.join(delay)
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise AssertionError(f"the run with fault {fault!r} hung for {timeout} s")
    if proc.exitcode == -signal.SIGKILL:
        return "killed"
    assert proc.exitcode == 0, f"the run with fault {fault!r} failed (exit code {proc.exitcode}); see its stderr"
    return "finished"


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_clean(store: Path, out: Path) -> None:
    """Every store entry complete and valid, every checkpoint whole, no temporary file anywhere."""
    left = [p for root in (store, out) for p in root.rglob(f"*{durable.TMP_SUFFIX}")]
    assert not left, f"temporary files left behind: {left}"
    for meta_path in store.rglob("*.json"):
        meta = json.loads(meta_path.read_text())
        data = meta_path.with_suffix(".safetensors")
        assert hashlib.sha256(data.read_bytes()).hexdigest() == meta["sha256"], f"invalid store entry {data}"
    for data in store.rglob("*.safetensors"):
        assert data.with_suffix(".json").exists(), f"store entry {data} has no sidecar"
    for state in out.rglob("checkpoints/epoch-*/state.json"):
        for file, digest in json.loads(state.read_text())["files"].items():
            assert hashlib.sha256((state.parent / file).read_bytes()).hexdigest() == digest, f"damaged {state.parent}"


def resume_and_check(kw: dict, ref: Reference, store: Path, out: Path):
    """Resume the interrupted run in this process: bit-identical to the reference, nothing left corrupt."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = am.amalgamate(**kw, out=out, store=store, resume=True)
    assert same_weights(res.student.network.state_dict(), ref.weights), "resumed student differs"
    saved = load_file(str(out / "student" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in ref.weights.items()), "saved student differs"
    assert res.history.loss == ref.loss
    assert_clean(store, out)
    return res, [str(w.message) for w in caught]


def kill_points(ref: Reference, extra_write: int = 2, seed: int = 15) -> list[str]:
    """Where to strike: the first and last time the run reaches each store and checkpoint point (and the
    first checkpoint of every stage's end), a few ``write`` moments in the middle of a file, a torn store
    entry and a torn checkpoint."""
    rng = np.random.default_rng(seed)
    points = []
    for name in (*STORE_POINTS, *CKPT_POINTS):
        n = ref.hits.get(name, 0)
        points += [f"kill@{name}:{i}" for i in sorted({1, (n + 1) // 2, n}) if n]
    writes = ref.hits.get("write", 0)
    points += [f"kill@write:{int(i)}" for i in rng.choice(np.arange(1, writes + 1), extra_write, replace=False)]
    points += ["tear@store-entry:1", f"tear@ckpt-saved:{ref.hits['ckpt-saved']}"]
    return points


# Crash safety: the default set -------------------------------------------------------------------


def test_kill_between_a_store_entry_and_its_sidecar_kd(cases, reference, tmp_path):
    """Killed after the 2nd teacher's data file landed but before its sidecar: rebuilt, with a note."""
    ref, kw = reference("kd"), cases["kd"]
    store, out = tmp_path / "store", tmp_path / "out"
    assert strike({**kw, "out": out, "store": store}, "kill@store-meta:2") == "killed"
    assert len(list(store.rglob("*.safetensors"))) == 2 and len(list(store.rglob("*.json"))) == 1
    res, _ = resume_and_check(kw, ref, store, out)
    assert res.store.repaired == 1 and res.store.hits == 1 and res.store.computed == 1


def test_kill_in_the_student_stage_keeps_the_trust_stage_tc(cases, reference, tmp_path):
    """TC: killed right after the student's first checkpoint; the trust learner's stage is read back from its
    final checkpoint (not retrained), the student continues after its epoch 1."""
    ref, kw = reference("tc"), cases["tc"]
    store, out = tmp_path / "store", tmp_path / "out"
    trust_epochs = kw["method_options"]["ttl_epochs"]
    assert strike({**kw, "out": out, "store": store}, f"kill@ckpt-saved:{trust_epochs + 1}") == "killed"
    trust = out / "trust" / "checkpoints" / f"epoch-{trust_epochs:03d}" / "state.json"
    before = trust.stat().st_mtime_ns, trust.stat().st_ino
    res, _ = resume_and_check(kw, ref, store, out)
    assert (trust.stat().st_mtime_ns, trust.stat().st_ino) == before, "the finished trust stage was trained again"
    assert res.history.resumed_from == 1


def test_torn_checkpoint_is_skipped_with_a_warning_kd_ml(cases, reference, tmp_path):
    """Multi-label: epoch 2's checkpoint reached its name torn (as a crash without fsync may leave it): the
    resume says so and continues from epoch 1."""
    ref, kw = reference("kd-ml"), cases["kd-ml"]
    store, out = tmp_path / "store", tmp_path / "out"
    assert strike({**kw, "out": out, "store": store}, "tear@ckpt-saved:2") == "killed"
    res, said = resume_and_check(kw, ref, store, out)
    assert res.history.resumed_from == 1
    assert any("epoch-002" in m and "fails its checksum" in m for m in said), said


# Crash safety: every kind of kill point (make test-slow) ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kd", "tc", "kd-ml"])
def test_every_kill_point(name, cases, reference, tmp_path):
    """Every kind of kill point (first, middle and last time it is reached), kills in the middle of a file,
    torn files, kills at random moments from outside, and a resume that is itself killed: each resumed run
    is bit-identical to the uninterrupted one and leaves nothing corrupt."""
    ref, kw = reference(name), cases[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    plans: list[tuple[str, list]] = [(fault, [fault]) for fault in kill_points(ref)]
    t0 = time.perf_counter()  # how long a whole run takes in a child, for kills at random moments within it
    assert strike({**kw, "out": tmp_path / "timed", "store": tmp_path / "timed-store"}) == "finished"
    whole = time.perf_counter() - t0
    plans += [(f"random kill after {d:.3f} s", [float(d)]) for d in rng.uniform(0.0, 0.95 * whole, 4)]
    plans.append(("killed again while resuming", ["kill@ckpt-saved:1", "kill@ckpt-saved:1"]))
    tried, killed, failures = 0, 0, []
    for i, (label, strikes) in enumerate(plans):
        store, out = tmp_path / f"s{i}", tmp_path / f"o{i}"
        run = {**kw, "out": out, "store": store}
        for k, how in enumerate(strikes):
            args = {"delay": how} if isinstance(how, float) else {"fault": how}
            got = strike({**run, "resume": k > 0}, **args)
            tried += 1
            killed += got == "killed"
            if got != "killed" and not isinstance(how, float):
                failures.append(f"{label}: the run never reached {how}")
        try:
            _, said = resume_and_check(kw, ref, store, out)
            if label.startswith("tear@"):  # a torn file is detected by its checksum and said so
                assert any("checksum" in m for m in said), f"no warning: {said}"
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
    print(f"\n{name}: {tried} strikes, {killed} kills, {len(plans)} resumes, {len(failures)} failures "
          f"(a whole run: {whole:.2f} s)")  # fmt: skip
    assert killed >= 20 and not failures, failures


@pytest.fixture
def project(digits, tmp_path) -> Path:
    """Two teacher folders, a pool file and a recipe, as a user lays them out."""
    x, y, t, p, _ = digits
    _teacher_folder(tmp_path / "low", x[t], y[t], LOW, 0)
    _teacher_folder(tmp_path / "high", x[t], y[t], HIGH, 1)
    np.savez(tmp_path / "pool.npz", x=x[p])
    (tmp_path / "recipe.yaml").write_text(
        "teachers: [low, high]\ndata: pool.npz\nmethod: kd\nstudent: mlp\n"
        "train: {epochs: 3, batch_size: 64, lr: 0.01, seed: 0}\n"
    )
    return tmp_path


@pytest.mark.slow
def test_killed_command_line_run_resumes_bit_identical(project, tmp_path):
    """The real thing in fresh interpreters: ``amalgamator run`` killed by the hook right after epoch 2's
    checkpoint, then ``amalgamator run --resume``: the saved student equals an uninterrupted run's."""
    env = {**os.environ, "AMALGAMATOR_STORE": str(tmp_path / "store"), "AMALGAMATOR_QUIET": "1"}
    env.pop(faults.ENV, None)

    def run(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "amalgamator", "run", str(project / "recipe.yaml"), "--out", str(out), *extra]
        return subprocess.run(cmd, env={**env, faults.ENV: fault} if fault else env, capture_output=True, text=True)

    assert run(tmp_path / "whole").returncode == 0
    killed = run(tmp_path / "cut", fault="kill@ckpt-saved:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["epoch-001", "epoch-002"]
    resumed = run(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "whole" / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "student" / "model.safetensors"))
    assert same_weights(a, b)


# Concurrent use ----------------------------------------------------------------------------------


class _Slow(nn.Module):
    """Sleeps in the forward pass of a real batch: long enough for two processes to meet in the store."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > 2:
            time.sleep(0.3)
        return x


def _slow_teacher() -> am.Teacher:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), _Slow(), nn.ReLU(), nn.Linear(8, 3))
    return am.Teacher(model, labels=["x", "y", "z"], name="slow", features="2")


def test_two_processes_building_one_entry_leave_one_valid_entry(tmp_path):
    """Two processes ask for the same teacher outputs at once: one computes them, the other waits and reads
    them; one valid entry per piece, no temporary file."""
    teacher, data, root = _slow_teacher(), Inputs(torch.randn(40, 6)), tmp_path
    pieces = [LOGITS, feature_piece("2")]
    go, results = FORK.Event(), FORK.Queue()

    def child() -> None:
        go.wait(10)
        store = TeacherStore(root)
        got = store.get(teacher, data, pieces)
        results.put((store.stats.computed, store.stats.hits, {k: v.numpy().tobytes() for k, v in got.items()}))

    procs = [fork(child) for _ in range(2)]
    go.set()
    done = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sorted((c, h) for c, h, _ in done) == [(0, 2), (2, 0)], "exactly one process computes"
    assert done[0][2] == done[1][2]
    assert len(list(root.rglob("*.safetensors"))) == 2 and len(list(root.rglob("*.json"))) == 2
    assert_clean(root, tmp_path / "no-out")
    again = TeacherStore(root)
    again.get(teacher, data, pieces)
    assert (again.stats.hits, again.stats.computed, again.stats.repaired) == (2, 0, 0)


def test_racing_writers_never_show_a_wrong_entry(tmp_path):
    """Readers take no lock: while two processes publish one entry over and over, a third process reading it
    sees a valid entry or an incomplete one, never a torn or mixed one read as valid."""
    teacher, data = _slow_teacher(), Inputs(torch.randn(30, 6))
    value = torch.randn(30, 3)
    store = TeacherStore(tmp_path)
    store._write(teacher, data, LOGITS, value)
    stop, seen = FORK.Event(), FORK.Queue()

    def writer() -> None:
        for _ in range(40):
            with store._locked(teacher, data):  # as get() does; readers take no lock
                store._write(teacher, data, LOGITS, value)

    def reader() -> None:
        good = other = 0
        while not stop.is_set():
            got, _ = store._read(teacher, data, LOGITS)
            if got is None:
                other += 1
            elif torch.equal(got, value):
                good += 1
            else:
                seen.put(("wrong", good, other))
                return
        seen.put(("ok", good, other))

    read = fork(reader)
    writers = [fork(writer) for _ in range(2)]
    for proc in writers:
        proc.join(60)
        assert proc.exitcode == 0
    stop.set()
    verdict, good, _ = seen.get(timeout=30)
    read.join(10)
    assert verdict == "ok" and good > 0
    assert torch.equal(store._read(teacher, data, LOGITS)[0], value)
    assert_clean(tmp_path, tmp_path / "no-out")


class _Gate(nn.Module):
    """In the child only (``closed``), a real batch waits for ``opened``: the run holds its out folder."""

    closed = False

    def __init__(self):
        super().__init__()
        self.opened = FORK.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _Gate.closed and len(x) > 2:
            self.opened.wait(60)
        return x


def test_second_run_into_a_busy_out_folder_is_refused_and_a_killed_one_blocks_nothing(digits, teachers, tmp_path):
    x, y, t, p, _ = digits
    gate = _Gate()
    torch.manual_seed(0)
    slow = am.Teacher(nn.Sequential(nn.Linear(64, 16), gate, nn.Linear(16, 5)), labels=LOW, name="gated")
    kw = dict(teachers=[slow, teachers[1]], data=x[p], method="kd", epochs=2, batch_size=64, **COMMON)
    out, store = tmp_path / "out", tmp_path / "store"

    def child() -> None:
        _Gate.closed = True
        am.amalgamate(**kw, out=out, store=store)

    proc = fork(child)
    lock = out / ".amalgamator.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and f"pid {proc.pid} " in lock.read_text()):
        assert time.monotonic() < deadline and proc.is_alive(), "the first run never took its out folder"
        time.sleep(0.05)
    with pytest.raises(DataError, match="is in use by another run") as err:
        am.amalgamate(**kw, out=out, store=store)
    assert f"pid {proc.pid}" in str(err.value) and str(out) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="is in use by another run"):
        am.amalgamate(**kw, out=out, store=store, resume=True)
    am.amalgamate(**kw, out=tmp_path / "elsewhere", store=tmp_path / "store-elsewhere")  # not blocked

    os.kill(proc.pid, signal.SIGKILL)  # the holder dies mid-run: its lock dies with it
    proc.join(30)
    res = am.amalgamate(**kw, out=out, store=store, resume=True)
    fresh = am.amalgamate(**kw, out=tmp_path / "fresh", store=tmp_path / "store2")
    assert same_weights(res.student.network.state_dict(), fresh.student.network.state_dict())
    assert_clean(store, out)


# Full disk ---------------------------------------------------------------------------------------

FULL_DISK = {
    "store data file": lambda path, store, out: path.is_relative_to(store) and ".safetensors." in path.name,
    "store sidecar": lambda path, store, out: path.is_relative_to(store) and ".json." in path.name,
    "checkpoint": lambda path, store, out: path.parent.name.startswith(".epoch-002."),
    "run.json": lambda path, store, out: path.name.startswith(".run.json."),
}


@pytest.mark.parametrize("where", list(FULL_DISK))
def test_full_disk_is_one_line_leaves_nothing_corrupt_and_resumes(where, cases, reference, tmp_path, monkeypatch):
    ref, kw = reference("kd"), cases["kd"]
    store, out = tmp_path / "store", tmp_path / "out"
    real, failed = durable.write_file, []

    def full_once(path: Path, data: bytes) -> None:
        if not failed and FULL_DISK[where](Path(path), store, out):
            failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(durable, "write_file", full_once)
    with pytest.raises(AmalgamatorError, match="no space left") as err:
        am.amalgamate(**kw, out=out, store=store)
    msg = str(err.value)
    folder = {"checkpoint": out / "checkpoints", "run.json": out}.get(where, store)
    assert "\n" not in msg and f"disk of {folder}:" in msg and " needs " in msg and " free" in msg, msg
    if where.startswith("store"):
        assert isinstance(err.value, StoreError)
        assert len(list(store.rglob("*.safetensors"))) == len(list(store.rglob("*.json")))
    if where == "checkpoint":
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-001"]
    assert_clean(store, out)
    monkeypatch.setattr(durable, "write_file", real)  # space is back
    resume_and_check(kw, ref, store, out)


# Teacher drift -----------------------------------------------------------------------------------


def _classifier(digits, seed: int) -> am.Student:
    x, y, t, _, _ = digits
    keep = np.isin(y[t], LOW)
    return am.train_classifier(x[t][keep], y[t][keep], epochs=2, seed=seed, threads=1, progress=False)


def test_teacher_folder_changed_in_place_is_recomputed(digits, tmp_path):
    """New weights saved over a teacher's folder: another fingerprint, so its outputs are computed again, never
    served from the old entry; the same weights in another folder are the same teacher (content, not path)."""
    x, _, _, p, _ = digits
    folder, data, store = tmp_path / "teacher", Inputs(x[p]), TeacherStore(tmp_path / "store")
    _classifier(digits, 0).save(folder)
    old = am.Teacher.from_pretrained(folder)
    old_logits = store.get(old, data)[LOGITS]
    assert store.stats.computed == 1

    _classifier(digits, 1).save(folder)  # retrained, same path
    new = am.Teacher.from_pretrained(folder)
    assert new.fingerprint() != old.fingerprint()
    fresh = TeacherStore(tmp_path / "store")
    got = fresh.get(new, data)[LOGITS]
    assert (fresh.stats.computed, fresh.stats.hits) == (1, 0)
    assert torch.equal(got, new.logits(data)) and not torch.equal(got, old_logits)

    copy = tmp_path / "copy"
    _classifier(digits, 1).save(copy)
    again = TeacherStore(tmp_path / "store")
    again.get(am.Teacher.from_pretrained(copy), data)
    assert (again.stats.computed, again.stats.hits) == (0, 1)


def test_changed_teacher_folder_in_a_run(digits, teachers, tmp_path):
    """Through amalgamate: a resume over a changed teacher folder is refused, a fresh run recomputes that
    teacher's outputs (and only that teacher's) and trains the student a clean store would give."""
    x, _, _, p, _ = digits
    folder, store = tmp_path / "teacher", tmp_path / "store"
    kw = dict(data=x[p], method="kd", epochs=2, batch_size=64, **COMMON)
    _classifier(digits, 0).save(folder)
    first = am.amalgamate([am.Teacher.from_pretrained(folder, name="low"), teachers[1]], out=tmp_path / "a",
                          store=store, **kw)  # fmt: skip
    assert first.store.computed == 2
    _classifier(digits, 1).save(folder)
    changed = [am.Teacher.from_pretrained(folder, name="low"), teachers[1]]
    with pytest.raises(DataError, match="teacher 'low' has other weights"):
        am.amalgamate(changed, out=tmp_path / "a", store=store, resume=True, **kw)
    second = am.amalgamate(changed, out=tmp_path / "b", store=store, **kw)
    assert (second.store.computed, second.store.hits) == (1, 1)
    clean = am.amalgamate(changed, out=tmp_path / "c", store=tmp_path / "clean", **kw)
    assert same_weights(second.student.network.state_dict(), clean.student.network.state_dict())


def test_teacher_changed_in_memory_is_recomputed(tmp_path):
    """A Teacher object whose weights change after its outputs were stored (load_state_dict, an in-place
    update): its cached fingerprint follows, so the store computes the new outputs."""

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    torch.manual_seed(0)
    teacher, data = am.Teacher(net(), labels=["x", "y", "z"], name="t"), Inputs(torch.randn(20, 6))
    store = TeacherStore(tmp_path)
    before = store.get(teacher, data)[LOGITS]
    teacher.model.load_state_dict(net().state_dict())
    after = store.get(teacher, data)[LOGITS]
    assert store.stats.computed == 2 and not torch.equal(before, after)
    assert torch.equal(after, teacher.logits(data))
    with torch.no_grad():
        teacher.model[0].bias.add_(1.0)
    assert torch.equal(store.get(teacher, data)[LOGITS], teacher.logits(data)) and store.stats.computed == 3
