"""Shared fixtures: tiny digits problems with two teachers on disjoint halves of the classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator import cli
from amalgamator.data import Inputs
from amalgamator.labels import LabelSpace
from amalgamator.methods.base import Context
from amalgamator.store import LOGITS

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for a test file that opts in (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    its tests stay small and leave the rest of the machine alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    """Every test gets its own store folder and no progress bars."""
    monkeypatch.setenv("AMALGAMATOR_STORE", str(tmp_path_factory.mktemp("store")))
    monkeypatch.setenv("AMALGAMATOR_QUIET", "1")


def fit_on_labels(m: nn.Module, x: np.ndarray, y: np.ndarray, labels: list[str], steps: int) -> nn.Module:
    """Full-batch Adam on the rows whose label is in ``labels``: a quick test teacher."""
    keep = np.isin(y, labels)
    xt = torch.as_tensor(x[keep])
    yt = torch.as_tensor([labels.index(v) for v in y[keep]])
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    return m.eval()


def fit_mlp(x: np.ndarray, y: np.ndarray, labels: list[str], hidden: int, seed: int, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, len(labels)))
    return fit_on_labels(m, x, y, labels, 80)


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(str)
    perm = np.random.default_rng(0).permutation(len(x))
    return x, y, perm[:600], perm[600:1200], perm[1200:]


@pytest.fixture(scope="session")
def teachers(digits):
    x, y, t, _, _ = digits
    return [
        am.Teacher(fit_mlp(x[t], y[t], LOW, 32, 0), labels=LOW, name="low", features="1"),
        am.Teacher(fit_mlp(x[t], y[t], HIGH, 48, 1), labels=HIGH, name="high", features="1"),
    ]


def run_cli(*args) -> int:
    """Run the command line in-process; its exit code (``main`` always exits)."""
    with pytest.raises(SystemExit) as done:
        cli.main([str(a) for a in args])
    return int(done.value.code or 0)


def logits_context(logits_a, logits_b, labels_a=("a", "b"), labels_b=("c", "d")) -> Context:
    """A method Context over two stand-in teachers with given stored logits (no models, no store)."""

    class _T:
        def __init__(self, labels):
            self.labels = LabelSpace(labels)
            self.kind = "multiclass"
            self.has_dropout = False
            self.name = "t"

    teachers = [_T(labels_a), _T(labels_b)]
    union = LabelSpace.union([t.labels for t in teachers])
    outs = [{LOGITS: torch.tensor(logits_a)}, {LOGITS: torch.tensor(logits_b)}]
    n = len(logits_a)
    return Context(teachers, union, outs, Inputs(torch.zeros(n, 1)), torch.full((n,), -1))
