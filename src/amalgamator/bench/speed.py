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
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..report import write_json
from .common import machine
from .startup import markdown_table as startup_table
from .startup import startup_times

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
             weight_decay: float = 1e-4, clip: float | None = 5.0, seed: int = 0) -> tuple[float, int]:  # fmt: skip
    """The floor's training: (seconds, optimiser steps) of a bare loop on ``network`` with soft
    cross-entropy against fixed ``target``, shuffled batches sliced from tensors."""
    import torch

    from ..methods.base import soft_cross_entropy

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
            loss = soft_cross_entropy(tt[idx], net(xt[idx]))
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


# The suite ----------------------------------------------------------------------------------------------
def run(out: Path, quick: bool = False, seeds: int | None = None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # every timed part runs on one thread
    n_seeds = seeds or (1 if quick else 3)
    results: dict[str, Any] = {"machine": machine(), "quick": quick}
    progress.console.print("speed: start-up times …")
    results["startup"] = startup_times(3 if quick else 5)
    progress.console.print("speed: kd on digits …")
    results["kd_digits"] = kd_digits(epochs=5 if quick else 20, repeats=2 if quick else 5)
    progress.console.print(f"speed: tc-syn, {n_seeds} seed(s) …")
    results["tc_syn"] = tc_syn(n_seeds) if not quick else []
    suffix = "-quick" if quick else ""
    write_json(out / f"speed{suffix}.json", results)
    (out / f"speed{suffix}.md").write_text(markdown(results), encoding="utf-8")
    progress.console.print(f"wrote {out / f'speed{suffix}.md'}")
    return results


def markdown(r: dict[str, Any]) -> str:
    from ..report import markdown_table

    lines = ["# Bench: speed against the floor", "",
             "The floor is a bare PyTorch loop written in the bench (same network, AdamW with the same settings on "
             "its multi-tensor path, same loss, batches and gradient clipping; no Accelerate, no DataLoader) plus "
             "one pass of every teacher over the pool. One torch thread.", ""]  # fmt: skip
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
    lines += [f"Generated by `amalgamator bench speed` ({r['machine']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the timed tc-syn process: python -m amalgamator.bench.speed tc-syn SEED
    if len(sys.argv) == 3 and sys.argv[1] == "tc-syn":
        print(json.dumps(tc_syn_job(int(sys.argv[2]))))
    else:
        raise SystemExit("usage: python -m amalgamator.bench.speed tc-syn SEED")
