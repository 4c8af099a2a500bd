"""Suite ``experts`` (issue 19): many narrow teachers, where routing each row to the right one decides everything.

The same protocol as ``multiclass`` (teachers train on their own classes of a teacher split, students learn from a
disjoint pool without its labels, every model is scored on the dataset's test split over all classes), with the
number of teachers pushed up: LetterRecognition with 4, 8 and 13 disjoint teachers (13 = two letters each) and with
13 overlapping ones (each letter known to exactly two teachers), Fashion-MNIST with 5 teachers of 2 classes, and
fortune topics with 7 MiniLM teachers of 2 topics.

Every teacher carries feature statistics of its own training rows (:func:`amalgamator.statistics.fit_statistics`:
class means and a tied covariance in its penultimate features), which ``mahalanobis`` routes by; the seconds that
takes are recorded per case.

Rows without labels: the best single teacher, the ensemble, kd, uhc, muki-soft, calibrated, the out-of-distribution
routers energy and max-logit, auto, and the new routing methods (mahalanobis, cluster-route, refine); **oracle
routing**, the limit of every router (no student: each *test* row is predicted by a teacher owning its true class,
the owners' probabilities averaged where two own it); and the supervised bound (the student trained on the pool's
true labels). Rows with labels, at three budgets (1 row per class, 1 % and 2 % of the pool; the labeled rows are
taken out of the pool and the rest stays unlabeled): sup, tc, supuhc, auto, mahalanobis, propagate. A method not
registered in this checkout is skipped with a warning.

Per row: test accuracy, the wall time, and, for methods whose diagnostics expose them, the *target accuracy* (the
fraction of unlabeled pool rows whose training target's argmax is the true class) and the *routing accuracy* (the
fraction routed to a teacher owning the true class). Per case and seed: ``am.diagnose``'s label-free routing risk,
set against calibrated's measured target accuracy across cases (Spearman rank correlation).

(case, seed) jobs run on worker processes; finished jobs are kept in the cache (an interrupted run resumes, and a
job missing rows, e.g. of a method registered since, computes only those). ``rows=`` recomputes the named rows (or
every row of the named methods) into the finished jobs.
"""

from __future__ import annotations

import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..errors import AmalgamatorError
from ..report import markdown_table, write_json
from ..store import TeacherStore
from .common import (
    accuracy,
    default_workers,
    load_part,
    machine,
    mean_std,
    part_path,
    run_jobs,
    save_part,
    timed_amalgamate,
)
from .multiclass import (
    CNN,
    MLP_SMALL,
    MLP_WIDE,
    Case,
    _letter_groups,
    _routing_figures,
    _subsample,
    _take,
    _warn_missing,
    available,
    routing_diagnosis,
)
from .teachers import TeacherSpec, teacher_set

#: label-free rows, one student each (the row is the method's name)
FREE = ["ensemble", "kd", "uhc", "muki-soft", "calibrated", "energy", "max-logit", "auto", "mahalanobis",
        "cluster-route", "refine"]  # fmt: skip
#: the rows issue 19 adds (their wall time is held against calibrated's)
NEW = ("mahalanobis", "cluster-route", "refine", "propagate")
SUPERVISED = "supervised (upper bound)"
ORACLE = "oracle routing"
BEST = "best teacher"
#: labeled rows: these methods at every budget, row "<method> (<budget>)"
LABELED = ["sup", "tc", "supuhc", "auto", "mahalanobis", "propagate"]
BUDGETS = ("1/class", "1 %", "2 %")
#: the cases of the accuracy-against-teachers figure (disjoint letters)
TEACHER_CURVE = ("letters-4", "letters-8", "letters-13")
#: bump when what a job computes changes in a way its cached result cannot tell
VERSION = 1


def _pair_ring(n: int) -> Callable[[list[str]], list[list[str]]]:
    """``n`` near-equal disjoint cores; teacher i knows its core and the next one's (a ring), so every label is
    known to exactly two teachers (26 letters, 13 teachers: teacher i knows letters 2i .. 2i+3 mod 26)."""
    from .datasets import class_groups, scaled_sizes

    def groups(labels: list[str]) -> list[list[str]]:
        cores = class_groups(labels, scaled_sizes(len(labels), (1,) * n))
        return [core + cores[(i + 1) % n] for i, core in enumerate(cores)]

    return groups


#: the fortunes teachers: MiniLM sentence features under two hidden blocks (multiclass fortunes' first teacher)
MINILM_TEACHER = ("text", {"encoder": "minilm", "hidden": [256, 256], "dropout": 0.1})
#: Fashion-MNIST's pool, shrunk from multiclass's 20,000 to keep the suite's time down
FASHION_POOL = 10000


def cases(quick: bool) -> list[Case]:
    """The suite's cases; ``quick`` keeps letters-4 and letters-13 at tiny sizes (a CI-sized check)."""
    letters = [
        Case("letters-4", "Letters, 4 teachers", "letters", _letter_groups((1,) * 4), [MLP_SMALL, MLP_WIDE] * 2),
        Case("letters-8", "Letters, 8 teachers", "letters", _letter_groups((1,) * 8), [MLP_SMALL, MLP_WIDE] * 4),
        Case("letters-13", "Letters, 13 teachers × 2", "letters", _letter_groups((1,) * 13), [MLP_SMALL, MLP_WIDE] * 7),
        Case("letters-13-overlap", "Letters, 13 teachers × 4, each letter twice", "letters", _pair_ring(13),
             [MLP_SMALL, MLP_WIDE] * 7),
    ]  # fmt: skip
    for c in letters:
        c.teacher_rows = c.pool_rows = 8000
        c.epochs = c.teacher_epochs = 20
    all_cases = [
        *letters,
        Case("fashion-5", "Fashion-MNIST, 5 teachers × 2", "fashion-mnist", _letter_groups((1,) * 5),
             [CNN, MLP_WIDE] * 3, teacher_rows=20000, pool_rows=FASHION_POOL, teacher_epochs=8),
        Case("fortunes-7", "Fortunes, 7 teachers × 2 topics", "fortunes", _letter_groups((1,) * 7),
             [MINILM_TEACHER] * 7, student="text", student_options={"encoder": "minilm", "hidden": [128]},
             teacher_rows=100000, pool_rows=100000, epochs=20, teacher_epochs=20),
    ]  # fmt: skip
    if quick:
        all_cases = [c for c in all_cases if c.key in ("letters-4", "letters-13")]
        for c in all_cases:
            c.teacher_rows, c.pool_rows, c.test_rows = 3000, 3000, 2000
            c.epochs = c.teacher_epochs = 3
    return all_cases


def _case(key: str, quick: bool) -> Case:
    return next(c for c in cases(quick) if c.key == key)


# Rows ----------------------------------------------------------------------------------------------------------


def labeled_name(method: str, budget: str) -> str:
    return f"{method} ({budget})"


def plan() -> list[tuple[str, str, str | None]]:
    """(row, method, label budget or None) of every student row, in table order."""
    out: list[tuple[str, str, str | None]] = [(m, m, None) for m in FREE] + [(SUPERVISED, "supervised", None)]
    return out + [(labeled_name(m, b), m, b) for b in BUDGETS for m in LABELED]


def all_rows() -> list[str]:
    """Every row ``rows=`` may name (a method's name also selects all its rows, e.g. every budget of ``sup``)."""
    return [row for row, _, _ in plan()]


def expand_rows(names: Sequence[str]) -> set[str]:
    """The row names ``rows=`` selects: a method's name selects every row of that method (its label-free row and
    all its label budgets), ``<method> (no labels)`` its label-free row alone, a labeled row's name (``sup (1 %)``)
    that row, ``supervised`` the supervised bound."""
    known = all_rows()
    methods = {m for _, m, _ in plan()}
    out: set[str] = set()
    for name in names:
        free = name.removesuffix(" (no labels)")
        if name in methods:
            out |= {row for row, m, _ in plan() if m == name}
        elif name != free and free in FREE:
            out.add(free)
        elif name in known:
            out.add(name)
        elif name == "supervised":
            out.add(SUPERVISED)
        else:
            raise AmalgamatorError(
                f"unknown experts row {name!r}; name a method ({', '.join(sorted(methods))}), a labeled row such as "
                f"'sup (1 %)', or '<method> (no labels)'. The rows: {', '.join(known)} (best teacher, oracle routing "
                "and the teachers' rows are recomputed by every job)."
            )
    return out


def wanted_rows() -> list[str]:
    """The rows a complete job holds now (rows of methods not registered here aside)."""
    return [row for row, m, _ in plan() if available(m)]


def unavailable() -> list[str]:
    """The suite's methods not registered in this checkout (their rows are skipped)."""
    return sorted({m for _, m, _ in plan()} - {m for _, m, _ in plan() if available(m)})


def labeled_rows(y_pool: np.ndarray, budget: str, seed: int) -> np.ndarray:
    """Pool indices (sorted) that carry labels at ``budget``: one per class (stratified), or a random fraction of
    the pool ("1 %": at least one row). Seeded by the seed and the budget, so a recomputed row gets the same."""
    rng = np.random.default_rng([seed, zlib.crc32(budget.encode())])
    if budget.endswith("/class"):
        per = int(budget.split("/")[0])
        picks = [rng.choice(np.flatnonzero(y_pool == c), min(per, int((y_pool == c).sum())), replace=False)
                 for c in np.unique(y_pool)]  # fmt: skip
        return np.sort(np.concatenate(picks))
    n = max(1, int(round(float(budget.rstrip(" %")) / 100 * len(y_pool))))
    return np.sort(rng.choice(len(y_pool), min(n, len(y_pool)), replace=False))


# Measurements ----------------------------------------------------------------------------------------------------


def oracle_accuracy(probs: Sequence[np.ndarray], teacher_labels: Sequence[Sequence[str]], union: Sequence[str],
                    y: np.ndarray) -> float:  # fmt: skip
    """Oracle routing: each row predicted by the teachers that own its true class (the mean of their probabilities
    placed in the union, zeros elsewhere), argmax; accuracy over the rows. ``probs``: per teacher (rows, its labels)."""
    union = list(union)
    placed = np.zeros((len(probs), len(y), len(union)))
    for k, (p, labels) in enumerate(zip(probs, teacher_labels, strict=True)):
        placed[k][:, [union.index(lb) for lb in labels]] = p
    owners = np.array([[lb in labels for lb in union] for labels in teacher_labels])  # teachers × union
    y_idx = np.array([union.index(v) for v in y])
    mask = owners[:, y_idx].astype(float)  # teachers × rows
    mixed = (placed * mask[..., None]).sum(0) / np.maximum(mask.sum(0), 1)[:, None]
    return float((mixed.argmax(1) == y_idx).mean())


def target_figures(res: Any, teachers: Sequence[Any], y_rows: np.ndarray) -> dict[str, Any]:
    """Target and routing accuracy on the first ``len(y_rows)`` rows the method saw (the unlabeled pool rows;
    labeled rows come after them): from ``diagnostics["target"]`` (rows × union), and from a per-row choice of
    teacher (``owner``, or the argmax of ``routing`` / ``confidence`` / ``trust``, rows × teachers)."""
    diag = getattr(res, "diagnostics", None) or {}
    union = list(res.student.labels)
    n = len(y_rows)
    out: dict[str, Any] = {}
    target = diag.get("target")
    if target is not None and getattr(target, "ndim", 0) == 2 and target.shape[1] == len(union) and len(target) >= n:
        y_idx = np.array([union.index(v) for v in y_rows])
        out["target"] = float((np.asarray(target[:n]).argmax(1) == y_idx).mean())
    choice = None
    owner = diag.get("owner")
    if owner is not None and getattr(owner, "ndim", 0) == 1 and len(owner) >= n:
        choice = np.asarray(owner[:n])
    else:
        for key in ("routing", "confidence", "trust"):
            g = diag.get(key)
            if g is not None and getattr(g, "ndim", 0) == 2 and g.shape[1] == len(teachers) and len(g) >= n:
                choice = np.asarray(g[:n]).argmax(1)
                break
    if choice is not None:
        _routing_figures(out, choice, res, teachers, y_rows)
        out.pop("routing_per_class", None)
    return out


def _score(res: Any, x_test: Any, y_test: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"accuracy": accuracy(y_test, res.student.predict(x_test))}
    out.update({f"{k}_s": float(v) for k, v in res.timings.items()})
    if "method_choice" in getattr(res.student, "info", {}):  # auto: the method it chose
        out["chose"] = res.student.info["method_choice"].get("method")
    return out


def fit_teacher_statistics(teachers: Sequence[Any], specs: Sequence[TeacherSpec], x: Any, y: np.ndarray,
                           rows: np.ndarray) -> float:  # fmt: skip
    """Each teacher's feature statistics on exactly the rows it was trained on; the seconds it took."""
    from ..statistics import fit_statistics

    t0 = time.perf_counter()
    for t, spec in zip(teachers, specs, strict=True):
        keep = rows[np.isin(y[rows], spec.labels)]
        fit_statistics(t, _take(x, keep), y[keep])
    return time.perf_counter() - t0


# One (case, seed) job ------------------------------------------------------------------------------------------


def run_case(case: Case, seed: int, bm: Any, only: set[str] | None = None,
             part: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Teachers (cached) with their statistics, then every row of one case and seed; with ``only``, just those
    rows, recomputed into the finished ``part`` (the teachers' rows, best teacher, oracle routing and the routing
    diagnosis are recomputed by every job: they need no training)."""
    from .datasets import role_split

    rng = np.random.default_rng(seed)
    t_rows, p_rows = role_split(len(bm.y_train), (0.5, 0.5), seed, y=bm.y_train,
                                max_rows=(case.teacher_rows, case.pool_rows))  # fmt: skip
    test_idx = _subsample(np.arange(len(bm.y_test)), case.test_rows, rng)
    x_pool, y_pool = _take(bm.x_train, p_rows), bm.y_train[p_rows]
    x_test, y_test = _take(bm.x_test, test_idx), bm.y_test[test_idx]
    groups = case.groups(list(bm.labels))
    specs = [TeacherSpec(f"T{i + 1}", g, arch, opts, epochs=case.teacher_epochs, lr=case.lr)
             for i, (g, (arch, opts)) in enumerate(zip(groups, case.archs, strict=False))]  # fmt: skip
    teachers, train_s = teacher_set(bm.name, specs, bm.x_train, bm.y_train, t_rows, seed)
    stats_s = fit_teacher_statistics(teachers, specs, bm.x_train, bm.y_train, t_rows)
    result: dict[str, Any] = part if part is not None else {"rows": {}}
    rows = result["rows"]
    probs = [t.probabilities(t.logits(x_test)).numpy() for t in teachers]
    alone = {}
    for t, p in zip(teachers, probs, strict=True):
        alone[t.name] = accuracy(y_test, np.asarray(list(t.labels))[p.argmax(1)])
        rows[f"teacher {t.name} ({len(t.labels)} classes)"] = {"accuracy": alone[t.name]}
    best = max(alone, key=alone.get)
    rows[BEST] = {"accuracy": alone[best], "teacher": best}
    rows[ORACLE] = {"accuracy": oracle_accuracy(probs, [list(t.labels) for t in teachers], bm.labels, y_test)}
    common = dict(student=case.student, student_options=case.student_options, epochs=case.epochs,
                  batch_size=128, lr=case.lr, seed=seed, progress=False)  # fmt: skip
    labeled_sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        for row, method, budget in plan():
            if (only is not None and row not in only) or not available(method):
                continue
            if method == "supervised":
                res = timed_amalgamate(teachers, store, common, labeled=(x_pool, y_pool), method="supervised")
                rows[row] = _score(res, x_test, y_test)
                continue
            if budget is None:
                res = timed_amalgamate(teachers, store, common, data=x_pool, method=method)
                y_rows = y_pool
            else:
                lab = labeled_rows(y_pool, budget, seed)
                unl = np.setdiff1d(np.arange(len(y_pool)), lab)
                labeled_sizes[budget] = int(len(lab))
                res = timed_amalgamate(teachers, store, common, data=_take(x_pool, unl),
                                       labeled=(_take(x_pool, lab), y_pool[lab]), method=method)  # fmt: skip
                y_rows = y_pool[unl]
            rows[row] = {**_score(res, x_test, y_test), **target_figures(res, teachers, y_rows)}
            if budget is not None:
                rows[row]["labeled"] = labeled_sizes[budget]
        diagnosis = routing_diagnosis(teachers, x_pool, y_pool, TeacherStore(store))
    result["diagnosis"] = diagnosis
    result["groups"] = groups
    result["statistics_s"] = stats_s
    result.setdefault("teacher_training_s", train_s)
    result.setdefault("labeled", {}).update(labeled_sizes)
    result["setup"] = {
        "sizes": {"teacher": int(len(t_rows)), "pool": int(len(p_rows)), "test": int(len(test_idx))},
        "archs": [f"{arch} {opts}" for arch, opts in case.archs[: len(groups)]],
        "student": f"{case.student} {case.student_options}".strip(),
        "epochs": case.epochs,
        "teacher_epochs": case.teacher_epochs,
    }
    return result


#: datasets loaded in this process (a worker loads each once, whichever jobs it runs)
_LOADED: dict[str, Any] = {}


def run_job(key: str, seed: int, quick: bool, only: list[str] | None = None,
            part: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One case and seed (see :func:`run_case`), run in a worker process by :func:`run`."""
    from .datasets import load

    case = _case(key, quick)
    if case.dataset not in _LOADED:
        _LOADED[case.dataset] = load(case.dataset)
    t0 = time.perf_counter()
    out = run_case(case, seed, _LOADED[case.dataset], set(only) if only is not None else None, part)
    if only is None:
        out["seconds"] = time.perf_counter() - t0
    else:
        out["recomputed"] = sorted(set(out.get("recomputed", [])) | set(only))
    return out


def _job_config(key: str, quick: bool) -> dict[str, Any]:
    """What a finished job must match to be reused: the case's budgets, architectures, split sizes and groups,
    and the label budgets. The row lists are not part of it: a job missing rows computes just those."""
    case = _case(key, quick)
    described = {k: v for k, v in case.__dict__.items() if k not in ("groups", "methods", "ablation")}
    return {"case": described, "budgets": list(BUDGETS), "version": VERSION}


def _part_path(key: str, seed: int, quick: bool) -> Path:
    return part_path("experts", key, seed, quick)


def _load_part(key: str, seed: int, quick: bool) -> dict[str, Any] | None:
    return load_part(_part_path(key, seed, quick), _job_config(key, quick))


def _save_part(key: str, seed: int, quick: bool, result: dict[str, Any]) -> None:
    save_part(_part_path(key, seed, quick), _job_config(key, quick), result)


def run(out: Path, quick: bool = False, seeds: int | None = None, rows: Sequence[str] | None = None,
        workers: int | None = None) -> dict:  # fmt: skip
    """Every (case, seed) job, in ``workers`` processes of one torch thread each (default: one per usable core,
    ``$AMALGAMATOR_BENCH_WORKERS`` overrides). Finished jobs are kept in the cache, so an interrupted run picks up
    where it stopped, and a finished job missing rows (a method registered since) computes only those. ``rows``
    (row names, or method names for all their rows) recomputes those rows into the finished jobs, after a change
    to a method; unfinished jobs run in full."""
    only = expand_rows(rows) if rows else None
    n_seeds = seeds or (1 if quick else 2)
    for method in unavailable():
        _warn_missing(method, [row for row, m, _ in plan() if m == method])
    keys = [c.key for c in cases(quick)]
    jobs = [(k, s) for k in keys for s in range(n_seeds)]
    done = {job: part for job in jobs if (part := _load_part(*job, quick)) is not None}
    if done:
        progress.console.print(f"reusing {len(done)} finished job(s) from {_part_path(*jobs[0], quick).parent}")
    todo: list[tuple] = [(*job, quick) for job in jobs if job not in done]
    for job, part in done.items():
        redo = sorted(({r for r in wanted_rows() if r not in part["rows"]} | (only or set())) & set(wanted_rows()))
        if redo:
            todo.append((*job, quick, redo, part))
    workers = max(1, min(workers or default_workers(), len(todo) or 1))

    def finished(job: tuple, result: dict[str, Any], seconds: float) -> None:
        key, seed = job[:2]
        done[(key, seed)] = result
        _save_part(key, seed, quick, result)

    run_jobs(run_job, todo, workers, finished, lambda j: f"[bold]{j[0]}[/] seed {j[1]}"
             + (f" ({len(j[3])} rows)" if len(j) > 3 else ""))  # fmt: skip
    results: dict[str, Any] = {"seeds": n_seeds, "quick": quick, "workers": workers, "budgets": list(BUDGETS),
                               "cases": {}}  # fmt: skip
    for case in cases(quick):
        runs = [done[(case.key, s)] for s in range(n_seeds)]
        results["cases"][case.key] = {"title": case.title, "teachers": len(runs[0]["groups"]), "runs": runs}
    suffix = "-quick" if quick else ""
    write_json(out / f"experts{suffix}.json", results)
    figures = {}
    name = f"experts{suffix}-teachers.png"
    if teachers_plot(results, out / name):
        figures["test accuracy against the number of teachers (Letters, disjoint)"] = name
    md = render(results, figures)
    (out / f"experts{suffix}.md").write_text(md)
    progress.console.print(md, markup=False, highlight=False)
    return results


# Rendering -------------------------------------------------------------------------------------------------------


def _values(case: dict, row: str, field: str = "accuracy") -> list[float]:
    return [run["rows"][row][field] for run in case["runs"] if field in run["rows"].get(row, {})]


def _mean(case: dict, row: str, field: str = "accuracy") -> float | None:
    vals = _values(case, row, field)
    return float(np.mean(vals)) if vals else None


def _cell(case: dict, row: str, field: str = "accuracy") -> str:
    vals = _values(case, row, field)
    return mean_std(vals) if vals else "—"


def gap_closed(row: float | None, ensemble: float | None, oracle: float | None) -> float | None:
    """(row − ensemble) / (oracle − ensemble): the share of the ensemble-to-oracle gap a row closes (1 = all of it,
    negative = below the ensemble); None when a figure is missing or the oracle does not beat the ensemble."""
    if row is None or ensemble is None or oracle is None or oracle - ensemble <= 1e-12:
        return None
    return (row - ensemble) / (oracle - ensemble)


def _gap_cell(case: dict, row: str) -> str:
    g = gap_closed(_mean(case, row), _mean(case, "ensemble"), _mean(case, ORACLE))
    return "—" if g is None else f"{100 * g:.0f}"


def free_rows(results: dict) -> list[str]:
    """The label-free table's rows, in order: the best teacher, each method, the oracle and the bound."""
    return [BEST, *FREE, ORACLE, SUPERVISED]


def label_rows(results: dict) -> list[str]:
    """The labeled rows, budget by budget (the budgets of the result), ``sup`` and the bound's neighbours."""
    return [labeled_name(m, b) for b in results.get("budgets", BUDGETS) for m in LABELED]


def _present(results: dict, rows: list[str]) -> list[str]:
    """The rows some case holds (a method that never ran here has no row)."""
    cases_ = results["cases"].values()
    return [r for r in rows if any(r in run["rows"] for c in cases_ for run in c["runs"])]


def _avg_gap(results: dict, row: str) -> str:
    gaps = [gap_closed(_mean(c, row), _mean(c, "ensemble"), _mean(c, ORACLE)) for c in results["cases"].values()]
    return "—" if any(g is None for g in gaps) else f"{100 * np.mean(gaps):.0f}"


def _time_cell(case: dict, row: str) -> str:
    """Mean seconds of a row without its teacher passes (shared through the store: the first row that needs a
    pass pays it), and its multiple of calibrated's."""

    def cost(run_row: dict) -> float:
        return run_row["wall_s"] - run_row.get("teacher_s", 0.0)

    secs = [cost(run["rows"][row]) for run in case["runs"] if "wall_s" in run["rows"].get(row, {})]
    if not secs:
        return "—"
    ref = [cost(run["rows"]["calibrated"]) for run in case["runs"] if "wall_s" in run["rows"].get("calibrated", {})]
    ratio = f" ({np.mean(secs) / np.mean(ref):.1f}×)" if ref and np.mean(ref) > 0 and row != "calibrated" else ""
    return f"{np.mean(secs):.1f}{ratio}"


def _spearman(x: list[float], y: list[float]) -> str:
    if len(x) < 3:
        return f"n/a (needs 3 cases, {len(x)} here)"
    if len(set(x)) < 2 or len(set(y)) < 2:
        return "n/a (constant)"
    from scipy.stats import spearmanr

    return f"{spearmanr(x, y).statistic:.2f}"


def _choices(results: dict) -> list[str]:
    """One line: what ``auto`` chose per case, without labels and with them (every seed and budget)."""
    parts = []
    for c in results["cases"].values():
        free = sorted({run["rows"]["auto"]["chose"] for run in c["runs"] if run["rows"].get("auto", {}).get("chose")})
        lab = sorted({v["chose"] for run in c["runs"] for r, v in run["rows"].items()
                      if r.startswith("auto (") and v.get("chose")})  # fmt: skip
        if free or lab:
            parts.append(f"{c['title']}: {', '.join(free) or '—'} (no labels), {', '.join(lab) or '—'} (labels)")
    return [f"`auto` chose: {'; '.join(parts)}.", ""] if parts else []


def _diagnosis_section(results: dict) -> list[str]:
    """Issue 19 item 4: ``am.diagnose``'s estimated routing risk against calibrated's measured target accuracy."""
    cases_ = results["cases"]
    keys = [k for k in cases_ if all("diagnosis" in r for r in cases_[k]["runs"])]
    if not keys:
        return []
    table, est, measured = [], [], []
    for k in keys:
        c = cases_[k]
        risk = [r["diagnosis"]["risk"] for r in c["runs"]]
        plain = [r["diagnosis"]["routing_plain"] for r in c["runs"]]
        target = _mean(c, "calibrated", "target")
        table.append([c["title"], mean_std(risk), mean_std([1 - v for v in risk]), mean_std(plain),
                      _cell(c, "calibrated", "target"), _cell(c, "mahalanobis", "target"),
                      f"{sum(r['diagnosis']['risky'] for r in c['runs'])}/{len(c['runs'])}"])  # fmt: skip
        if target is not None:
            est.append(1 - float(np.mean(risk)))
            measured.append(target)
    return ["", "## Can the rows be routed? `am.diagnose` against the measured routing", "",
            "Risk: `am.diagnose`'s label-free estimate of the fraction of the pool whose most confident teacher does "
            "not own the true class. Measured: the fraction of the pool whose most confident teacher (plain top "
            "probability) owns the true class, and calibrated's (and mahalanobis's) target accuracy: the fraction "
            "of pool rows whose training target's argmax is the true class, counted with the true labels. "
            f"Spearman rank correlation over the cases of 1 − risk with calibrated's target accuracy: "
            f"{_spearman(est, measured)}.", "",
            markdown_table(["case", "risk %", "1 − risk %", "measured routing (top prob.) %", "calibrated target %",
                            "mahalanobis target %", "flagged risky"], table)]  # fmt: skip


def render(results: dict, figures: dict[str, str]) -> str:
    """The markdown report: accuracy without and with labels, the gap closed, routing, diagnosis, time, setup."""
    cases_ = results["cases"]
    keys = list(cases_)
    titles = [cases_[k]["title"] for k in keys]
    free = _present(results, free_rows(results))
    labeled = _present(results, label_rows(results))
    quick = "**Quick mode: tiny splits, few epochs, one seed — a smoke check, not comparable.** "
    lines = [
        "# Bench: many narrow experts (issue 19)",
        "",
        f"Test accuracy (%) over all classes, mean ± std over {results['seeds']} seed(s). "
        + (quick if results["quick"] else "")
        + "Teachers train on their own classes of a teacher split and carry feature statistics of those rows "
        "(`am.fit_statistics`); students see a disjoint pool. *best teacher*: the best single teacher alone "
        "(it names only its own classes). *oracle routing*: no student; each test row is predicted by the "
        "teacher(s) owning its true class (two owners: their probabilities averaged) — the limit of routing. "
        "*supervised*: the student trained on the whole pool's true labels. A dash: the row did not run "
        "(its method is not registered in this checkout).",
        "",
        "## Without labels",
        "",
        markdown_table(["model", *titles], [[r, *[_cell(cases_[k], r) for k in keys]] for r in free]),
        "",
    ]
    lines += _choices(results)
    if labeled:
        sizes = "; ".join(f"{cases_[k]['title']}: " + ", ".join(f"{b} = {n}" for b, n in
                                                             cases_[k]["runs"][0].get("labeled", {}).items())
                          for k in keys)  # fmt: skip
        lines += ["## With labels", "",
                  "The labeled rows are taken out of the pool (1 per class stratified; 1 % and 2 % at random, seeded) "
                  f"and the rest of the pool stays unlabeled. Labeled rows (seed 0): {sizes}.", "",
                  markdown_table(["model", *titles],
                                 [[r, *[_cell(cases_[k], r) for k in keys]] for r in labeled]), ""]  # fmt: skip
    gap_rows = [r for r in free + labeled if r not in ("ensemble", ORACLE)]
    lines += ["## Share of the ensemble-to-oracle gap closed (%)", "",
              "(row − ensemble) / (oracle routing − ensemble), from the mean accuracies: 0 = no better than the "
              "ensemble, 100 = as good as oracle routing, above 100 = better than routing can be (e.g. the "
              "supervised bound); mean: over the cases.", "",
              markdown_table(["model", *titles, "mean"],
                             [[r, *[_gap_cell(cases_[k], r) for k in keys], _avg_gap(results, r)]
                              for r in gap_rows])]  # fmt: skip
    routed = [r for r in free + labeled if any("target" in run["rows"].get(r, {}) or "routing" in run["rows"].get(r, {})
                                                for c in cases_.values() for run in c["runs"])]  # fmt: skip
    if routed:

        def both(c: dict, r: str) -> str:
            t, g = _mean(c, r, "target"), _mean(c, r, "routing")
            return " / ".join("—" if v is None else f"{100 * v:.1f}" for v in (t, g))

        lines += [
            "",
            "## Routing on the pool",
            "",
            "Target accuracy / routing accuracy (%), mean over seeds, on the unlabeled pool rows: the fraction "
            "whose training target's argmax is the true class / that are routed to a teacher owning it (from "
            "the method's diagnostics; a dash where it exposes none).",
            "",
            markdown_table(["model", *titles], [[r, *[both(cases_[k], r) for k in keys]] for r in routed]),
        ]
    lines += _diagnosis_section(results)
    timed = [r for r in free + labeled if any("wall_s" in run["rows"].get(r, {}) for c in cases_.values()
                                              for run in c["runs"])]  # fmt: skip
    lines += [
        "",
        "## Wall time (seconds, mean over seeds)",
        "",
        "Per row, without the teacher passes (the teacher-output store runs each teacher once per job; the "
        "first row that needs a pass pays it), and in brackets its multiple of calibrated's. Issue 19's "
        "target: each new method (" + ", ".join(NEW) + ") within 2 × calibrated.",
        "",
        markdown_table(["model", *titles], [[r, *[_time_cell(cases_[k], r) for k in keys]] for r in timed]),
    ]
    lines += ["", "## Setup", ""]
    for k in keys:
        c = cases_[k]
        run0 = c["runs"][0]
        st, z = run0.get("setup", {}), run0.get("setup", {}).get("sizes", {})
        per = [run.get("seconds") for run in c["runs"] if run.get("seconds")]
        pool_note = " (pool shrunk from multiclass's 20000 to keep the time down)" if k == "fashion-5" else ""
        lines.append(
            f"- **{c['title']}**: {c['teachers']} teachers, classes {run0['groups']}. Rows: teacher split "
            f"{z.get('teacher')}, unlabeled pool {z.get('pool')}{pool_note}, test {z.get('test')}. Teachers: "
            f"{'; '.join(st.get('archs', []))} ({st.get('teacher_epochs')} epochs). Student: {st.get('student')} "
            f"({st.get('epochs')} epochs). Teacher statistics: "
            f"{np.mean([run['statistics_s'] for run in c['runs']]):.2f} s for all teachers; teacher training "
            f"{np.mean([run['teacher_training_s'] for run in c['runs']]):.0f} s (cached on reruns); teacher passes "
            f"{np.mean([sum(v.get('teacher_s', 0.0) for v in run['rows'].values()) for run in c['runs']]):.1f} s"
            + (f"; whole job {np.mean(per):.0f} s." if per else ".")
        )
    if figures:
        lines += ["", "## Figures", ""] + [f"![{cap}]({path})" for cap, path in figures.items()]
    lines += ["", f"Generated by `amalgamator bench experts{' --quick' if results['quick'] else ''}` on "
              f"{time.strftime('%Y-%m-%d')} ({machine()}).", ""]  # fmt: skip
    return "\n".join(lines)


def teachers_plot(results: dict, path: Path) -> bool:
    """Test accuracy against the number of teachers (the disjoint letters cases present), one line per row;
    False (nothing drawn) with fewer than two such cases."""
    cases_ = results["cases"]
    keys = sorted((k for k in TEACHER_CURVE if k in cases_), key=lambda k: cases_[k]["teachers"])
    if len(keys) < 2:
        return False
    from .plots import outside_legend, plt

    x = [cases_[k]["teachers"] for k in keys]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for i, row in enumerate(_present(results, free_rows(results))):
        ys = [_mean(cases_[k], row) for k in keys]
        if all(v is None for v in ys):
            continue
        ys_ = [np.nan if v is None else 100 * v for v in ys]
        reference = row in (BEST, ORACLE, SUPERVISED)
        ax.plot(x, ys_, marker="o", ms=4, lw=2.2 if row in NEW else 1.2, ls="--" if reference else "-",
                color="black" if row == ORACLE else plt.cm.tab20((2 * i) % 20 + (2 * i) // 20), label=row)  # fmt: skip
    ax.set_xticks(x)
    ax.set_xlabel("teachers (Letters, disjoint groups)")
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True
