"""The command line end to end on scikit-learn digits: run, evaluate, inspect, methods, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from amalgamator import cli
from amalgamator.data import Inputs
from amalgamator.methods import REGISTRY
from amalgamator.models import Identity, build
from amalgamator.student import Student, UnionNet

from .conftest import run_cli

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]


def _teacher_folder(folder: Path, x: np.ndarray, y: np.ndarray, labels: list[str], seed: int) -> None:
    """A saved student folder over ``labels``: what Teacher.from_pretrained reads as a teacher."""
    torch.manual_seed(seed)
    _, backbone, opts = build("mlp", Inputs(x), {"hidden": [32], "dropout": 0.1})
    net = UnionNet(backbone, backbone.out_dim, len(labels))
    keep = np.isin(y, labels)
    xt, yt = torch.as_tensor(x[keep]), torch.as_tensor([labels.index(v) for v in y[keep]])
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    net.train()
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    Student(Identity(), net.eval(), labels, architecture={"preset": "mlp", "options": opts}).save(folder)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Teachers, npz files and a recipe in one folder, as a user would lay them out."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("project")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = np.array([str(v) for v in d.target])
    perm = np.random.default_rng(0).permutation(len(x))
    t, p, s = perm[:600], perm[600:1200], perm[1200:1500]
    _teacher_folder(root / "teachers" / "low", x[t], y[t], LOW, 0)
    _teacher_folder(root / "teachers" / "high", x[t], y[t], HIGH, 1)
    np.savez(root / "pool.npz", x=x[p])
    np.savez(root / "test.npz", x=x[s], y=y[s])
    np.savez(root / "nolabels.npz", x=x[s])
    bad = y[p[:20]].astype("U10")
    bad[3] = "eleven"
    np.savez(root / "few_bad.npz", x=x[p[:20]], y=bad)
    (root / "recipe.yaml").write_text(
        "teachers:\n"
        "  - path: teachers/low\n    name: low\n    features: backbone.body.1\n"
        "  - teachers/high\n"
        "data: pool.npz\ntest: test.npz\nmethod: kd\nmethod_options: {tau: 2.0}\n"
        "student: mlp\nstudent_options: {hidden: [64]}\n"
        "train: {epochs: 3, batch_size: 64, lr: 0.01, seed: 0}\nout: out\n"
    )
    return root


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AMALGAMATOR_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("AMALGAMATOR_QUIET", "1")


_main = run_cli


def _env_vars(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AMALGAMATOR_STORE": str(tmp_path / "store"), "AMALGAMATOR_QUIET": "1", "COLUMNS": "80"}


@pytest.mark.parametrize("command", ["demo", "run", "evaluate", "inspect", "methods", "bench"])
def test_every_help_exits_zero(command, capsys):
    assert _main(command, "--help") == 0
    assert "Usage" in capsys.readouterr().out


def test_methods_names_unbroken_at_80_columns(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "amalgamator", "methods"], capture_output=True, text=True, env=_env_vars(tmp_path)
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert REGISTRY and all(name in words for name in REGISTRY)


def test_methods_table_keeps_long_names_whole():
    from io import StringIO

    from rich.console import Console

    class Long:
        family, paper, uses_labels = "B: somewhere", "A paper et al. 2099 " * 3, "never"
        summary = "a long summary that has to wrap over several lines of a narrow console " * 2

    registry = {**REGISTRY, "a-rather-long-method-name": Long}
    buf = StringIO()
    Console(file=buf, width=80).print(cli.methods_table(registry))
    assert all(name in buf.getvalue().split() for name in registry)


def test_run_evaluate_inspect_end_to_end(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert _main("run", project / "recipe.yaml", "--out", out) == 0
    shown = capsys.readouterr().out
    assert "kd" in shown and "final loss" in shown and "test accuracy" in shown
    assert (out / "student" / "student.json").exists() and (out / "student" / "model.safetensors").exists()
    assert "## Test set" in (out / "report.md").read_text()
    test_metrics = json.loads((out / "metrics.json").read_text())["test"]
    meta = json.loads((out / "student" / "student.json").read_text())
    assert meta["labels"] == LOW + HIGH and meta["method"] == "kd"

    assert _main("evaluate", out / "student", "--data", project / "test.npz", "--json") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 300 and metrics["accuracy"] == pytest.approx(test_metrics["accuracy"])
    assert metrics["accuracy"] > 0.4  # two digit experts merged: far above chance (0.1)

    assert _main("evaluate", out / "student", "--data", project / "test.npz") == 0
    assert "accuracy" in capsys.readouterr().out

    assert _main("inspect", project / "recipe.yaml") == 0
    shown = capsys.readouterr().out
    assert "low" in shown and "high" in shown and "backbone.body.1" in shown
    assert "union: 10 labels" in shown and "none" in shown  # disjoint label sets
    assert all(name in shown for name in REGISTRY)
    supervised = next(line for line in shown.splitlines() if "supervised" in line)
    assert "needs labeled" in supervised


def test_run_defaults_out_beside_recipe_and_resume(project, capsys):
    assert _main("run", project / "recipe.yaml") == 0
    assert (project / "out" / "student" / "student.json").exists()
    assert _main("run", project / "recipe.yaml", "--resume") == 0
    shown = capsys.readouterr().out
    assert "resumed after epoch 3" in shown and "3 (resumed" in shown


def test_unknown_label_in_labeled_is_one_line(project, tmp_path):
    recipe = project / "bad_labels.yaml"
    recipe.write_text("teachers: [teachers/low, teachers/high]\ndata: pool.npz\nlabeled: few_bad.npz\nmethod: kd\n")
    out = subprocess.run(
        [sys.executable, "-m", "amalgamator", "run", str(recipe), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=_env_vars(tmp_path),
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'eleven'" in lines[0], out.stderr


def test_recipe_error_reaches_user_as_one_line(project, capsys):
    recipe = project / "typo.yaml"
    recipe.write_text("teachers: [teachers/low]\ndata: pool.npz\ntrain: {epoch: 2}\n")
    assert _main("run", recipe) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Did you mean: epochs" in err


def test_evaluate_needs_labels_and_a_student(project, tmp_path, capsys):
    assert _main("run", project / "recipe.yaml", "--out", tmp_path / "o") == 0
    capsys.readouterr()
    assert _main("evaluate", tmp_path / "o" / "student", "--data", project / "nolabels.npz") == 2
    assert "has no labels" in capsys.readouterr().err
    assert _main("evaluate", tmp_path / "nothing", "--data", project / "test.npz") == 2
    assert "not a student folder" in capsys.readouterr().err


def test_interrupt_says_how_to_resume(project, tmp_path, monkeypatch, capsys):
    import amalgamator.recipe

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(amalgamator.recipe, "run", interrupted)
    assert _main("run", project / "recipe.yaml", "--out", tmp_path / "o") == 130
    err = capsys.readouterr().err
    assert "--resume" in err and str(tmp_path / "o") in err


def test_unknown_bench_suite_is_one_line(capsys):
    assert _main("bench", "no-such-suite") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no-such-suite" in err and "\n" not in err


def test_usage_error_exit_code(capsys):
    assert _main("run") == 2
    assert "Traceback" not in capsys.readouterr().err
