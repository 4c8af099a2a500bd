"""TF-IDF students featurize their pool sparse (``SparseRows``): the same students as the dense pool gave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator import api
from amalgamator.data import Inputs
from amalgamator.methods.base import Context, network_outputs
from amalgamator.methods.propagate import knn_operator
from amalgamator.models.featurize import Featurizer
from amalgamator.models.text import TfidfFeaturizer
from amalgamator.rows import SparseRows

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:.*optimiser steps:UserWarning"),  # small runs, on purpose
    pytest.mark.filterwarnings("ignore:aka. no teacher has a feature tap:UserWarning"),
]

WORDS = {
    "sports": "goal match team coach striker referee league score stadium season player win".split(),
    "cooking": "sauce oven bake onion garlic dough recipe simmer pepper butter roast flour".split(),
    "computers": "server laptop code compiler memory database bug network disk update kernel cache".split(),
    "weather": "rain wind snow storm forecast cloud sunny frost thunder humid fog breeze".split(),
}
FILLER = "the a of and today very we it was some new".split()
TOPICS = sorted(WORDS)
TFIDF = {"encoder": "tfidf", "hidden": [32]}


def texts(n_per_topic: int, seed: int) -> tuple[list[str], list[str]]:
    """Short synthetic texts: a few words of their topic among filler words, shuffled."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n_per_topic):
        for topic in TOPICS:
            words = list(rng.choice(WORDS[topic], 4)) + list(rng.choice(FILLER, int(rng.integers(2, 6))))
            rng.shuffle(words)
            xs.append(" ".join(words))
            ys.append(topic)
    return xs, ys


POOL, POOL_Y = texts(75, 0)  # 300 rows
FEW, FEW_Y = texts(3, 1)  # 12 labeled rows, 3 per topic
NEW, _ = texts(5, 2)


def _teacher(labels: list[str], seed: int) -> am.Teacher:
    x, y = texts(40, 10 + seed)
    keep = [i for i, t in enumerate(y) if t in labels]
    st = api.train_classifier(
        [x[i] for i in keep], [y[i] for i in keep], student="text", student_options=TFIDF, epochs=40, lr=1e-2,
        seed=seed, progress=False,
    )  # fmt: skip
    return st.as_teacher(name="+".join(labels))


@pytest.fixture(scope="module")
def teachers() -> list[am.Teacher]:
    """Two TF-IDF text students as teachers, on disjoint halves of the topics."""
    return [_teacher(TOPICS[:2], 0), _teacher(TOPICS[2:], 1)]


class _MultilabelHead(nn.Module):
    """A multilabel teacher over a fitted TF-IDF featurizer's rows: its topics' words score their label."""

    def __init__(self, featurizer: TfidfFeaturizer, labels: list[str]):
        super().__init__()
        vocab = featurizer.vectorizer.vocabulary_
        self.weight = torch.zeros(len(labels), featurizer.out_dim)
        for j, label in enumerate(labels):
            for w in WORDS[label]:
                if w in vocab:
                    self.weight[j, vocab[w]] = 8.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T - 1.0


def _amalgamate(teachers: list[am.Teacher], method: str, dense: bool, monkeypatch, **kwargs) -> tuple[am.Result, list]:
    """One fixed-seed run; ``dense`` featurizes the pool the old way (one dense tensor). Returns the result and the
    featurized pool each Context was given. A sparse run never densifies more than a batch of rows at once."""
    seen: list = []
    read = SparseRows.__getitem__

    def spy(*args, **kw):
        ctx = Context(*args, **kw)
        seen.append(ctx.features)
        return ctx

    def batch_at_most_512(self: SparseRows, idx):
        out = read(self, idx)
        assert len(out) <= 512, f"{len(out)} rows densified at once"
        return out

    with monkeypatch.context() as m:
        m.setattr(api, "Context", spy)
        m.setattr(SparseRows, "__getitem__", batch_at_most_512)
        if dense:
            m.setattr(TfidfFeaturizer, "transform", Featurizer.transform)  # the old path: whole batches concatenated
        options = {"student": "text", "student_options": TFIDF, "epochs": 8, "batch_size": 64, "lr": 1e-2, "seed": 0}
        res = am.amalgamate(teachers=teachers, data=POOL, method=method, **{**options, **kwargs})
    return res, seen


def _same_student(a: am.Student, b: am.Student) -> None:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    np.testing.assert_array_equal(a.predict_proba(NEW), b.predict_proba(NEW))


def test_tfidf_transform_is_sparse_and_equals_the_dense_batches():
    feat = TfidfFeaturizer().fit(Inputs(POOL))
    rows = feat.transform(Inputs(POOL))
    assert isinstance(rows, SparseRows) and rows.shape == (len(POOL), feat.out_dim) and len(rows) == len(POOL)
    assert rows.matrix.dtype == np.float32 and rows.matrix.nnz < 0.1 * len(POOL) * feat.out_dim
    dense = torch.cat([feat(POOL[i : i + 64]) for i in range(0, len(POOL), 64)])
    assert dense.dtype == torch.float32
    assert torch.equal(rows[10:20], dense[10:20])
    idx = torch.tensor([5, 0, 299, 5])
    assert torch.equal(rows[idx], dense[idx]) and torch.equal(rows[idx.numpy()], dense[idx])
    assert (
        rows.fingerprint()
        == feat.transform(Inputs(list(POOL))).fingerprint()
        != feat.transform(Inputs(NEW)).fingerprint()
    )
    # batches of 16 rows: slices of the dense tensor stay 16-byte aligned, as fresh arrays are (MKL may round
    # a less aligned slice's sums differently in the last bit; batches of 512, as the methods read, are aligned)
    net = nn.Linear(feat.out_dim, 3)
    assert torch.equal(network_outputs(net, rows, batch_size=16), network_outputs(net, dense, batch_size=16))
    assert torch.equal(network_outputs(net, rows, 16, rows=idx), network_outputs(net, dense[idx], 16))


def test_sparse_pool_trains_the_same_student_as_the_dense_pool(teachers, monkeypatch, tmp_path):
    sparse, seen = _amalgamate(teachers, "kd", dense=False, monkeypatch=monkeypatch)
    assert len(seen) == 1 and isinstance(seen[0], SparseRows) and len(seen[0]) == len(POOL)
    dense, seen_dense = _amalgamate(teachers, "kd", dense=True, monkeypatch=monkeypatch)
    assert isinstance(seen_dense[0], torch.Tensor)
    assert torch.equal(seen[0][0 : len(POOL)], seen_dense[0])
    _same_student(sparse.student, dense.student)
    st = sparse.student
    assert float(np.mean(st.predict(POOL) == np.array(POOL_Y))) > 0.8

    back = am.load_student(st.save(tmp_path / "student"))
    assert back.featurizer.config() == st.featurizer.config()
    assert back.featurizer.tensors().keys() == {"idf"}
    np.testing.assert_array_equal(back.predict_proba(NEW), st.predict_proba(NEW))
    teacher = am.Teacher.from_pretrained(tmp_path / "student")
    torch.testing.assert_close(teacher.logits(NEW), st.logits(NEW), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("method", "options"), [("tc", {}), ("selftrain", {"rounds": 2, "min_steps": 50, "threshold": 0.4}), ("refine", {})]
)
def test_methods_reading_features_match_the_dense_pool(teachers, monkeypatch, method, options):
    """Each reads the pool through the student (or its trust learner) a batch at a time: the same outputs."""
    run = {"labeled": (FEW, FEW_Y), "method_options": options}
    sparse, seen = _amalgamate(teachers, method, dense=False, monkeypatch=monkeypatch, **run)
    dense, _ = _amalgamate(teachers, method, dense=True, monkeypatch=monkeypatch, **run)
    assert isinstance(seen[0], SparseRows) and len(seen[0]) == len(POOL) + len(FEW)
    if method == "selftrain":
        assert int(dense.diagnostics["pseudo_labeled"].sum()) > 0  # the student read the pool to pseudo-label it
    for key in ("target", "trust", "final_y"):
        if key in dense.diagnostics:
            assert torch.equal(sparse.diagnostics[key], dense.diagnostics[key]), key
    _same_student(sparse.student, dense.student)


def test_aka_reads_a_sparse_pool(monkeypatch):
    feat = TfidfFeaturizer().fit(Inputs(POOL))
    halves = [TOPICS[:2], TOPICS[1:]]  # overlapping label sets: label 1 has two teachers
    teachers = [
        am.Teacher(_MultilabelHead(feat, labels), labels, name=f"T{k}", kind="multilabel", preprocess=feat)
        for k, labels in enumerate(halves)
    ]
    sparse, seen = _amalgamate(teachers, "aka", dense=False, monkeypatch=monkeypatch)
    dense, _ = _amalgamate(teachers, "aka", dense=True, monkeypatch=monkeypatch)
    assert isinstance(seen[0], SparseRows)
    _same_student(sparse.student, dense.student)


def test_propagate_spreads_labels_over_the_sparse_neighbour_graph(teachers, monkeypatch):
    res, seen = _amalgamate(teachers, "propagate", dense=False, monkeypatch=monkeypatch, labeled=(FEW, FEW_Y))
    assert isinstance(seen[0], SparseRows)
    s = knn_operator(seen[0].matrix, 10)
    assert s.shape == (len(seen[0]),) * 2 and abs(s - s.T).max() < 1e-12
    truth = np.array([TOPICS.index(t) for t in POOL_Y + FEW_Y])
    spread = res.diagnostics["spread"].argmax(1).numpy()
    assert float((spread == truth).mean()) > 0.8  # the few labels reach their topics' rows through the graph
    assert float(np.mean(res.student.predict(POOL) == np.array(POOL_Y))) > 0.5
