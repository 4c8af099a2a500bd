"""Bench suite ``speed`` (issues 17 and 14): how close amalgamation runs to the floor.

The **floor** is not our engine: a bare PyTorch loop written here (the same network, AdamW with the
same settings and its multi-tensor path, the same loss, batches and gradient clipping, no Accelerate,
no DataLoader) plus one pass of every teacher over the pool. Rows:

- ``kd digits``: ``kd`` on scikit-learn's digits, two MLP teachers; the student's fit per step against
  the bare loop's, and the whole ``amalgamate()`` call against teacher pass + bare loop.
- ``tc-syn``: TC on SYN with the thesis authors' published settings (issue 17): an 80/20 stratified
  split of ``syn_test.txt`` (the pool and the test rows), 8 labeled pool rows, two LSTM teachers
  trained on ``syn_train.txt`` (hidden 10, 1 layer, classes 1–4; hidden 4, 2 layers, classes 3–6),
  student LSTM hidden 8, 2 layers, no dropout, 200 epochs, batch 8, lr 0.01, trust learner of the
  same shape for 500 epochs. Each seed runs as a fresh Python process on one torch thread, timed from
  its start (imports included) to its end; the teachers are trained (and cached) beforehand.
- ``start-up``: ``import torch``, ``import amalgamator``, ``amalgamator --help``, ``--version`` and
  ``methods``, median of 5 warm runs each, against the issue's budgets (:mod:`.startup`).
- per method (issue 14, item 5), on the multiclass suite's ``fashion-plain`` and ``fortunes`` cases (their split
  and cached teachers, the pool cut down; :data:`FASHION`, :data:`FORTUNES`): every multiclass method that trains
  a student (:data:`ROWS`), all in one process on one store (the first row pays the teacher pass, the rest read
  it), each also on a cold store (and, for the MiniLM rows that the targets compare, a cold embedding bank),
  against its floor; Monte-Carlo dropout's cost; student rows per second; and the same call with the teachers
  run inside every training step (:mod:`.inloop`), as the published codes do. Label-free rows beyond 1.2× their
  floor are profiled (``cProfile`` of a warm call). Quick mode runs a few rows on digits instead.
- memory: the 1M-row memory curve of :mod:`.memory`, when that module is in the checkout.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..report import write_json
from . import speed_kinds
from .common import machine
from .startup import markdown_table as startup_table
from .startup import startup_times
from .teachers import TeacherSpec, teacher_set

#: the thesis authors' published TC-on-SYN settings (issue 17)
TC_SYN = {
    "teachers": [(("normal", "cyclic", "increasing", "decreasing"), {"hidden": 10, "layers": 1, "dropout": 0.0}),
                 (("increasing", "decreasing", "upward_shift", "downward_shift"),
                  {"hidden": 4, "layers": 2, "dropout": 0.0})],
    "student_options": {"hidden": 8, "layers": 2, "dropout": 0.0},
    "epochs": 200, "batch_size": 8, "lr": 0.01, "ttl_epochs": 500, "labeled": 8,
    "teacher_epochs": 300, "teacher_batch_size": 8,  # the teachers trained as the student is (lr 0.01)
}  # fmt: skip
#: the published code's whole TC-on-SYN run (issue 17's measurement), seconds
PUBLISHED_TC_SYN_S = 423.0


def bare_fit(network: Any, x: Any, target: Any, *, batch_size: int, epochs: int, lr: float,
             weight_decay: float = 1e-4, clip: float | None = 5.0, seed: int = 0,
             bce: bool = False) -> tuple[float, int]:  # fmt: skip
    """The floor's training: (seconds, optimiser steps) of a bare loop on ``network`` with soft
    cross-entropy against fixed ``target`` (with ``bce``, per-output BCE against sigmoid targets), shuffled
    batches sliced from tensors."""
    import torch
    import torch.nn.functional as F

    from ..methods.base import soft_cross_entropy

    loss_of = F.binary_cross_entropy_with_logits if bce else (lambda logits, t: soft_cross_entropy(t, logits))

    torch.manual_seed(seed)
    net = copy.deepcopy(network)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    xt, tt = torch.as_tensor(x), torch.as_tensor(target)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_of(net(xt[idx]), tt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            steps += 1
    return time.perf_counter() - t0, steps


def teacher_pass_seconds(teachers: list[Any], x: Any) -> float:
    """One pass of every teacher over ``x`` (the floor's teacher part)."""
    t0 = time.perf_counter()
    for t in teachers:
        t.logits(x)
    return time.perf_counter() - t0


# kd on digits --------------------------------------------------------------------------------------------
def kd_digits(epochs: int = 20, batch_size: int = 32, repeats: int = 5) -> dict[str, Any]:
    """``kd`` on digits (two MLP teachers of five digits): engine vs floor, one torch thread, medians of
    ``repeats`` alternating runs."""
    import torch
    from sklearn.datasets import load_digits

    import amalgamator as am

    torch.set_num_threads(1)
    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(str)
    teachers = []
    for seed, labels in enumerate(([str(i) for i in range(5)], [str(i) for i in range(5, 10)])):
        keep = np.isin(y, labels)
        st = am.train_classifier(x[keep], y[keep], labels=labels, epochs=10, seed=seed, progress=False)
        teachers.append(am.Teacher(st.network, labels=labels, name=f"digits {labels[0]}-{labels[-1]}"))
    runs = []
    for _ in range(repeats):  # engine and floor alternate, so background load falls on both; medians reported
        with tempfile.TemporaryDirectory(prefix="amalgamator-speed-") as fresh:  # a fresh store: the teachers run
            t0 = time.perf_counter()
            res = am.amalgamate(teachers, data=x, method="kd", epochs=epochs, batch_size=batch_size, progress=False,
                                store=fresh)  # fmt: skip
            whole = time.perf_counter() - t0
        target = torch.as_tensor(res.student.predict_proba(x), dtype=torch.float32)
        bare_s, bare_steps = bare_fit(res.student.network, x, target, batch_size=batch_size, epochs=epochs, lr=1e-3)
        teacher_s = teacher_pass_seconds(teachers, x)
        runs.append({"whole_s": whole, "fit_s": float(sum(res.history.seconds)), "bare_s": bare_s,
                     "teacher_pass_s": teacher_s})  # fmt: skip
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    steps = epochs * -(-len(x) // batch_size)
    return {**med, "steps": steps, "bare_steps": bare_steps, "floor_s": med["teacher_pass_s"] + med["bare_s"],
            "repeats": repeats, "runs": runs}  # fmt: skip


# TC on SYN, published settings ------------------------------------------------------------------------------
def _tc_syn_roles(seed: int) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    from .sequences import load_syn

    syn = load_syn()
    pool, test = train_test_split(np.arange(len(syn.y_test)), test_size=0.2, stratify=syn.y_test, random_state=seed)
    from .sequences import labeled_subset

    labeled = labeled_subset(syn.y_test[np.sort(pool)], TC_SYN["labeled"] / len(pool), seed)  # every class once
    return {"syn": syn, "pool": np.sort(pool), "test": np.sort(test), "labeled": labeled}


def _tc_syn_teachers(syn: Any, seed: int) -> list[Any]:
    from .teachers import TeacherSpec, teacher_set

    specs = [TeacherSpec(f"T{i + 1}", list(labels), "lstm", opts, epochs=TC_SYN["teacher_epochs"], lr=TC_SYN["lr"],
                         batch_size=TC_SYN["teacher_batch_size"])
             for i, (labels, opts) in enumerate(TC_SYN["teachers"])]  # fmt: skip
    rows = np.arange(len(syn.y_train))
    return teacher_set("syn-tc-published", specs, syn.x_train, syn.y_train, rows, seed)[0]


def tc_syn_job(seed: int) -> dict[str, Any]:
    """One TC-on-SYN run in this process (the timed subprocess calls this), plus its floor."""
    import torch

    import amalgamator as am

    torch.set_num_threads(1)
    r = _tc_syn_roles(seed)
    syn, pool, test, lab = r["syn"], r["pool"], r["test"], r["labeled"]
    teachers = _tc_syn_teachers(syn, seed)
    x_pool, y_pool = syn.x_test[pool], syn.y_test[pool]
    unl = np.setdiff1d(np.arange(len(pool)), lab)
    t0 = time.perf_counter()
    res = am.amalgamate(teachers, data=x_pool[unl], labeled=(x_pool[lab], y_pool[lab]), method="tc",
                        method_options={"ttl_epochs": TC_SYN["ttl_epochs"]}, student="lstm",
                        student_options=TC_SYN["student_options"], epochs=TC_SYN["epochs"],
                        batch_size=TC_SYN["batch_size"], lr=TC_SYN["lr"], seed=seed, progress=False)  # fmt: skip
    amalgamate_s = time.perf_counter() - t0
    acc = float((np.asarray(res.student.predict(syn.x_test[test])) == syn.y_test[test]).mean())
    finished = time.time()  # the run's end, before the floor below (the parent times the process up to here)
    fit_s = float(sum(res.history.seconds))
    steps = TC_SYN["epochs"] * -(-len(pool) // TC_SYN["batch_size"])
    target = torch.as_tensor(res.student.predict_proba(x_pool), dtype=torch.float32)
    x_in = torch.as_tensor(x_pool, dtype=torch.float32)
    bare_s, bare_steps = bare_fit(res.student.network, x_in, target, batch_size=TC_SYN["batch_size"],
                                  epochs=TC_SYN["epochs"], lr=TC_SYN["lr"], seed=seed)  # fmt: skip
    return {"seed": seed, "accuracy": acc, "amalgamate_s": amalgamate_s, "fit_s": fit_s, "steps": steps,
            "bare_s": bare_s, "bare_steps": bare_steps, "pool": len(pool), "test": len(test),
            "finished": finished}  # fmt: skip


def tc_syn(seeds: int) -> list[dict[str, Any]]:
    """Every seed as its own process on one thread, timed whole (imports included), teachers cached first."""
    for seed in range(seeds):  # train and cache the teachers outside the timed processes
        _tc_syn_teachers(_tc_syn_roles(seed)["syn"], seed)
    out = []
    env = {**os.environ, "AMALGAMATOR_THREADS": "1", "OMP_NUM_THREADS": "1", "AMALGAMATOR_QUIET": "1"}
    for seed in range(seeds):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "amalgamator.bench.speed", "tc-syn", str(seed)], env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"tc-syn seed {seed} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        whole = row.pop("finished") - started  # process start to the student's test score; the floor runs after
        out.append({**row, "whole_s": whole})
        progress.console.print(f"tc-syn seed {seed}: {whole:.1f} s whole, accuracy {row['accuracy']:.3f}")
    return out


# Per method on Fashion-MNIST and fortunes (issue 14, item 5) -------------------------------------------------
#: (row, method, options, labeled): every multiclass method that trains a student, label-free first, then two
#: label-using ones with 2 labeled rows per class. ``dfa`` comes first: its logits and feature taps are every
#: piece but MC dropout that any row reads, so its call is the one teacher pass the whole comparison pays.
ROWS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("dfa", "dfa", {}, False), ("kd", "kd", {}, False), ("uhc", "uhc", {}, False), ("kd-std", "kd-std", {}, False),
    ("max-logit", "max-logit", {}, False), ("energy", "energy", {}, False), ("calibrated", "calibrated", {}, False),
    ("cluster-route", "cluster-route", {}, False), ("mahalanobis (pool)", "mahalanobis", {"statistics": "pool"}, False),
    ("refine", "refine", {}, False), ("auto", "auto", {}, False), ("cfl", "cfl", {}, False),
    ("muki-hard", "muki-hard", {}, False), ("muki-soft", "muki-soft", {}, False),
    ("muki-hard K=1", "muki-hard", {"k": 1}, False), ("muki-soft K=1", "muki-soft", {"k": 1}, False),
    ("supuhc (2/class)", "supuhc", {}, True), ("tc (2/class)", "tc", {}, True),
    ("tc+labels (2/class)", "tc+labels", {}, True), ("supkd (2/class)", "supkd", {}, True),
    ("propagate (2/class)", "propagate", {}, True),
]  # fmt: skip
# Not timed: the reference rows that amalgamate nothing: ``ensemble`` (no student), ``sup``/``supervised`` (labels
# alone) and ``selftrain`` (self-training on the labels alone, no teacher read).
#: the rows of the two targets on the MiniLM teacher: the store against the teachers in the loop, MUKI against KD
KEY_ROWS = ("kd", "muki-hard", "muki-soft")
#: calls (and the floor's teacher pass) that take less than this are timed ``REPEATS`` times, the fastest kept
REPEAT_BELOW_S, REPEATS = 20.0, 3
#: a label-free row whose cold call takes longer than this multiple of its floor misses the target (and is profiled)
TARGET_RATIO = 1.2


@dataclass
class MethodCase:
    """One dataset of the per-method comparison: a multiclass case's split, cached teachers and student, its pool
    cut to ``pool_rows``, and how much of the teachers-in-the-loop runs is timed (the rest is extrapolated)."""

    key: str
    pool_rows: int | None
    #: steps of each teachers-in-the-loop run whose teachers run (``key_live_steps`` for :data:`KEY_ROWS`)
    live_steps: int
    key_live_steps: int
    #: rows whose cold call starts from an empty sentence-embedding bank too (None: every row)
    cold_bank: tuple[str, ...] | None = None
    #: the floor's plain MC loop is timed on this many rows and scaled to the pool (None: the whole pool)
    mc_floor_rows: int | None = None
    #: rows also run wholly with the teachers in the loop, to check the extrapolation
    full_in_loop: tuple[str, ...] = ()
    rows: tuple[str, ...] | None = None  # None: every row of :data:`ROWS`
    epochs: int = 10
    batch_size: int = 128
    labeled_per_class: int = 2
    #: builds the problem (teachers, pool, student) of another kind; None: the multiclass case ``key``
    problem: Callable[[MethodCase, int], Problem] | None = None
    #: the rows of such a problem (None: :data:`ROWS`, filtered by ``rows``)
    row_specs: tuple[tuple[str, str, dict[str, Any], bool], ...] | None = None
    #: the floor's bare loop learns sigmoid targets with BCE (multi-label and multi-task students)
    bce: bool = False


FASHION = MethodCase("fashion-plain", pool_rows=10_000, live_steps=40, key_live_steps=40, mc_floor_rows=2560,
                     full_in_loop=("kd",))  # fmt: skip
FORTUNES = MethodCase("fortunes", pool_rows=2000, live_steps=2, key_live_steps=8, cold_bank=KEY_ROWS)
YEAST_ML = MethodCase("yeast-multilabel", pool_rows=None, live_steps=40, key_live_steps=40, epochs=40, batch_size=64,
                      problem=lambda mc, seed: speed_kinds.multilabel_problem(mc, seed),
                      row_specs=tuple(speed_kinds.ML_ROWS), bce=True)  # fmt: skip
PAIRS_MT = MethodCase("fashionpairs-multitask", pool_rows=None, live_steps=20, key_live_steps=20, epochs=13,
                      batch_size=64, problem=lambda mc, seed: speed_kinds.multitask_problem(mc, seed),
                      row_specs=tuple(speed_kinds.MT_ROWS), bce=True)  # fmt: skip
#: quick mode: digits (no downloaded data), a few rows, a few steps
DIGITS_QUICK = MethodCase("digits", pool_rows=None, live_steps=5, key_live_steps=5, epochs=3,
                          rows=("dfa", "kd", "muki-soft", "muki-soft K=1", "supuhc (2/class)"))  # fmt: skip


@dataclass
class Problem:
    """What every call of one dataset shares: teachers, the unlabeled pool, a few labeled rows, the student."""

    title: str
    teachers: list[Any]
    x: Any
    labeled: tuple[Any, np.ndarray]
    student: str
    student_options: dict[str, Any]
    lr: float
    setup: dict[str, Any] = field(default_factory=dict)


def _take_rows(x: Any, idx: np.ndarray) -> Any:
    return [x[i] for i in idx] if isinstance(x, list) else x[idx]


def _labeled(x: Any, y: np.ndarray, per_class: int, seed: int) -> tuple[Any, np.ndarray]:
    """``per_class`` rows of every class of the pool, with their labels (copies of pool rows: the pool keeps its
    store entries, and the teachers run on these few rows only)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]))
    return _take_rows(x, idx), y[idx]


def case_problem(mc: MethodCase, seed: int = 0) -> Problem:
    """The multiclass case ``mc.key`` as its suite builds seed ``seed``: the same teacher split and cached
    teachers, the same student; its unlabeled pool subsampled to ``mc.pool_rows``. Another kind's case builds
    its own (``mc.problem``)."""
    from . import multiclass as MC
    from .datasets import hold_out, load, role_split

    if mc.problem is not None:
        return mc.problem(mc, seed)
    if mc.key == "digits":
        return _digits_problem(mc, seed)
    case = next(c for c in MC.cases(False) if c.key == mc.key)
    bm = load(case.dataset)
    t_split, p_rows = role_split(len(bm.y_train), (0.5, 0.5), seed, y=bm.y_train,
                                 max_rows=(case.teacher_rows, case.pool_rows))  # fmt: skip
    t_rows, _ = hold_out(t_split, MC.VALIDATION_FRACTION, seed, y=bm.y_train, max_rows=MC.VALIDATION_MAX)
    groups = case.groups(list(bm.labels))
    specs = [TeacherSpec(f"T{i + 1}", g, arch, opts, epochs=case.teacher_epochs, lr=case.lr)
             for i, (g, (arch, opts)) in enumerate(zip(groups, case.archs, strict=False))]  # fmt: skip
    teachers, _ = teacher_set(bm.name, specs, bm.x_train, bm.y_train, t_rows, seed)
    p_rows_case = p_rows
    if mc.pool_rows is not None and mc.pool_rows < len(p_rows):
        p_rows = np.sort(np.random.default_rng(seed).choice(p_rows, mc.pool_rows, replace=False))
    x, y = _take_rows(bm.x_train, p_rows), bm.y_train[p_rows]
    setup = {"pool": len(p_rows), "teacher_rows": len(t_rows), "case_pool": len(p_rows_case),
             "teacher_note": "cached, trained as the multiclass suite trains them", "bank": bm.kind == "text",
             "teachers": [f"{arch} {opts}" for arch, opts in case.archs[: len(groups)]],
             "student": f"{case.student} {case.student_options}".strip()}  # fmt: skip
    return Problem(case.title, teachers, x, _labeled(x, y, mc.labeled_per_class, seed), case.student,
                   dict(case.student_options), case.lr, setup)  # fmt: skip


def _digits_problem(mc: MethodCase, seed: int) -> Problem:
    """Quick mode's problem: digits, two MLP teachers of five digits each (feature taps for dfa, dropout for MUKI)."""
    from sklearn.datasets import load_digits

    import amalgamator as am

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target.astype(str)
    teachers = []
    for i, labels in enumerate(([str(k) for k in range(5)], [str(k) for k in range(5, 10)])):
        keep = np.isin(y, labels)
        st = am.train_classifier(x[keep], y[keep], labels=labels, epochs=3, seed=seed + i, progress=False)
        teachers.append(am.Teacher(st.network, labels=labels, name=f"T{i + 1}", features="backbone"))
    setup = {
        "pool": len(x),
        "teachers": ["mlp {}", "mlp {}"],
        "student": "mlp {}",
        "bank": False,
        "teacher_note": "trained here for 3 epochs on all digits of their classes",
    }
    return Problem("digits (quick)", teachers, x, _labeled(x, y, mc.labeled_per_class, seed), "mlp", {}, 1e-3, setup)


@contextlib.contextmanager
def bank_at(folder: Path) -> Iterator[None]:
    """Keep sentence embeddings in ``folder/embeddings`` for a block: ``embeddings_root()`` is the default store's
    sibling, so ``AMALGAMATOR_STORE=folder/store`` moves it (and the featurizer keeps one in-memory bank per
    folder), while the cached teachers (``AMALGAMATOR_CACHE``) stay where they are. The user's bank is never
    touched."""
    before = os.environ.get("AMALGAMATOR_STORE")
    os.environ["AMALGAMATOR_STORE"] = str(folder / "store")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("AMALGAMATOR_STORE", None)
        else:
            os.environ["AMALGAMATOR_STORE"] = before


def _method_object(row: tuple[str, str, dict[str, Any], bool]) -> Any:
    from ..methods import get_method

    return get_method(row[1])(**row[2])


def _amalgamate(problem: Problem, mc: MethodCase, row: tuple, store: Path, method: Any = None,
                profile: Any = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """One timed ``amalgamate()`` of ``row`` with the store at ``store`` (a fresh TeacherStore object, so its
    statistics are this call's): (result, figures)."""
    from ..api import amalgamate
    from ..store import TeacherStore

    method = method if method is not None else _method_object(row)
    kwargs: dict[str, Any] = {"labeled": problem.labeled} if row[3] else {}
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    res = amalgamate(problem.teachers, data=problem.x, method=method, student=problem.student,
                     student_options=problem.student_options, epochs=mc.epochs, batch_size=mc.batch_size,
                     lr=problem.lr, seed=0, store=TeacherStore(store, progress=False), progress=False, threads=1,
                     **kwargs)  # fmt: skip
    if profile is not None:
        profile.disable()
    wall = time.perf_counter() - t0
    t = res.timings
    rows = int(res.student.info["rows"]["total"])
    figures = {"wall_s": wall, "teacher_s": t["teacher"], "mc_s": t["mc"], "train_s": t["train"],
               "outside_s": wall - t["teacher"] - t["mc"] - t["train"], "hits": res.store.hits,
               "computed": res.store.computed, "rows": rows,
               "rows_per_s": rows * mc.epochs / t["train"] if t["train"] > 0 else None}  # fmt: skip
    return res, figures


def bare_teacher_pass(teachers: list[Any], x: Any, mc: tuple[int, float] | None, mc_rows: int | None,
                      batch_size: int = 256, chunk: int = 1024,
                      keep: dict[str, list[Any]] | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """The floor's teacher part, per teacher: its preprocessing of the pool (a sentence encoder's uncached call,
    no bank), one eval-mode forward of every batch of ``batch_size`` rows (the store's batch), and, with ``mc``
    (K, p), the plain K-pass Monte-Carlo dropout loop on the same batches (the reference loop, not the
    library's batched plans), timed on ``mc_rows`` rows and scaled to the pool. ``keep`` collects each teacher's
    preprocessed chunks, for :func:`bare_forward_seconds`."""
    import torch

    from ..data import Inputs

    inputs = Inputs(x, what="pool")
    n = len(inputs)
    out = {}
    for t in teachers:
        prep = fwd = mc_s = 0.0
        mc_done = 0
        for start in range(0, n, chunk):
            raw = inputs.take(slice(start, start + chunk))
            t0 = time.perf_counter()
            inp = t._prepare(raw)
            t1 = time.perf_counter()
            for j in range(0, len(raw), batch_size):
                t.run(inp[j : j + batch_size], prepared=True)
            t2 = time.perf_counter()
            prep, fwd = prep + t1 - t0, fwd + t2 - t1
            if keep is not None:
                keep.setdefault(t.name, []).append(inp)
            if mc is not None and t.has_dropout and (mc_rows is None or mc_done < mc_rows):
                with torch.random.fork_rng(devices=[]):
                    for j in range(0, len(raw), batch_size):
                        t._mc_probs(inp[j : j + batch_size], mc[0], mc[1], prepared=True, plan="plain")
                mc_s += time.perf_counter() - t2
                mc_done += len(raw)
        out[t.name] = {"preprocess_s": prep, "forward_s": fwd, "mc_s": mc_s * n / mc_done if mc_done else 0.0,
                       "mc_rows": mc_done}  # fmt: skip
    return out


def bare_forward_seconds(teachers: list[Any], prepared: dict[str, list[Any]], batch_size: int = 256) -> float:
    """The floor's teacher forward again, on the chunks :func:`bare_teacher_pass` prepared: timed beside each
    row's cold calls (the machine's speed drifts over minutes; preprocessing, a sentence encoder's 48 s, is not
    repeated)."""
    t0 = time.perf_counter()
    for t in teachers:
        for inp in prepared[t.name]:
            for j in range(0, len(inp), batch_size):
                t.run(inp[j : j + batch_size], prepared=True)
    return time.perf_counter() - t0


def student_featurize_seconds(student: Any, teachers: list[Any], x: Any, passes: dict[str, dict[str, float]]) -> float:
    """What the student's own input features cost without the bank: a teacher with the same featurizer (the
    MiniLM student of the MiniLM teacher) has timed it already in the floor's pass; else it is timed here."""
    from ..data import Inputs

    f = student.featurizer
    for t in teachers:
        p = t.preprocess
        if type(p) is type(f) and hasattr(p, "config") and p.config() == f.config():
            return passes[t.name]["preprocess_s"]
    inputs = Inputs(x, what="pool")
    t0 = time.perf_counter()
    for start in range(0, len(inputs), 1024):
        f(inputs.take(slice(start, start + 1024)))
    return time.perf_counter() - t0


def _banked(teacher: Any) -> bool:
    """Does the teacher's preprocessing keep its results in an on-disk bank (the sentence encoder)?"""
    return hasattr(teacher.preprocess, "_bank_dir")


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated calls (other work on the machine only ever adds time), with every wall time."""
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "runs_s": [r["wall_s"] for r in runs]}


def _pass_total(passes: dict[str, dict[str, float]]) -> float:
    return sum(p["preprocess_s"] + p["forward_s"] for p in passes.values())


def _profile_top(profile: Any, n: int = 8) -> list[dict[str, Any]]:
    """The amalgamator functions (past the generic call chain) and torch calls with the most cumulative time."""
    import pstats

    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    generic = {"amalgamate", "_amalgamate", "fit", "train", "run", "_timed", "loss", "__call__"}
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.items():
        ours = "/amalgamator/" in file and "/bench/" not in file
        if (ours and func not in generic) or (not ours and tottime > 0.05):
            where = file.split("/amalgamator/", 1)[-1] if ours else Path(file).name
            rows.append({"function": f"{where}:{line}({func})", "calls": calls, "cum_s": cumtime, "own_s": tottime,
                         "ours": ours})  # fmt: skip
    ours_rows = sorted((r for r in rows if r["ours"]), key=lambda r: -r["cum_s"])[:n]
    own_rows = sorted(rows, key=lambda r: -r["own_s"])[:n]
    return ours_rows + [r for r in own_rows if r not in ours_rows]


def _bound(row: dict[str, Any], floor: dict[str, Any]) -> str:
    """What a row's cold call spends beyond its floor, part by part, largest first (the profile names the code)."""
    c, parts = row["cold"], row["floor_parts"]
    bare_pass, fit_s = parts["pass_s"], parts["fit_s"]
    parts = {"student training beyond the bare loop": c["train_s"] - fit_s,
             "outside training (store reads, featurizing, prepare, auxiliary learners)": c["outside_s"],
             "teacher pass beyond the bare one": c["teacher_s"] - bare_pass,
             "MC passes beyond the plain loop": c["mc_s"] - (floor["mc_s"] if row["uses_mc"] else 0.0)}  # fmt: skip
    top = sorted(parts.items(), key=lambda kv: -kv[1])
    return "; ".join(f"{name} {secs:+.1f} s" for name, secs in top if abs(secs) >= 0.05) or "—"


def _student_kind(student: Any) -> str:
    """A student network's class and size: rows whose methods build different students get floors of their own."""
    net = student.network
    return f"{type(net).__name__}, {sum(p.numel() for p in net.parameters()):,} parameters"


def _own_parameters(method: Any, student: Any) -> dict[str, int]:
    """Parameters of the networks a method trains beside the student (CFL's common space), against the student's:
    work the floor, which trains the student alone, does not do."""
    modules = method.modules()
    if modules is None:
        return {}
    return {"own_parameters": sum(p.numel() for p in modules.parameters()),
            "student_parameters": sum(p.numel() for p in student.network.parameters())}  # fmt: skip


def method_case(mc: MethodCase, quick: bool = False) -> dict[str, Any]:
    """Every row of ``mc`` in this process: the calls sharing one store, each row's cold call, its teachers-in-
    the-loop run, the floor; the label-free rows that miss :data:`TARGET_RATIO` profiled on a warm store."""
    import warnings

    with warnings.catch_warnings():  # quick mode's few steps: the engine's advice is not news here
        warnings.filterwarnings("ignore", message=".*optimiser steps")
        return _method_case(mc, quick)


def _method_case(mc: MethodCase, quick: bool) -> dict[str, Any]:
    import cProfile

    import torch

    from ..methods import REGISTRY
    from .inloop import TeachersInLoop, extrapolate

    torch.set_num_threads(1)
    problem = case_problem(mc)
    rows = list(mc.row_specs) if mc.row_specs is not None else [r for r in ROWS if mc.rows is None or r[0] in mc.rows]
    for r in [r for r in rows if r[1] not in REGISTRY]:
        progress.warn(f"method {r[1]!r} is not registered in this checkout; row {r[0]!r} is skipped.")
    rows = [r for r in rows if r[1] in REGISTRY]
    started = time.perf_counter()
    out: dict[str, Any] = {"title": problem.title, "setup": {**problem.setup, "epochs": mc.epochs,
                           "batch_size": mc.batch_size, "lr": problem.lr, "labeled_per_class": mc.labeled_per_class},
                           "rows": {}}  # fmt: skip
    from ..data import Inputs

    for t in problem.teachers:  # load what the teachers need (MiniLM's weights) before any timing
        t._prepare(Inputs(problem.x, what="pool").take(slice(0, 2)))
    with tempfile.TemporaryDirectory(prefix="amalgamator-speed-") as tmp:
        session = Path(tmp) / "session"
        shared = session / "store"
        results: dict[str, dict[str, Any]] = {}
        student = None
        students: dict[str, Any] = {}  # each distinct student network (ANT's chain head), by _student_kind
        with bank_at(session):
            progress.console.print(f"speed: {mc.key}: {len(rows)} rows sharing one store …")
            for row in rows:  # one store for every row: the first pays the teacher pass, MUKI's first its MC
                res, first = _amalgamate(problem, mc, row, shared)
                warms = [first] if first["computed"] == 0 else []
                while len(warms) < (1 if quick else REPEATS):
                    warms.append(_amalgamate(problem, mc, row, shared)[1])
                    if warms[-1]["wall_s"] >= REPEAT_BELOW_S:
                        break
                warm = _best(warms)
                results[row[0]] = {"method": row[1], "options": row[2], "labeled": row[3], "shared": first,
                                   "warm": warm, "uses_mc": any(p.startswith("mc/") for t in problem.teachers
                                                                for p in _method_object(row).pieces(t))}  # fmt: skip
                student = res.student if student is None else student
                results[row[0]]["student"] = _student_kind(res.student)
                students.setdefault(results[row[0]]["student"], res.student)
                progress.console.print(f"  {row[0]}: {first['wall_s']:.1f} s (teacher {first['teacher_s']:.1f} s, "
                                       f"MC {first['mc_s']:.1f} s), warm {warm['wall_s']:.1f} s")  # fmt: skip
        progress.console.print(f"speed: {mc.key}: the floor …")
        prepared: dict[str, list[Any]] = {}
        mc_opts = next((_method_object(r).options for r in rows if results[r[0]]["uses_mc"]), None)
        passes = bare_teacher_pass(problem.teachers, problem.x,
                                   (int(mc_opts["k"]), float(mc_opts["p"])) if mc_opts else None,
                                   mc.mc_floor_rows, keep=prepared)  # fmt: skip
        pass_runs = [_pass_total(passes)]
        while not quick and len(pass_runs) < REPEATS and pass_runs[-1] < REPEAT_BELOW_S:  # again, without MC
            again = bare_teacher_pass(problem.teachers, problem.x, None, None)
            pass_runs.append(_pass_total(again))
            if pass_runs[-1] < _pass_total(passes):
                for name, p in again.items():
                    passes[name].update(preprocess_s=p["preprocess_s"], forward_s=p["forward_s"])
        with bank_at(session):
            feats = student.featurizer.transform(Inputs(problem.x, what="pool"))
        noise = torch.randn(len(feats), len(student.labels), generator=torch.Generator().manual_seed(0))
        target = torch.sigmoid(noise) if mc.bce else torch.softmax(noise, -1)
        # a row whose method builds another student (ANT's chain head) is held to that student's own bare loop
        fit_runs = {kind: [bare_fit(st.network, feats, target, batch_size=mc.batch_size, epochs=mc.epochs,
                                    lr=problem.lr, bce=mc.bce) for _ in range(1 if quick else 3)]
                    for kind, st in students.items()}  # fmt: skip
        fit_by_student = {kind: min(f[0] for f in runs) for kind, runs in fit_runs.items()}
        fits = fit_runs[_student_kind(student)]
        fit_s = fit_by_student[_student_kind(student)]
        featurize_s = student_featurize_seconds(student, problem.teachers, problem.x, passes)
        floor = {"passes": passes, "pass_s": _pass_total(passes), "pass_runs": pass_runs,
                 "mc_s": sum(p["mc_s"] for p in passes.values()), "fit_s": fit_s, "fit_runs": [f[0] for f in fits],
                 "fit_steps": fits[0][1], "rows_per_s": len(feats) * mc.epochs / fit_s,
                 "student_featurize_s": featurize_s, "fit_by_student": fit_by_student,
                 "banked_s": sum(passes[t.name]["preprocess_s"] for t in problem.teachers if _banked(t))}  # fmt: skip
        out["floor"] = floor
        # Each row's cold calls, each followed by the floor's teacher forward and bare student loop: the machine's
        # speed drifts over minutes (a bare pass measured 2.2 s in one spell and 3.3 s in another), so each row is
        # held to the floor timed beside it, the fastest of each part kept as for the calls.
        for i, row in enumerate(rows):  # each row's first call on a cold store (and, for some, a cold bank)
            cold_bank = mc.cold_bank is None or row[0] in mc.cold_bank
            colds: list[dict[str, Any]] = []
            beside: dict[str, list[float]] = {"forward_s": [], "fit_s": []}
            own = students[results[row[0]]["student"]]
            while len(colds) < (1 if quick else REPEATS) and not (colds and colds[-1]["wall_s"] >= REPEAT_BELOW_S):
                folder = Path(tmp) / f"cold-{i}-{len(colds)}"
                with bank_at(folder if cold_bank else session):
                    colds.append(_amalgamate(problem, mc, row, folder / "store")[1])
                beside["forward_s"].append(bare_forward_seconds(problem.teachers, prepared))
                beside["fit_s"].append(bare_fit(own.network, feats, target, batch_size=mc.batch_size, epochs=mc.epochs,
                                                lr=problem.lr, bce=mc.bce)[0])  # fmt: skip
            results[row[0]]["cold"] = {**_best(colds), "cold_bank": cold_bank}
            results[row[0]]["floor_beside"] = beside
            walls = ", ".join(f"{c['wall_s']:.1f}" for c in colds)
            progress.console.print(f"  {row[0]} cold: {walls} s (floor beside: forward "
                                   f"{', '.join(f'{v:.1f}' for v in beside['forward_s'])} s, student loop "
                                   f"{', '.join(f'{v:.1f}' for v in beside['fit_s'])} s)")  # fmt: skip
        progress.console.print(f"speed: {mc.key}: teachers in the loop …")
        with bank_at(session):
            for row in rows:
                n_live = mc.key_live_steps if row[0] in KEY_ROWS else mc.live_steps
                wrapper = TeachersInLoop(_method_object(row), live_steps=n_live)
                wall = _amalgamate(problem, mc, row, shared, method=wrapper)[1]["wall_s"]
                live = extrapolate(wall, wrapper, extra_s=featurize_s)
                if row[0] in mc.full_in_loop:
                    whole = TeachersInLoop(_method_object(row))
                    live["full_measured_s"] = (
                        _amalgamate(problem, mc, row, shared, method=whole)[1]["wall_s"] + featurize_s
                    )
                results[row[0]]["in_loop"] = live
                progress.console.print(f"  {row[0]}: {live['total_s']:.0f} s ({live['live_steps']} of "
                                       f"{live['steps']} steps timed)")  # fmt: skip
            for name, r in results.items():
                # a cold call that found the sentence embeddings in the bank is held to a floor without the encoder's
                # pass, and compared with the teachers in the loop with that pass added back (``banked_s``)
                banked = 0.0 if r["cold"]["cold_bank"] else floor["banked_s"]
                own_fit = fit_by_student[r["student"]]
                beside = r["floor_beside"]
                prep = sum(p["preprocess_s"] for p in floor["passes"].values()) - banked
                r["floor_parts"] = {"pass_s": prep + min(beside["forward_s"]), "fit_s": min(beside["fit_s"])}
                r["floor_s"] = (r["floor_parts"]["pass_s"] + (floor["mc_s"] if r["uses_mc"] else 0.0)
                                + r["floor_parts"]["fit_s"])  # fmt: skip
                r["ratio"] = r["cold"]["wall_s"] / r["floor_s"]
                r["warm_ratio"] = r["warm"]["wall_s"] / own_fit
                r["fit_ratio"] = r["warm"]["train_s"] / own_fit
                r["store_based_s"] = r["cold"]["wall_s"] + banked
                # a method that trains in stages of its own (TargetNet's blocks) never calls the wrapped loss: no steps
                steps = r["in_loop"]["steps"]
                r["in_loop_ratio"] = r["in_loop"]["total_s"] / r["store_based_s"] if steps else None
                r["label_free"] = not r["labeled"]
                if r["label_free"] and r["ratio"] > TARGET_RATIO:
                    r["bound"] = _bound(r, floor)
                    if not quick:
                        prof = cProfile.Profile()
                        row = next(x for x in rows if x[0] == name)
                        method = _method_object(row)
                        _amalgamate(problem, mc, row, shared, method=method, profile=prof)
                        r["profile"] = _profile_top(prof)
                        r.update(_own_parameters(method, student))
    out["rows"] = results
    out["seconds"] = time.perf_counter() - started
    return out


# The suite ----------------------------------------------------------------------------------------------
def _memory(out: Path, quick: bool) -> dict[str, Any]:
    """The 1M-row memory curve of :mod:`.memory` (written separately), or a note while it is not in this checkout.

    It runs in a fresh Python process: its runs are children of the process that calls it, and Linux keeps a
    parent's resident set in a child's ``ru_maxrss`` across ``exec`` (the parent's pages count as the child's
    until it replaces them), so called from this process (over 1 GB by now) every run would report this
    process's size. A fresh caller holds no more than the runs themselves import."""
    import importlib.util

    if importlib.util.find_spec(f"{__package__}.memory") is None:
        return {"missing": "amalgamator.bench.memory is not in this checkout yet: the 1M-row memory curve is not run"}
    code = ("import json, sys; from pathlib import Path; from amalgamator.bench.memory import memory_curve; "
            "print(json.dumps(memory_curve(Path(sys.argv[1]), sys.argv[2] == '1')))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(out), "1" if quick else "0"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the memory curve failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


#: the parts of the suite, in running order; ``amalgamator bench speed --rows a,b`` recomputes only those
PARTS = ("startup", "kd-digits", "tc-syn", FASHION.key, FORTUNES.key, YEAST_ML.key, PAIRS_MT.key, "embedding", "memory")


def _method_part(results: dict[str, Any], mc: MethodCase, quick: bool) -> None:
    from ..errors import DataError

    try:
        results["methods"][mc.key] = method_case(mc, quick)
    except DataError as exc:  # the dataset is not on this machine (scripts/bench-data.sh)
        progress.warn(f"speed: {mc.key} skipped: {exc}")
        results["methods"][mc.key] = {"skipped": str(exc), "title": mc.key}


def _embedding_part(results: dict[str, Any]) -> None:
    from ..errors import DataError

    progress.console.print("speed: embedding teachers …")
    try:
        results["embedding"] = speed_kinds.embedding_case()
    except DataError as exc:
        progress.warn(f"speed: embedding teachers skipped: {exc}")
        results["embedding"] = {"skipped": str(exc)}


def _previous(path: Path, rows: list[str]) -> dict[str, Any]:
    """The result ``rows`` are recomputed into: the suite's last JSON."""
    from ..errors import AmalgamatorError

    unknown = [r for r in rows if r not in PARTS]
    if unknown:
        raise AmalgamatorError(f"speed has no part {', '.join(map(repr, unknown))}; its parts: {', '.join(PARTS)}.")
    if not path.is_file():
        raise AmalgamatorError(f"--rows recomputes parts of an existing result, and {path} is not there: run "
                               "`amalgamator bench speed` whole first.")  # fmt: skip
    return json.loads(path.read_text(encoding="utf-8"))


def run(out: Path, quick: bool = False, seeds: int | None = None, rows: list[str] | None = None) -> dict[str, Any]:
    """The whole suite (or, with ``rows``, those :data:`PARTS` of the last result), written beside ``out``."""
    import torch

    started = time.perf_counter()
    torch.set_num_threads(1)  # every timed part runs on one thread
    n_seeds = seeds or (1 if quick else 3)
    suffix = "-quick" if quick else ""
    fresh = {"machine": machine(), "quick": quick, "cores": os.cpu_count(), "load_start": _load()}
    results: dict[str, Any] = {**fresh, **_previous(out / f"speed{suffix}.json", rows)} if rows else fresh
    results.setdefault("methods", {})
    todo = set(rows or PARTS)
    if "startup" in todo:
        progress.console.print("speed: start-up times …")
        results["startup"] = startup_times(3 if quick else 5)
    if "kd-digits" in todo:
        progress.console.print("speed: kd on digits …")
        results["kd_digits"] = kd_digits(epochs=5 if quick else 20, repeats=2 if quick else 5)
    if "tc-syn" in todo:
        progress.console.print(f"speed: tc-syn, {n_seeds} seed(s) …")
        results["tc_syn"] = tc_syn(n_seeds) if not quick else []
    for mc in [DIGITS_QUICK] if quick else [FASHION, FORTUNES, YEAST_ML, PAIRS_MT]:
        if mc.key in todo or quick:
            _method_part(results, mc, quick)
    if "embedding" in todo and not quick:
        _embedding_part(results)
    if "memory" in todo:
        progress.console.print("speed: the 1M-row memory curve …")
        results["memory"] = _memory(out, quick)
    if not rows:
        results["load_end"] = _load()
    took = time.perf_counter() - started
    if rows:
        results["recomputed"] = {"parts": list(rows), "seconds": took}
    else:
        results["suite_s"] = took
        results.pop("recomputed", None)
    write_json(out / f"speed{suffix}.json", results)
    (out / f"speed{suffix}.md").write_text(markdown(results), encoding="utf-8")
    progress.console.print(f"wrote {out / f'speed{suffix}.md'} ({took / 60:.1f} min)")
    return results


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} ×"


def _drift(rows: dict[str, Any]) -> str:
    """How far the floor timed beside the rows moved over the run (the machine's speed drifts)."""
    fwd = [min(r["floor_beside"]["forward_s"]) for r in rows.values() if r.get("floor_beside")]
    fit = [min(r["floor_beside"]["fit_s"]) for r in rows.values() if r.get("floor_beside")]
    if not fwd:
        return ""
    return (f"; over this table's rows the bare forward took {min(fwd):.2f}–{max(fwd):.2f} s and the bare student "
            f"loop {min(fit):.2f}–{max(fit):.2f} s")  # fmt: skip


def _methods_markdown(m: dict[str, Any]) -> list[str]:
    """One dataset of the per-method comparison: against the floor, one store for all, MC, teachers in the loop."""
    from ..report import markdown_table

    if "skipped" in m:
        return [f"Skipped: {m['skipped']}", ""]
    st, fl, rows = m["setup"], m["floor"], m["rows"]
    mc_rows = {p["mc_rows"] for p in fl["passes"].values() if p["mc_rows"]}
    passes = "; ".join(f"{name} {p['preprocess_s'] + p['forward_s']:.1f} s"
                       + (f" (of which preprocessing {p['preprocess_s']:.1f} s)" if p["preprocess_s"] >= 0.5 else "")
                       for name, p in fl["passes"].items())  # fmt: skip
    mc_note = (f"; the plain K-pass MC dropout loop {fl['mc_s']:.1f} s"
               + (f" (timed on {min(mc_rows)} rows, scaled to the pool)" if mc_rows and min(mc_rows) < st["pool"]
                  else "") if fl["mc_s"] else "")  # fmt: skip
    lines = [f"Pool: {st['pool']:,} unlabeled rows" + (f" (of the multiclass case's {st['case_pool']:,})"
             if st.get("case_pool") and st["case_pool"] > st["pool"] else "")
             + f"; teachers {'; '.join(st['teachers'])} ({st.get('teacher_note', '')}); student "
             f"{st['student']}; {st['epochs']} epochs, batch {st['batch_size']}, lr {st['lr']:g}; label-using rows "
             f"add {st['labeled_per_class']} labeled rows per class (copies of pool rows).", "",
             f"**Floor**: one pass of every teacher ({passes}){mc_note}; the bare student loop "
             f"{fl['fit_s']:.2f} s (fastest of {len(fl['fit_runs'])}, {fl['fit_steps']} steps, "
             f"{fl['rows_per_s']:,.0f} rows/s)." + (f" The student's own features without the bank: "
             f"{fl['student_featurize_s']:.1f} s." if fl["student_featurize_s"] >= 0.5 else ""), ""]  # fmt: skip
    first_kind = next((r["student"] for r in rows.values() if "student" in r), None)
    others = {k: v for k, v in fl.get("fit_by_student", {}).items() if k != first_kind}
    if others:
        lines += ["Rows whose method builds another student are held to that student's bare loop: "
                  + "; ".join(f"{', '.join(n for n, r in rows.items() if r.get('student') == k)} ({k}): {v:.2f} s"
                              for k, v in others.items()) + ".", ""]  # fmt: skip
    banked = [k for k, r in rows.items() if r["cold"]["cold_bank"]]
    table = []
    for name, r in rows.items():
        c, w = r["cold"], r["warm"]
        mark = "" if not r["label_free"] else (" ✓" if r["ratio"] <= TARGET_RATIO else " ✗")
        dagger = "" if c.get("cold_bank", True) or not st.get("bank") else " †"
        table.append([name, _s(c["wall_s"]), f"{_s(c['teacher_s'])} / {_s(c['mc_s'])} / {_s(c['train_s'])} / "
                      f"{_s(c['outside_s'])}", _s(r["floor_s"]) + dagger, f"{r['ratio']:.2f}{mark}", _s(w["wall_s"]),
                      f"{r['warm_ratio']:.2f}", f"{r['fit_ratio']:.2f}",
                      f"{w['rows_per_s']:,.0f}" if w["rows_per_s"] else "—"])  # fmt: skip
    lines += ["### Against the floor", "",
              "Cold call: `amalgamate()` on an empty store"
              + (" and an empty sentence-embedding bank" if st.get("bank") and banked
                 else "") + (f" (the bank is empty for {', '.join(banked)}"
                 " only; the other rows' cold calls find the embeddings)" if not all(r["cold"]["cold_bank"]
                 for r in rows.values()) and st.get("bank") else "")
              + "; split into teacher pass / MC passes / student training / everything else (store reads, "
              "featurizing, `prepare`, auxiliary learners). Floor: the teachers' preprocessing (timed once) + "
              "their bare forward and the bare student loop, both timed right after each of the row's cold calls, "
              "the fastest kept (+ the plain MC loop for rows that read MC statistics)" + _drift(rows)
              + ". ✓/✗: a label-free row within "
              f"{TARGET_RATIO}× its floor. Warm call: the same call on the store every row shares, after it holds the "
              "row's pieces; bare fit: the bare student loop alone. Student rows/s: rows × epochs / the warm call's "
              f"training seconds. Calls under {REPEAT_BELOW_S:.0f} s (and the floor's teacher pass) are the fastest of "
              f"{REPEATS}: other work on the machine only ever adds time."
              + (f" †: the cold call found the sentence embeddings in the bank, so its floor leaves out the encoder's "
                 f"pass ({fl.get('banked_s', 0.0):.1f} s)." if st.get("bank") and len(banked) < len(rows) else ""),
              "",
              markdown_table(["row", "cold call s", "teacher / MC / training / other s", "floor s", "cold / floor",
                              "warm call s", "warm / bare fit", "training / bare fit", "student rows/s"], table),
              ""]  # fmt: skip
    shared = [[name, _s(r["shared"]["teacher_s"]), _s(r["shared"]["mc_s"]), str(r["shared"]["computed"]),
               str(r["shared"]["hits"]), _s(r["shared"]["wall_s"])] for name, r in rows.items()]  # fmt: skip
    paid = sum(r["shared"]["teacher_s"] for r in rows.values())
    first = next(iter(rows))
    lines += ["### One store for every row", "",
              f"Every row called in this order on one store: {first} pays the teacher pass (logits and feature taps, "
              f"{rows[first]['shared']['teacher_s']:.1f} s), MUKI's first row its MC passes; teacher seconds over all "
              f"{len(rows)} rows: {paid:.1f} s (label-using rows run the teachers on their few labeled rows).", "",
              markdown_table(["row (call order)", "teacher s paid", "MC s paid", "entries computed", "entries read",
                              "wall s"], shared), ""]  # fmt: skip
    muki = [k for k, r in rows.items() if k.startswith("muki")]
    if muki and "kd" in rows:
        kd = rows["kd"]["cold"]["wall_s"]
        mc_t = [[k, _s(rows[k]["shared"]["mc_s"]), _s(rows[k]["cold"]["mc_s"]),
                 _s(fl["mc_s"]) if rows[k]["uses_mc"] else "—", _s(rows[k]["cold"]["wall_s"]),
                 _x(rows[k]["cold"]["wall_s"] / kd)] for k in muki]  # fmt: skip
        lines += ["### Monte-Carlo dropout (MUKI)", "",
                  f"K = 16 by default; `k=1` is the paper's ablation without MC dropout. kd's cold call: {kd:.1f} s.",
                  "", markdown_table(["row", "MC s (shared store)", "MC s (cold call)", "plain-loop MC s (floor)",
                                      "cold call s", "cold call / kd's"], mc_t), ""]  # fmt: skip
    loop = []
    for name, r in rows.items():
        lv = r["in_loop"]
        dagger = "" if r["cold"].get("cold_bank", True) or not st.get("bank") else " †"
        loop.append([name, str(lv["steps"]), str(lv["live_steps"]), f"{lv['teacher_s_per_step']:.3f}",
                     _s(lv["total_s"]) + ("" if not lv["extrapolated"] else " (extrapolated)"),
                     _s(r.get("store_based_s", r["cold"]["wall_s"])) + dagger,
                     _x(r["in_loop_ratio"]) if r["in_loop_ratio"] is not None
                     else "— (trains in stages of its own)"])  # fmt: skip
    lines += ["### Teachers in the loop", "",
              "The same call with every teacher run inside every training step on that step's rows (logits, feature "
              "taps, and K MC dropout passes where the row reads them; a sentence encoder through its uncached "
              "call), as the published codes do, on the same engine, student and targets "
              "(`amalgamator.bench.inloop`). The teachers run on the first steps only; the rest of the run is "
              "measured and the skipped steps' teacher time is their mean per step"
              + (f", plus the student's own features without the bank ({fl['student_featurize_s']:.1f} s, which the "
                 "store-based run shares with the teacher pass)" if fl["student_featurize_s"] >= 0.5 else "")
              + ". Store-based: the cold call (teacher pass included)"
              + ("; †: a cold call that found the sentence embeddings in the bank, plus the encoder's pass "
                 f"({fl.get('banked_s', 0.0):.1f} s) it would have paid with an empty one" if st.get("bank")
                 and len(banked) < len(rows) else "") + ".", "",
              markdown_table(["row", "student steps", "steps timed", "teacher s per step",
                              f"in the loop s ({st['epochs']} epochs)", "store-based s (cold)", "in the loop / store"],
                             loop), ""]  # fmt: skip
    for name, r in rows.items():
        if "full_measured_s" in r["in_loop"]:
            lv = r["in_loop"]
            lines += [f"Extrapolation check ({name}): the whole run with the teachers in every step measured "
                      f"{lv['full_measured_s']:.1f} s; extrapolated from {lv['live_steps']} steps: "
                      f"{lv['total_s']:.1f} s.", ""]  # fmt: skip
    misses = {k: r for k, r in rows.items() if r.get("bound")}
    if misses:
        lines += ["### Rows beyond the target, and what bounds them", ""]
        for k, r in misses.items():
            prof = [p for p in r.get("profile", []) if p["ours"]][:4]
            named = "; ".join(f"`{p['function']}` {p['cum_s']:.1f} s" for p in prof)
            own = (f" The method trains {r['own_parameters']:,} parameters of its own beside the student's "
                   f"{r['student_parameters']:,}, every step." if r.get("own_parameters") else "")  # fmt: skip
            lines.append(f"- **{k}** ({r['ratio']:.2f}×): beyond the floor: {r['bound']}."
                         + (f" Profile of a warm call (cumulative): {named}." if named else "") + own)  # fmt: skip
        lines.append("")
    return lines


def _targets(r: dict[str, Any]) -> list[str]:
    """The three targets of issue 14 item 5, met or missed, from the per-method results."""
    out = []
    cases = {k: m for k, m in r.get("methods", {}).items() if "rows" in m}
    for m in cases.values():
        free = {k: v for k, v in m["rows"].items() if v["label_free"]}
        missed = {k: v["ratio"] for k, v in free.items() if v["ratio"] > TARGET_RATIO}
        out.append(f"- {m['title']}: {len(free) - len(missed)} of {len(free)} label-free rows within "
                   f"{TARGET_RATIO}× their floor" + (": all met." if not missed else "; missed: "
                   + ", ".join(f"{k} {v:.2f}×" for k, v in missed.items()) + "."))  # fmt: skip
    for key, m in cases.items():
        rows = m["rows"]
        if "muki-soft" in rows and "kd" in rows:
            worst = max(rows[k]["cold"]["wall_s"] for k in ("muki-soft", "muki-hard") if k in rows)
            ratio = worst / rows["kd"]["cold"]["wall_s"]
            goal = " (target ≤ 2×: " + ("met" if ratio <= 2 else "missed") + ")" if key == "fortunes" else ""
            out.append(f"- {m['title']}: MUKI (K = 16) cold call / kd's: {ratio:.2f}×{goal}.")
    for key, m in cases.items():
        ratios = {k: v["in_loop_ratio"] for k, v in m["rows"].items() if v["in_loop_ratio"] is not None}
        if ratios:
            kd = ratios.get("kd")
            goal = (" (target ≥ 5×: " + ("met" if kd is not None and kd >= 5 else "missed") + ")"
                    if key == "fortunes" else "")  # fmt: skip
            span = f"{min(ratios.values()):.1f}–{max(ratios.values()):.1f}×"
            out.append(f"- {m['title']}: the store-based run is {_x(kd)} faster than teachers in the loop for kd"
                       f"{goal}; {span} over all rows." if kd is not None else
                       f"- {m['title']}: the store-based run is {span} faster than teachers in the loop.")  # fmt: skip
    mem = r.get("memory") or {}
    if "ratio" in mem:
        met = "met" if mem["ratio"]["file"] <= mem["target"] else "missed"
        out.append(f"- Memory: peak for a {mem['rows'][-1]:,}-row pool file against {mem['rows'][0]:,} rows: "
                   f"{mem['ratio']['file']:.2f}× (target ≤ {mem['target']}×: {met}).")  # fmt: skip
    return out


def markdown(r: dict[str, Any]) -> str:
    from ..report import markdown_table

    load = ""
    if r.get("load_start"):
        load = (f" Figures taken with other work running on this {r.get('cores', '?')}-core machine: load average "
                f"{r['load_start'][0]:.2f} at the start, {r.get('load_end', ['?'])[0]} at the end.")  # fmt: skip
    lines = ["# Bench: speed against the floor", "",
             "The floor is a bare PyTorch loop written in the bench (same network, AdamW with the same settings on "
             "its multi-tensor path, same loss, batches and gradient clipping; no Accelerate, no DataLoader) plus "
             f"one pass of every teacher over the pool. One torch thread.{load}", ""]  # fmt: skip
    if r.get("suite_s"):
        lines += [f"The whole suite took {r['suite_s'] / 60:.0f} min."
                  + (f" Recomputed since, in another run ({r['recomputed']['seconds'] / 60:.0f} min): "
                     f"{', '.join(r['recomputed']['parts'])}." if r.get("recomputed") else ""), ""]  # fmt: skip
    targets = _targets(r)
    if targets:
        quick = " Quick mode: a tiny problem whose fixed costs dominate; not a measure of the targets." if r.get(
            "quick") else ""  # fmt: skip
        lines += ["## Targets (issue 14, item 5)", "", *targets, *([quick.strip(), ""] if quick else [""])]
    lines += ["## Start-up (median of warm runs, seconds)", "", startup_table(r["startup"]), ""]
    k = r["kd_digits"]
    lines += ["## kd on digits (1,797 rows, MLP student, 20 epochs, batch 32)", "",
              f"Medians of {k.get('repeats', 1)} alternating runs of the engine and the floor; the whole "
              "`amalgamate()` call includes its teacher passes into a fresh store.", "",
              markdown_table(["", "engine", "floor", "ratio"],
                             [["fit, ms per step", f"{1000 * k['fit_s'] / k['steps']:.3f}",
                               f"{1000 * k['bare_s'] / k['bare_steps']:.3f}",
                               f"{(k['fit_s'] / k['steps']) / (k['bare_s'] / k['bare_steps']):.2f}"],
                              ["whole amalgamate(), s", f"{k['whole_s']:.2f}", f"{k['floor_s']:.2f}",
                               f"{k['whole_s'] / k['floor_s']:.2f}"]]), ""]  # fmt: skip
    if r.get("tc_syn"):
        rows = [[str(t["seed"]), f"{t['whole_s']:.1f}", f"{t['amalgamate_s']:.1f}", f"{t['fit_s']:.1f}",
                 f"{1000 * t['fit_s'] / t['steps']:.2f}", f"{1000 * t['bare_s'] / t['bare_steps']:.2f}",
                 f"{(t['fit_s'] / t['steps']) / (t['bare_s'] / t['bare_steps']):.2f}",
                 f"{PUBLISHED_TC_SYN_S / t['whole_s']:.1f} ×", f"{100 * t['accuracy']:.1f}"]
                for t in r["tc_syn"]]  # fmt: skip
        accs = [t["accuracy"] for t in r["tc_syn"]]
        fit = sum(t["fit_s"] for t in r["tc_syn"]) / sum(t["steps"] for t in r["tc_syn"])
        floor = sum(t["bare_s"] for t in r["tc_syn"]) / sum(t["bare_steps"] for t in r["tc_syn"])
        lines += ["## tc-syn: TC on SYN with the published settings", "",
                  "Each seed a fresh process on one thread, timed whole (imports, data, cached teachers, TC's trust "
                  f"learner and the student). Published code: {PUBLISHED_TC_SYN_S:.0f} s for the same run.", "",
                  markdown_table(["seed", "whole process s", "amalgamate() s", "student fit s", "fit ms/step",
                                  "floor ms/step", "fit / floor", "vs published", "accuracy %"], rows), "",
                  f"Mean accuracy {100 * float(np.mean(accs)):.1f} % (seeds 0–{len(accs) - 1}); all seeds' student fit "
                  f"{1000 * fit:.2f} ms per step against the floor's {1000 * floor:.2f}: {fit / floor:.2f} ×; whole "
                  f"process {np.mean([t['whole_s'] for t in r['tc_syn']]):.1f} s on average.", ""]  # fmt: skip
    for m in r.get("methods", {}).values():
        lines += [f"## Per method: {m.get('title', '?')}", "", *_methods_markdown(m)]
    if r.get("embedding"):
        lines += speed_kinds.embedding_markdown(r["embedding"])
    mem = r.get("memory")
    if mem is not None and "missing" in mem:
        lines += ["## Memory against pool size (issue 14)", "", f"Not run: {mem['missing']}.", ""]
    elif mem is not None:
        from . import memory  # type: ignore[attr-defined]

        lines += [memory.memory_markdown(mem), ""]
    lines += [f"Generated by `amalgamator bench speed{' --quick' if r.get('quick') else ''}` ({r['machine']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the timed tc-syn process: python -m amalgamator.bench.speed tc-syn SEED
    if len(sys.argv) == 3 and sys.argv[1] == "tc-syn":
        print(json.dumps(tc_syn_job(int(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m amalgamator.bench.speed tc-syn SEED")
