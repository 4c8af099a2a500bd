"""Suite ``digits``: the demo's two disjoint experts, every Family A method so far, over seeds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from ..demo import compare, digits_splits, make_teachers
from .common import mean_std, write_results


def run(out: Path, quick: bool = False, seeds: int | None = None) -> dict:
    n_seeds = seeds or (1 if quick else 3)
    per_row: dict[str, dict[str, list[float]]] = {}
    for seed in range(n_seeds):
        splits = digits_splits(seed)
        with tempfile.TemporaryDirectory() as tmp:
            teachers = make_teachers(splits, Path(tmp), seed)
            rows = compare(teachers, splits, seed=seed, epochs=10 if quick else 30)
        for name, r in rows.items():
            slot = per_row.setdefault(name, {"accuracy": [], "f1_macro": [], "seconds": []})
            slot["accuracy"].append(r["metrics"]["accuracy"])
            slot["f1_macro"].append(r["metrics"]["f1_macro"])
            slot["seconds"].append(r["seconds"])
    table = [
        [name, mean_std(v["accuracy"]), mean_std(v["f1_macro"]), f"{sum(v['seconds']) / len(v['seconds']):.1f}"]
        for name, v in per_row.items()
    ]
    intro = (
        "scikit-learn digits; teacher 0–4 (MLP) and teacher 5–9 (CNN) trained on their own classes of a "
        "600-image teacher split (a new split per seed); students (MLP) amalgamated from an 800-image unlabeled "
        f"pool; test accuracy over all ten classes on 397 held-out images; mean ± std over {n_seeds} seed(s)."
    )
    headers = ["model", "accuracy %", "macro-F1 %", "seconds"]
    path = write_results(out, "digits", "Bench: digits", intro, headers, table, per_row)
    Console().print(path.read_text())
    return per_row
