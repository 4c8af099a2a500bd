"""The ``embedding`` kind's core: what an embedding method trains on and what it returns.

Teachers of this kind are word → vector tables (:class:`~amalgamator.wordvectors.WordVectors`), each
with its own vocabulary and width (thesis Ch. 2, "Problem definition": sources S^1..S^m over
vocabularies V^1..V^m). The student is a :class:`MetaEmbedding`: one d-dimensional vector per word of
the target vocabulary V (by default the union of the sources' vocabularies). This module knows no
particular method: it gives methods an :class:`EmbeddingContext` (the vocabulary, each source's rows,
normalised source vectors with a mask for out-of-vocabulary words) and turns the table a method
returns into a saved, queryable student.

Out-of-vocabulary (OOV) policy of the result: a word outside the meta-embedding's vocabulary has no
vector; ``vector`` raises, ``vectors(..., oov="zeros")`` gives zeros, and the similarity evaluation
scores a pair with an OOV word as similarity 0 and counts it (never dropped silently; the
coverage is reported beside the correlation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from .errors import DataError, TeacherError
from .wordvectors import WordVectors, write_word2vec

VOCABULARY_FILE = "vocabulary.txt"


@dataclass
class EmbeddingContext:
    """What an embedding method sees: the target vocabulary and, per source, where each word sits.

    ``rows[j][i]`` is word i's row in source j's table, -1 when source j lacks it (the indicator
    1[w ∈ S^j] of the thesis's maskout, Eq. 5, for single words).
    """

    teachers: list[Any]
    words: list[str]
    rows: list[np.ndarray]
    config: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: set by the method: the (len(words), d) meta-embedding table
    result: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    @property
    def tables(self) -> list[WordVectors]:
        return [t.table for t in self.teachers]

    def mask(self) -> torch.Tensor:
        """(words, sources) bool: source j knows word i."""
        return torch.from_numpy(np.stack([r >= 0 for r in self.rows], 1))

    def source_vectors(self, j: int, normalized: bool = True) -> torch.Tensor:
        """(words, d_j) float32: source j's vector of every word (L2-normalised by default), zeros where OOV."""
        table = self.tables[j]
        src = table.normalized() if normalized else table.vectors
        out = np.zeros((len(self.words), table.dim), dtype=np.float32)
        known = self.rows[j] >= 0
        out[known] = src[self.rows[j][known]]
        return torch.from_numpy(out)

    def lookup(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Source j's normalised table with one zero row appended, and every word's row in it (OOV → the
        zero row): a batch gathers its source vectors with one index, without a (words × d_j) copy."""
        table = torch.from_numpy(np.concatenate([self.tables[j].normalized(), np.zeros((1, self.tables[j].dim),
                                                                                         np.float32)]))  # fmt: skip
        rows = torch.from_numpy(np.where(self.rows[j] >= 0, self.rows[j], len(table) - 1))
        return table, rows


def target_vocabulary(tables: Sequence[WordVectors], words: Sequence[str] | None) -> tuple[list[str], int]:
    """V: the given words (known to at least one source; duplicates dropped), or the union of the sources'
    vocabularies in source order. Returns the words and how many given words no source knows."""
    if words is None:
        seen: dict[str, None] = {}
        for t in tables:
            seen.update(dict.fromkeys(t.words))
        return list(seen), 0
    if isinstance(words, (str, bytes)) or not all(isinstance(w, str) for w in words):
        raise DataError("data for an embedding method is a list of words (str): the vocabulary to embed.")
    given = list(dict.fromkeys(w.strip() for w in words if w.strip()))
    if not given:
        raise DataError("the vocabulary (data=) is empty: give the words to embed, or data=None for the union.")
    known = [w for w in given if any(w in t for t in tables)]
    return known, len(given) - len(known)


class MetaEmbedding:
    """A word → vector table learnt from several sources: the student of the ``embedding`` kind.

    ``vector(word)``, ``vectors(words)``, ``most_similar(word, n)``, ``vocabulary``; ``save(dir)`` writes
    ``model.safetensors`` (the table), ``vocabulary.txt`` and ``student.json``; ``am.load_student(dir)``
    reads it back. ``to_word2vec(path)`` and ``to_keyedvectors()`` hand it to other tools.
    """

    kind = "embedding"

    def __init__(self, words: Sequence[str], vectors: np.ndarray, method: str = "", info: dict | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(words):
            raise DataError(f"a meta-embedding needs one vector per word: {len(words)} words, {vectors.shape} table.")
        self.words = list(words)
        self.table = vectors
        self.method = method
        self.info = dict(info or {})
        self.report = ""
        self._index = {w: i for i, w in enumerate(self.words)}
        self._unit: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"MetaEmbedding(method={self.method!r}, words={len(self.words)}, dim={self.dim})"

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    @property
    def index(self) -> dict[str, int]:
        """Word → row (as :attr:`WordVectors.index`)."""
        return self._index

    @property
    def vocabulary(self) -> list[str]:
        return list(self.words)

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    @property
    def labels(self) -> list[str]:  # the kinds surface names a student's outputs; here the vector's axes
        return [f"d{i}" for i in range(self.dim)]

    def unit(self) -> np.ndarray:
        """The table with rows L2-normalised (zero rows stay zero), for cosine similarity."""
        if self._unit is None:
            norms = np.linalg.norm(self.table, axis=1, keepdims=True)
            self._unit = self.table / np.where(norms > 0, norms, 1)
        return self._unit

    def vector(self, word: str) -> np.ndarray:
        if word not in self._index:
            raise DataError(f"{word!r} is not in the meta-embedding's vocabulary ({len(self)} words).")
        return self.table[self._index[word]].copy()

    def vectors(self, words: Sequence[str], oov: str = "zeros") -> np.ndarray:
        """One row per word; a word outside the vocabulary gives zeros (``oov="zeros"``) or an error
        (``oov="raise"``)."""
        if oov not in ("zeros", "raise"):
            raise DataError(f"oov must be 'zeros' or 'raise', got {oov!r}.")
        rows = np.array([self._index.get(w, -1) for w in words], dtype=np.int64)
        if oov == "raise" and (rows < 0).any():
            missing = [w for w, r in zip(words, rows, strict=True) if r < 0]
            raise DataError(f"{len(missing)} words are not in the vocabulary, e.g. {missing[:5]}.")
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        out[rows >= 0] = self.table[rows[rows >= 0]]
        return out

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity; 0 when either word is outside the vocabulary."""
        if a not in self or b not in self:
            return 0.0
        u = self.unit()
        return float(u[self._index[a]] @ u[self._index[b]])

    def most_similar(self, word: str, n: int = 10) -> list[tuple[str, float]]:
        """The n nearest words by cosine similarity, the word itself excluded."""
        if word not in self._index:
            raise DataError(f"{word!r} is not in the meta-embedding's vocabulary ({len(self)} words).")
        u = self.unit()
        sims = u @ u[self._index[word]]
        sims[self._index[word]] = -np.inf
        n = min(n, len(sims) - 1)
        top = np.argpartition(-sims, n)[:n] if n < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.words[i], float(sims[i])) for i in top[:n]]

    # Export ------------------------------------------------------------------------------------------
    def to_word2vec(self, path: str | Path, binary: bool = False) -> Path:
        """The word2vec format (text, or binary), readable by gensim and most embedding tools."""
        return write_word2vec(path, self.words, self.table, binary=binary)

    def to_keyedvectors(self) -> Any:
        """A gensim ``KeyedVectors`` (needs gensim: ``pip install gensim``)."""
        try:
            from gensim.models import KeyedVectors
        except ImportError:
            raise DataError("to_keyedvectors needs gensim: pip install gensim (or the 'embeddings' extra).") from None
        kv = KeyedVectors(self.dim)
        kv.add_vectors(self.words, self.table)
        return kv

    # Saving ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """``model.safetensors`` (the table), ``vocabulary.txt`` (one word per line, in row order) and
        ``student.json`` (kind, method, how it was made); never pickle."""
        from .student import _package_version

        if any("\n" in w or "\r" in w for w in self.words):
            raise DataError("a word contains a line break; the vocabulary file holds one word per line.")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.table}, str(path / "model.safetensors"))
        (path / VOCABULARY_FILE).write_text("\n".join(self.words) + "\n", encoding="utf-8")
        meta = {"kind": self.kind, "architecture": {"type": "meta-embedding", "dim": self.dim, "words": len(self)},
                "method": self.method, "info": self.info, "amalgamator": _package_version()}  # fmt: skip
        (path / "student.json").write_text(json.dumps(meta, indent=2, default=str))
        if self.report:
            (path / "report.md").write_text(self.report)
        return path

    @classmethod
    def load(cls, path: str | Path, meta: dict[str, Any]) -> MetaEmbedding:
        path = Path(path)
        where = f"student folder {str(path)!r}"
        try:
            table = load_file(str(path / "model.safetensors"))["vectors"]
        except Exception as exc:
            raise TeacherError(
                f"{where} is corrupt: model.safetensors has no readable 'vectors' table ({exc})."
            ) from None
        vocab = path / VOCABULARY_FILE
        if not vocab.exists():
            raise TeacherError(f"{where} is corrupt: {VOCABULARY_FILE} is missing; re-save the meta-embedding.")
        words = vocab.read_text(encoding="utf-8").split("\n")
        words = words[:-1] if words and words[-1] == "" else words
        if len(words) != len(table):
            raise TeacherError(
                f"{where} is corrupt: {VOCABULARY_FILE} has {len(words)} words but the table {len(table)} rows."
            )
        me = cls(words, table, meta.get("method", ""), meta.get("info"))
        report = path / "report.md"
        me.report = report.read_text() if report.exists() else ""
        return me


# Evaluation -----------------------------------------------------------------------------------------


def pair_similarities(model: Any, pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each pair under ``model`` (a MetaEmbedding or a WordVectors) and whether
    both words are known; a pair with an unknown word scores 0 (stated policy, never dropped)."""
    index = model.index
    unit = model.unit() if hasattr(model, "unit") else model.normalized()
    a = np.array([index.get(p[0], -1) for p in pairs])
    b = np.array([index.get(p[1], -1) for p in pairs])
    known = (a >= 0) & (b >= 0)
    sims = np.zeros(len(pairs), dtype=np.float64)
    sims[known] = (unit[a[known]] * unit[b[known]]).sum(1)
    return sims, known


def similarity_scores(model: Any, pairs: Sequence[tuple[str, str]], gold: Sequence[float]) -> dict[str, float]:
    """Spearman's ρ between the model's cosine similarities and human scores, over every pair (OOV pairs
    score 0) and over the covered pairs alone, with the coverage."""
    from scipy.stats import spearmanr

    if len(pairs) != len(gold) or not len(pairs):
        raise DataError(f"give one score per word pair: {len(pairs)} pairs, {len(gold)} scores.")
    sims, known = pair_similarities(model, pairs)
    gold_arr = np.asarray(gold, dtype=np.float64)

    def rho(mask: np.ndarray) -> float:
        if mask.sum() < 3 or np.ptp(sims[mask]) == 0:
            return float("nan")
        return float(spearmanr(sims[mask], gold_arr[mask]).statistic)

    return {"spearman": rho(np.ones(len(pairs), bool)), "spearman_covered": rho(known),
            "coverage": float(known.mean()), "pairs": float(len(pairs))}  # fmt: skip


def analogy_accuracy(model: Any, questions: Sequence[Sequence[str]], restrict: int | None = 30000) -> dict[str, float]:
    """a : b :: c : ?, answered by 3CosAdd (argmax over the vocabulary of cos(x, b − a + c), the three
    question words excluded), as gensim's ``evaluate_word_analogies``. A question with any word outside the
    vocabulary counts as wrong (``accuracy``); ``accuracy_covered`` is over the answerable ones.
    ``restrict``: search the answer among the first ``restrict`` words only (the gensim convention), or all."""
    words, index = model.words, model.index
    unit = torch.from_numpy(np.ascontiguousarray(model.unit() if hasattr(model, "unit") else model.normalized()))
    limit = len(words) if restrict is None else min(restrict, len(words))
    q = [tuple(x[-4:]) for x in questions]
    ids = np.array([[index.get(w, -1) for w in t] for t in q]).reshape(-1, 4)
    ok = (ids[:, :3] >= 0).all(1) & (ids[:, :3] < limit).all(1) & (ids[:, 3] >= 0) & (ids[:, 3] < limit)
    correct = 0
    idx = torch.from_numpy(ids[ok])
    cand = unit[:limit]
    for s in range(0, len(idx), 512):
        chunk = idx[s : s + 512]
        target = unit[chunk[:, 1]] - unit[chunk[:, 0]] + unit[chunk[:, 2]]
        scores = target @ cand.T
        scores.scatter_(1, chunk[:, :3], -np.inf)
        correct += int((scores.argmax(1) == chunk[:, 3]).sum())
    n = max(len(q), 1)
    return {"accuracy": correct / n, "accuracy_covered": correct / max(int(ok.sum()), 1),
            "coverage": float(ok.mean()) if len(q) else 0.0, "questions": float(len(q))}  # fmt: skip


def read_word_pairs(path: str | Path) -> tuple[list[tuple[str, str]], list[float]]:
    """A word-similarity file: ``word1 word2 score`` per line (tabs or spaces; ``#`` comments and a header
    line whose score is not a number are skipped; SimLex-999's own columns are read as word1, word2,
    SimLex999)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"word-pair file {str(path)!r} does not exist.")
    pairs: list[tuple[str, str]] = []
    gold: list[float] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    score_col = 2
    for n, line in enumerate(lines, 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "SimLex999" in parts:
            score_col = parts.index("SimLex999")
            continue
        if len(parts) <= score_col:
            raise DataError(f"{path.name}, line {n}: expected 'word1 word2 score', got {line.strip()!r}.")
        try:
            score = float(parts[score_col])
        except ValueError:
            if not pairs:  # a header
                continue
            raise DataError(f"{path.name}, line {n}: the score {parts[score_col]!r} is not a number.") from None
        pairs.append((parts[0].strip().lower(), parts[1].strip().lower()))
        gold.append(score)
    if not pairs:
        raise DataError(f"{path.name} holds no word pairs ('word1 word2 score' per line).")
    return pairs, gold


def gensim_test_data(name: str) -> Path:
    """A file of gensim's bundled test data (WordSim353, SimLex-999, the analogy questions), located
    without importing gensim (which takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the word-similarity and analogy sets ship with gensim: pip install gensim (or the "
                        "'embeddings' extra), or give --data pairs.tsv ('word1 word2 score' per line).")  # fmt: skip
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed gensim; reinstall it: pip install --force-reinstall "
                        "gensim")  # fmt: skip
    return path


def standard_similarity_sets() -> dict[str, Path]:
    """WordSim353 and SimLex-999 as shipped in gensim's test data."""
    return {"WordSim353": gensim_test_data("wordsim353.tsv"), "SimLex-999": gensim_test_data("simlex999.txt")}
