"""Family D on FashionPairs and Yeast: the thesis's multi-task amalgamation tables (Ch. 5, Tables 10–12).

Protocol (thesis §5.6, with the choices the thesis leaves open stated here and in the report):

- Data: FashionPairs (`bench.fashion_pairs`: 56×56 canvases of 2–4 Fashion-MNIST items, ten binary tasks
  "does the image hold a <class>?"), standing in for PASCAL VOC 2007 and 3D shapes, which these machines
  cannot have. Per seed, `roles(..., n_teachers=2)` gives each teacher its own images (disjoint
  Fashion-MNIST items: "trained using different data", Table 12), the student's unlabeled pool from items
  no teacher saw, and the test images from the Fashion-MNIST test split. Ours, for CPU time: the canvases
  are average-pooled 2×2 to 28×28 (each item 14×14), and the sizes are those of the budget below.
- Teachers: multi-task nets = a backbone preset + one logit per task (amalgamator students of kind
  ``multitask``), trained with BCE on their own images and tasks by :func:`train_multitask` (the
  students' engine: AdamW, cosine decay, the same epochs for both teachers). Their final shared
  representation F_c (Eq. 38) is the backbone's output (global-average-pooled last block), tapped at
  ``"backbone"`` for ``venus`` and ``cfl``. Backbones: the families of `models.families` at their
  defaults (width 8, four blocks), CPU stand-ins for the thesis's nets: ``densenet`` for DenseNet,
  ``resnet`` for ResNet18, ``plainnet`` for VGG (no AlexNet stand-in: a third family is not there).
- Task sets (`teacher_task_sets`, the Ch. 4 protocol reused): equal sizes, the shared tasks held by both
  teachers, the union covering all ten. On ten tasks the fractions are reachable only approximately:
  30 % and 25 % both give 2 shared of 6 per teacher (0.33), 50 % gives 4 of 7 (0.57), 75 % gives 6 of 8.
  Ours: the task sets are drawn once (seed 0) and kept for every seed, so that a task's row means the
  same thing (shared or own, by which teacher) in every run; the seeds vary the images, the teachers'
  and students' initialisation and their training order.
- Settings: Table 10, teacher 1 DenseNet and teacher 2 ResNet (the thesis's pair), 30 % shared;
  Table 11, the same pair at 75, 50 and 25 % (its 25 % column is Table 10's setting, run once: the
  task sets coincide); Table 12, three architecture pairs at ~50 % (thesis: DenseNet+VGG,
  DenseNet+AlexNet, VGG+AlexNet; ours: plainnet+resnet, densenet+resnet (Table 11's 50 % column, run
  once) and plainnet+densenet). The tabular case, ours: Yeast's 14 labels as 14 tasks (`bench.yeast`:
  seeded 70/30 split, the train split halved into the pool and the teachers' disjoint rows), two MLP
  teachers of different shapes (256-128 and 64 units), 30 % asked (2 shared of 8 per teacher, 0.25).
- Students: every row trains the same backbone for the same epochs: ``resnet`` on FashionPairs (the
  thesis: "we use ResNet18 as the backbone model for the student in all experiments"), an MLP of 128
  units on Yeast; one sigmoid head per union task. Rows: MuST (``must``, hard consensus pseudo-labels),
  KD (``kd-mt``), CFL (``cfl``, α = 0.5, τ = 1), VENUS (``venus``), all with their library defaults;
  and a supervised bound (the student architecture trained on the pool's true labels, not label-free).
  Each teacher alone is scored on its own tasks, for context.
- TargetNet (paper `001`, homogeneous teachers): two ResNet teachers on the Table 10 task sets; the
  user's customised tasks are one task only teacher 1 holds and one only teacher 2 holds. The student
  (a ResNet like the teachers) is trained block by block, each block for a third of the students'
  epochs (ours, so the four blocks together cost about what one student costs). Per block k, the
  assembled model with both tasks branching out at k is scored by average precision on the test
  images (the paper's Fig. 3 curves), beside the teachers' AP and the block Eq. 9 chose; a second run
  on every task gives TargetNet's mAP against the teachers' on their own tasks, with the parameter
  counts (the paper's Table 1).
- Metrics: per task accuracy (threshold 0.5) and ROC-AUC on the test images, their means, and each
  method's average rank per metric (rank among MuST, KD, CFL and VENUS per task on the mean over seeds,
  1 = best, ties share the mean rank, averaged over the tasks; the supervised bound is not ranked).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress
from ..kinds import multitask_metrics
from ..methods.base import Method, StudentOutput
from ..report import markdown_table, write_json
from ..student import Student
from .common import suite_results, timed_amalgamate


@dataclass(frozen=True)
class Setting:
    key: str
    #: the teachers' architectures (keys of :data:`ARCHS`), teacher 1 first
    teachers: tuple[str, ...]
    #: the fraction of each teacher's tasks shared, as asked of ``teacher_task_sets`` (nearest reachable taken)
    shared: float
    #: ``"fashion"`` (FashionPairs) or ``"yeast"`` (tabular)
    data: str = "fashion"


SETTINGS = [Setting("dr-30", ("densenet", "resnet"), 0.3), Setting("dr-75", ("densenet", "resnet"), 0.75),
            Setting("dr-50", ("densenet", "resnet"), 0.5), Setting("pr-50", ("plainnet", "resnet"), 0.5),
            Setting("pd-50", ("plainnet", "densenet"), 0.5),
            Setting("yeast-30", ("mlp-256-128", "mlp-64"), 0.3, data="yeast"),
            Setting("targetnet", ("resnet", "resnet"), 0.3)]  # fmt: skip
#: Table 11's sweep of the shared fraction, plotted (its 25 % column is Table 10's setting)
SHARED_SWEEP = ["dr-75", "dr-50", "dr-30"]
TABLES = {
    "Table 10: two heterogeneous teachers (DenseNet, ResNet), 30 % of their tasks shared": ["dr-30"],
    "Table 11: share of tasks common to the two teachers (75, 50, 25 %)": SHARED_SWEEP,
    "Table 12: more pairs of teacher architectures (~50 % shared, different data)": ["pr-50", "dr-50", "pd-50"],
    "Tabular case (ours): Yeast's 14 labels as tasks, MLP teachers and student": ["yeast-30"],
}
#: the TargetNet setting (`001`): its own job and section
TARGETNET = "targetnet"
#: architecture name → (student preset, options); the image families at their defaults
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "densenet": ("densenet", {}),
    "resnet": ("resnet", {}),
    "plainnet": ("plainnet", {}),
    "mlp-256-128": ("mlp", {"hidden": [256, 128]}),
    "mlp-64": ("mlp", {"hidden": [64]}),
}
#: data → the student backbone of every row (and of the supervised bound)
STUDENTS: dict[str, tuple[str, dict[str, Any]]] = {"fashion": ("resnet", {}), "yeast": ("mlp", {"hidden": [128]})}
#: row → (method, options); the thesis's column order
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "MuST": ("must", {}),
    "KD": ("kd-mt", {}),
    "CFL": ("cfl", {}),
    "VENUS": ("venus", {}),
}
BOUND = "supervised bound"
#: metric → its name in the tables (both higher is better)
METRICS = {"accuracy": "Accuracy", "roc_auc": "ROC-AUC"}
#: the task sets are drawn once with this seed and kept for every run (module docstring)
TASK_SEED = 0
#: the module path of a teacher's final shared representation (a student network's backbone output)
FEATURES = "backbone"


@dataclass(frozen=True)
class Budget:
    """Sizes and training lengths. The defaults make a FashionPairs job about 4.5 minutes on one core (measured
    from the quick job's 72 s, scaled by the images trained), so the full suite's 15 image jobs and three Yeast
    jobs take about 35 minutes on two worker processes."""

    n_teacher: int = 4000  # FashionPairs images per teacher
    n_pool: int = 4000  # the student's unlabeled images
    n_test: int = 2000
    side: int = 28  # FashionPairs canvases pooled from 56×56 to this side (56: as generated)
    teacher_epochs: int = 12
    student_epochs: int = 12
    yeast_teacher_epochs: int = 60
    yeast_student_epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3


def budget(quick: bool) -> Budget:
    if quick:
        return Budget(n_teacher=1000, n_pool=1000, n_test=500, teacher_epochs=13, student_epochs=13,
                      yeast_teacher_epochs=30, yeast_student_epochs=16)  # fmt: skip
    return Budget()


# Teachers ----------------------------------------------------------------------------------------


class _TrueLabels(Method):
    """BCE to the true 0/1 task labels: how teachers and the supervised bound learn (not a registered method)."""

    name = "bce-true-labels"
    kinds = frozenset({"multitask"})

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(out.logits, batch["target"])


def train_multitask(
    preset: str, x: np.ndarray, y: np.ndarray, tasks: list[str], options: dict[str, Any] | None = None, *,
    epochs: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
) -> Student:  # fmt: skip
    """A multi-task net (``preset`` backbone + one sigmoid head per task) fitted with BCE on ``y`` (n, tasks).

    ``api.train_classifier`` is multi-class only; this runs the same engine (AdamW, cosine decay, gradient
    clipping, seeded order) on the true labels, so teachers and the supervised bound train like students.
    """
    from accelerate.utils import set_seed

    from ..api import torch_threads
    from ..data import Inputs
    from ..engine import TrainConfig, fit

    inputs = Inputs(x, what="x")
    target = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    if target.shape != (len(inputs), len(tasks)):
        raise ValueError(f"y has shape {tuple(target.shape)}; expected ({len(inputs)}, {len(tasks)}).")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=False)
    with torch_threads(None):
        set_seed(seed)
        st = Student.create(preset, inputs, tasks, "multitask", options)
        history = fit(st.network, _TrueLabels(), st.featurizer.transform(inputs), {"target": target},
                      np.arange(len(inputs)), cfg)  # fmt: skip
    st.method = _TrueLabels.name
    st.info = {"train": {"epochs": epochs, "seed": seed, "rows": len(inputs)}, "final_loss": history.loss[-1]}
    return st


def as_teacher(st: Student, name: str) -> Any:
    """A trained multi-task student as a frozen teacher with its final shared representation tapped
    (``Student.as_teacher`` sets no feature tap, and ``venus``/``cfl`` need one)."""
    import amalgamator as am

    return am.Teacher(st.network, st.labels, name=name, kind="multitask", features=FEATURES, preprocess=st.featurizer)


def task_sets(setting: Setting, n_tasks: int) -> list[list[int]]:
    """The teachers' task sets (sorted indices) for a setting: the thesis's protocol, drawn with :data:`TASK_SEED`."""
    from .fashion_pairs import teacher_task_sets

    return teacher_task_sets(n_tasks, len(setting.teachers), setting.shared, TASK_SEED)


def pool_images(x: np.ndarray, side: int) -> np.ndarray:
    """(n, 1, 56, 56) canvases average-pooled to (n, 1, side, side); ``side`` must divide 56."""
    n, c, h, w = x.shape
    if h % side or w % side:
        raise ValueError(f"side {side} does not divide the {h}×{w} canvases.")
    f = h // side
    return x.reshape(n, c, side, f, side, f).mean((3, 5)).astype(np.float32) if f > 1 else x


# One job -----------------------------------------------------------------------------------------


def _data(setting: Setting, seed: int, b: Budget) -> dict[str, Any]:
    """Teacher parts, pool and test split of one (setting, seed): FashionPairs roles or Yeast rows."""
    n_teachers = len(setting.teachers)
    if setting.data == "yeast":
        from .yeast import teacher_data_split, yeast_splits

        sp = yeast_splits(seed)
        x_tr, y_tr = sp["x_train"], sp["y_train"]
        order = np.random.default_rng(seed).permutation(len(x_tr))
        pool, teach = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
        parts = [teach[p] for p in teacher_data_split(len(teach), n_teachers, seed)]
        return {"tasks": list(sp["labels"]), "teachers": [(x_tr[p], y_tr[p]) for p in parts],
                "pool": (x_tr[pool], y_tr[pool]), "test": (sp["x_test"], sp["y_test"])}  # fmt: skip
    from .fashion_pairs import roles

    r = roles(seed, b.n_teacher, b.n_pool, b.n_test, n_teachers=n_teachers)

    def part(p: Any) -> tuple[np.ndarray, np.ndarray]:
        return pool_images(p.x, b.side), p.y

    return {"tasks": list(r.tasks), "teachers": [part(p) for p in r.teachers], "pool": part(r.pool),
            "test": part(r.test)}  # fmt: skip


def _scores(proba: np.ndarray, y: np.ndarray, tasks: list[str]) -> dict[str, Any]:
    m = multitask_metrics(np.asarray(y).astype(int), np.asarray(proba), tasks)
    return {k: m[k] for k in ("accuracy", "roc_auc", "accuracy_mean", "roc_auc_mean")}


def _teachers(setting: Setting, d: dict[str, Any], sets: list[list[int]], b: Budget, seed: int):
    """Train the setting's teachers on their own images and tasks; score each on its tasks (test split)."""
    from ..models.families import n_parameters

    names = d["tasks"]
    x_test, y_test = d["test"]
    epochs = b.yeast_teacher_epochs if setting.data == "yeast" else b.teacher_epochs
    teachers, out = [], []
    for k, (arch, cols, (xt, yt)) in enumerate(zip(setting.teachers, sets, d["teachers"], strict=True)):
        preset, options = ARCHS[arch]
        tasks = [names[j] for j in cols]
        t1 = time.perf_counter()
        st = train_multitask(preset, xt, yt[:, cols], tasks, options, epochs=epochs, batch_size=b.batch_size,
                             lr=b.lr, seed=1000 * seed + 17 * k + 1)  # fmt: skip
        proba = st.predict_proba(x_test)
        out.append({"name": f"T{k + 1}", "arch": arch, "tasks": tasks, "rows": len(xt),
                    "parameters": n_parameters(st.network), "seconds": time.perf_counter() - t1,
                    "ap": _ap(proba, y_test[:, cols], tasks), **_scores(proba, y_test[:, cols], tasks)})  # fmt: skip
        teachers.append(as_teacher(st, f"T{k + 1}"))
    return teachers, out


def _ap(proba: np.ndarray, y: np.ndarray, tasks: list[str]) -> dict[str, float | None]:
    """Average precision per task (None for a task whose test rows hold no positive)."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y).astype(int)
    return {t: float(average_precision_score(y[:, j], proba[:, j])) if y[:, j].any() else None
            for j, t in enumerate(tasks)}  # fmt: skip


def _job_start(key: str, seed: int, quick: bool) -> tuple[Any, ...]:
    """What every job starts from: its setting, budget, data, task names and sets, and trained teachers."""
    setting = next(s for s in SETTINGS if s.key == key)
    b = budget(quick)
    d = _data(setting, seed, b)
    names = d["tasks"]
    sets = task_sets(setting, len(names))
    teachers, teacher_out = _teachers(setting, d, sets, b, seed)
    return setting, b, d, names, sets, teachers, teacher_out


def run_job(key: str, seed: int, quick: bool) -> dict[str, Any]:
    """One setting and seed: train the teachers, then every row's student; score all on the test split."""
    from ..methods import REGISTRY
    from .fashion_pairs import shared_fractions

    if key == TARGETNET:
        return run_targetnet(seed, quick)
    t0 = time.perf_counter()
    setting, b, d, names, sets, teachers, teacher_out = _job_start(key, seed, quick)
    x_test, y_test = d["test"]
    s_epochs = b.yeast_student_epochs if setting.data == "yeast" else b.student_epochs
    x_pool, y_pool = d["pool"]
    student, student_options = STUDENTS[setting.data]
    common = dict(student=student, student_options=student_options, epochs=s_epochs, batch_size=b.batch_size,
                  lr=b.lr, seed=seed, progress=False)  # fmt: skip
    rows_out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row, (method, options) in ROWS.items():
            if method not in REGISTRY:
                continue
            res = timed_amalgamate(teachers, Path(tmp), common, data=x_pool, method=method, method_options=options)
            st = res.student
            proba = st.predict_proba(x_test)[:, [st.labels.index(n) for n in names]]
            rows_out[row] = {**_scores(proba, y_test, names), "seconds": res.timings["wall"]}
    t1 = time.perf_counter()
    bound = train_multitask(student, x_pool, y_pool, names, student_options, epochs=s_epochs,
                            batch_size=b.batch_size, lr=b.lr, seed=seed)  # fmt: skip
    rows_out[BOUND] = {**_scores(bound.predict_proba(x_test), y_test, names), "seconds": time.perf_counter() - t1}
    shared = float(np.mean(shared_fractions(sets)))  # achieved, of each teacher's tasks
    return {"rows": rows_out, "teachers": teacher_out, "tasks": names,
            "task_sets": [[names[j] for j in s] for s in sets], "shared_fraction": shared,
            "sizes": {"pool": len(x_pool), "teacher_rows": [len(p[0]) for p in d["teachers"]], "test": len(x_test),
                      "shape": list(np.asarray(x_pool).shape[1:])},
            "seconds": time.perf_counter() - t0}  # fmt: skip


def customised_tasks(sets: list[list[int]], names: list[str]) -> list[str]:
    """TargetNet's two customised tasks: the first task only teacher 1 holds, the first only teacher 2 holds."""
    own1 = [names[j] for j in sets[0] if j not in sets[1]]
    own2 = [names[j] for j in sets[1] if j not in sets[0]]
    return [own1[0], own2[0]]


def run_targetnet(seed: int, quick: bool) -> dict[str, Any]:
    """TargetNet's job: AP per block on the customised tasks (Fig. 3) and mAP on every task (Table 1)."""
    t0 = time.perf_counter()
    setting, b, d, names, sets, teachers, teacher_out = _job_start(TARGETNET, seed, quick)
    x_test, y_test = d["test"]
    student, student_options = ARCHS[setting.teachers[0]]
    block_epochs = max(1, b.student_epochs // 3)
    common = dict(student=student, student_options=student_options, epochs=block_epochs, batch_size=b.batch_size,
                  lr=b.lr, seed=seed, progress=False)  # fmt: skip
    chosen = customised_tasks(sets, names)
    cols = [names.index(t) for t in chosen]
    out: dict[str, Any] = {"teachers": teacher_out, "tasks": names, "task_sets": [[names[j] for j in s] for s in sets],
                           "customised": chosen}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        res = timed_amalgamate(teachers, Path(tmp), common, data=d["pool"][0], method="targetnet",
                               method_options={"tasks": chosen})  # fmt: skip
        m = res.method_object
        per_block = []
        for k in range(1, len(m.block_losses) + 1):
            proba = m.student_at(k).predict_proba(x_test)
            per_block.append(_ap(proba, y_test[:, cols], chosen))
        final = res.student.predict_proba(x_test)
        out["custom"] = {"block_losses": m.loss_table(), "branch_points": m.branch_points, "ap_per_block": per_block,
                         "ap": _ap(final, y_test[:, cols], chosen), "parameters": m.parameters,
                         "seconds": res.timings["wall"]}  # fmt: skip
        res = timed_amalgamate(teachers, Path(tmp), common, data=d["pool"][0], method="targetnet")
        m = res.method_object
        idx = [names.index(t) for t in m.tasks]
        proba = res.student.predict_proba(x_test)
        out["all"] = {"tasks": m.tasks, "ap": _ap(proba, y_test[:, idx], m.tasks), "parameters": m.parameters,
                      "branch_points": m.branch_points, "seconds": res.timings["wall"]}  # fmt: skip
    out["seconds"] = time.perf_counter() - t0
    return out


# Running ---------------------------------------------------------------------------------------


def _config(key: str, quick: bool) -> dict[str, Any]:
    from ..methods import REGISTRY

    missing = sorted({m for m, _ in ROWS.values()} - set(REGISTRY))
    setting = next(s for s in SETTINGS if s.key == key)
    return {"setting": setting.__dict__, "budget": budget(quick).__dict__, "rows": ROWS, "archs": ARCHS,
            "students": STUDENTS, "task_seed": TASK_SEED, "unavailable": missing, "version": 1}  # fmt: skip


def settings_for(quick: bool) -> list[Setting]:
    return [s for s in SETTINGS if s.key in ("dr-30", "yeast-30", TARGETNET)] if quick else SETTINGS


def run(out: Path, quick: bool = False, seeds: int | None = None, workers: int | None = None) -> dict:
    """Every (setting, seed) job on worker processes; finished jobs are cached, so a run resumes."""
    keys = [s.key for s in settings_for(quick)]
    results = suite_results("multitask", keys, quick, seeds, workers, _config, run_job, budget(quick).__dict__)
    suffix = "-quick" if quick else ""
    write_json(out / f"multitask{suffix}.json", results)
    figure = _plot(results, out / f"multitask-shared{suffix}.png")
    md = render(results, figure, out)
    (out / f"multitask{suffix}.md").write_text(md)
    progress.console.print(md, markup=False, highlight=False)
    return results


# Rendering ---------------------------------------------------------------------------------------


def _values(results: dict, key: str, row: str, metric: str, task: str | None = None) -> list[float]:
    """A row's figure over the seeds: per task, or the mean over tasks (``task=None``); missing values skipped."""
    out = []
    for run in results["settings"][key]:
        r = run["rows"].get(row)
        if r is not None:
            v = r[f"{metric}_mean"] if task is None else r[metric].get(task)
            if v is not None:
                out.append(float(v))
    return out


def _teacher_values(results: dict, key: str, k: int, metric: str, task: str | None = None) -> list[float]:
    out = []
    for run in results["settings"][key]:
        t = run["teachers"][k]
        v = t[f"{metric}_mean"] if task is None else t[metric].get(task)
        if v is not None:
            out.append(float(v))
    return out


def _rows_present(results: dict, key: str | None = None) -> list[str]:
    keys = [key] if key is not None else list(results["settings"])
    present = {r for k in keys for run in results["settings"][k] for r in run.get("rows", {})}
    return [r for r in [*ROWS, BOUND] if r in present]


def ranks(results: dict, key: str, metric: str) -> dict[str, float]:
    """Each amalgamation row's rank per task (1 = best; ties share the mean rank) on the mean over seeds,
    averaged over the tasks that have the metric (ROC-AUC is undefined on a one-class test column)."""
    from scipy.stats import rankdata

    rows = [r for r in _rows_present(results, key) if r != BOUND]
    total, count = np.zeros(len(rows)), 0
    for task in results["settings"][key][0]["tasks"]:
        vals = [_values(results, key, r, metric, task) for r in rows]
        if not rows or any(not v for v in vals):
            continue
        total += rankdata([-np.mean(v) for v in vals])
        count += 1
    return dict(zip(rows, total / max(count, 1), strict=True)) if count else {}


def _cell(values: list[float], bold: bool = False) -> str:
    if not values:
        return "—"
    v = np.asarray(values)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    text = f"{v.mean():.3f} ± {sd:.3f}"
    return f"**{text}**" if bold else text


def _table(results: dict, key: str, metric: str) -> str:
    """The thesis's layout: one row per task (and who holds it), one column per method, then the bound and
    each teacher alone on its own tasks; a mean row and the average-rank row close it."""
    runs = results["settings"][key]
    first = runs[0]
    tasks, sets, teachers = first["tasks"], first["task_sets"], first["teachers"]
    rows = _rows_present(results, key)
    ranked = [r for r in rows if r != BOUND]
    headers = ["task", "held by", *rows, *[f"{t['name']} ({t['arch']})" for t in teachers]]
    lines = []
    for task in tasks:
        means = {r: np.mean(v) for r in ranked if (v := _values(results, key, r, metric, task))}
        best = max(means.values()) if means else None
        cells = [_cell(_values(results, key, r, metric, task), r in means and means[r] == best) for r in rows]
        cells += [_cell(_teacher_values(results, key, k, metric, task)) for k in range(len(teachers))]
        holders = ", ".join(t["name"] for t, s in zip(teachers, sets, strict=True) if task in s)
        lines.append([task, holders, *cells])
    own = [_cell(_teacher_values(results, key, k, metric)) + " (own tasks)" for k in range(len(teachers))]
    lines.append(["mean", "", *[_cell(_values(results, key, r, metric)) for r in rows], *own])
    rk = ranks(results, key, metric)
    low = min(rk.values()) if rk else None
    lines.append(["avg rank ↓", "", *[("—" if r not in rk else (f"**{rk[r]:.2f}**" if rk[r] == low else f"{rk[r]:.2f}"))
                                      for r in rows], *["—"] * len(teachers)])  # fmt: skip
    return markdown_table(headers, lines)


def _title(results: dict, key: str) -> str:
    s = next(s for s in SETTINGS if s.key == key)
    first = results["settings"][key][0]
    sets = first["task_sets"]
    n_shared = len(set(sets[0]).intersection(*map(set, sets[1:])))
    data = "Yeast" if s.data == "yeast" else "FashionPairs"
    pair = " + ".join(f"T{k + 1} {a}" for k, a in enumerate(s.teachers))
    return (f"{data}, {pair}: {round(100 * s.shared)} % shared asked, {n_shared} of {len(sets[0])} tasks per "
            f"teacher ({100 * first['shared_fraction']:.0f} %)")  # fmt: skip


def render(results: dict, figure: Path | None, out: Path | None = None) -> str:
    keys = [k for k in results["settings"] if k != TARGETNET]  # TargetNet has its own section
    b = results["budget"]
    lines = [
        "# Multi-task amalgamation on FashionPairs and Yeast (thesis Ch. 5, Tables 10–12)", "",
        (__doc__ or "").split("\n\n", 1)[1].strip(), "",
        f"Seeds: {results['seeds']} (mean ± std). FashionPairs: {b['n_teacher']} images per teacher, a pool of "
        f"{b['n_pool']}, {b['n_test']} test images, {b['side']}×{b['side']}; teachers {b['teacher_epochs']} epochs, "
        f"students {b['student_epochs']}. Yeast: teachers {b['yeast_teacher_epochs']} epochs, students "
        f"{b['yeast_student_epochs']}. Batch {b['batch_size']}, lr {b['lr']}. Machine: {results['machine']}.", "",
    ]  # fmt: skip
    shown: dict[str, str] = {}  # a setting in two tables (Table 10 = Table 11's 25 %) is laid out once
    for title, members in TABLES.items():
        members = [k for k in members if k in keys]
        if not members:
            continue
        lines += [f"## {title}", ""]
        for key in members:
            if key in shown:
                lines += [f"### {_title(results, key)}", "", f"The same runs as in {shown[key]} above.", ""]
                continue
            shown[key] = title.split(":")[0]
            lines += [f"### {_title(results, key)}", "", _teacher_line(results, key), ""]
            for metric, label in METRICS.items():
                lines += [f"{label}:", "", _table(results, key, metric), ""]
    if TARGETNET in results["settings"]:
        lines += _targetnet_section(results, out)
    if figure is not None:
        lines += ["## Mean accuracy and ROC-AUC against the share of tasks common to the two teachers (Table 11)",
                  "", f"![shared tasks]({figure.name})", ""]  # fmt: skip
    lines += ["## Summary", "", "Average rank per metric (accuracy / ROC-AUC; 1 = best of the four methods):", "",
              _summary(results, keys, ranked=True), "",
              "Mean over tasks (accuracy / ROC-AUC):", "", _summary(results, keys, ranked=False), "",
              "Wall time per job (seconds, mean over seeds): "
              + ", ".join(f"{k} {np.mean([r['seconds'] for r in results['settings'][k]]):.0f}" for k in keys)
              + ".", ""]  # fmt: skip
    return "\n".join(lines)


def _mean_sd(values: list[float | None]) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "—"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def _targetnet_section(results: dict, out: Path | None) -> list[str]:
    """`001`'s Fig. 3 (AP per block, two customised tasks) and Table 1 (mAP against the teachers)."""
    runs = results["settings"][TARGETNET]
    chosen = runs[0]["customised"]
    n_blocks = len(runs[0]["custom"]["ap_per_block"])
    owner = {t: te["name"] for te in runs[0]["teachers"] for t in te["tasks"] if t in chosen}
    rows = []
    for t in chosen:
        cells = [_mean_sd([r["custom"]["ap_per_block"][k][t] for r in runs]) for k in range(n_blocks)]
        teacher = _mean_sd([te["ap"][t] for r in runs for te in r["teachers"] if t in te["tasks"]])
        picks = ", ".join(str(r["custom"]["branch_points"][t]) for r in runs)
        final = _mean_sd([r["custom"]["ap"][t] for r in runs])
        rows.append([f"{t} ({owner[t]})", *cells, final, picks, teacher])
    lines = ["## TargetNet (`001`): homogeneous ResNet teachers, customised tasks", "",
             f"Customised tasks: {', '.join(chosen)}. AP of the model branching out at each block (test images), "
             "the model Eq. 9 assembled, the block it chose per seed, and the owning teacher's AP:", "",
             markdown_table(["task", *[f"block {k + 1}" for k in range(n_blocks)], "TargetNet", "branch-out",
                             "teacher"], rows), ""]  # fmt: skip
    maps = {"TargetNet (all tasks)": [np.mean([v for v in r["all"]["ap"].values() if v is not None]) for r in runs]}
    for k, te in enumerate(runs[0]["teachers"]):
        maps[f"teacher {te['name']} (its {len(te['tasks'])} tasks)"] = [
            np.mean([v for v in r["teachers"][k]["ap"].values() if v is not None]) for r in runs
        ]
    params = {"TargetNet (all tasks)": runs[0]["all"]["parameters"]["student"]}
    params.update(
        {f"teacher {te['name']} (its {len(te['tasks'])} tasks)": te["parameters"] for te in runs[0]["teachers"]}
    )
    table = [[k, _mean_sd(v), f"{params[k]:,}"] for k, v in maps.items()]
    lines += ["mAP on the test images (`001` Table 1) and parameters:", "",
              markdown_table(["model", "mAP", "parameters"], table), ""]  # fmt: skip
    if out is not None:
        figure = _targetnet_plot(runs, chosen, out / f"multitask-targetnet{'-quick' if results['quick'] else ''}.png")
        lines += [f"![AP per block]({figure.name})", ""]
    return lines


def _targetnet_plot(runs: list[dict], chosen: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_blocks = len(runs[0]["custom"]["ap_per_block"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for t in chosen:
        ap = [np.mean([r["custom"]["ap_per_block"][k][t] or 0.0 for r in runs]) for k in range(n_blocks)]
        line = ax.plot(range(1, n_blocks + 1), ap, marker="o", label=f"{t}: branch out at block k")[0]
        teacher = np.mean([te["ap"][t] or 0.0 for r in runs for te in r["teachers"] if t in te["tasks"]])
        ax.axhline(teacher, linestyle="--", color=line.get_color(), label=f"{t}: its teacher")
    ax.set_xlabel("branch-out block k")
    ax.set_ylabel("average precision (test)")
    ax.set_xticks(range(1, n_blocks + 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _summary(results: dict, keys: list[str], ranked: bool) -> str:
    rows = [r for r in _rows_present(results) if not (ranked and r == BOUND)]
    lines = []
    for key in keys:
        if ranked:
            rk = {m: ranks(results, key, m) for m in METRICS}
            cells = [f"{rk['accuracy'].get(r, float('nan')):.2f} / {rk['roc_auc'].get(r, float('nan')):.2f}"
                     for r in rows]  # fmt: skip
        else:
            cells = [" / ".join(f"{np.mean(v):.3f}" if (v := _values(results, key, r, m)) else "—" for m in METRICS)
                     for r in rows]  # fmt: skip
        lines.append([_short(results, key), *cells])
    return markdown_table(["setting", *rows], lines)


def _short(results: dict, key: str) -> str:
    """``dr-30 (densenet + resnet, 2/6 shared)``: a summary row's setting."""
    s = next(s for s in SETTINGS if s.key == key)
    sets = results["settings"][key][0]["task_sets"]
    n_shared = len(set(sets[0]).intersection(*map(set, sets[1:])))
    return f"{key} ({' + '.join(s.teachers)}, {n_shared}/{len(sets[0])} shared)"


def _teacher_line(results: dict, key: str) -> str:
    runs = results["settings"][key]
    parts = []
    for k, t in enumerate(runs[0]["teachers"]):
        acc = np.mean(_teacher_values(results, key, k, "accuracy"))
        auc = np.mean(_teacher_values(results, key, k, "roc_auc"))
        parts.append(f"{t['name']} {t['arch']} ({t['parameters']:,} parameters, {t['rows']} rows): tasks "
                     f"{', '.join(t['tasks'])}; on them accuracy {acc:.3f}, ROC-AUC {auc:.3f}")  # fmt: skip
    return "Teachers: " + "; ".join(parts) + "."


def _plot(results: dict, path: Path) -> Path | None:
    keys = [k for k in SHARED_SWEEP if k in results["settings"]]
    if len(keys) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shared = [100 * results["settings"][k][0]["shared_fraction"] for k in keys]
    from .plots import outside_legend

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, (metric, label) in zip(axes, METRICS.items(), strict=True):
        for row in _rows_present(results):
            means = [np.mean(_values(results, k, row, metric)) for k in keys]
            ax.plot(shared, means, marker="o", label=row, linestyle="--" if row == BOUND else "-")
        ax.set_xlabel("tasks shared by the two teachers (% of each one's)")
        ax.set_ylabel(f"mean {label} (test)")
        ax.invert_xaxis()
    outside_legend(axes[1])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["ROWS", "SETTINGS", "TABLES", "Budget", "as_teacher", "ranks", "render", "run", "run_job",
           "task_sets", "train_multitask"]  # fmt: skip
