"""Result tables (markdown, JSON) and plots (PNG) for students and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats shown with one decimal as percentages if ≤ 1."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def student_report(result: Any, teachers: Sequence[Any]) -> str:
    """The report.md written beside a student: what it knows, how it was made, how long it took."""
    st = result.student
    t = result.timings
    lines = [
        f"# Student: `{result.method}`",
        "",
        f"Labels ({len(st.labels)}): {', '.join(st.labels)}",
        "",
        "## Teachers",
        "",
        markdown_table(["teacher", "labels"], [[te.name, ", ".join(te.labels)] for te in teachers]),
        "",
        "## Training",
        "",
        markdown_table(
            ["epoch", "loss", "seconds"],
            [
                [i + 1, f"{loss:.4f}", f"{s:.2f}"]
                for i, (loss, s) in enumerate(zip(result.history.loss, result.history.seconds, strict=True))
            ],
        ),
        "",
        f"Wall time: teacher passes {t.get('teacher', 0):.2f} s, Monte-Carlo passes {t.get('mc', 0):.2f} s, "
        f"student training {t.get('train', 0):.2f} s, total {t.get('total', 0):.2f} s.",
        "",
    ]
    return "\n".join(lines)


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def confusion_png(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (rows: true label, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90 if max(map(len, labels)) > 3 else 0)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    int(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
