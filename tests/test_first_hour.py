"""Issue 9, the first hour: SYN inside the package, installing as a library, `bench --help`,
paper names, charts whose legends cover nothing, and an estimated prior that never collapses."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c", "d"]


_main = run_cli


# 1. SYN ships with the package ------------------------------------------------------------------


def test_syn_is_package_data_and_nothing_reads_outside_the_repository(monkeypatch):
    from amalgamator.bench.sequences import load_syn, syn_folder

    monkeypatch.delenv("AMALGAMATOR_SYN", raising=False)
    folder = syn_folder()
    package = Path(am.__file__).resolve().parent
    assert folder.resolve().is_relative_to(package)
    assert load_syn().x_train.shape == (300, 1, 60)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = [p.relative_to(package).as_posix() for p in folder.iterdir()]
    assert all(any(fnmatch.fnmatch(f, pat) for pat in patterns["amalgamator"]) for f in shipped), shipped
    outside = re.compile(r"\.\./shared|shared[/\"', ]+data")  # the folder beside the repository
    here = Path(__file__).resolve()
    files = [p for d in ("src", "tests") for p in (ROOT / d).rglob("*.py") if p.resolve() != here]
    assert not [str(p) for p in files if outside.search(p.read_text())]


# 2. Installing as a library ---------------------------------------------------------------------


def test_readme_shows_install_with_every_extra_and_gitignore_covers_outputs():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Quick start") < readme.index("## Install") < readme.index("## Python")
    install = readme[readme.index("## Install") : readme.index("## Python")]
    assert "pip install ." in install and "pip install torch==2.13.0" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras and all(f"`{name}`" in install for name in extras)
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"build/", "runs/", "*.egg-info/"} <= set(ignored)


# 3a. bench --help names the suites ---------------------------------------------------------------


def test_bench_help_lists_every_suite_and_an_unknown_one_is_one_line(capsys):
    from amalgamator.bench import SUITES

    assert _main("bench", "--help") == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name, suite in SUITES.items():
        assert f"{name}: {suite.description}" in shown
    assert _main("bench", "nope") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and all(name in err for name in SUITES)


# 3b. papers by author, year and title ------------------------------------------------------------


def test_every_method_names_its_paper_by_author_year_and_title():
    from amalgamator.methods import REGISTRY

    for name, cls in REGISTRY.items():
        assert not re.search(r"\(\d{3}\)|^\s*\d{3}\b|thesis \(", cls.paper), (name, cls.paper)
        if cls.paper.startswith("ours: a method chosen"):  # auto: a selector, no paper of its own
            continue
        assert re.search(r"[A-Z][^\W\d_]+( et al\.)? (19|20)\d\d, [A-Z][\w-]+ \w+", cls.paper), (name, cls.paper)


# 3c. charts: legends outside the bars, names whole -----------------------------------------------


def test_diagnosis_chart_legends_cover_no_axes_and_long_names_fit(tmp_path):
    import matplotlib.pyplot as plt

    from amalgamator.diagnose import Diagnosis, TeacherReport

    labels = [f"a class with a rather long descriptive name {i}" for i in range(6)]
    d = Diagnosis(
        teachers=[TeacherReport(f"teacher-with-a-long-name-{k}", 3, 0.5, 0.9, 0.6, 2.0, k == 0) for k in "AB"],
        labels=labels,
        prior=[1 / 6] * 6,
        naive_mass=[0.4, 0.3, 0.1, 0.1, 0.05, 0.05],
        calibrated_mass=[1 / 6] * 6,
        sinks=labels[:2],
        risk=0.4,
    )
    fig = d.figure()
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = fig.axes
        legends = [ax.get_legend() for ax in axes]
        assert all(lg is not None for lg in legends)
        for lg in legends:
            box = lg.get_window_extent(renderer)
            assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes)
        ticks = [t for ax in axes for t in ax.get_xticklabels()]
        assert [t.get_text() for t in axes[0].get_xticklabels()] == labels  # whole names, not cut
        page = fig.bbox
        for t in [*ticks, *legends]:
            box = t.get_window_extent(renderer)
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0, t
    finally:
        plt.close(fig)
    assert d.plot(tmp_path / "diagnosis.png").stat().st_size > 1000


# 4. An estimated prior never collapses (it did under EM: shares 1.00/0.00, temperatures 0.01/1000) ---


@pytest.fixture(scope="module")
def balanced_pool():
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(CLASSES), 200)
    return (np.eye(4)[[CLASSES.index(v) for v in y]] + rng.normal(0, 0.2, (len(y), 4))).astype(np.float32)


def _heads() -> list[tuple[str, list[str], torch.Tensor]]:
    """Two well-behaved linear teachers: A sure on a/b rows, B on c/d rows, both unsure elsewhere."""
    return [
        ("A", ["a", "b"], torch.tensor([[3.0, 0, 0, 0], [0, 3, 0, 0]])),
        ("B", ["c", "d"], torch.tensor([[0.0, 0, 3, 0], [0, 0, 0, 3]])),
    ]


def _linear_teachers() -> list[am.Teacher]:
    out = []
    for name, labels, w in _heads():
        m = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            m.weight.copy_(w)
        out.append(am.Teacher(m, labels=labels, name=name))
    return out


@pytest.mark.parametrize("prior", ["em", "estimate"])
def test_estimated_prior_on_a_balanced_pool_stays_balanced(balanced_pool, prior, recwarn):
    d = am.diagnose(_linear_teachers(), balanced_pool, prior=prior)
    assert d.prior == pytest.approx([0.25] * 4, abs=0.03)  # not 1.00 / 0.00
    assert all(0.4 < t.share < 0.6 for t in d.teachers) and all(0.1 < t.temperature < 100 for t in d.teachers)
    uniform = am.diagnose(_linear_teachers(), balanced_pool)
    assert d.risk == pytest.approx(uniform.risk, abs=0.02)
    assert not [w for w in recwarn if "prior" in str(w.message)]


def test_cli_inspect_prior_em_shows_a_sane_diagnosis(balanced_pool, tmp_path, capsys):
    from amalgamator.models import MLP
    from amalgamator.student import UnionNet

    for name, labels, w in _heads():
        net = UnionNet(MLP(4, [], 0.0), 4, len(labels))
        with torch.no_grad():
            net.head.weight.copy_(w)
            net.head.bias.zero_()
        arch = {"preset": "mlp", "options": {"in_dim": 4, "hidden": [], "dropout": 0.0}}
        am.Student(am.models.Identity(), net, labels, architecture=arch).save(tmp_path / name)
    np.savez(tmp_path / "pool.npz", x=balanced_pool)
    (tmp_path / "recipe.yaml").write_text("teachers: [{path: A}, {path: B}]\ndata: pool.npz\nmethod: calibrated\n")
    code = _main("inspect", tmp_path / "recipe.yaml", "--data", tmp_path / "pool.npz", "--prior", "em")
    assert code == 0
    captured = capsys.readouterr()
    out, err = " ".join(captured.out.split()), " ".join(captured.err.split())
    assert "collapsed" not in err and "prior em" in out
    assert "1000.00" not in out and "0.000" not in out  # no collapsed temperature or class prior
