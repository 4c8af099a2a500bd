"""Family C on Yeast: the thesis's multi-label amalgamation tables (Ch. 4, Tables 7–9).

Protocol (thesis §4.6, with the choices the thesis leaves open stated here and in the report):

- Data: Yeast (2,417 × 103, 14 labels; `bench.yeast`), a seeded 70/30 train/test split, features
  standardised on the train split. The train split is halved: one half is the student's unlabeled
  pool, the other is dealt into disjoint parts, one per teacher ("teachers trained on different data").
- Teachers: order-free classifier chains (`models.chain.ChainClassifier`, one 128-unit body layer,
  64-unit LSTM cell) on their own label sets (`bench.yeast.teacher_label_sets`: equal sizes, a
  fraction of each teacher's labels shared, the union covering all 14). They are trained with BCE
  and, our choice, with random forced labels (each step half the labels of each row are forced to
  their true values and scored on the others): a chain trained by plain BCE answers a forced label
  only on some seeds, and ANT's transfer needs chains that do.
- Settings: Table 7, two teachers with half their labels shared; Table 8, three, four and five
  teachers (half shared: the thesis gives no fraction; it ran Table 8 on YELP, Table 9 on SCENE and
  Yeast only in Table 7, so these two tables are ours on Yeast); Table 9, two teachers sharing 100,
  75, 50, 25 and 0 % of their labels (Table 7's setting is Table 9's 50 % column, run once). The
  authors' setting, where it differs from ours: Table 7 again with teachers trained by plain BCE.
- Students: every method trains the same MLP backbone (128 units) for the same epochs; ANT's
  student has the chain head its Eq. 37 asks for, the others a linear head with a sigmoid per label.
  The supervised bound is a chain trained on the pool with its true labels (not label-free).
- Metrics (Table 7): subset loss (1 − subset accuracy) and Hamming loss (lower is better), F1 micro
  and macro (higher is better), and each method's rank per metric averaged over the four (ranks
  among the amalgamation rows; the supervised bound is not ranked).
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
from ..kinds import multilabel_metrics
from ..models.chain import ChainClassifier
from ..report import markdown_table, write_json
from .common import suite_results, timed_amalgamate
from .yeast import teacher_data_split, teacher_label_sets, yeast_splits


@dataclass(frozen=True)
class Setting:
    key: str
    teachers: int
    shared: float
    #: each label of a teacher's training row is forced to its true value with this probability (ours: 0.5;
    #: the thesis's teachers are plain BCE chains, 0.0)
    force_rate: float = 0.5


SETTINGS = [Setting("2t-50", 2, 0.5), Setting("3t-50", 3, 0.5), Setting("4t-50", 4, 0.5), Setting("5t-50", 5, 0.5),
            Setting("2t-100", 2, 1.0), Setting("2t-75", 2, 0.75), Setting("2t-25", 2, 0.25),
            Setting("2t-0", 2, 0.0), Setting("2t-50-plain", 2, 0.5, force_rate=0.0)]  # fmt: skip
TABLES = {
    "Table 7: two teachers, half of their labels shared": ["2t-50"],
    "Table 8: many teachers (half of each teacher's labels shared)": ["3t-50", "4t-50", "5t-50"],
    "Table 9: share of labels common to the two teachers": ["2t-100", "2t-75", "2t-50", "2t-25", "2t-0"],
    "The authors' setting: Table 7 with teachers trained by plain BCE (no forced labels)": ["2t-50-plain"],
}
#: row → (method, options); the order of the tables
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "BL": ("bl", {}),
    "AKA": ("aka", {}),
    "CFL": ("cfl", {}),
    "KD-ML (TC-unsup.)": ("kd-ml", {}),
    "ANT": ("ant", {}),
    "ANT w/o transfer": ("ant", {"transfer": False}),
    "calibrated-ml (ours)": ("calibrated-ml", {}),
}
BOUND = "supervised bound"
#: metric → (label, higher is better)
METRICS = {"subset_loss": ("S-Loss ↓", False), "hamming_loss": ("H-Loss ↓", False),
           "f1_micro": ("F1 micro ↑", True), "f1_macro": ("F1 macro ↑", True)}  # fmt: skip


@dataclass(frozen=True)
class Budget:
    teacher_steps: int = 600
    student_epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3


def budget(quick: bool) -> Budget:
    return Budget(teacher_steps=300, student_epochs=8) if quick else Budget()


def fit_chain(
    model: ChainClassifier, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, lr: float = 1e-3,
    batch_size: int = 64, force_rate: float = 0.5,
) -> ChainClassifier:  # fmt: skip
    """BCE on the chain's final logits (Eq. 37), with random forced labels: each step, every label of a
    row is forced to its true value with probability ``force_rate`` and scored only where not forced."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g)
        xb, yb = x[idx], y[idx]
        mask = torch.rand(yb.shape, generator=g) < force_rate
        free = ~mask
        logits = model(xb, init_probs=yb, init_mask=mask)
        loss = (F.binary_cross_entropy_with_logits(logits, yb, reduction="none") * free).sum() / free.sum().clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _chain(in_dim: int, n_labels: int, seed: int) -> ChainClassifier:
    torch.manual_seed(seed)
    return ChainClassifier(in_dim, n_labels, hidden=64, body=(128,))


def split_and_teachers(setting: Setting, seed: int, b: Budget) -> dict[str, Any]:
    """One (setting, seed)'s Yeast splits (the train split halved into the pool and the teachers' rows), the
    teachers' label sets and disjoint row parts, and the chain teachers trained on them (also the speed suite's)."""
    import amalgamator as am

    sp = yeast_splits(seed)
    names = list(sp["labels"])
    x_tr, y_tr = sp["x_train"], sp["y_train"].astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x_tr))
    pool, teach = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    sets = teacher_label_sets(len(names), setting.teachers, setting.shared, seed)
    parts = teacher_data_split(len(teach), setting.teachers, seed)
    teachers = []
    for k, (labels, rows) in enumerate(zip(sets, parts, strict=True)):
        rows = teach[rows]
        xt, yt = torch.as_tensor(x_tr[rows]), torch.as_tensor(y_tr[rows][:, labels])
        net = fit_chain(_chain(x_tr.shape[1], len(labels), 1000 * seed + k), xt, yt, b.teacher_steps,
                        seed * 100 + k, b.lr, b.batch_size, setting.force_rate)  # fmt: skip
        teachers.append(am.Teacher(net, [names[j] for j in labels], name=f"T{k + 1}", kind="chain", features="body"))
    return {"splits": sp, "names": names, "pool": pool, "teach": teach, "sets": sets, "parts": parts,
            "teachers": teachers}  # fmt: skip


def run_job(key: str, seed: int, quick: bool) -> dict[str, Any]:
    """One setting and seed: train the teachers, then every row's student; score all on the test split."""

    setting = next(s for s in SETTINGS if s.key == key)
    b = budget(quick)
    t0 = time.perf_counter()
    job = split_and_teachers(setting, seed, b)
    sp, names, sets, parts, pool, teachers = (job[k] for k in ("splits", "names", "sets", "parts", "pool", "teachers"))
    x_tr, y_tr = sp["x_train"], sp["y_train"].astype(np.float32)
    teacher_scores = []
    for labels, t in zip(sets, teachers, strict=True):
        with torch.no_grad():
            pred = (torch.sigmoid(t.model(torch.as_tensor(sp["x_test"]))) > 0.5).int().numpy()
        teacher_scores.append(_scores(sp["y_test"][:, labels], pred))
    x_pool = x_tr[pool]
    common = dict(student="mlp", student_options={"hidden": [128]}, epochs=b.student_epochs,
                  batch_size=b.batch_size, lr=b.lr, seed=seed, progress=False)  # fmt: skip
    rows_out: dict[str, Any] = {}
    from ..methods import REGISTRY

    with tempfile.TemporaryDirectory() as tmp:
        for row, (method, options) in ROWS.items():
            if method not in REGISTRY:
                continue
            res = timed_amalgamate(teachers, Path(tmp), common, data=x_pool, method=method, method_options=options)
            st = res.student
            cols = [st.labels.index(n) for n in names]
            scores = _scores(sp["y_test"], st.predict(sp["x_test"])[:, cols])
            scores["seconds"] = res.timings["wall"]
            if method == "ant":
                d = res.diagnostics
                scores["reruns"] = int(torch.as_tensor(d.get("reruns", torch.zeros(1))).sum())
            rows_out[row] = scores
    bound = fit_chain(_chain(x_tr.shape[1], len(names), 7 + seed), torch.as_tensor(x_pool),
                      torch.as_tensor(y_tr[pool]), b.teacher_steps, seed, b.lr, b.batch_size,
                      force_rate=0.0)  # fmt: skip
    with torch.no_grad():
        pred = (torch.sigmoid(bound(torch.as_tensor(sp["x_test"]))) > 0.5).int().numpy()
    rows_out[BOUND] = _scores(sp["y_test"], pred)
    return {"rows": rows_out, "teachers": teacher_scores, "label_sets": [[names[j] for j in s] for s in sets],
            "sizes": {"pool": len(pool), "teacher_rows": [len(p) for p in parts], "test": len(sp["x_test"])},
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    m = multilabel_metrics(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int))
    return {"subset_loss": 1 - m["subset_accuracy"], "hamming_loss": m["hamming_loss"],
            "f1_micro": m["f1_micro"], "f1_macro": m["f1_macro"]}  # fmt: skip


# Running ---------------------------------------------------------------------------------------


def _config(key: str, quick: bool) -> dict[str, Any]:
    from ..methods import REGISTRY

    missing = sorted({m for m, _ in ROWS.values()} - set(REGISTRY))
    return {"setting": key, "budget": budget(quick).__dict__, "rows": ROWS, "unavailable": missing, "version": 1}


def settings_for(quick: bool) -> list[Setting]:
    return [s for s in SETTINGS if s.key in ("2t-50", "3t-50")] if quick else SETTINGS


def run(out: Path, quick: bool = False, seeds: int | None = None, workers: int | None = None) -> dict:
    """Every (setting, seed) job on worker processes; finished jobs are cached, so a run resumes."""
    keys = [s.key for s in settings_for(quick)]
    results = suite_results("multilabel", keys, quick, seeds, workers, _config, run_job, budget(quick).__dict__)
    suffix = "-quick" if quick else ""
    write_json(out / f"multilabel{suffix}.json", results)
    figure = _plot(results, out / f"multilabel-f1-shared{suffix}.png")
    md = render(results, figure)
    (out / f"multilabel{suffix}.md").write_text(md)
    progress.console.print(md, markup=False, highlight=False)
    return results


# Rendering ---------------------------------------------------------------------------------------


def _values(results: dict, key: str, row: str, metric: str) -> list[float]:
    return [run["rows"][row][metric] for run in results["settings"][key] if row in run["rows"]]


def _rows_present(results: dict) -> list[str]:
    present = {r for runs in results["settings"].values() for run in runs for r in run["rows"]}
    return [r for r in [*ROWS, BOUND] if r in present]


def ranks(results: dict, key: str) -> dict[str, float]:
    """Each amalgamation row's rank per metric (1 = best; ties share the mean rank) averaged over the four."""
    from scipy.stats import rankdata

    rows = [r for r in _rows_present(results) if r != BOUND]
    total = np.zeros(len(rows))
    for metric, (_, higher) in METRICS.items():
        means = np.array([np.mean(_values(results, key, r, metric)) for r in rows])
        total += rankdata(-means if higher else means)
    return dict(zip(rows, total / len(METRICS), strict=True))


def _cell(values: list[float]) -> str:
    v = np.asarray(values)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.4f} ± {sd:.4f}"


def _table(results: dict, key: str) -> str:
    rk = ranks(results, key)
    best_rank = min(rk.values()) if rk else None
    rows = []
    for row in _rows_present(results):
        cells = [_cell(_values(results, key, row, m)) for m in METRICS]
        r = rk.get(row)
        rank = "—" if r is None else (f"**{r:.1f}**" if r == best_rank else f"{r:.1f}")
        rows.append([row, *cells, rank])
    return markdown_table(["method", *[label for label, _ in METRICS.values()], "rank ↓"], rows)


def _title(key: str) -> str:
    s = next(s for s in SETTINGS if s.key == key)
    plain = ", teachers trained by plain BCE" if s.force_rate == 0 else ""
    return f"{s.teachers} teachers, {round(100 * s.shared)} % of each teacher's labels shared{plain}"


def render(results: dict, figure: Path | None) -> str:
    keys = list(results["settings"])
    b = results["budget"]
    lines = [
        "# Multi-label amalgamation on Yeast (thesis Ch. 4, Tables 7–9)", "",
        (__doc__ or "").split("\n\n", 1)[1].strip(), "",
        f"Seeds: {results['seeds']} (mean ± std). Teachers: {b['teacher_steps']} steps; students: "
        f"{b['student_epochs']} epochs, batch {b['batch_size']}, lr {b['lr']}. Machine: {results['machine']}.", "",
    ]  # fmt: skip
    for title, members in TABLES.items():
        members = [k for k in members if k in keys]
        if not members:
            continue
        lines += [f"## {title}", ""]
        for key in members:
            lines += [f"### {_title(key)}", "", _table(results, key), ""]
            lines += [_teacher_line(results, key), ""]
    if figure is not None:
        lines += [
            "## F1 macro against the share of labels common to the two teachers",
            "",
            f"![F1 macro]({figure.name})",
            "",
        ]
    lines += ["## Best average rank per setting", "",
              markdown_table(["setting", "best rank", "ANT's rank"],
                             [[_title(k), _best(results, k), f"{ranks(results, k).get('ANT', float('nan')):.1f}"]
                              for k in keys]), ""]  # fmt: skip
    return "\n".join(lines)


def _best(results: dict, key: str) -> str:
    rk = ranks(results, key)
    low = min(rk.values())
    return ", ".join(r for r, v in rk.items() if v == low) + f" ({low:.1f})"


def _teacher_line(results: dict, key: str) -> str:
    runs = results["settings"][key]
    per = [np.mean([run["teachers"][k]["f1_micro"] for run in runs]) for k in range(len(runs[0]["teachers"]))]
    sizes = [len(s) for s in runs[0]["label_sets"]]
    return (f"Teachers (seed 0 label-set sizes {sizes}): F1 micro on their own labels "
            + ", ".join(f"{v:.3f}" for v in per) + ".")  # fmt: skip


def _plot(results: dict, path: Path) -> Path | None:
    keys = [k for k in TABLES["Table 9: share of labels common to the two teachers"] if k in results["settings"]]
    if len(keys) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shared = [100 * next(s.shared for s in SETTINGS if s.key == k) for k in keys]
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in _rows_present(results):
        means = [np.mean(_values(results, k, row, "f1_macro")) for k in keys]
        ax.plot(shared, means, marker="o", label=row, linestyle="--" if row == BOUND else "-")
    ax.set_xlabel("labels shared between the two teachers (%)")
    ax.set_ylabel("F1 macro (test)")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["SETTINGS", "ROWS", "fit_chain", "ranks", "render", "run", "run_job", "write_json"]
