"""Word-vector tables: every input format gives the same table, and every broken file names its line."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from amalgamator import wordvectors as wv
from amalgamator.errors import DataError
from amalgamator.wordvectors import UnknownWordError, WordVectors, read_word_vectors, write_word2vec

WORDS = ["the", "cat", "sat", "naïve", "日本"]


@pytest.fixture
def table() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(WORDS), 4)).astype(np.float32)
    vecs[2] *= 1e-7  # tiny and
    vecs[3] *= 1e6  # huge values must round-trip too
    return list(WORDS), vecs


@pytest.fixture(params=["numpy", "pandas"])
def parser(request, monkeypatch) -> str:
    """Run a text-file test through both fast parsers (pandas is used for big batches when installed)."""
    if request.param == "pandas":
        pytest.importorskip("pandas")
        monkeypatch.setattr(wv, "_PANDAS_MIN_LINES", 1)
    else:
        monkeypatch.setattr(wv, "_PANDAS_MIN_LINES", 10**9)
    return request.param


def same(t: WordVectors, words: list[str], vecs: np.ndarray) -> None:
    assert t.words == words
    assert t.vectors.dtype == np.float32 and t.vectors.flags.c_contiguous
    np.testing.assert_array_equal(t.vectors, vecs)


# the table itself ---------------------------------------------------------------------------------


def test_dict_round_trip(table):
    words, vecs = table
    t = read_word_vectors(dict(zip(words, vecs.tolist(), strict=True)), name="toy")
    same(t, words, vecs)
    assert (len(t), t.dim, t.name, t.duplicates) == (5, 4, "toy", 0)
    assert "cat" in t and "dog" not in t and 3 not in t
    assert t.index["sat"] == 2
    np.testing.assert_array_equal(t.vector("cat"), vecs[1])
    with pytest.raises(UnknownWordError, match="'dog' is not in the vocabulary"):
        t.vector("dog")
    with pytest.raises(KeyError):  # also catchable as a KeyError
        t.vector("dog")
    assert not t.vectors.flags.writeable


def test_no_copy_for_float32_input(table):
    words, vecs = table
    t = WordVectors(words, vecs)
    assert np.shares_memory(t.vectors, vecs)
    assert vecs.flags.writeable  # freezing the table does not freeze the caller's array


def test_duplicates_keep_first_and_are_counted():
    t = WordVectors(["a", "b", "a", "c", "b"], np.arange(10, dtype=np.float32).reshape(5, 2))
    assert t.words == ["a", "b", "c"] and t.duplicates == 2
    np.testing.assert_array_equal(t.vectors, [[0, 1], [2, 3], [6, 7]])
    assert t.index == {"a": 0, "b": 1, "c": 2}


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({}, "empty"),
        ({"a": [1.0, 2.0], "b": [np.nan, 0.0]}, "'b'.*NaN or infinite"),
        ({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, "'b' has 3 numbers but the one for 'a' has 2"),
        ({"a": ["x", "y"]}, "'a' is not a list of numbers"),
        ({"": [1.0]}, "non-empty string"),
        (42, "cannot read word vectors from a int"),
    ],
)
def test_bad_tables_refused(source, match):
    with pytest.raises(DataError, match=match):
        read_word_vectors(source)


def test_bad_arrays_refused():
    with pytest.raises(DataError, match="2 words but 3 vector rows"):
        WordVectors(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(DataError, match="2-D"):
        WordVectors(["a"], np.zeros(2))
    with pytest.raises(DataError, match="width 0"):
        WordVectors(["a"], np.zeros((1, 0)))
    with pytest.raises(DataError, match=r"'b' \(row 2\)"):
        WordVectors(["a", "b"], np.array([[0.0], [np.inf]]))


def test_rows_normalized_fingerprint():
    t = WordVectors(["a", "b", "zero"], np.array([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_array_equal(t.rows(["b", "nope", "a", "zero"]), [1, -1, 0, 2])
    assert t.rows(["a"]).dtype == np.int64
    n = t.normalized()
    np.testing.assert_allclose(n, [[0.6, 0.8], [0.0, -1.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(n[:2], axis=1), 1.0, rtol=1e-6)
    assert n is t.normalized()  # cached
    fp = t.fingerprint()
    assert len(fp) == 64 and fp == WordVectors(t.words, t.vectors.copy()).fingerprint()
    changed = t.vectors.copy()
    changed[0, 0] = 3.0001
    assert WordVectors(t.words, changed).fingerprint() != fp
    assert WordVectors(["a", "c", "zero"], t.vectors).fingerprint() != fp


def test_limit_on_objects(table):
    words, vecs = table
    t = read_word_vectors(dict(zip(words, vecs, strict=True)), limit=2)
    same(t, words[:2], vecs[:2])
    assert len(read_word_vectors(t, limit=1)) == 1
    with pytest.raises(DataError, match="limit must be a positive"):
        read_word_vectors(t, limit=0)


# files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["v.txt", "v.vec", "v.txt.gz", "v.bin", "v.bin.gz"])
def test_file_round_trip(tmp_path, table, filename, parser):
    words, vecs = table
    path = write_word2vec(tmp_path / filename, words, vecs, binary=".bin" in filename)
    assert path == tmp_path / filename
    assert [p.name for p in tmp_path.iterdir()] == [filename]  # no temporary file left behind
    t = read_word_vectors(path)
    same(t, words, vecs)
    assert t.name == "v"


def test_hand_written_text_with_and_without_header(tmp_path, parser):
    expected = np.array([[0.5, -1.0, 2.0], [1e-3, 0.0, 3.25]], dtype=np.float32)
    (tmp_path / "w2v.txt").write_text("2 3\nhello 0.5 -1 2\nworld 0.001 0 3.25\n", encoding="utf-8")
    # GloVe: no header; a BOM, a trailing space, a tab, Windows line ends and trailing blank lines are fine
    (tmp_path / "glove.txt").write_bytes(b"\xef\xbb\xbfhello 0.5 -1 2 \r\nworld\t0.001 0 3.25\r\n\n\n")
    for name in ("w2v.txt", "glove.txt"):
        same(read_word_vectors(tmp_path / name), ["hello", "world"], expected)
    with gzip.open(tmp_path / "glove.vec.gz", "wt", encoding="utf-8") as f:
        f.write("hello 0.5 -1 2\nworld 0.001 0 3.25\n")
    same(read_word_vectors(str(tmp_path / "glove.vec.gz")), ["hello", "world"], expected)


def test_limit_stops_reading_early(tmp_path):
    # line 4 is broken: with limit=2 the reader never gets there
    (tmp_path / "v.txt").write_text("9 2\na 1 2\nb 3 4\nc 5\n")
    t = read_word_vectors(tmp_path / "v.txt", limit=2)
    assert t.words == ["a", "b"]
    with pytest.raises(DataError, match="line 4"):
        read_word_vectors(tmp_path / "v.txt", limit=3)
    vecs = np.arange(6, dtype=np.float32).reshape(3, 2)
    path = write_word2vec(tmp_path / "v.bin", ["a", "b", "c"], vecs, binary=True)
    path.write_bytes(path.read_bytes()[:-10])  # truncate inside the last vector
    same(read_word_vectors(path, limit=2), ["a", "b"], vecs[:2])


def test_chunked_reading_without_header(tmp_path, monkeypatch, parser):
    """Headerless files fill fixed-size chunks; small chunks here exercise the joins."""
    monkeypatch.setattr(wv, "CHUNK_ROWS", 7)
    monkeypatch.setattr(wv, "_BATCH_LINES", 5)
    vecs = np.arange(23 * 3, dtype=np.float32).reshape(23, 3) / 4
    words = [f"w{i}" for i in range(23)]
    (tmp_path / "g.txt").write_text(
        "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(words, vecs.tolist(), strict=True))
    )
    same(read_word_vectors(tmp_path / "g.txt"), words, vecs)
    same(read_word_vectors(tmp_path / "g.txt", limit=15), words[:15], vecs[:15])


@pytest.mark.slow
def test_streaming_200k_rows(tmp_path):
    n, dim = 200_000, 50
    patterns = [" ".join(str((k + j) % 10 - 4.5) for j in range(dim)) for k in range(10)]
    with open(tmp_path / "big.txt", "w") as f:
        for start in range(0, n, 10_000):
            f.write("".join(f"w{i} {patterns[i % 10]}\n" for i in range(start, start + 10_000)))
    t = read_word_vectors(tmp_path / "big.txt")
    assert t.vectors.shape == (n, dim) and t.words[-1] == f"w{n - 1}" and t.duplicates == 0
    for i in (0, 65_535, 65_536, 131_072, n - 1):
        np.testing.assert_array_equal(t.vectors[i], (np.arange(dim) + i % 10) % 10 - 4.5)


# broken files -------------------------------------------------------------------------------------

GOOD = "a 1 2 3\nb 4 5 6\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD + "c 1 2\n", r"v.txt, line 3: expected a word and 3 numbers .*found 2 numbers; every line"),
        (GOOD + "c 1 2 3 4\n", "line 3: expected a word and 3 numbers .*found 4"),
        ("3 3\n" + GOOD + "c 1 2\n", r"line 4: expected a word and 3 numbers \(as the header on line 1 says\)"),
        (GOOD * 2 + "e 1 abc 3\n", "line 5: 'abc' is not a number"),
        (GOOD + "c 1 nan 3\n", "line 3: 'nan' .*not a finite number"),
        (GOOD + "c 1 1e39 3\n", "line 3: '1e39' .*not a finite number"),
        (GOOD + "c 1  2 3\n", "line 3: two separators in a row"),
        (GOOD + " 1 2 3\n", "line 3 starts with a space"),
        ("5 3\n" + GOOD, "header on line 1 promises 5 words but the file ends after 2"),
        ("1 3\n" + GOOD, "line 3: the header on line 1 promises 1 words but more lines follow"),
        (GOOD + "\nc 1 2 3\n", "line 3 is blank but more lines follow"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("0 3\n", "line 1: the header"),
        ("lonely\n", "line 1: expected a word followed by its numbers"),
    ],
)
def test_broken_text_names_the_line(tmp_path, text, match, parser):
    (tmp_path / "v.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        read_word_vectors(tmp_path / "v.txt")


def test_broken_line_in_a_later_batch(tmp_path, monkeypatch, parser):
    monkeypatch.setattr(wv, "_BATCH_LINES", 4)
    lines = [f"w{i} {i} {i}" for i in range(12)]
    lines[9] = "w9 9"
    (tmp_path / "v.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match="line 10: expected a word and 2 numbers"):
        read_word_vectors(tmp_path / "v.txt")


def test_bad_utf8_names_the_line(tmp_path):
    (tmp_path / "v.txt").write_bytes(b"a 1 2\nb\xff 3 4\n")
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        read_word_vectors(tmp_path / "v.txt")


def test_broken_binary(tmp_path):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_word2vec(tmp_path / "v.bin", ["a", "b", "c"], vecs, binary=True)
    data = path.read_bytes()
    path.write_bytes(data[:-6])  # ends inside c's vector
    with pytest.raises(DataError, match=r"v.bin, word 3 \('c'\): the file ends mid-vector, 11 of 16 bytes"):
        read_word_vectors(path)
    path.write_bytes(data.replace(b"3 4\n", b"4 4\n", 1))
    with pytest.raises(DataError, match="promises 4 words but the file ends after 3"):
        read_word_vectors(path)
    path.write_bytes(data.replace(b"3 4\n", b"2 4\n", 1))
    with pytest.raises(DataError, match="promises 2 words but more data follows word 2"):
        read_word_vectors(path)
    path.write_bytes(b"a 1 2 3 4\n")
    with pytest.raises(DataError, match="line 1: a word2vec binary file starts with a header"):
        read_word_vectors(path)
    path.write_bytes(b"1 4\na 1.0 2.0 3.0 4.0\n")
    with pytest.raises(DataError, match="written as text, not binary; name the file .txt"):
        read_word_vectors(path)
    nan = vecs.copy()
    nan[1, 2] = np.nan
    path.write_bytes(data.replace(vecs[1].tobytes(), nan[1].tobytes()))
    with pytest.raises(DataError, match=r"word 2 \('b'\) has a NaN"):
        read_word_vectors(path)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="no such word-vector file: .*nothere.txt"):
        read_word_vectors(tmp_path / "nothere.txt")
    (tmp_path / "v.csv").write_text(GOOD)
    with pytest.raises(DataError, match=r"v.csv: unknown word-vector file type; read are .txt, .vec .*\.bin.*\.gz"):
        read_word_vectors(tmp_path / "v.csv")
    (tmp_path / "v.txt.gz").write_text(GOOD)
    with pytest.raises(DataError, match="v.txt.gz cannot be read"):
        read_word_vectors(tmp_path / "v.txt.gz")


def test_write_refuses_what_it_cannot_write(tmp_path):
    vecs = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(DataError, match=r"word 2 \('ice cream'\) .*whitespace"):
        write_word2vec(tmp_path / "v.txt", ["a", "ice cream"], vecs)
    with pytest.raises(DataError, match="pass binary=True"):
        write_word2vec(tmp_path / "v.bin", ["a", "b"], vecs)
    with pytest.raises(DataError, match="NaN"):
        write_word2vec(tmp_path / "v.txt", ["a", "b"], np.array([[1, 2, 3], [np.nan, 0, 0]]))
    with pytest.raises(DataError, match="does not exist"):
        write_word2vec(tmp_path / "no" / "v.txt", ["a", "b"], vecs)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_file(tmp_path):
    path = write_word2vec(tmp_path / "v.txt", ["a"], np.ones((1, 2)))
    write_word2vec(path, ["b", "c"], np.zeros((2, 2)))
    assert read_word_vectors(path).words == ["b", "c"]


# other libraries ----------------------------------------------------------------------------------


def test_gensim_reads_what_we_write_and_we_read_gensim(tmp_path, table):
    gensim_models = pytest.importorskip("gensim.models")
    words, vecs = table
    for name, binary in (("v.txt", False), ("v.bin", True)):
        path = write_word2vec(tmp_path / name, words, vecs, binary=binary)
        kv = gensim_models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
        assert list(kv.index_to_key) == words
        np.testing.assert_array_equal(kv.vectors, vecs)
        same(read_word_vectors(kv), words, vecs)
    kv.save_word2vec_format(str(tmp_path / "g.bin"), binary=True)  # gensim's binary has no newlines
    kv.save_word2vec_format(str(tmp_path / "g.txt"), binary=False)
    same(read_word_vectors(tmp_path / "g.bin"), words, vecs)
    same(read_word_vectors(tmp_path / "g.txt"), words, vecs)


def test_spacy_vocab(table):
    pytest.importorskip("spacy")
    from spacy.vectors import Vectors
    from spacy.vocab import Vocab

    words, vecs = table
    vocab = Vocab()
    for w, v in zip(words, vecs, strict=True):
        vocab.set_vector(w, v)
    same(read_word_vectors(vocab), words, vecs)
    same(read_word_vectors(vocab, limit=3), words[:3], vecs[:3])

    class Language:  # duck-typed like spacy.Language, without loading a pipeline
        def __init__(self, vocab):
            self.vocab = vocab

    assert read_word_vectors(Language(vocab)).words == words
    bare = Vectors(shape=(2, 4))
    bare.add(12345, vector=vecs[0])
    with pytest.raises(DataError, match="pass the Vocab or the Language"):
        read_word_vectors(bare)
    with pytest.raises(DataError, match="no word vectors"):
        read_word_vectors(Vocab())
