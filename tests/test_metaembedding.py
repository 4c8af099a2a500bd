"""The embedding kind: word-vector teachers, the meta-embedding methods and the MetaEmbedding student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import amalgamator as am
from amalgamator.errors import AmalgamatorError, DataError
from amalgamator.metaembedding import EmbeddingContext, MetaEmbedding, similarity_scores
from amalgamator.methods.base import StudentOutput
from amalgamator.methods.simme import SimME, cosine_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = [f"w{i}" for i in range(120)]


def _latent(seed: int = 0, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(WORDS), dim)).astype(np.float32)


def _sources() -> tuple[dict, dict, np.ndarray]:
    """Two views of one latent space (random linear maps to 12 and 20 dims, a little noise) over partly
    overlapping vocabularies: words 0-79 and 40-119."""
    z = _latent()
    rng = np.random.default_rng(1)
    a = z @ rng.normal(size=(8, 12)) + 0.05 * rng.normal(size=(len(WORDS), 12))
    b = z @ rng.normal(size=(8, 20)) + 0.05 * rng.normal(size=(len(WORDS), 20))
    return ({w: a[i] for i, w in enumerate(WORDS[:80])}, {w: b[i] for i, w in enumerate(WORDS[40:], 40)}, z)


def _teachers() -> list:
    a, b, _ = _sources()
    return [am.Teacher.from_embeddings(a, name="a"), am.Teacher.from_embeddings(b, name="b")]


def _cosines(vectors: np.ndarray) -> np.ndarray:
    u = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    c = u @ u.T
    return c[np.triu_indices(len(c), 1)]


def test_maskout_a_pair_outside_a_source_learns_nothing_from_it():
    """Eq. 4-5: the loss of a pair that source b does not hold is the squared error against a alone."""
    teachers = _teachers()
    words = ["w0", "w50"]  # w0 only in a; w50 in both
    ctx = EmbeddingContext(teachers, words, [t.table.rows(words) for t in teachers])
    m = SimME()
    m.lookups = [ctx.lookup(j) for j in range(2)]
    e = torch.randn(2, 5)
    loss = m.loss({"x": torch.arange(2)}, StudentOutput(e, e))
    sa = torch.from_numpy(teachers[0].vectors(words))
    y_a = float(cosine_matrix(sa)[0, 1])
    assert float(loss) == pytest.approx((float(cosine_matrix(e)[0, 1]) - y_a) ** 2, rel=1e-5)
    # the same pair with b's vectors moved anywhere: the loss does not change
    b2 = {w: np.random.default_rng(5).normal(size=20) for w in teachers[1].vocabulary}
    other = [teachers[0], am.Teacher.from_embeddings(b2, name="b")]
    ctx2 = EmbeddingContext(other, words, [t.table.rows(words) for t in other])
    m.lookups = [ctx2.lookup(j) for j in range(2)]
    assert float(m.loss({"x": torch.arange(2)}, StudentOutput(e, e))) == pytest.approx(float(loss), rel=1e-6)


def test_simme_keeps_each_source_and_bridges_pairs_no_source_holds():
    a, _, z = _sources()
    teachers = _teachers()
    res = am.amalgamate(teachers, method="simme", method_options={"dim": 16}, epochs=150, batch_size=64, lr=0.05,
                        weight_decay=0.0, seed=0)  # fmt: skip
    me = res.student
    assert isinstance(me, MetaEmbedding) and me.vocabulary == WORDS and me.dim == 16
    src_a = np.stack([a[w] for w in WORDS[:80]])
    assert spearmanr(_cosines(me.table[:80]), _cosines(src_a)).statistic > 0.95  # measured 0.986
    # words 0-39 (only in a) × 80-119 (only in b): no source holds these pairs; SimME places them through
    # the shared words 40-79, where concatenation leaves them orthogonal (similarity 0, no ranking at all)
    cross = [(i, j) for i in range(40) for j in range(80, 120)]
    want = np.array([np.dot(z[i], z[j]) / np.linalg.norm(z[i]) / np.linalg.norm(z[j]) for i, j in cross])
    got = np.array([me.similarity(WORDS[i], WORDS[j]) for i, j in cross])
    assert spearmanr(got, want).statistic > 0.7  # measured 0.825
    cat = am.amalgamate(teachers, method="concat").student
    assert np.allclose([cat.similarity(WORDS[i], WORDS[j]) for i, j in cross], 0)


def test_every_embedding_method_covers_the_union_with_its_width():
    teachers = _teachers()
    widths = {"average": 20, "concat": 32, "aaeme": 10, "caeme": 20, "daeme": 20, "simme": 10}
    for method, width in widths.items():
        opts = {} if method in ("average", "concat") else {"dim": 10}
        me = am.amalgamate(teachers, method=method, method_options=opts, epochs=3, batch_size=32, seed=0).student
        assert me.table.shape == (len(WORDS), width), method
        assert np.isfinite(me.table).all(), method
    avg = am.amalgamate(teachers, method="average").student
    a_only = teachers[0].vectors(["w0"])[0]
    np.testing.assert_allclose(avg.vector("w0")[:12], a_only / np.linalg.norm(a_only), rtol=1e-5)  # b skipped
    cat = am.amalgamate(teachers, method="concat").student
    assert not cat.vector("w0")[12:].any()  # b lacks w0: zeros in b's part


def test_a_fixed_seed_gives_identical_meta_embeddings():
    t = _teachers()
    runs = [am.amalgamate(t, method="simme", method_options={"dim": 8}, epochs=2, batch_size=32, seed=3).student
            for _ in range(2)]  # fmt: skip
    np.testing.assert_array_equal(runs[0].table, runs[1].table)


def test_vocabulary_from_data_and_unknown_words(recwarn):
    t = _teachers()
    me = am.amalgamate(t, ["w1", "w100", "w1", "nowhere"], method="concat").student
    assert me.vocabulary == ["w1", "w100"]
    assert any("no source's vocabulary" in str(w.message) for w in recwarn)
    with pytest.raises(DataError, match="none of the given words"):
        am.amalgamate(t, ["nowhere"], method="concat")


def test_meta_embedding_queries_and_oov():
    me = MetaEmbedding(["a", "b", "c"], np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32), "x")
    assert [w for w, _ in me.most_similar("a", 2)] == ["b", "c"]
    np.testing.assert_array_equal(me.vectors(["c", "zz"]), [[0, 1], [0, 0]])
    with pytest.raises(DataError, match="not in the meta-embedding"):
        me.vector("zz")
    with pytest.raises(DataError, match="not in the vocabulary"):
        me.vectors(["zz"], oov="raise")
    s = similarity_scores(me, [("a", "b"), ("a", "c"), ("b", "c"), ("a", "zz")], [9, 1, 2, 5])
    assert s["coverage"] == 0.75 and s["pairs"] == 4  # the OOV pair is scored 0 and counted


def test_save_load_round_trip_and_word2vec_export(tmp_path):
    me = am.amalgamate(_teachers(), method="average", out=tmp_path / "run").student
    back = am.load_student(tmp_path / "run" / "student")
    assert isinstance(back, MetaEmbedding) and back.vocabulary == me.vocabulary and back.method == "average"
    np.testing.assert_array_equal(back.table, me.table)
    gensim = pytest.importorskip("gensim")
    for binary in (False, True):
        path = me.to_word2vec(tmp_path / f"me.{'bin' if binary else 'txt'}", binary=binary)
        kv = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
        assert list(kv.index_to_key) == me.vocabulary
        np.testing.assert_allclose(kv.vectors, me.table, rtol=1e-6, atol=1e-7)
    kv = me.to_keyedvectors()
    assert kv.most_similar("w1", topn=1)[0][0] == me.most_similar("w1", 1)[0][0]
    again = am.Teacher.from_embeddings(kv, name="meta")  # a meta-embedding can teach a later one
    assert again.vocabulary == me.vocabulary


def test_corrupt_meta_embedding_folder_is_a_clear_error(tmp_path):
    am.amalgamate(_teachers(), method="average", out=tmp_path / "run")
    (tmp_path / "run" / "student" / "vocabulary.txt").write_text("w0\nw1\n")
    with pytest.raises(AmalgamatorError, match="vocabulary.txt has 2 words but the table 120 rows"):
        am.load_student(tmp_path / "run" / "student")


def test_malformed_vector_file_names_its_line(tmp_path):
    f = tmp_path / "vec.txt"
    f.write_text("3 2\na 0.1 0.2\nb 0.3\nc 0.5 0.6\n")
    with pytest.raises(DataError, match="line 3"):
        am.Teacher.from_embeddings(f)


def test_wrong_method_or_mixed_kinds_are_refused():
    t = _teachers()
    with pytest.raises(AmalgamatorError, match="simme"):
        am.amalgamate(t, method="kd")
    clf = am.Teacher(torch.nn.Linear(4, 2), labels=["x", "y"], name="clf")
    with pytest.raises(AmalgamatorError, match="cannot be amalgamated into one student"):
        am.amalgamate([t[0], clf], np.zeros((4, 4), np.float32), method="simme")
    with pytest.raises(AmalgamatorError, match="word-embedding table"):
        t[0].logits(np.zeros((2, 4), np.float32))


def test_auto_picks_simme_for_word_vectors_and_says_why():
    res = am.amalgamate(_teachers(), epochs=1, batch_size=64)
    assert res.method_object.choice["method"] == "simme"
    assert res.student.dim == 300


def test_recipe_runs_and_evaluate_prints_the_similarity_table(tmp_path):
    from typer.testing import CliRunner

    from amalgamator.cli import app

    a, b, _ = _sources()
    for name, table in (("a", a), ("b", b)):
        MetaEmbedding(list(table), np.stack(list(table.values())), "").to_word2vec(tmp_path / f"{name}.txt")
    (tmp_path / "recipe.yaml").write_text(
        "teachers:\n  - {path: a.txt, kind: embedding}\n  - {path: b.txt, kind: embedding, name: bee}\nmethod: concat\n"
    )
    (tmp_path / "pairs.tsv").write_text("w1\tw2\t3.0\nw1\tw50\t1.0\nw3\tw90\t2.0\nw4\tnowhere\t5.0\n")
    runner = CliRunner()
    got = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")])
    assert got.exit_code == 0, got.output
    me = am.load_student(tmp_path / "out" / "student")
    assert me.method == "concat" and len(me) == len(WORDS) and me.dim == 32
    got = runner.invoke(app, ["evaluate", str(tmp_path / "out" / "student"), "--data", str(tmp_path / "pairs.tsv")])
    assert got.exit_code == 0, got.output
    assert "pairs.tsv" in got.output and "75.0 %" in got.output  # coverage: the pair with 'nowhere' counts
