"""Suite ``semisupervised``: Family B on sequences, the thesis's (`000`) Tables 3–5 in miniature.

Two teachers, each trained on its own classes, are amalgamated into an LSTM student from an
unlabeled pool of which a small fraction (2, 4, 6, 8 %) carries labels.

- **Table 3**: teachers sharing 2 of the 6 classes ({1,2,3,4} and {3,4,5,6}), at every label ratio.
- **Table 4**: those overlapping sets against exclusive ones ({1,2,3} and {4,5,6}), at 2 %.
- **Table 5**: an overconfident teacher with twice the classes of the other ({1,2} and {3,4,5,6}), at 2 %.

Data: **SYN** (the thesis's own control charts, 300 train / 300 test; SYN is too small for three
disjoint roles, so the teachers train on the training series of their classes and the pool is
the same 300 series without labels) and **HAPT** (the thesis's HAR: 6-channel windows of 128
samples, split by subject into teacher, pool and test subjects, so no subject is in two roles;
the split is drawn per seed). SYN's teachers are both LSTMs, as in the thesis; HAPT's are an
LSTM and a 1-D CNN. Labeled rows are a stratified sample of the pool.

Rows: each teacher alone; SupLSTM (``sup``), SelfTrain, KD, CFL, UHC, SupKD, SupUHC, TC, and
rows the thesis did not have: ``tc+labels``, MUKI-soft, the newer label-free baselines kd-std,
max-logit and energy, ``auto`` (the method selector) without labels and with them, ``calibrated``
(ours) with its two ablations, and the supervised bound (the student trained on the whole pool's
true labels). The label-free methods (KD, CFL, UHC, MUKI-soft, kd-std, max-logit, energy, auto
without labels, calibrated) train on the whole pool, D_l ∪ D_u, so one run serves every label
ratio. The thesis's SYN figures are printed beside ours. Every run uses the last epoch (no model
selection on the test split).

SYN's pool is its teachers' own training rows (see above), so on SYN the teachers look better on
the pool than they would on unseen data; the rendered tables say so beside every SYN figure.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from .multiclass import available, routing_diagnosis
from .teachers import TeacherSpec, teacher_set

RATIOS = (0.02, 0.04, 0.06, 0.08)
LABEL_METHODS = ["sup", "selftrain", "supkd", "supuhc", "tc", "tc+labels", "auto"]
#: row names of labeled runs whose method name is also a label-free row ("auto" runs both ways)
LABEL_ROWS = {"auto": "auto+labels"}
#: label-free rows: row name → (method, options); the calibrated rows are ours (issue 5) with their ablations
FREE_METHODS = {"kd": ("kd", {}), "cfl": ("cfl", {}), "uhc": ("uhc", {}), "muki-soft": ("muki-soft", {}),
                "kd-std": ("kd-std", {}), "max-logit": ("max-logit", {}), "energy": ("energy", {}),
                "auto": ("auto", {}), "calibrated": ("calibrated", {}),
                "calibrated T everywhere": ("calibrated", {"mixture_power": 1.0}),
                "calibrated mass balanced": ("calibrated", {"balance_sharpness": 1.0}),
                "calibrated w/o temperature": ("calibrated", {"temperature": False}),
                "calibrated w/o prior": ("calibrated", {"prior": "none"})}  # fmt: skip
ROW_ORDER = ["sup", "selftrain", "kd", "cfl", "uhc", "supkd", "supuhc", "tc", "tc+labels", "muki-soft", "kd-std",
             "max-logit", "energy", "auto", "auto+labels", "calibrated", "calibrated T everywhere",
             "calibrated mass balanced",
             "calibrated w/o temperature",
             "calibrated w/o prior"]  # fmt: skip
ROW_NAMES = {"sup": "SupLSTM", "selftrain": "SelfTrain", "kd": "KD", "cfl": "CFL", "uhc": "UHC", "supkd": "SupKD",
             "supuhc": "SupUHC", "tc": "TC", "tc+labels": "TC + labels", "muki-soft": "MUKI-soft",
             "auto": "auto (no labels)", "auto+labels": "auto (with labels)"}  # fmt: skip
#: one sentence beside every table with SYN figures (issue 10, item 7)
SYN_CAVEAT = ("*SYN caveat:* the SYN pool is the teachers' own training rows (SYN's 300 training series serve "
              "as both), so teachers look better on it than on unseen data: their routing and confidence on the "
              "pool, and the label-free rows that rely on them, are optimistic on SYN.")  # fmt: skip

#: The thesis's SYN figures (accuracy), Table 3 (per ratio), Table 4 (exclusive) and Table 5.
THESIS_SYN = {
    "overlap": {"teacher T1": [.66] * 4, "teacher T2": [.64] * 4, "sup": [.51, .58, .66, .71],
                "selftrain": [.58, .65, .75, .79], "kd": [.87] * 4, "cfl": [.63] * 4, "uhc": [.86] * 4,
                "supkd": [.55, .61, .67, .69], "supuhc": [.47, .58, .66, .70], "tc": [.90, .91, .92, .93]},
    "exclusive": {"teacher T1": [.50], "teacher T2": [.47], "sup": [.51], "selftrain": [.58], "kd": [.54],
                  "cfl": [.50], "uhc": [.61], "supkd": [.48], "supuhc": [.53], "tc": [.77]},
    "overconfident": {"teacher T1": [.33], "teacher T2": [.64], "sup": [.51], "selftrain": [.58], "kd": [.66],
                      "cfl": [.64], "uhc": [.66], "supkd": [.49], "supuhc": [.51], "tc": [.85]},
}  # fmt: skip


@dataclass
class Setting:
    """A pair of teacher class sets (by class position) and the label ratios it is run at."""

    key: str
    title: str
    groups: Callable[[tuple[str, ...]], list[list[str]]]
    ratios: tuple[float, ...]


SETTINGS = [
    Setting("overlap", "overlapping ({1,2,3,4} / {3,4,5,6})", lambda c: [list(c[0:4]), list(c[2:6])], RATIOS),
    Setting("exclusive", "exclusive ({1,2,3} / {4,5,6})", lambda c: [list(c[0:3]), list(c[3:6])], (0.02,)),
    Setting("overconfident", "overconfident ({1,2} / {3,4,5,6})", lambda c: [list(c[0:2]), list(c[2:6])], (0.02,)),
]


@dataclass
class Data:
    """One dataset column: how to draw its roles per seed, and its architectures and budgets."""

    key: str
    title: str
    archs: list[tuple[str, dict[str, Any]]]
    epochs: int
    teacher_epochs: int
    batch_size: int
    lr: float = 3e-3
    pool_rows: int | None = None
    test_rows: int | None = None


def data_cases(quick: bool) -> list[Data]:
    lstm = ("lstm", {"hidden": 64})
    cases = [
        Data("syn", "SYN", [lstm, lstm], epochs=60, teacher_epochs=60, batch_size=32),
        Data("hapt", "HAPT", [lstm, ("cnn1d", {})], epochs=20, teacher_epochs=30, batch_size=64,
             pool_rows=1000, test_rows=1500),
    ]  # fmt: skip
    if quick:
        for c in cases:
            c.epochs, c.teacher_epochs = max(3, c.epochs // 10), max(3, c.teacher_epochs // 6)
            c.pool_rows, c.test_rows = 300, 300
    return cases


def roles(case: Data, seed: int, cache: dict) -> dict[str, Any]:
    """Teacher, pool and test arrays for one seed (SYN: fixed split; HAPT: a subject split per seed)."""
    rng = np.random.default_rng(seed)
    if case.key == "syn":
        from .sequences import load_syn

        d = cache.setdefault("syn", load_syn())
        out = {"x_teacher": d.x_train, "y_teacher": d.y_train, "x_pool": d.x_train, "y_pool": d.y_train,
               "x_test": d.x_test, "y_test": d.y_test, "classes": d.classes,
               "split": "syn_train / syn_test"}  # fmt: skip
    else:
        from .hapt import load_hapt, subject_split

        d = cache.setdefault("hapt", load_hapt())
        t_idx, p_idx, s_idx = subject_split(d, seed=seed)
        out = {"x_teacher": d.x[t_idx], "y_teacher": d.y[t_idx], "x_pool": d.x[p_idx], "y_pool": d.y[p_idx],
               "x_test": d.x[s_idx], "y_test": d.y[s_idx], "classes": d.classes,
               "split": "subjects " + " / ".join(str(sorted(set(d.subject[i].tolist()))) for i in
                                                 (t_idx, p_idx, s_idx))}  # fmt: skip
    for role, n in (("pool", case.pool_rows), ("test", case.test_rows)):
        if n is not None and len(out[f"y_{role}"]) > n:
            keep = np.sort(rng.choice(len(out[f"y_{role}"]), n, replace=False))
            out[f"x_{role}"], out[f"y_{role}"] = out[f"x_{role}"][keep], out[f"y_{role}"][keep]
    return out


def setting_teachers(case: Data, setting: Setting, seed: int, r: dict[str, Any]) -> tuple[list, float]:
    """The two teachers of a setting (trained once, then cached), and the seconds spent training."""
    groups = setting.groups(r["classes"])
    specs = [TeacherSpec(f"T{i + 1}", g, arch, opts, epochs=case.teacher_epochs, lr=case.lr,
                         batch_size=case.batch_size)
             for i, (g, (arch, opts)) in enumerate(zip(groups, case.archs, strict=True))]  # fmt: skip
    rows = np.arange(len(r["y_teacher"]))
    return teacher_set(f"{case.key}-seq", specs, r["x_teacher"], r["y_teacher"], rows, seed)


def run_setting(
    case: Data, setting: Setting, seed: int, r: dict[str, Any], store: Path,
    only: set[str] | None = None, into: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Teachers (cached) and every row at every label ratio of one setting, for one seed; with ``only``,
    just those rows (label-free row names, or a labeled method's row name) recomputed ``into`` a
    finished result."""
    from .sequences import labeled_subset

    def wanted(row: str) -> bool:
        return only is None or row in only

    groups = setting.groups(r["classes"])
    teachers, train_s = setting_teachers(case, setting, seed, r)
    x_test, y_test = r["x_test"], r["y_test"]
    result: dict[str, Any] = into or {"groups": groups, "teacher_training_s": train_s, "teachers": {}, "free": {},
                                      "ratios": {}}  # fmt: skip
    for t in teachers:
        result["teachers"][f"teacher {t.name}"] = accuracy(y_test, t.predict(x_test))
    common = dict(student="lstm", student_options=dict(case.archs[0][1]), epochs=case.epochs,
                  batch_size=case.batch_size, lr=case.lr, seed=seed, progress=False)  # fmt: skip
    x_pool, y_pool = r["x_pool"], r["y_pool"]
    for row, (method, options) in FREE_METHODS.items():
        if not available(method) or not wanted(row):
            continue
        res = timed_amalgamate(teachers, store, common, data=x_pool, method=method, method_options=options)
        result["free"][row] = _score(res, x_test, y_test)
    if wanted("supervised"):
        sup = timed_amalgamate(teachers, store, common, labeled=(x_pool, y_pool), method="supervised")
        result["free"]["supervised"] = _score(sup, x_test, y_test)
    if only is None:
        result["diagnosis"] = routing_diagnosis(teachers, x_pool, y_pool, TeacherStore(store))
    for ratio in setting.ratios:
        lab = labeled_subset(y_pool, ratio, seed)
        unl = np.setdiff1d(np.arange(len(y_pool)), lab)
        cell: dict[str, Any] = result["ratios"].get(f"{ratio:g}") or {"labeled": int(len(lab))}
        for method in LABEL_METHODS:
            if not available(method) or not wanted(LABEL_ROWS.get(method, method)):
                continue
            labeled = (x_pool[lab], y_pool[lab])
            res = timed_amalgamate(teachers, store, common, data=x_pool[unl], labeled=labeled, method=method)
            cell[LABEL_ROWS.get(method, method)] = _score(res, x_test, y_test)
            if method == "tc":
                cell[method].update(_trust_figures(res, teachers, y_pool[np.concatenate([unl, lab])], r["classes"]))
        result["ratios"][f"{ratio:g}"] = cell
    return result


def all_rows() -> list[str]:
    """Every row name ``rows=`` may recompute."""
    return [*FREE_METHODS, "supervised", *(LABEL_ROWS.get(m, m) for m in LABEL_METHODS)]


def _score(res, x_test, y_test) -> dict[str, Any]:
    out = {"accuracy": accuracy(y_test, res.student.predict(x_test)), "wall_s": res.timings["wall"]}
    if "method_choice" in getattr(res.student, "info", {}):  # auto: the method it chose
        out["chose"] = res.student.info["method_choice"].get("method")
    return out


def _trust_figures(res, teachers, y_rows: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Mean trust per teacher for each true class, and how often the most trusted teacher owns it."""
    from ..methods.coordinator import trust_by_class

    trust = res.diagnostics["trust"].numpy()
    owners = np.array([[c in t.labels for c in classes] for t in teachers])  # teachers × classes
    y_idx = np.array([classes.index(v) for v in y_rows])
    ok = owners[trust.argmax(1), y_idx]
    per_class = trust_by_class(trust, y_rows, list(classes))
    by_class = {c: per_class[i].tolist() for i, c in enumerate(classes)}
    return {"ttl_routing": float(ok.mean()), "trust_by_class": by_class}


def run_job(key: str, seed: int, quick: bool, only: list[str] | None = None,
            part: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One dataset and seed: every setting, every row (or the rows ``only`` names, into a finished
    ``part``). Runs in a worker process (see :func:`run`)."""
    case = next(c for c in data_cases(quick) if c.key == key)
    t0 = time.perf_counter()
    r = roles(case, seed, _DATA_CACHE)
    sizes = {k: len(r[f"y_{k}"]) for k in ("teacher", "pool", "test")}
    per: dict[str, Any] = part or {"split": r["split"], "sizes": sizes, "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings_for(quick):
            into = per["settings"].get(setting.key) if only else None
            per["settings"][setting.key] = run_setting(case, setting, seed, r, Path(tmp),
                                                       set(only) if only else None, into)  # fmt: skip
    if only:
        per["recomputed"] = sorted(set(per.get("recomputed", [])) | set(only))
    else:
        per["seconds"] = time.perf_counter() - t0
    return per


_DATA_CACHE: dict[str, Any] = {}


def settings_for(quick: bool) -> list[Setting]:
    return SETTINGS if not quick else [Setting(s.key, s.title, s.groups, (0.04,)) for s in SETTINGS[:1]]


def _add_missing_diagnosis(part: dict[str, Any], key: str, seed: int, quick: bool) -> bool:
    """Parts saved before the routing diagnosis existed get it now (teacher passes only, no training)."""
    missing = [k for k, v in part["settings"].items() if "diagnosis" not in v]
    if not missing:
        return False
    case = next(c for c in data_cases(quick) if c.key == key)
    r = roles(case, seed, _DATA_CACHE)
    with tempfile.TemporaryDirectory() as tmp:
        for setting in (s for s in settings_for(quick) if s.key in missing):
            teachers, _ = setting_teachers(case, setting, seed, r)
            part["settings"][setting.key]["diagnosis"] = routing_diagnosis(
                teachers, r["x_pool"], r["y_pool"], TeacherStore(Path(tmp))
            )
    return True


def _part_path(key: str, seed: int, quick: bool) -> Path:
    return part_path("semisupervised", key, seed, quick)


def _job_config(key: str, quick: bool) -> dict[str, Any]:
    """What a finished part must match to be reused: the case's budgets and the settings."""
    case = next(c for c in data_cases(quick) if c.key == key)
    settings = [(s.key, s.ratios) for s in settings_for(quick)]
    # methods not registered when a part ran are skipped, so a part is reused only while the same ones are missing
    missing = sorted(({m for m, _ in FREE_METHODS.values()} | set(LABEL_METHODS)) - _registered())
    return {"case": dict(case.__dict__), "settings": settings, "methods": [FREE_METHODS, LABEL_METHODS],
            "unavailable": missing, "version": 2}  # fmt: skip


def _registered() -> set[str]:
    from ..methods import REGISTRY

    return set(REGISTRY)


def _load_part(key: str, seed: int, quick: bool) -> dict[str, Any] | None:
    return load_part(_part_path(key, seed, quick), _job_config(key, quick))


def _save_part(key: str, seed: int, quick: bool, result: dict[str, Any]) -> None:
    save_part(_part_path(key, seed, quick), _job_config(key, quick), result)


def run(out: Path, quick: bool = False, seeds: int | None = None, workers: int | None = None,
        rows: list[str] | None = None) -> dict:  # fmt: skip
    """Every (dataset, seed) job, in ``workers`` processes of one torch thread each (default: one per
    usable core, ``$AMALGAMATOR_BENCH_WORKERS`` overrides). Finished jobs are kept in the cache, so an
    interrupted run picks up where it stopped. ``rows`` recomputes just those rows into the finished
    jobs (after a change to one method), and runs unfinished jobs in full."""
    if rows:
        unknown = sorted(set(rows) - set(all_rows()))
        if unknown:
            raise AmalgamatorError(f"unknown semisupervised rows {unknown}; the rows are: {', '.join(all_rows())}.")
    n_seeds = seeds or (1 if quick else 3)
    keys = [c.key for c in data_cases(quick)]
    for method in _job_config(keys[0], quick)["unavailable"]:
        rows = [r for r, (m, _) in FREE_METHODS.items() if m == method]
        rows += [LABEL_ROWS.get(method, method)] if method in LABEL_METHODS else []
        progress.warn(f"method {method!r} is not registered in this checkout; rows {rows} are skipped.")
    jobs = [(k, s) for k in keys for s in range(n_seeds)]
    done = {job: part for job in jobs if (part := _load_part(*job, quick)) is not None}
    if done:
        progress.console.print(f"reusing {len(done)} finished job(s) from {_part_path(*jobs[0], quick).parent}")
    for job, part in done.items():
        if _add_missing_diagnosis(part, *job, quick):
            _save_part(*job, quick, part)
    todo = [(*job, quick) for job in jobs if job not in done]
    if rows:
        todo += [(*job, quick, list(rows), part) for job, part in done.items()]
    workers = max(1, min(workers or default_workers(), len(todo) or 1))

    def finished(job: tuple, result: dict[str, Any], seconds: float) -> None:
        key, seed = job[:2]
        done[(key, seed)] = result
        _save_part(key, seed, quick, result)

    run_jobs(run_job, todo, workers, finished, lambda j: f"[bold]{j[0]}[/] seed {j[1]}")
    results: dict[str, Any] = {"seeds": n_seeds, "quick": quick, "workers": workers, "data": {}}
    for case in data_cases(quick):
        runs = [done[(case.key, s)] for s in range(n_seeds)]
        results["data"][case.key] = {"title": case.title, "runs": runs, "setup": _setup(case)}
    suffix = "-quick" if quick else ""
    write_json(out / f"semisupervised{suffix}.json", results)
    from .plots import trust_plot

    figure = trust_plot(results, out / f"semisupervised-trust{suffix}.png")
    md = render(results, {"Teacher Trust Learner: mean trust per true class": figure.name})
    (out / f"semisupervised{suffix}.md").write_text(md)
    progress.console.print(md, markup=False, highlight=False)
    return results


def _setup(case: Data) -> dict[str, Any]:
    return {"teachers": [f"{a} {o}" for a, o in case.archs], "student": f"lstm {case.archs[0][1]}",
            "epochs": case.epochs, "teacher_epochs": case.teacher_epochs, "batch_size": case.batch_size,
            "lr": case.lr}  # fmt: skip


# Rendering ---------------------------------------------------------------------------------


def _values(results: dict, ds: str, setting: str, ratio: str, row: str) -> list[float]:
    """Accuracy of ``row`` in every seed's run of one dataset, setting and label ratio."""
    vals = []
    for run in results["data"][ds]["runs"]:
        s = run["settings"].get(setting)
        if s is None:
            continue
        if row.startswith("teacher"):
            vals.append(s["teachers"].get(row))
        elif row in s["free"]:
            vals.append(s["free"][row]["accuracy"])
        elif ratio in s["ratios"] and row in s["ratios"][ratio]:
            vals.append(s["ratios"][ratio][row]["accuracy"])
    return [v for v in vals if v is not None]


def _cell(results: dict, ds: str, setting: str, ratio: str, row: str) -> str:
    vals = _values(results, ds, setting, ratio, row)
    return mean_std(vals) if vals else "—"


def _thesis(setting: str, row: str, i: int) -> str:
    vals = THESIS_SYN.get(setting, {}).get(row)
    return f"{100 * vals[i]:.0f}" if vals else "—"


def _row_label(row: str) -> str:
    return row if row.startswith("teacher") else ROW_NAMES.get(row, row)


def _rows(results: dict) -> list[str]:
    return ["teacher T1", "teacher T2", *ROW_ORDER, "supervised"]


def render(results: dict, figures: dict[str, str]) -> str:
    """Markdown: Tables 3–5 (ours beside the thesis's SYN), trust routing, setup, timings."""
    data = list(results["data"])
    ratios = [f"{r:g}" for r in RATIOS]
    lines = ["# Bench: semi-supervised amalgamation of sequence classifiers (Family B, thesis Ch. 3)", "",
             f"Test accuracy (%), mean ± std over {results['seeds']} seed(s), last epoch (no model selection). "
             + ("**Quick mode: tiny pools, few epochs, one label ratio — a smoke check, not comparable.** "
                if results["quick"] else "")
             + "*thesis* columns: the thesis's SYN figures (its Tables 3–5). 'supervised' is the student trained "
             "on the whole pool's true labels (an upper bound, not in the thesis).", ""]  # fmt: skip
    caveat = [SYN_CAVEAT, ""] if "syn" in data else []
    first = results["data"][data[0]]["runs"][0]["settings"]
    present = [r for r in ratios if r in first.get("overlap", {}).get("ratios", {})]
    headers = ["method"]
    for ds in data:
        headers += [f"{results['data'][ds]['title']} {100 * float(r):.0f}%" for r in present]
    headers += [f"thesis SYN {100 * float(r):.0f}%" for r in present]
    table = []
    for row in _rows(results):
        cells = [_cell(results, ds, "overlap", r, row) for ds in data for r in present]
        table.append([_row_label(row), *cells, *[_thesis("overlap", row, ratios.index(r)) for r in present]])
    lines += ["## Table 3: label ratios (teachers share 2 of 6 classes)", "", markdown_table(headers, table), "",
              *caveat]  # fmt: skip
    settings_run = [s for s in ("exclusive", "overconfident") if s in first]
    if settings_run:
        h4 = ["method", *[f"{results['data'][ds]['title']} overlapping" for ds in data],
              *[f"{results['data'][ds]['title']} exclusive" for ds in data], "thesis SYN overlapping",
              "thesis SYN exclusive"]  # fmt: skip
        t4 = [[_row_label(row), *[_cell(results, ds, "overlap", "0.02", row) for ds in data],
               *[_cell(results, ds, "exclusive", "0.02", row) for ds in data], _thesis("overlap", row, 0),
               _thesis("exclusive", row, 0)] for row in _rows(results)]  # fmt: skip
        lines += ["## Table 4: overlapping vs exclusive class sets (2 % labels)", "", markdown_table(h4, t4), "",
                  *caveat]  # fmt: skip
        h5 = ["method", *[results["data"][ds]["title"] for ds in data], "thesis SYN"]
        t5 = [[_row_label(row), *[_cell(results, ds, "overconfident", "0.02", row) for ds in data],
               _thesis("overconfident", row, 0)] for row in _rows(results)]  # fmt: skip
        lines += ["## Table 5: an overconfident teacher (T2 has twice T1's classes; 2 % labels)", "",
                  markdown_table(h5, t5), "", *caveat]  # fmt: skip
    lines += _choice_section(results, data)
    lines += _trust_section(results, data)
    lines += _diagnosis_section(results, data)
    lines += _setup_section(results, data)
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""]
    lines += [f"Generated by `amalgamator bench semisupervised{' --quick' if results['quick'] else ''}` on "
              f"{time.strftime('%Y-%m-%d')} ({machine()}).", ""]  # fmt: skip
    return "\n".join(lines)


def _choice_section(results: dict, data: list[str]) -> list[str]:
    """What ``auto`` chose per dataset and setting, without labels and with them (all seeds, all ratios)."""
    rows = []
    for ds in data:
        runs = results["data"][ds]["runs"]
        for setting in runs[0]["settings"]:
            parts = [run["settings"][setting] for run in runs if setting in run["settings"]]
            free = [p["free"]["auto"].get("chose") or "?" for p in parts if "auto" in p["free"]]
            labeled = [c["auto+labels"].get("chose") or "?" for p in parts for c in p["ratios"].values()
                       if "auto+labels" in c]  # fmt: skip
            if free or labeled:
                rows.append([results["data"][ds]["title"], setting, ", ".join(sorted(set(free))) or "—",
                             ", ".join(sorted(set(labeled))) or "—"])  # fmt: skip
    if not rows:
        return []
    return ["## What `auto` chose", "", markdown_table(["data", "setting", "no labels", "with labels"], rows), ""]


def _trust_section(results: dict, data: list[str]) -> list[str]:
    rows = []
    for ds in data:
        runs = results["data"][ds]["runs"]
        for setting, s0 in runs[0]["settings"].items():
            for ratio in s0["ratios"]:
                vals = [run["settings"][setting]["ratios"][ratio]["tc"]["ttl_routing"] for run in runs]
                rows.append([results["data"][ds]["title"], setting, f"{100 * float(ratio):.0f}%",
                             str(s0["ratios"][ratio]["labeled"]), mean_std(vals)])  # fmt: skip
    return ["## Does the Teacher Trust Learner learn whom to trust?", "",
            "Fraction (%) of pool examples whose most trusted teacher (TC's trust, Eq. 8) owns the true class.", "",
            markdown_table(["data", "setting", "labels", "labeled rows (seed 0)", "TTL routing %"], rows),
            "", *([SYN_CAVEAT, ""] if "syn" in data else [])]  # fmt: skip


def _diagnosis_section(results: dict, data: list[str]) -> list[str]:
    """``am.diagnose``'s label-free risk against the measured routing accuracy, per dataset and setting."""
    from scipy.stats import spearmanr

    rows, risks, routed = [], [], []
    for ds in data:
        runs = results["data"][ds]["runs"]
        for setting in runs[0]["settings"]:
            diags = [run["settings"][setting].get("diagnosis") for run in runs]
            if any(d is None for d in diags):
                continue
            risk, route = [d["risk"] for d in diags], [d["routing_plain"] for d in diags]
            risks.append(np.mean(risk))
            routed.append(np.mean(route))
            rows.append([results["data"][ds]["title"], setting, mean_std(risk), mean_std(route),
                         f"{sum(d['risky'] for d in diags)}/{len(diags)}", ", ".join(diags[0]["overconfident"]) or "—",
                         ", ".join(diags[0]["sinks"]) or "—"])  # fmt: skip
    if not rows:
        return []
    rho = spearmanr(risks, [-v for v in routed]).statistic if len(rows) > 2 else float("nan")
    return ["## Routing diagnosis (`am.diagnose`) against measured routing", "",
            "Risk: the label-free estimate of the fraction of the pool whose most confident teacher does not own the "
            "true class; measured routing: the fraction that is routed right, counted with the true labels. "
            f"Spearman rank correlation of risk with mis-routing: {rho:.2f}.", "",
            markdown_table(["data", "setting", "risk %", "measured routing %", "flagged risky",
                            "overconfident (seed 0)", "sinks (seed 0)"], rows), "",
            *([SYN_CAVEAT, ""] if "syn" in data else [])]  # fmt: skip


def _setup_section(results: dict, data: list[str]) -> list[str]:
    lines = ["## Setup", ""]
    for ds in data:
        d = results["data"][ds]
        st, run0 = d["setup"], d["runs"][0]
        z = run0["sizes"]
        lines.append(f"- **{d['title']}**: rows teacher {z['teacher']} / pool {z['pool']} / test {z['test']} "
                     f"(seed 0: {run0['split']}). Teachers: {'; '.join(st['teachers'])}, {st['teacher_epochs']} "
                     f"epochs. Student: {st['student']}, {st['epochs']} epochs, batch {st['batch_size']}, "
                     f"lr {st['lr']}. "
                     f"Wall time per seed: {np.mean([r['seconds'] for r in d['runs']]):.0f} s.")  # fmt: skip
        for key, s in run0["settings"].items():
            lines.append(f"  - {key}: T1 {s['groups'][0]}, T2 {s['groups'][1]}")
    return [*lines, ""]
