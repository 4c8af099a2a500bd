"""The bundled demo: two digit experts with disjoint labels become one student.

scikit-learn's digits (1,797 images of 8×8) are split three ways: a teacher split, an
unlabeled pool and a test split. Teacher "digits-0-4" (an MLP) learns classes 0–4 and
teacher "digits-5-9" (a small CNN) learns 5–9, each only from its own classes on the
teacher split. The pool's labels are never shown to the amalgamation methods; only the
supervised upper bound uses them. Everything is scored on the test split over all ten
classes, so a single teacher cannot exceed about 50 %.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from .api import amalgamate, train_classifier
from .metrics import confusion, multiclass_metrics
from .report import confusion_png, markdown_table, write_json
from .teachers import Teacher

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]


def digits_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits scaled to [0, 1], split into teacher (600) / pool (800) / test (397) rows."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(str)
    perm = np.random.default_rng(seed).permutation(len(x))
    idx = {"teacher": perm[:600], "pool": perm[600:1400], "test": perm[1400:]}
    return {k: (x[v], y[v]) for k, v in idx.items()}


def _progress() -> bool | None:
    """The demo's runs take seconds and it prints its own table: no epoch lines unless --verbose."""
    from .progress import verbose

    return None if verbose() else False


def make_teachers(splits, folder: Path, seed: int = 0) -> list[Teacher]:
    """Train the two experts on their own classes of the teacher split; save and reload them."""
    xt, yt = splits["teacher"]
    specs = [("digits-0-4", LOW, "mlp", {"hidden": [64]}), ("digits-5-9", HIGH, "cnn", {"width": 16, "out_dim": 64})]
    teachers = []
    for name, labels, arch, opts in specs:
        keep = np.isin(yt, labels)
        model = train_classifier(
            xt[keep],
            yt[keep],
            student=arch,
            labels=labels,
            epochs=40,
            seed=seed,
            lr=3e-3,
            student_options=opts,
            progress=_progress(),
        )
        model.save(folder / name)
        teachers.append(Teacher.from_pretrained(folder / name))
    return teachers


def compare(teachers, splits, seed: int = 0, epochs: int = 30, student: str = "mlp") -> dict[str, Any]:
    """Each teacher alone, the ensemble, KD, UHC and the supervised bound, scored on the test split."""
    xp, yp = splits["pool"]
    xs, ys = splits["test"]
    rows: dict[str, Any] = {}
    for t in teachers:
        pred = t.predict(xs)
        rows[f"teacher {t.name}"] = {"metrics": multiclass_metrics(ys, pred), "seconds": 0.0}
    common = dict(student=student, epochs=epochs, batch_size=64, seed=seed, lr=3e-3, progress=_progress())
    runs = {
        "ensemble": dict(data=xp, method="ensemble"),
        "kd": dict(data=xp, method="kd"),
        "uhc": dict(data=xp, method="uhc"),
        "supervised (upper bound)": dict(labeled=(xp, yp), method="supervised"),
    }
    for row, kw in runs.items():
        t0 = time.perf_counter()
        res = amalgamate(teachers=teachers, **kw, **common)
        pred = res.student.predict(xs)
        rows[row] = {
            "metrics": multiclass_metrics(ys, pred),
            "seconds": time.perf_counter() - t0,
            "result": res,
            "pred": pred,
        }
    return rows


def run_demo(out: Path | str = "demo-out", quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the demo end to end and write its folder; returns the table rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    t0 = time.perf_counter()
    splits = digits_splits(seed)
    console.print("[bold]amalgamator demo[/]: two digit experts (0–4: MLP, 5–9: CNN) → one student over 0–9")
    teachers = make_teachers(splits, out / "teachers", seed)
    rows = compare(teachers, splits, seed=seed, epochs=10 if quick else 30)

    table = Table(title="digits, test accuracy over all 10 classes")
    for col in ("model", "accuracy %", "macro-F1 %", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    md_rows = []
    for name, r in rows.items():
        m = r["metrics"]
        cells = [name, f"{100 * m['accuracy']:.1f}", f"{100 * m['f1_macro']:.1f}", f"{r['seconds']:.1f}"]
        table.add_row(*cells)
        md_rows.append(cells)
    console.print(table)

    best = max(("kd", "uhc"), key=lambda k: rows[k]["metrics"]["accuracy"])
    student = rows[best]["result"].student
    xs, ys = splits["test"]
    _write_outputs(out, splits, rows, best, student, md_rows)
    console.print(
        f"student ({best}) saved to [bold]{out / 'student'}[/]; report {out / 'report.md'}; "
        f"total {time.perf_counter() - t0:.1f} s. Try: amalgamator run {out / 'recipe.yaml'}"
    )
    return rows


def _write_outputs(out: Path, splits, rows, best: str, student, md_rows) -> None:
    xs, ys = splits["test"]
    student.save(out / "student")
    cm = confusion(ys, rows[best]["pred"], student.labels)
    confusion_png(cm, student.labels, out / "confusion.png", title=f"{best} student, digits test split")
    table = markdown_table(["model", "accuracy %", "macro-F1 %", "seconds"], md_rows)
    report = (
        "# amalgamator demo: digits\n\n"
        "Teacher `digits-0-4` (MLP) knows classes 0–4, teacher `digits-5-9` (CNN) knows 5–9; each was trained "
        "on its own classes of a 600-image teacher split. The students saw an 800-image pool without labels "
        "(only the supervised bound used them). Accuracy is over all ten classes on 397 held-out images.\n\n"
        f"{table}\n\nSaved student: `{best}`. Confusion matrix: `confusion.png`.\n"
    )
    (out / "report.md").write_text(report)
    (out / "student" / "report.md").write_text(report)
    write_json(out / "results.json", {k: {"metrics": v["metrics"], "seconds": v["seconds"]} for k, v in rows.items()})
    # Files for trying the CLI on the same problem: `amalgamator run OUT/recipe.yaml`.
    np.savez(out / "pool.npz", x=splits["pool"][0])
    np.savez(out / "test.npz", x=xs, y=ys.astype("U"))
    recipe = {
        "teachers": [  # "backbone": the feature tap that cfl and dfa need
            {"path": "teachers/digits-0-4", "features": "backbone"},
            {"path": "teachers/digits-5-9", "features": "backbone"},
        ],
        "data": "pool.npz",
        "test": "test.npz",
        "method": "uhc",
        "student": "mlp",
        "train": {"epochs": 30, "batch_size": 64, "lr": 0.003, "seed": 0},
        "out": "run-uhc",
    }
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
