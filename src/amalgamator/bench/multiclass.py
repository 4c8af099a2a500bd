"""Suite ``multiclass``: Family A on images, letters and text (MUKI Tables 1–4, CFL's setting).

Every case trains its teachers on their own classes of a *teacher split* of the training
data, amalgamates them on a disjoint *pool* of the training data without its labels, and
scores every model on the dataset's own test split over all classes. Rows: each teacher
alone, the ensemble, kd, uhc, cfl, dfa, muki-hard, muki-soft, the newer label-free baselines
kd-std, max-logit and energy, ``auto`` (the label-free method selector), ``calibrated`` (ours)
and the supervised bound (the student trained on the pool's true labels). The ablation (MUKI
Table 2) reruns muki-hard and muki-soft without Monte-Carlo dropout (K = 1) and without
re-weighting; its cases' teachers have dropout in every block, as MUKI's BERT teachers do.

Cases: Fashion-MNIST (two splits), LetterRecognition with 2 (very unequal: 4 vs 22 letters),
3, 4, 5, 8 and 13 teachers, 8 teachers whose letter groups overlap their neighbours', and
fortune topics. A last case (issue 18) gives the letters' thirds to three teams' models that are not torch
models: a HistGradientBoostingClassifier read from a ``.skops`` file, a random forest exported to ONNX and a
logistic regression behind a Python callable, each trained here and kept in the cache; it runs only the rows
that need nothing but outputs (``Case.methods``) and records each teacher's pass over the pool.

CFL's α (Eq. 6) is not published; each case chooses it once, on seed 0, from :data:`CFL_ALPHAS`
on a labeled validation split held out of the teacher split (the teachers never train on it, the
test split is never used): seed 0's ``cfl`` row is the chosen student, and the later seeds train
CFL once, at that α.

The (case, seed) jobs run on worker processes of one torch thread each (:func:`run`); a case's
later seeds start when its seed 0 has chosen α. Finished jobs are kept in the cache, so a rerun or
an interrupted run resumes, and the figures made from seed 0's models are drawn by the job itself.

Each row records its wall time split into teacher passes, Monte-Carlo passes and student
training; a fresh teacher-output store per (case, seed) makes those figures honest (the
first row that needs a teacher pass pays for it, later rows read the store).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from threadpoolctl import threadpool_limits

from .. import progress
from ..api import amalgamate
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
from .teachers import TeacherSpec, teacher_set

METHODS = ["ensemble", "kd", "uhc", "cfl", "dfa", "muki-hard", "muki-soft", "kd-std", "max-logit", "energy", "auto"]
#: rows that are not a published method (left out of "best published row")
OURS = {"auto"}
#: rows whose method routes each example to one teacher (diagnostics["owner"]): their routing is measured
ROUTERS = ("max-logit", "energy")
#: CFL's α candidates, tried in this order (a tie keeps the earlier one: the old default 0.5 first)
CFL_ALPHAS = (0.5, 0.25, 0.75)
#: the labeled validation split carved from the teacher split: this fraction, at most this many rows
VALIDATION_FRACTION, VALIDATION_MAX = 0.1, 2000
ABLATION = {
    "muki-hard": {},
    "muki-hard w/o MC dropout": {"k": 1},
    "muki-hard w/o re-weighting": {"reweight": False},
    "muki-soft": {},
    "muki-soft w/o MC dropout": {"k": 1},
    "muki-soft w/o re-weighting": {"reweight": False},
}
#: ours (issue 5): calibrated integration and its two ablations, rows of every case
CALIBRATED = {
    "calibrated": {},
    "calibrated T everywhere": {"mixture_power": 1.0},
    "calibrated mass balanced": {"balance_sharpness": 1.0},
    "calibrated w/o temperature": {"temperature": False},
    "calibrated w/o prior": {"prior": "none"},
}
FASHION_UPPER = ["T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"]


@dataclass
class Case:
    """One column of the result table: a dataset, its class split and its architectures."""

    key: str
    title: str
    dataset: str
    groups: Callable[[list[str]], list[list[str]]]
    archs: list[tuple[str, dict[str, Any]]]
    student: str = "mlp"
    student_options: dict[str, Any] = field(default_factory=dict)
    teacher_rows: int = 20000
    pool_rows: int = 20000
    test_rows: int | None = None
    epochs: int = 10
    teacher_epochs: int = 8
    lr: float = 2e-3
    ablation: bool = False
    #: the rows this case runs (methods, or calibrated's row names); None: every row of the suite
    methods: tuple[str, ...] | None = None


def _halves(labels: list[str]) -> list[list[str]]:
    h = len(labels) // 2
    return [labels[:h], labels[h:]]


def _upper_body(labels: list[str]) -> list[list[str]]:
    return [[lb for lb in labels if lb in FASHION_UPPER], [lb for lb in labels if lb not in FASHION_UPPER]]


def _letter_groups(pattern: tuple[int, ...]) -> Callable[[list[str]], list[list[str]]]:
    from .datasets import class_groups, scaled_sizes

    return lambda labels: class_groups(labels, scaled_sizes(len(labels), pattern))


def _letter_ring(n: int, overlap: int = 1) -> Callable[[list[str]], list[list[str]]]:
    """``n`` near-equal groups, each sharing ``overlap`` letters with each neighbour (a ring)."""
    from .datasets import overlapping_groups, scaled_sizes

    return lambda labels: overlapping_groups(labels, scaled_sizes(len(labels), (1,) * n), overlap)


CNN = ("cnn", {"width": 32, "out_dim": 128})
#: MUKI's teachers (BERT) have dropout p = 0.1 in every block; the ablation cases' teachers too
CNN_BLOCK_DROPOUT = ("cnn", {"width": 32, "out_dim": 128, "block_dropout": 0.1})
MLP_WIDE = ("mlp", {"hidden": [256, 128]})
MLP_SMALL = ("mlp", {"hidden": [128]})
#: teachers that are not torch models (issue 18): scikit-learn estimators trained here, each served the way a
#: team might hand it over (architecture names: :func:`foreign_teacher`)
HGB_SKOPS = ("hgb-skops", {"max_iter": 100})
FOREST_ONNX = ("forest-onnx", {"n_estimators": 100})
LOGREG_CALLABLE = ("logreg-callable", {"C": 1.0, "max_iter": 1000})
FOREIGN_ARCHS = {
    "hgb-skops": "HistGradientBoostingClassifier, a .skops file (Teacher.from_sklearn)",
    "forest-onnx": "RandomForestClassifier exported to ONNX (Teacher.from_onnx)",
    "logreg-callable": "LogisticRegression behind a callable (Teacher.from_callable)",
}
#: the rows of the foreign-teacher case: the methods that need nothing but the teachers' outputs
FOREIGN_ROWS = ("ensemble", "kd", "uhc", "calibrated", "auto")


def cases(quick: bool) -> list[Case]:
    """The suite's cases; ``quick`` shrinks every split and epoch count for a CI-sized check."""
    letters = [
        Case("letters-3", "Letters, 3 teachers", "letters", _letter_groups((1, 1, 1)), [MLP_SMALL, MLP_WIDE] * 2),
        Case(
            "letters-4",
            "Letters, 4 teachers {2,2,2,4}",
            "letters",
            _letter_groups((2, 2, 2, 4)),
            [MLP_SMALL, MLP_WIDE] * 2,
        ),
        Case("letters-5", "Letters, 5 teachers", "letters", _letter_groups((1, 1, 1, 1, 1)), [MLP_SMALL, MLP_WIDE] * 3),
        Case("letters-8", "Letters, 8 teachers", "letters", _letter_groups((1,) * 8), [MLP_SMALL, MLP_WIDE] * 4),
        Case("letters-13", "Letters, 13 teachers", "letters", _letter_groups((1,) * 13), [MLP_SMALL, MLP_WIDE] * 7),
        Case(
            "letters-8-overlap",
            "Letters, 8 teachers, neighbours share a letter",
            "letters",
            _letter_ring(8, overlap=1),
            [MLP_SMALL, MLP_WIDE] * 4,
        ),
        # 2 teachers of very unequal size: 4 letters (a small MLP) vs 22 (a wide one)
        Case(
            "letters-unequal", "Letters, 2 teachers {4, 22}", "letters", _letter_groups((2, 11)), [MLP_SMALL, MLP_WIDE]
        ),
    ]
    for c in letters:
        c.teacher_rows = c.pool_rows = 8000
        c.epochs, c.teacher_epochs = 20, 20
    all_cases = [
        Case("fashion-plain", "Fashion-MNIST {0–4}/{5–9}", "fashion-mnist", _halves, [CNN_BLOCK_DROPOUT, MLP_WIDE],
             ablation=True),
        Case("fashion-upper", "Fashion-MNIST upper-body/rest", "fashion-mnist", _upper_body, [CNN, MLP_WIDE]),
        *letters,
        Case(
            "fortunes", "Fortune topics (MiniLM / TF-IDF teachers)", "fortunes", _halves,
            # two hidden Linear→ReLU→Dropout(0.1) blocks: dropout in every block, as MUKI's teachers
            [("text", {"encoder": "minilm", "hidden": [256, 256], "dropout": 0.1}),
             ("text", {"encoder": "tfidf", "hidden": [256, 256], "dropout": 0.1})],
            student="text", student_options={"encoder": "minilm", "hidden": [128]},
            teacher_rows=100000, pool_rows=100000, epochs=20, teacher_epochs=20, ablation=True,
        ),
        # issue 18: three teams' models, none a torch model, on the thirds of letters-3; the last column
        Case("letters-teams", "Letters, 3 teams' models (scikit-learn, ONNX, callable)", "letters",
             _letter_groups((1, 1, 1)), [HGB_SKOPS, FOREST_ONNX, LOGREG_CALLABLE], teacher_rows=8000, pool_rows=8000,
             epochs=20, teacher_epochs=20, methods=FOREIGN_ROWS),
    ]  # fmt: skip
    if quick:
        for c in all_cases:
            c.teacher_rows, c.pool_rows, c.test_rows = min(c.teacher_rows, 3000), min(c.pool_rows, 3000), 2000
            c.epochs, c.teacher_epochs = 3, 3
        all_cases = [c for c in all_cases if c.key in ("fashion-plain", "letters-4", "letters-unequal", "fortunes")]
    return all_cases


def _subsample(idx: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    return idx if n is None or len(idx) <= n else np.sort(rng.choice(idx, n, replace=False))


def _take(x: Any, idx: np.ndarray) -> Any:
    return [x[i] for i in idx] if isinstance(x, list) else x[idx]


def routing(confidence: np.ndarray, owners: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
    """Per row: does the most confident teacher own the true label? (owners: teachers × union)."""
    return owners[confidence.argmax(1), y_idx]


def available(method: str) -> bool:
    """Is ``method`` registered? A row whose method is not (yet) in this checkout is skipped with a
    warning rather than failing the suite (``auto`` while it is being written)."""
    from ..methods import REGISTRY

    return method in REGISTRY


def _warn_missing(method: str, rows: list[str]) -> None:
    progress.warn(f"method {method!r} is not registered in this checkout; rows {rows} are skipped.")


# Teachers that are not torch models (issue 18) -------------------------------------------------------------

#: bump when what a cached foreign teacher holds changes
FOREIGN_VERSION = 1


def foreign_teacher(dataset: str, spec: TeacherSpec, x: np.ndarray, y: np.ndarray, rows: np.ndarray,
                    seed: int) -> tuple[Any, float]:  # fmt: skip
    """A scikit-learn teacher for ``spec`` trained on ``rows`` restricted to its labels, kept in the cache as
    its team would hand it over (``spec.student`` names how, :data:`FOREIGN_ARCHS`): a ``.skops`` file, an
    ONNX export, or a ``.skops`` file of the model behind a callable. (teacher, seconds spent training.)"""
    import hashlib
    import json
    import os

    import sklearn

    from ..teachers import Teacher
    from .teachers import cache_root

    h = hashlib.sha256(json.dumps([FOREIGN_VERSION, dataset, spec.__dict__, seed, sklearn.__version__],
                                  sort_keys=True).encode())  # fmt: skip
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    folder = cache_root() / "foreign" / h.hexdigest()[:24]
    file = folder / ("model.onnx" if spec.student == "forest-onnx" else "model.skops")
    seconds = 0.0
    if not file.exists():
        keep = rows[np.isin(y[rows], spec.labels)]
        t0 = time.perf_counter()
        est = _fit_sklearn(spec, x[keep], y[keep], seed)
        seconds = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.tmp{os.getpid()}")
        if spec.student == "forest-onnx":
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import FloatTensorType

            onx = convert_sklearn(est, initial_types=[("x", FloatTensorType([None, x.shape[1]]))],
                                  options={"zipmap": False})  # fmt: skip
            tmp.write_bytes(onx.SerializeToString())
        else:
            import skops.io as sio

            sio.dump(est, tmp)
        os.replace(tmp, file)
    if spec.student == "hgb-skops":
        return Teacher.from_sklearn(file, name=spec.name), seconds
    if spec.student == "forest-onnx":
        return Teacher.from_onnx(file, name=spec.name), seconds
    from ..foreign import load_skops

    est = load_skops(file, None, f"teacher {spec.name!r}")
    # the store sees the callable's code, not the model in it: the file's hash tells retrained models apart
    version = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    labels = [str(c) for c in est.classes_]
    return Teacher.from_callable(est.predict_proba, labels, name=spec.name, version=version), seconds


def _fit_sklearn(spec: TeacherSpec, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    if spec.student == "hgb-skops":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed, **spec.options).fit(x, y)
    if spec.student == "forest-onnx":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=1, **spec.options).fit(x, y)
    if spec.student == "logreg-callable":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**spec.options).fit(x, y)
    raise ValueError(f"unknown foreign teacher architecture {spec.student!r}; known: {list(FOREIGN_ARCHS)}")


def teacher_passes(teachers: Sequence[Any], archs: Sequence[str], x_pool: Any, store: Path) -> dict[str, Any]:
    """Each teacher's pass over the pool, timed alone into the run's store (so the rows then read it): seconds
    for the pool and per 1,000 rows, one thread."""
    from ..data import Inputs
    from ..store import LOGITS

    pool = Inputs(x_pool, what="pool")
    out = {}
    for t, arch in zip(teachers, archs, strict=True):
        st = TeacherStore(store, progress=False)
        st.get(t, pool, [LOGITS])
        secs = st.stats.seconds["teacher"]
        out[t.name] = {"type": FOREIGN_ARCHS.get(arch, arch), "rows": len(pool), "seconds": secs,
                       "per_1000_rows": 1000 * secs / len(pool)}  # fmt: skip
    return out


def case_runs(case: Case) -> list[tuple[str, str, dict[str, Any]]]:
    """(row, method, options) of every row the case runs: the suite's rows, or those ``case.methods`` names."""
    runs: list[tuple[str, str, dict]] = [(m, m, {}) for m in METHODS]
    if case.ablation:
        runs += [(name, name.split()[0], opts) for name, opts in ABLATION.items() if opts]
    runs += [(name, "calibrated", opts) for name, opts in CALIBRATED.items()]
    return runs if case.methods is None else [r for r in runs if r[0] in case.methods]


def _foreign(case: Case) -> bool:
    return any(arch in FOREIGN_ARCHS for arch, _ in case.archs)


def run_case(
    case: Case, seed: int, bm, plots: dict[str, Any], only: set[str] | None = None, alpha: float | None = None
) -> dict[str, Any]:
    """Train teachers (cached), then every row of the table for one case and one seed (or only the
    rows named in ``only``, to add rows to an existing result). CFL runs once at ``alpha`` when given
    (seed 0's choice), else at every α of :data:`CFL_ALPHAS`, keeping the best on the validation split."""
    from .datasets import hold_out, role_split

    rng = np.random.default_rng(seed)
    t_split, p_rows = role_split(
        len(bm.y_train), (0.5, 0.5), seed, y=bm.y_train, max_rows=(case.teacher_rows, case.pool_rows)
    )
    # the labeled validation split (CFL's α) comes out of the teacher split: teachers never train on it
    t_rows, v_rows = hold_out(t_split, VALIDATION_FRACTION, seed, y=bm.y_train, max_rows=VALIDATION_MAX)
    test_idx = _subsample(np.arange(len(bm.y_test)), case.test_rows, rng)
    x_pool, y_pool = _take(bm.x_train, p_rows), bm.y_train[p_rows]
    x_val, y_val = _take(bm.x_train, v_rows), bm.y_train[v_rows]
    x_test, y_test = _take(bm.x_test, test_idx), bm.y_test[test_idx]
    groups = case.groups(list(bm.labels))
    specs = [
        TeacherSpec(f"T{i + 1}", g, arch, opts, epochs=case.teacher_epochs, lr=case.lr)
        for i, (g, (arch, opts)) in enumerate(zip(groups, case.archs, strict=False))
    ]
    if _foreign(case):
        made = [foreign_teacher(bm.name, sp, bm.x_train, bm.y_train, t_rows, seed * 100 + i)
                for i, sp in enumerate(specs)]  # fmt: skip
        teachers, teacher_train_s = [t for t, _ in made], sum(sec for _, sec in made)
    else:
        teachers, teacher_train_s = teacher_set(bm.name, specs, bm.x_train, bm.y_train, t_rows, seed)
    rows: dict[str, dict[str, Any]] = {}
    if only is None:
        for t in teachers:
            rows[f"teacher {t.name} ({len(t.labels)} classes)"] = {"accuracy": accuracy(y_test, t.predict(x_test))}
    common = dict(student=case.student, student_options=case.student_options, epochs=case.epochs,
                  batch_size=128, lr=case.lr, seed=seed, progress=False)  # fmt: skip
    passes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        if _foreign(case):  # each teacher's pass timed alone, before the rows read the store
            passes = teacher_passes(teachers, [arch for arch, _ in case.archs], x_pool, store)
        for row, method, opts in case_runs(case):
            if only is not None and row not in only:
                continue
            if not available(method):  # the suite warned once (see run)
                continue
            if method == "cfl" and not opts and alpha is not None:
                res = timed_amalgamate(teachers, store, common, data=x_pool, method="cfl",
                                       method_options={"alpha": alpha})  # fmt: skip
                rows[row] = {**_score(res, y_test, x_test), "alpha": alpha}
            elif method == "cfl" and not opts:
                res, rows[row] = _cfl_selected(teachers, store, common, x_pool, (x_val, y_val), (x_test, y_test))
            else:
                res = timed_amalgamate(teachers, store, common, data=x_pool, method=method, method_options=opts)
                rows[row] = _score(res, y_test, x_test)
            if "method_choice" in getattr(res.student, "info", {}):  # auto: the method it chose
                rows[row]["chose"] = res.student.info["method_choice"].get("method")
            if method.startswith("muki") and not opts:
                _routing_figures(rows[row], res.diagnostics["confidence"].numpy().argmax(1), res, teachers, y_pool)
                if seed == 0 and method == "muki-soft":
                    plots.setdefault("uncertainty", {})[case.key] = (res.diagnostics, teachers, x_pool, y_pool)
            if method == "muki-soft" and opts.get("k") == 1:
                _routing_figures(rows[row], res.diagnostics["confidence"].numpy().argmax(1), res, teachers, y_pool)
            if method in ROUTERS:
                _routing_figures(rows[row], res.diagnostics["owner"].numpy(), res, teachers, y_pool)
            if seed == 0 and method == "cfl" and case.key == "fashion-plain":
                plots["cfl"] = (res, teachers, x_pool[:1500], y_pool[:1500])
        if only is None or "supervised (upper bound)" in only:
            sup = amalgamate(teachers, labeled=(x_pool, y_pool), method="supervised", store=store, **common)
            rows["supervised (upper bound)"] = _score(sup, y_test, x_test)
        diagnosis = routing_diagnosis(teachers, x_pool, y_pool, TeacherStore(store))
    sizes = {"teacher": len(t_rows), "validation": len(v_rows), "pool": len(p_rows), "test": len(test_idx)}
    archs = [f"{arch} {opts}" for arch, opts in case.archs[: len(groups)]]
    setup = {"sizes": sizes, "archs": archs, "student": f"{case.student} {case.student_options}".strip(),
             "epochs": case.epochs, "teacher_epochs": None if _foreign(case) else case.teacher_epochs}  # fmt: skip
    result = {"rows": rows, "teacher_training_s": teacher_train_s, "groups": groups, "setup": setup,
              "diagnosis": diagnosis}  # fmt: skip
    if passes:
        result["teacher_pass"] = passes
    return result


def _cfl_selected(teachers, store, common, x_pool, val, test) -> tuple[Any, dict[str, Any]]:
    """CFL at every α of :data:`CFL_ALPHAS`, the one with the best accuracy on the labeled validation
    split kept (ties: the earlier α). The row is that student's test accuracy, with the chosen α, every
    α's validation and test accuracy, and the wall time of all the runs (the selection's real cost)."""
    (x_val, y_val), (x_test, y_test) = val, test
    best, search, timings = None, {}, {}
    for alpha in CFL_ALPHAS:
        res = timed_amalgamate(teachers, store, common, data=x_pool, method="cfl", method_options={"alpha": alpha})
        val_acc = accuracy(y_val, res.student.predict(x_val))
        search[f"{alpha:g}"] = {"validation": val_acc, "accuracy": accuracy(y_test, res.student.predict(x_test))}
        for k, v in res.timings.items():
            timings[k] = timings.get(k, 0.0) + v
        if best is None or val_acc > best[1]:
            best = (res, val_acc, alpha)
    res, _, alpha = best
    row = {"accuracy": search[f"{alpha:g}"]["accuracy"], "alpha": alpha, "alpha_search": search}
    row.update({f"{k}_s": v for k, v in timings.items()})
    return res, row


def routing_diagnosis(teachers, x_pool, y_pool, store) -> dict[str, Any]:
    """``am.diagnose``'s label-free risk score beside the measured routing accuracy: the fraction of
    pool examples whose most confident teacher (plain top probability) owns the true class."""
    from ..data import Inputs
    from ..diagnose import diagnose
    from ..store import LOGITS

    pool = Inputs(x_pool, what="pool")
    d = diagnose(teachers, pool, store=store)
    logits = [store.get(t, pool, [LOGITS])[LOGITS] for t in teachers]  # the store holds them since diagnose
    top = np.stack([z.softmax(-1).max(1).values.numpy() for z in logits], 1)
    owners = np.array([[lb in t.labels for lb in d.labels] for t in teachers])
    y_idx = np.array([d.labels.index(v) for v in y_pool])
    measured = float(routing(top, owners, y_idx).mean())
    return {"risk": d.risk, "risky": d.risky, "routing_plain": measured, "sinks": d.sinks,
            "overconfident": [t.name for t in d.teachers if t.overconfident],
            "temperatures": [t.temperature for t in d.teachers]}  # fmt: skip


def _score(res, y_test, x_test) -> dict[str, Any]:
    out = {"accuracy": accuracy(y_test, res.student.predict(x_test))}
    out.update({f"{k}_s": v for k, v in res.timings.items()})
    return out


def _routing_figures(row: dict, choice: np.ndarray, res, teachers, y_pool) -> None:
    """Routing accuracy on the pool of a method's per-example choice of teacher (MUKI: the most confident
    teacher; max-logit/energy: the owner), overall and per true class."""
    union = list(res.student.labels)
    owners = np.array([[lb in t.labels for lb in union] for t in teachers])
    y_idx = np.array([union.index(v) for v in y_pool])
    ok = owners[choice, y_idx]
    row["routing"] = float(ok.mean())
    row["routing_per_class"] = {lb: float(ok[y_idx == j].mean()) for j, lb in enumerate(union) if (y_idx == j).any()}


# Jobs: one (case, seed) each, on worker processes ----------------------------------------------

#: datasets loaded in this process (a worker loads each once, whichever jobs it runs)
_LOADED: dict[str, Any] = {}


def _case(key: str, quick: bool) -> Case:
    return next(c for c in cases(quick) if c.key == key)


def _unavailable() -> list[str]:
    """The suite's methods not registered in this checkout (their rows are skipped)."""
    from ..methods import REGISTRY

    return sorted({*METHODS, "calibrated"} - set(REGISTRY))


def _job_config(key: str, seed: int, quick: bool, alpha: float | None) -> dict[str, Any]:
    """What a finished job must match to be reused: the case's budgets, architectures and split sizes,
    the rows, CFL's α candidates and validation split, the methods missing, and for a later seed the α
    that seed 0 chose (a new choice recomputes the later seeds)."""
    case = _case(key, quick)
    # ``methods`` only when a case declares its rows: the other cases' configurations (and cached jobs) stay as
    # they were before the field existed
    described = {k: v for k, v in case.__dict__.items() if k != "groups" and not (k == "methods" and v is None)}
    config = {"case": described,
              "rows": [METHODS, ABLATION, CALIBRATED], "cfl": [CFL_ALPHAS, VALIDATION_FRACTION, VALIDATION_MAX],
              "unavailable": _unavailable(), "version": 1}  # fmt: skip
    if seed > 0:
        config["alpha"] = alpha
    return config


def _part_path(key: str, seed: int, quick: bool) -> Path:
    return part_path("multiclass", key, seed, quick)


def _figure_dir(key: str, seed: int, quick: bool) -> Path:
    """Where a job draws its figures: beside its finished result in the cache (copied to ``out`` by :func:`run`)."""
    return _part_path(key, seed, quick).with_name(f"{key}-seed{seed}-figures")


def _load_part(key: str, seed: int, quick: bool, alpha: float | None) -> dict[str, Any] | None:
    return load_part(_part_path(key, seed, quick), _job_config(key, seed, quick, alpha))


def _save_part(key: str, seed: int, quick: bool, alpha: float | None, result: dict[str, Any]) -> None:
    save_part(_part_path(key, seed, quick), _job_config(key, seed, quick, alpha), result)


def run_job(
    key: str, seed: int, quick: bool, only: Sequence[str] | None, alpha: float | None, folder: Path
) -> dict[str, Any]:
    """One case and seed (see :func:`run_case`), run in a worker process by :func:`run`. The figures made
    from seed 0's models are drawn here, into ``folder``; ``"figures"`` names them."""
    from .datasets import load

    case = _case(key, quick)
    if case.dataset not in _LOADED:
        _LOADED[case.dataset] = load(case.dataset)
    t0 = time.perf_counter()
    plots: dict[str, Any] = {}
    # scikit-learn's OpenMP pools (HistGradientBoosting) take one thread, as the torch work does in a worker
    limit = threadpool_limits(1) if _foreign(case) else contextlib.nullcontext()
    with limit:
        part = run_case(case, seed, _LOADED[case.dataset], plots, None if only is None else set(only), alpha)
    part["seconds"] = time.perf_counter() - t0
    part["figures"] = _draw(case, plots, folder, "-quick" if quick else "")
    return part


def _draw(case: Case, plots: dict[str, Any], folder: Path, suffix: str) -> dict[str, list[str]]:
    """Seed 0's figures of one case (MUKI's uncertainty histograms; CFL's t-SNE on Fashion-MNIST plain),
    as :func:`~amalgamator.bench.plots.multiclass_plots` draws them: {kind: [caption, file name]}."""
    if not plots:
        return {}
    from .plots import cfl_tsne, uncertainty_histograms

    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[str]] = {}
    if case.key in plots.get("uncertainty", {}):
        name = f"multiclass{suffix}-uncertainty-{case.key}.png"
        title = f"{case.title}: uncertainty of the right vs the wrong teacher (seed 0)"
        uncertainty_histograms(*plots["uncertainty"][case.key], title, folder / name)
        drawn["uncertainty"] = [f"MUKI Fig. 2 analogue, {case.key}", name]
    if "cfl" in plots:
        name = f"multiclass{suffix}-cfl-tsne.png"
        if cfl_tsne(*plots["cfl"], folder / name):
            caption = "t-SNE of teachers' and student's features in CFL's common space (Fashion-MNIST plain)"
            drawn["cfl"] = [caption, name]
    return drawn


def _merge_into_cache(key: str, n_seeds: int, quick: bool, new: dict[tuple[str, int], dict[str, Any]]) -> None:
    """``--rows``: merge the recomputed rows into the case's finished jobs in the cache too, so that a later
    run reusing them agrees with the result. A later seed's part is keyed by the α seed 0 chose: when
    ``cfl`` was recomputed, the part moves to seed 0's new α, at which its ``cfl`` row was recomputed."""
    seed0 = _load_part_any_rows(key, 0, quick, None)
    if seed0 is None:
        return  # the later seeds' parts cannot be checked without seed 0's
    old_alpha = seed0[1]["rows"].get("cfl", {}).get("alpha")
    for seed in range(n_seeds):
        found = seed0 if seed == 0 else _load_part_any_rows(key, seed, quick, old_alpha)
        if found is None:
            continue
        config, cached = found
        part = new[(key, seed)]
        cached["rows"].update(part["rows"])
        cached["diagnosis"] = part["diagnosis"]
        cached.setdefault("figures", {}).update(part.get("figures", {}))
        alpha = seed0[1]["rows"].get("cfl", {}).get("alpha") if seed else None
        if _complete(key, quick, cached):  # every row the suite now makes: reusable by a later full run
            _save_part(key, seed, quick, alpha, cached)
        else:  # still short of a row: kept under the configuration it was computed with
            save_part(_part_path(key, seed, quick), config, cached)


def _load_part_any_rows(key: str, seed: int, quick: bool, alpha: float | None) -> tuple[dict, dict] | None:
    """A finished job (its configuration, its result) computed under the current configuration or one that
    differs only in the suite's row lists (rows added since): ``--rows`` merges new rows into it."""
    import json

    try:
        saved = json.loads(_part_path(key, seed, quick).read_text())
    except (OSError, ValueError):
        return None
    want = json.loads(json.dumps(_job_config(key, seed, quick, alpha)))
    got = saved.get("config", {})
    if {k: v for k, v in got.items() if k != "rows"} != {k: v for k, v in want.items() if k != "rows"}:
        return None
    return got, saved["result"]


def _complete(key: str, quick: bool, part: dict[str, Any]) -> bool:
    """Does a job's result hold every row its case makes now (rows of unregistered methods aside)?"""
    case = _case(key, quick)
    wanted = [row for row, method, _ in case_runs(case) if available(method)] + ["supervised (upper bound)"]
    return all(row in part["rows"] for row in wanted)


#: ``run``'s plan for a case whose existing result stays as it is
KEEP = "keep"


def case_rows(case: Case) -> set[str]:
    """Every row a case makes (its teachers' rows aside)."""
    return {row for row, _, _ in case_runs(case)} | {"supervised (upper bound)"}


def _method_rows(method: str) -> list[str]:
    """The rows a method makes (itself, its ablations)."""
    rows = [m for m in METHODS if m == method] + [r for r, o in ABLATION.items() if o and r.split()[0] == method]
    return rows + (list(CALIBRATED) if method == "calibrated" else [])


def run(
    out: Path, quick: bool = False, seeds: int | None = None, rows: Sequence[str] | None = None,
    workers: int | None = None, only_cases: Sequence[str] | None = None,
) -> dict:  # fmt: skip
    """The whole suite: every (case, seed) job, in ``workers`` processes of one torch thread each (default:
    one per usable core, ``$AMALGAMATOR_BENCH_WORKERS`` overrides). Finished jobs are kept in the cache,
    so a rerun or an interrupted run picks up where it stopped. A case's seeds after 0 wait for its seed 0,
    which chooses CFL's α for them all.

    With ``rows``, only those rows (and the routing diagnosis) are recomputed and merged into the
    existing ``multiclass.json`` in ``out`` (same seeds, cached teachers), and into the cached jobs; a case
    that makes none of them is kept as it is. With ``only_cases`` (case keys; Python only), only those cases
    run (whole, or their ``rows``) and every other case of the existing result is kept as it is: a new case
    joins a result without recomputing the others."""
    import json
    import shutil

    from ..errors import AmalgamatorError

    suffix = "-quick" if quick else ""
    only = set(rows) if rows else None
    all_cases = cases(quick)
    if only_cases is not None:
        unknown = sorted(set(only_cases) - {c.key for c in all_cases})
        if unknown:
            known = ", ".join(c.key for c in all_cases)
            raise AmalgamatorError(f"no multiclass case {unknown[0]!r}; the cases: {known}.")
    previous: dict[str, Any] = {"cases": {}}
    if only is not None or only_cases is not None:
        try:
            previous = json.loads((out / f"multiclass{suffix}.json").read_text())
        except (OSError, ValueError):
            what = "--rows adds rows to" if only is not None else "only_cases adds cases to"
            raise AmalgamatorError(
                f"{what} an existing result, but {out / f'multiclass{suffix}.json'} is missing or "
                "unreadable; run the whole suite first."
            ) from None
        n_seeds = previous["seeds"]
    else:
        n_seeds = seeds or (1 if quick else 3)
    for method in _unavailable():
        _warn_missing(method, _method_rows(method))
    if only_cases is not None:  # cases neither named nor in the existing result stay out of it
        all_cases = [c for c in all_cases if c.key in only_cases or c.key in previous["cases"]]

    def plan(c: Case) -> list[str] | None | str:
        """What the case recomputes: every row (None; also a case the existing result lacks), the named rows
        it makes, or nothing ("keep": its existing result stays)."""
        if c.key not in previous["cases"]:
            return None
        if only_cases is not None and c.key not in only_cases:
            return KEEP
        if only is None:
            return None
        made = sorted(only & case_rows(c))
        return made or KEEP

    case_only = {c.key: plan(c) for c in all_cases}
    kept = [c.key for c in all_cases if case_only[c.key] == KEEP]
    if kept:
        progress.console.print(f"kept as they are in the existing result: {', '.join(kept)}")
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def waits(key: str) -> bool:
        """Do the case's seeds after 0 train CFL at the α its seed 0 chooses?"""
        makes_cfl = "cfl" in case_rows(_case(key, quick))
        return n_seeds > 1 and available("cfl") and makes_cfl and (case_only[key] is None or "cfl" in case_only[key])

    def job(key: str, seed: int) -> list[tuple]:
        """The job computing (case, seed), or none if the cache holds it (a whole job; not with --rows)."""
        alpha = done[(key, 0)]["rows"].get("cfl", {}).get("alpha") if seed > 0 and waits(key) else None
        if case_only[key] is None and (part := _load_part(key, seed, quick, alpha)) is not None:
            done[(key, seed)] = part
            return later(key, seed)
        return [(key, seed, quick, case_only[key], alpha, _figure_dir(key, seed, quick))]

    def later(key: str, seed: int) -> list[tuple]:
        return [j for s in range(1, n_seeds) for j in job(key, s)] if seed == 0 and waits(key) else []

    def finished(j: tuple, part: dict[str, Any], seconds: float) -> list[tuple]:
        key, seed, _, case_rows, alpha, _ = j
        done[(key, seed)] = part
        if case_rows is None:
            _save_part(key, seed, quick, alpha, part)
        return later(key, seed)

    active = [c for c in all_cases if case_only[c.key] != KEEP]
    jobs = [j for c in active for j in job(c.key, 0)]
    jobs += [j for c in active if not waits(c.key) for s in range(1, n_seeds) for j in job(c.key, s)]
    if done:
        progress.console.print(f"reusing {len(done)} finished job(s) from {_part_path('-', 0, quick).parent}")
    pending = len(jobs) + sum(n_seeds - 1 for j in jobs if j[1] == 0 and waits(j[0]))
    workers = max(1, min(workers or default_workers(), pending or 1))
    if n_seeds > 1:
        progress.console.print("a case's seeds after 0 start once its seed 0 has chosen CFL's α")
    run_jobs(run_job, jobs, workers, finished, lambda j: f"[bold]{j[0]}[/] seed {j[1]}", total=pending)
    results: dict[str, Any] = {"seeds": n_seeds, "quick": quick, "workers": workers, "cases": {}}
    for case in all_cases:
        if case_only[case.key] == KEEP:
            results["cases"][case.key] = previous["cases"][case.key]
            continue
        per_seed = []
        for seed in range(n_seeds):
            part = {k: v for k, v in done[(case.key, seed)].items() if k != "figures"}
            if case_only[case.key] is not None:
                kept = previous["cases"][case.key]["runs"][seed]
                kept["rows"].update(part["rows"])
                kept["diagnosis"] = part["diagnosis"]
                part = kept
            per_seed.append(part)
        results["cases"][case.key] = {"title": case.title, "runs": per_seed}
        if case.methods is not None:  # a case of its own rows (the table's average leaves it out)
            results["cases"][case.key]["methods"] = list(case.methods)
        if case_only[case.key] is not None:
            _merge_into_cache(case.key, n_seeds, quick, done)
    write_json(out / f"multiclass{suffix}.json", results)
    from .plots import multiclass_plots

    figures = multiclass_plots(results, {}, out, suffix)  # the accuracy bars; the jobs drew the rest
    for kind in ("uncertainty", "cfl"):
        for case in active:
            caption, name = done[(case.key, 0)].get("figures", {}).get(kind, (None, None))
            if name and (_figure_dir(case.key, 0, quick) / name).exists():
                shutil.copyfile(_figure_dir(case.key, 0, quick) / name, out / name)
                figures[caption] = name
    for png in sorted(out.glob(f"multiclass{suffix}-*.png")):  # figures of an earlier full run stay linked
        if png.name not in figures.values() and (suffix or "-quick-" not in png.name):
            figures[png.stem.removeprefix(f"multiclass{suffix}-")] = png.name
    md = render(results, figures)
    (out / f"multiclass{suffix}.md").write_text(md)
    Console().print(md, markup=False, highlight=False)
    return results


def _calibrated_section(results: dict, cell: Callable[[str, str], str]) -> list[str]:
    """``calibrated`` (ours) beside MUKI-soft and the best published row, with its two ablations."""
    cases_ = results["cases"]
    keys = [k for k in cases_ if "calibrated" in cases_[k]["runs"][0]["rows"]]
    if not keys:
        return []
    published = [m for m in METHODS if m != "ensemble" and m not in OURS] + ["ensemble"]

    def best(k: str) -> str:
        means = {m: np.mean([r["rows"][m]["accuracy"] for r in cases_[k]["runs"]]) for m in published
                 if m in cases_[k]["runs"][0]["rows"]}  # fmt: skip
        m = max(means, key=means.get)
        return f"{m} {100 * means[m]:.1f}"

    rows = [[r, *[cell(k, r) for k in keys]] for r in [*CALIBRATED, "muki-soft"]]
    rows.append(["best published row (mean)", *[best(k) for k in keys]])
    return ["", "## Calibrated integration (ours) and its ablations", "",
            "`calibrated`: temperatures fitted to each teacher's pool share, teachers gated by calibrated excess "
            "confidence, targets mixing each teacher at √T (`mixture_power` 0.5), class prior balanced to uniform "
            "on the posterior sharpened to temperature 0.5 (`balance_sharpness`: the decisions, not the mass; see "
            "`amalgamator.methods.calibrated`). 'T everywhere': targets mix the tempered teachers "
            "(`mixture_power` 1); 'mass balanced': the pool-mean probability meets the prior (`balance_sharpness` 1, "
            "the previous default); 'w/o temperature': T = 1; 'w/o prior': no balancing.", "",
            markdown_table(["row", *[cases_[k]["title"] for k in keys]], rows)]  # fmt: skip


def _cfl_alpha_section(results: dict) -> list[str]:
    """CFL's α chosen per case on seed 0's labeled validation split (and reused by the later seeds), with
    every α's validation and test accuracy (the test figures are shown, never used to choose)."""
    cases_ = results["cases"]
    keys = [k for k in cases_ if "alpha_search" in cases_[k]["runs"][0]["rows"].get("cfl", {})]
    if not keys:
        return []
    alphas = list(cases_[keys[0]]["runs"][0]["rows"]["cfl"]["alpha_search"])
    # results written before α was chosen once per case searched at every seed: the table says which
    per_seed = any(len(cases_[k]["runs"]) > 1 and "alpha_search" in cases_[k]["runs"][1]["rows"].get("cfl", {})
                   for k in keys)  # fmt: skip
    searched = "" if per_seed else " (seed 0)"
    table = []
    for k in keys:
        cfl = [r["rows"]["cfl"] for r in cases_[k]["runs"] if "alpha" in r["rows"].get("cfl", {})]
        runs = [r for r in cfl if "alpha_search" in r]
        table.append([cases_[k]["title"], ", ".join(f"{r['alpha']:g}" for r in cfl),
                      *[mean_std([r["alpha_search"][a]["validation"] for r in runs]) for a in alphas],
                      *[mean_std([r["alpha_search"][a]["accuracy"] for r in runs]) for a in alphas]])  # fmt: skip
    how = (
        "Each case and seed trains `cfl` at every α and keeps the student with the best accuracy on its labeled "
        "validation split"
        if per_seed
        else "Each case chooses α once, on seed 0: it trains `cfl` at every α and keeps the student with the best "
        "accuracy on seed 0's labeled validation split"
    )
    reuse = (
        "the `cfl` row above is that student"
        if per_seed
        else "seed 0's `cfl` result is that student; the later seeds reuse seed 0's α and train `cfl` once each, "
        "at that α (not three times per seed)"
    )
    return ["", "## CFL's α (Eq. 6), chosen on a validation split", "",
            f"The paper gives no value for α (L = α L_C + (1 − α)(L_M + L_R)). α ∈ {{{', '.join(alphas)}}}. {how} "
            f"(held out of the teacher split: {100 * VALIDATION_FRACTION:.0f} %, at most {VALIDATION_MAX} rows; the "
            f"teachers never train on it); {reuse}. Test accuracy per α is shown for reference only.", "",
            markdown_table(["case", "chosen α (per seed)", *[f"validation % at α={a}{searched}" for a in alphas],
                            *[f"test % at α={a}{searched}" for a in alphas]], table)]  # fmt: skip


def _diagnosis_section(results: dict) -> list[str]:
    """The label-free risk score of ``am.diagnose`` against the measured routing accuracy, per case."""
    from scipy.stats import spearmanr

    cases_ = results["cases"]
    keys = [k for k in cases_ if "diagnosis" in cases_[k]["runs"][0]]
    if not keys:
        return []
    risk = {k: [r["diagnosis"]["risk"] for r in cases_[k]["runs"]] for k in keys}
    routed = {k: [r["diagnosis"]["routing_plain"] for r in cases_[k]["runs"]] for k in keys}
    rows = []
    for k in keys:
        d0 = cases_[k]["runs"][0]["diagnosis"]
        flags = sum(r["diagnosis"]["risky"] for r in cases_[k]["runs"])
        rows.append([cases_[k]["title"], mean_std(risk[k]), mean_std(routed[k]), f"{flags}/{len(cases_[k]['runs'])}",
                     ", ".join(d0["overconfident"]) or "—", ", ".join(d0["sinks"]) or "—"])  # fmt: skip
    rho = spearmanr([np.mean(risk[k]) for k in keys], [-np.mean(routed[k]) for k in keys]).statistic
    return ["", "## Routing diagnosis (`amalgamator inspect --data`, `am.diagnose`)", "",
            "Risk: the label-free estimate of the fraction of the pool whose most confident teacher does not own "
            "the true class. Measured routing: that fraction's complement, counted with the true labels "
            f"(plain top probability). Spearman rank correlation of risk with mis-routing over the cases: {rho:.2f}.",
            "", markdown_table(["case", "risk %", "measured routing %", "flagged risky", "overconfident (seed 0)",
                                "sinks (seed 0)"], rows)]  # fmt: skip


def _teacher_pass_section(results: dict) -> list[str]:
    """The teacher pass over the pool per teacher type, for cases whose teachers are not torch models (issue 18):
    seconds for the pool and per 1,000 rows (one thread), mean over seeds, beside the torch MLP teachers of the
    same letter thirds (letters-3's first row that ran them) when that case is in the result."""
    cases_ = results["cases"]
    lines: list[str] = []
    for key, case in cases_.items():
        runs = [r for r in case["runs"] if "teacher_pass" in r]
        if not runs:
            continue
        rows = []
        for name, first in runs[0]["teacher_pass"].items():
            secs = [r["teacher_pass"][name]["seconds"] for r in runs]
            per = [r["teacher_pass"][name]["per_1000_rows"] for r in runs]
            alone = [r["rows"][t]["accuracy"] for r in runs for t in r["rows"] if t.startswith(f"teacher {name} ")]
            rows.append([name, first["type"], mean_std(alone), f"{np.mean(secs):.3f}", f"{np.mean(per):.4f}"])
        note = _mlp_reference(cases_.get("letters-3")) if key.startswith("letters") else ""
        n = runs[0]["teacher_pass"][next(iter(runs[0]["teacher_pass"]))]["rows"]
        lines += ["", f"## Teachers that are not torch models: {case['title']}", "",
                  f"Rows: {', '.join(case.get('methods', []))} and the supervised bound only (the other methods need "
                  "feature taps or dropout, which these teachers cannot give). Teacher pass: each teacher over the "
                  f"unlabeled pool ({n} rows) into the teacher-output store, timed alone, one thread, mean over "
                  f"{len(runs)} seed(s).{note}", "",
                  markdown_table(["teacher", "type", "alone % (whole test set)", "teacher pass s (pool)",
                                  "s per 1,000 rows"], rows)]  # fmt: skip
    return lines


def _mlp_reference(ref: dict | None) -> str:
    """A sentence on the torch MLP teachers' pass in letters-3 (its ``kd`` row paid it: logits of every teacher),
    per teacher and per 1,000 rows; "" when that case is not in the result."""
    if ref is None:
        return ""
    paid = [r["rows"]["kd"]["teacher_s"] for r in ref["runs"] if "teacher_s" in r["rows"].get("kd", {})]
    n_pool = ref["runs"][0].get("setup", {}).get("sizes", {}).get("pool")
    if not paid or not n_pool:
        return ""
    per_teacher = float(np.mean(paid)) / len(ref["runs"][0]["groups"])
    return (
        f" For comparison, the torch MLP teachers of '{ref['title']}' (the same thirds; its `kd` row's teacher "
        f"passes): {per_teacher:.3f} s per teacher for its pool of {n_pool} rows, "
        f"{1000 * per_teacher / n_pool:.4f} s per 1,000 rows."
    )


def _choices(results: dict) -> list[str]:
    """One line: the method ``auto`` chose in each case (per seed), when it ran."""
    cases_ = results["cases"]
    chose = {c["title"]: [r["rows"]["auto"].get("chose") or "?" for r in c["runs"] if "auto" in r["rows"]]
             for c in cases_.values()}  # fmt: skip
    parts = [f"{title}: {', '.join(sorted(set(ms), key=ms.index))}" for title, ms in chose.items() if ms]
    return [f"`auto` chose (no labels): {'; '.join(parts)}.", ""] if parts else []


def _rows_of(results: dict) -> list[str]:
    """Rows in the order the cases first ran them, the supervised bound last (rows added later with
    ``--rows`` come before it, not after)."""
    order: list[str] = []
    for c in results["cases"].values():
        for r in c["runs"][0]["rows"]:
            if r not in order:
                order.append(r)
    return sorted(order, key=lambda r: r.startswith("supervised"))


def render(results: dict, figures: dict[str, str]) -> str:
    """The markdown report: accuracy table, ablation, routing, timings, figures."""
    cases_ = results["cases"]
    keys = list(cases_)
    main_rows = [r for r in _rows_of(results) if "w/o" not in r and not r.startswith("teacher")]
    teacher_rows = [r for r in _rows_of(results) if r.startswith("teacher")]

    def cell(key: str, row: str, field_: str = "accuracy") -> str:
        vals = [run["rows"][row][field_] for run in cases_[key]["runs"] if row in run["rows"]]
        return mean_std(vals) if vals else "—"

    full = [k for k in keys if "methods" not in cases_[k]]  # cases of their own rows stay out of the average

    def avg(row: str) -> str:
        means = [np.mean([run["rows"][row]["accuracy"] for run in cases_[k]["runs"]]) for k in full
                 if row in cases_[k]["runs"][0]["rows"]]  # fmt: skip
        return f"{100 * np.mean(means):.1f}" if len(means) == len(full) else "—"

    best_teacher = {k: max(np.mean([run["rows"][r]["accuracy"] for run in cases_[k]["runs"]])
                           for r in teacher_rows if r in cases_[k]["runs"][0]["rows"]) for k in keys}  # fmt: skip
    table = [["best single teacher", *[f"{100 * best_teacher[k]:.1f}" for k in keys], "—"]]
    table += [[r, *[cell(k, r) for k in keys], avg(r)] for r in main_rows]
    lines = [
        "# Bench: multi-class amalgamation (Family A)",
        "",
        f"Test accuracy (%) over all classes, mean ± std over {results['seeds']} seed(s); "
        + ("**quick mode: small splits, few epochs — not comparable to papers.** " if results["quick"] else "")
        + "Teachers train on their own classes of a teacher split; students see a disjoint pool without labels."
        + (
            " avg: over the cases that run every row (not "
            + ", ".join(f"'{cases_[k]['title']}'" for k in keys if k not in full)
            + ")."
            if len(full) < len(keys)
            else ""
        ),
        "",
        markdown_table(["model", *[cases_[k]["title"] for k in keys], "avg"], table),
        "",
        *_choices(results),
        "## Teachers",
        "",
    ]
    for k in keys:
        run0 = cases_[k]["runs"][0]
        accs = ", ".join(f"{r}: {cell(k, r)}" for r in teacher_rows if r in run0["rows"])
        lines.append(f"- **{cases_[k]['title']}**: classes {run0['groups']}; alone (% of the whole test set): {accs}.")
        if "setup" in run0:
            st = run0["setup"]
            z = st["sizes"]
            held = f" (+ {z['validation']} held out for validation)" if "validation" in z else ""
            lines.append(
                f"  Rows: teacher split {z['teacher']}{held}, unlabeled pool {z['pool']}, test {z['test']}. Teachers: "
                f"{'; '.join(st['archs'])}{f' ({e} epochs)' if (e := st['teacher_epochs']) else ''}. "
                f"Student: {st['student']} "
                f"({st['epochs']} epochs)."
            )
    lines += _teacher_pass_section(results)
    abl_keys = [k for k in keys if any("w/o" in r and r in ABLATION for r in cases_[k]["runs"][0]["rows"])]
    if abl_keys:
        lines += ["", "## Ablation (MUKI Table 2)", ""]
        abl_rows = [r for r in ABLATION if r in cases_[abl_keys[0]]["runs"][0]["rows"]]
        lines.append(markdown_table(["model", *[cases_[k]["title"] for k in abl_keys]],
                                    [[r, *[cell(k, r) for k in abl_keys]] for r in abl_rows]))  # fmt: skip
    lines += ["", "## Routing", "",
              "Fraction of pool examples routed to a teacher that owns the true class. MUKI: the most confident "
              "teacher (MUKI's confidence, Eq. 10); plain = one deterministic pass (K = 1), MC = Monte-Carlo "
              "dropout. max-logit / energy: the teacher with the largest maximum logit / the lowest free energy. "
              "With overlapping groups a class has two owners and either counts as right.", ""]  # fmt: skip
    route_rows = []
    for k in keys:
        rows0 = cases_[k]["runs"][0]["rows"]
        if not any("routing" in r for r in rows0.values()):  # a case without a routing method (teams' models)
            continue

        def routed(row: str, rows0=rows0, k=k) -> str:
            return cell(k, row, "routing") if "routing" in rows0.get(row, {}) else "—"

        worst = sorted(rows0.get("muki-soft", {}).get("routing_per_class", {}).items(), key=lambda kv: kv[1])[:3]
        route_rows.append([cases_[k]["title"], str(len(cases_[k]["runs"][0]["groups"])),
                           routed("muki-soft w/o MC dropout"), routed("muki-soft"),
                           *[routed(r) for r in ROUTERS],
                           ", ".join(f"{lb} {100 * v:.0f}" for lb, v in worst) or "—"])  # fmt: skip
    lines.append(markdown_table(["case", "teachers", "MUKI plain %", "MUKI MC %", *[f"{r} %" for r in ROUTERS],
                                 "worst-routed classes by MUKI-soft, seed 0 (%)"], route_rows))  # fmt: skip
    lines += _cfl_alpha_section(results)
    lines += _calibrated_section(results, cell)
    lines += _diagnosis_section(results)
    lines += ["", "## Wall time (seconds, mean over seeds)", "",
              "Teacher passes and Monte-Carlo passes are paid by the first row that needs them; later rows read "
              "the store.", ""]  # fmt: skip
    t_rows = []
    for k in keys:
        runs = cases_[k]["runs"]
        train_t = np.mean([r["teacher_training_s"] for r in runs])
        for row in (r for r in _rows_of(results) if r in runs[0]["rows"] and "train_s" in runs[0]["rows"][r]):
            parts = [np.mean([r["rows"][row].get(f, 0.0) for r in runs]) for f in ("teacher_s", "mc_s", "train_s")]
            t_rows.append([cases_[k]["title"], row, *[f"{v:.1f}" for v in parts]])
        t_rows.append([cases_[k]["title"], "(teacher training, cached on reruns)", "—", "—", f"{train_t:.1f}"])
    lines.append(markdown_table(["case", "row", "teacher passes", "MC passes", "student training"], t_rows))
    jobs = [(cases_[k]["title"], [r["seconds"] for r in cases_[k]["runs"] if "seconds" in r]) for k in keys]
    if any(secs for _, secs in jobs):
        lines += ["", "The `cfl` times add up all its runs: three at seed 0 (the choice of α), one at each later seed. "
                  "Wall time of a whole job (one case and seed, every row, one process), mean over seeds: "
                  + "; ".join(f"{title} {np.mean(secs):.0f} s" for title, secs in jobs if secs) + "."]  # fmt: skip
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()]
    lines += ["", f"Generated by `amalgamator bench multiclass{' --quick' if results['quick'] else ''}` on "
              f"{time.strftime('%Y-%m-%d')} ({machine()}).", ""]  # fmt: skip
    return "\n".join(lines)
