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


def _options(options: dict[str, Any] | None) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in (options or {}).items()) or "defaults"


def _method_row(result: Any, info: dict[str, Any]) -> list[str]:
    """The report's "method" setting: its name and options."""
    return ["method", f"`{result.method}` ({_options(info.get('method_options'))})"]


def student_report(result: Any, teachers: Sequence[Any]) -> str:
    """The report.md written beside a student: what it knows, how it was made, how long it took."""
    st = result.student
    t = result.timings
    info = st.info
    arch = st.architecture
    hist = result.history
    resumed = (
        f" Resumed after epoch {hist.resumed_from}: epochs 1–{hist.resumed_from} were trained by the interrupted "
        "run, and the wall times below count only this call."
        if hist.resumed_from
        else ""
    )
    choice = info.get("method_choice")
    chosen = [f"Method chosen by `auto`: `{choice['method']}`, because {choice['why']}.", ""] if choice else []
    if info.get("method_variant"):
        chosen += [f"Variant: {info['method_variant']}", ""]
    lines = [
        f"# Student: `{result.method}`",
        "",
        *chosen,
        f"Labels ({len(st.labels)}): {', '.join(st.labels)}",
        "",
        "## Teachers",
        "",
        markdown_table(["teacher", "labels"], [[te.name, ", ".join(te.labels)] for te in teachers]),
        "",
        "## Training",
        "",
        markdown_table(
            ["setting", "value"],
            [
                _method_row(result, info),
                ["student", f"`{arch.get('preset') or arch.get('class')}` ({_options(info.get('student_options'))})"],
                *[[k, v] for k, v in info.get("train", {}).items()],
                [
                    "rows",
                    f"{info.get('rows', {}).get('total', '?')} ({info.get('rows', {}).get('labeled', 0)} labeled)",
                ],
            ],
        ),
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
        f"student training {t.get('train', 0):.2f} s, total {t.get('total', 0):.2f} s.{resumed}",
        "",
    ]
    return "\n".join(lines)


def test_report(model: Any, x: Any, y: Sequence[str], out: str | Path) -> tuple[dict[str, Any], str]:
    """Score ``model`` on a labeled test set: the metrics, and a report section with per-class precision,
    recall and F1, the confusion matrix as a table, and ``out/confusion.png``."""
    from sklearn.metrics import precision_recall_fscore_support

    from .metrics import confusion, evaluate

    metrics = evaluate(model, x, y)
    if getattr(model, "kind", "multiclass") == "multitask":
        return metrics, _multitask_section(model, metrics)
    if getattr(model, "kind", "multiclass") != "multiclass":
        return metrics, _multilabel_section(model, x, y, metrics)
    pred = model.predict(x)
    y = np.asarray(y).astype(str)
    labels = list(model.labels) + sorted(set(y) - set(model.labels))  # unknown test labels shown as rows too
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    matrix = confusion(y, pred, labels)
    png = confusion_png(matrix, labels, Path(out) / "confusion.png", title="test set (rows: true label)")

    def value(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [
        "## Test set",
        "",
        markdown_table(["metric", "value"], [[k, value(v)] for k, v in metrics.items()]),
        "",
        "### Per class",
        "",
        markdown_table(
            ["label", "precision", "recall", "F1", "support"],
            [
                [lb, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", int(n)]
                for lb, p, r, f, n in zip(labels, prec, rec, f1, support, strict=True)
            ],
        ),
        "",
        "### Confusion matrix (rows: true label, columns: prediction)",
        "",
        markdown_table(
            ["true \\ predicted", *labels], [[lb, *map(int, row)] for lb, row in zip(labels, matrix, strict=True)]
        ),
        "",
        f"![confusion matrix]({png.name})",
        "",
    ]
    return metrics, "\n".join(lines)


def _multitask_section(model: Any, metrics: dict[str, Any]) -> str:
    """The test section of a multitask student: mean accuracy and ROC-AUC, and both per task."""

    def show(v: Any) -> str:
        return "—" if v is None else f"{v:.4f}"

    rows = [[t, show(metrics["accuracy"][t]), show(metrics["roc_auc"][t])] for t in model.labels]
    return "\n".join([
        "## Test set", "",
        f"Mean accuracy {show(metrics['accuracy_mean'])}, mean ROC-AUC {show(metrics['roc_auc_mean'])} "
        f"over {metrics['n']} rows (— : the test rows of that task are all one class).", "",
        markdown_table(["task", "accuracy", "ROC-AUC"], rows), "",
    ])  # fmt: skip


def _multilabel_section(model: Any, x: Any, y: Any, metrics: dict[str, Any]) -> str:
    """The test section of a multilabel student: its metrics and per-label precision, recall and F1."""
    from sklearn.metrics import precision_recall_fscore_support

    from .kinds import multilabel_targets

    truth = multilabel_targets(y, list(model.labels), "y")
    prec, rec, f1, support = precision_recall_fscore_support(truth, model.predict(x), zero_division=0)
    rows = [[lb, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", int(n)]
            for lb, p, r, f, n in zip(model.labels, prec, rec, f1, support, strict=True)]  # fmt: skip
    return "\n".join([
        "## Test set", "",
        markdown_table(["metric", "value"], [[k, f"{v:.4f}" if isinstance(v, float) else str(v)]
                                             for k, v in metrics.items()]),
        "", "### Per label", "",
        markdown_table(["label", "precision", "recall", "F1", "positives"], rows), "",
    ])  # fmt: skip


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
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long class names are never cut
    plt.close(fig)
    return Path(path)


def embedding_report(result: Any, teachers: Sequence[Any]) -> str:
    """The report.md written beside a meta-embedding: its sources, their coverage of the vocabulary, how
    it was made and how long it took."""
    me = result.student
    info = me.info
    rows = [[t.name, len(t.table), t.table.dim, f"{100 * info['coverage'][t.name]:.1f} %"] for t in teachers]
    lines = [
        f"# Meta-embedding: `{result.method}`",
        "",
        f"{len(me)} words × {me.dim} dimensions.",
        "",
        "## Sources",
        "",
        markdown_table(["source", "words", "dim", "share of the vocabulary it knows"], rows),
        "",
        "## Training",
        "",
        markdown_table(["setting", "value"], [_method_row(result, info), *info.get("train", {}).items()]),
        "",
        f"Wall time: {result.timings.get('total', 0):.1f} s (training {result.timings.get('train', 0):.1f} s).",
        "",
    ]
    return "\n".join(lines)
