"""Figures of the benchmark suites (PNG, matplotlib with the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..methods.muki import normalised_uncertainty  # noqa: E402


def outside_legend(ax, fontsize: float = 7, **kwargs: Any) -> Any:
    """A legend to the right of ``ax``, outside it, so it never covers a bar or a point (the figure's
    constrained layout and ``bbox_inches="tight"`` make room for it)."""
    return ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kwargs)


def accuracy_bars(results: dict, path: Path) -> None:
    """Grouped bars: mean accuracy of each main row, one group per case."""
    cases = results["cases"]
    keys = list(cases)
    rows = [r for r in cases[keys[0]]["runs"][0]["rows"] if not r.startswith("teacher") and "w/o" not in r]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) + 2), 4), layout="constrained")
    for j, row in enumerate(rows):
        means = [100 * np.mean([r["rows"][row]["accuracy"] for r in cases[k]["runs"]]) if row in
                 cases[k]["runs"][0]["rows"] else np.nan for k in keys]  # fmt: skip
        ax.bar(np.arange(len(keys)) + j * width, means, width, label=row)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [cases[k]["title"] for k in keys], rotation=20,
                  fontsize=8, ha="right", rotation_mode="anchor")  # fmt: skip
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    outside_legend(ax)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def uncertainty_histograms(diagnostics: dict, teachers, x_pool, y_pool, title: str, path: Path) -> None:
    """MUKI Fig. 2: normalised uncertainty of the right vs the wrong teacher, plain vs MC dropout.
    A teacher is right on an example when it owns its true class (with overlapping groups, two may)."""
    owns = np.array([[y in t.labels for t in teachers] for y in y_pool])  # rows × teachers
    plain = np.stack([normalised_uncertainty(t.logits(x_pool).softmax(-1)).numpy() for t in teachers], 1)
    mc = diagnostics["uncertainty"].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True, layout="constrained")
    bins = np.linspace(0, 1, 31)
    for ax, u, name in ((axes[0], plain, "prediction entropy (K = 1)"), (axes[1], mc, "Monte-Carlo dropout")):
        right, wrong = u[owns], u[~owns]
        ax.hist(right, bins, alpha=0.6, density=True, label="right teacher")
        ax.hist(wrong, bins, alpha=0.6, density=True, label="wrong teacher")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("normalised uncertainty u / log|Y|")
    axes[0].set_ylabel("density")
    outside_legend(axes[-1], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def multiclass_plots(results: dict, plots: dict[str, Any], out: Path, suffix: str = "") -> dict[str, str]:
    """Write every figure of the multiclass suite; returns {caption: file name relative to ``out``}."""
    figures: dict[str, str] = {}
    name = f"multiclass{suffix}-accuracy.png"
    accuracy_bars(results, out / name)
    figures["test accuracy per case"] = name
    for key, (diag, teachers, x_pool, y_pool) in plots.get("uncertainty", {}).items():
        name = f"multiclass{suffix}-uncertainty-{key}.png"
        title = f"{results['cases'][key]['title']}: uncertainty of the right vs the wrong teacher (seed 0)"
        uncertainty_histograms(diag, teachers, x_pool, y_pool, title, out / name)
        figures[f"MUKI Fig. 2 analogue, {key}"] = name
    if "cfl" in plots:
        name = f"multiclass{suffix}-cfl-tsne.png"
        if cfl_tsne(*plots["cfl"], out / name):
            figures["t-SNE of teachers' and student's features in CFL's common space (Fashion-MNIST plain)"] = name
    return figures


def cfl_tsne(result, teachers, x, y, path: Path) -> bool:
    """CFL Fig. 3 analogue: t-SNE of teachers' and student's features in the common space.

    Each teacher is shown on the pool examples of its own classes; the student on all of them.
    Colours are the true classes, markers the model.
    """
    import torch
    from sklearn.manifold import TSNE

    method = result.method_object
    if method is None or not hasattr(method, "common_features"):
        return False
    st = result.student
    with torch.no_grad():
        student_feat = st.network.eval().forward_features(st.featurizer(torch.as_tensor(x)))[1]
        teacher_feat = [t.run(torch.as_tensor(x), features=True)[1][t.features[-1]] for t in teachers]
        s_common, t_common = method.common_features(student_feat, teacher_feat)
    groups = [("student", s_common.numpy(), np.ones(len(y), bool))]
    groups += [(t.name, tc.numpy(), np.isin(y, list(t.labels))) for t, tc in zip(teachers, t_common, strict=True)]
    stacked = np.concatenate([g[1][g[2]] for g in groups])
    emb = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(stacked)
    labels = sorted(set(y))
    colours = {lb: plt.cm.tab10(i % 10) for i, lb in enumerate(labels)}
    markers = ["o", "^", "s", "D", "v"]
    fig, ax = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
    start = 0
    for gi, (name, _, keep) in enumerate(groups):
        pts = emb[start : start + keep.sum()]
        start += keep.sum()
        ax.scatter(pts[:, 0], pts[:, 1], s=6, marker=markers[gi % len(markers)], alpha=0.55,
                   c=[colours[v] for v in y[keep]], label=name)  # fmt: skip
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[lb], label=lb) for lb in labels]
    handles += [plt.Line2D([], [], marker=markers[i % len(markers)], ls="", color="grey", label=g[0])
                for i, g in enumerate(groups)]  # fmt: skip
    outside_legend(ax, handles=handles, fontsize=6, ncol=1 if len(handles) <= 16 else 2)
    ax.set_title("CFL common space (t-SNE): colour = true class, marker = model", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def trust_plot(results: dict, path: Path) -> Path:
    """Teacher Coordinator's mean trust per teacher for each true class (lowest label ratio run),
    one panel per dataset and setting; a class's owners are named under it."""
    data = list(results["data"])
    settings = list(results["data"][data[0]]["runs"][0]["settings"])
    fig, axes = plt.subplots(len(data), len(settings), figsize=(4.2 * len(settings), 3.6 * len(data)), squeeze=False,
                             layout="constrained")  # fmt: skip
    for i, ds in enumerate(data):
        runs = results["data"][ds]["runs"]
        for j, setting in enumerate(settings):
            ax, s0 = axes[i][j], runs[0]["settings"][setting]
            ratio = min(s0["ratios"], key=float)
            per_run = [run["settings"][setting]["ratios"][ratio]["tc"]["trust_by_class"] for run in runs]
            classes = list(per_run[0])
            trust = np.nanmean([[r[c] for c in classes] for r in per_run], axis=0)  # classes × teachers
            groups = s0["groups"]
            width = 0.8 / trust.shape[1]
            for k in range(trust.shape[1]):
                ax.bar(np.arange(len(classes)) + k * width, trust[:, k], width, label=f"trust in T{k + 1}")
            ticks = [f"{c} ({'+'.join(f'T{k + 1}' for k, g in enumerate(groups) if c in g)})" for c in classes]
            ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, ticks, fontsize=6, rotation=45, ha="right",
                          rotation_mode="anchor")  # fmt: skip
            ax.set_ylim(0, 1)
            ax.set_title(f"{results['data'][ds]['title']}, {setting}, {100 * float(ratio):.0f}% labels", fontsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="outside right upper")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
