"""Suite ``metaembedding``: SimME and its baselines over three real word-vector sources (thesis Ch. 2, Table 1).

The thesis amalgamates Wikipedia, BioMed and Twitter GloVe/word2vec tables into four meta-embedding
spaces (each pair and all three) and scores every source alone and every method on word similarity,
synonym detection, text classification and concept categorisation, ranking the rows per column.
No such tables can be had here, so the sources are the three on this machine
(:mod:`amalgamator.bench.wordsources`): spaCy ``en_core_web_md`` (300-d), the whole-word input token
embeddings of all-MiniLM-L6-v2 (384-d) and word2vec trained on the fortune files (100-d). The columns
are what the data here allows: Spearman's ρ on WordSim353 and SimLex-999, 3CosAdd analogy accuracy on
the Google questions, 14-topic classification of the fortunes from averaged word vectors (logistic
regression, 5-fold), and concept categorisation (k-means NMI) on the word categories of
:func:`~amalgamator.bench.wordsources.categories`.

Target vocabulary V (the thesis's task vocabulary): the MiniLM and fortunes vocabularies plus every
word the evaluations use, kept where at least one source of the space knows it. spaCy's 243k words
would add mostly rare words that share one of its 20k vectors. OOV policy in every column: a pair or
question with a word outside the embedding counts (similarity 0, analogy wrong), a text's unknown tokens
are skipped (a text with none is the zero vector), an unknown category word is the zero vector; the
coverage column says how many evaluation words each row knows.
"""

from __future__ import annotations

import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from .. import progress
from ..report import markdown_table, write_json
from .common import machine

METHODS = ["average", "concat", "aaeme", "caeme", "daeme", "simme"]
#: training settings per method (epochs chosen where the training loss flattens, never on the evaluations)
TRAIN = {"simme": {"epochs": 10, "batch_size": 512, "lr": 0.01, "weight_decay": 0.0},
         "aaeme": {"epochs": 10, "batch_size": 256, "lr": 1e-3},
         "caeme": {"epochs": 10, "batch_size": 256, "lr": 1e-3},
         "daeme": {"epochs": 10, "batch_size": 256, "lr": 1e-3}}  # fmt: skip
QUICK_TRAIN = {"epochs": 2}
COLUMNS = ["WordSim353 ρ", "SimLex-999 ρ", "analogies %", "fortune topics %", "concepts NMI"]


def _evaluation_sets(quick: bool) -> dict[str, Any]:
    from . import wordsources as ws
    from .datasets import load

    sets: dict[str, Any] = {"wordsim": ws.wordsim353(), "simlex": ws.simlex999(), "analogies": ws.analogies(),
                            "categories": ws.categories()}  # fmt: skip
    bm = load("fortunes")
    texts = [*bm.x_train, *bm.x_test]
    y = np.concatenate([bm.y_train, bm.y_test])
    if quick:
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(len(texts), 1500, replace=False))
        texts, y = [texts[i] for i in keep], y[keep]
        sets["analogies"] = sets["analogies"][::20]
    sets["texts"] = [ws.fortune_tokens(t) for t in texts]
    sets["topics"] = y
    return sets


def _evaluation_words(sets: dict[str, Any]) -> set[str]:
    words = {w for a, b, _ in sets["wordsim"] + sets["simlex"] for w in (a, b)}
    words |= {w for q in sets["analogies"] for w in q[1:]}
    return words | set(sets["categories"])


def _vocabulary(tables: dict[str, Any], sets: dict[str, Any], quick: bool) -> list[str]:
    """V: the MiniLM and fortunes vocabularies plus the evaluation words (see the module docstring)."""
    base = [*tables["minilm"].words, *tables["fortunes-w2v"].words]
    if quick:
        base = base[:1500]
    return list(dict.fromkeys([*base, *sorted(_evaluation_words(sets))]))


def _restricted(table: Any, words: list[str]) -> Any:
    """A source as a row of the table: its own vectors for the words of V it knows."""
    from ..metaembedding import MetaEmbedding

    rows = table.rows(words)
    known = rows >= 0
    return MetaEmbedding([w for w, k in zip(words, known, strict=True) if k], table.vectors[rows[known]], table.name)


def _text_features(me: Any, texts: list[list[str]]) -> np.ndarray:
    """The mean of each text's known word vectors (zeros for a text with none)."""
    index = {w: i for i, w in enumerate(me.words)}
    unit = me.unit()
    out = np.zeros((len(texts), me.dim), dtype=np.float32)
    for i, toks in enumerate(texts):
        rows = [index[t] for t in toks if t in index]
        if rows:
            out[i] = unit[rows].mean(0)
    return out


def _logreg(x: torch.Tensor, y: torch.Tensor, classes: int, c: float = 0.1) -> torch.Tensor:
    """Multinomial logistic regression with L2 penalty 1 / (2C) (scikit-learn's objective), fitted by
    full-batch L-BFGS in float32 torch (at most 100 iterations): the model of ``LogisticRegression(C=0.1)``
    (on one split: 38.6 vs scikit-learn's 38.5 % test accuracy) in a fraction of its time, which makes
    5-fold scores for every row affordable."""
    w = torch.zeros(x.shape[1] + 1, classes, requires_grad=True)
    xb = torch.cat([x, torch.ones(len(x), 1)], 1)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=100, tolerance_grad=1e-5, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w, y, reduction="sum") + (w[:-1] ** 2).sum() / (2 * c)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def _classify(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """5-fold stratified accuracy of standardised multinomial logistic regression (C = 0.1)."""
    from sklearn.model_selection import StratifiedKFold

    classes, codes = np.unique(y, return_inverse=True)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(codes)
    scores = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, codes):
        mu, sd = xt[train].mean(0), xt[train].std(0).clamp_min(1e-6)
        w = _logreg((xt[train] - mu) / sd, yt[train], len(classes))
        xs = torch.cat([(xt[test] - mu) / sd, torch.ones(len(test), 1)], 1)
        scores.append(float(((xs @ w).argmax(1) == yt[test]).float().mean()))
    return float(np.mean(scores))


def _concepts(me: Any, categories: dict[str, str], seed: int = 0) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    words = list(categories)
    x = me.vectors(words)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1)
    cats = [categories[w] for w in words]
    pred = KMeans(len(set(cats)), n_init=10, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(cats, pred))


def evaluate_row(me: Any, sets: dict[str, Any], eval_words: set[str]) -> dict[str, float]:
    from ..metaembedding import analogy_accuracy, similarity_scores

    t0 = time.perf_counter()

    def sim(name: str) -> dict[str, float]:
        return similarity_scores(me, [(a, b) for a, b, _ in sets[name]], [s for *_, s in sets[name]])

    out = {
        "WordSim353 ρ": sim("wordsim"),
        "SimLex-999 ρ": sim("simlex"),
        "analogies %": analogy_accuracy(me, sets["analogies"], restrict=None),
        "fortune topics %": _classify(_text_features(me, sets["texts"]), sets["topics"]),
        "concepts NMI": _concepts(me, sets["categories"]),
        "coverage": float(np.mean([w in me for w in eval_words])),
    }
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def _score(cell: Any) -> float:
    if isinstance(cell, dict):
        return cell["spearman"] if "spearman" in cell else cell["accuracy"]
    return float(cell)


def _ranks(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Rank 1 = best per column (ties share the better rank), as in the thesis's Table 1."""
    ranks: dict[str, dict[str, int]] = {r: {} for r in rows}
    for col in COLUMNS:
        vals = {r: _score(v[col]) for r, v in rows.items()}
        for r, v in vals.items():
            ranks[r][col] = 1 + sum(1 for o in vals.values() if o > v + 1e-12)
    return ranks


def _fmt(col: str, cell: Any) -> str:
    v = _score(cell)
    return f"{100 * v:.1f}" if col in ("analogies %", "fortune topics %") else f"{v:.3f}"


def _space_table(space: dict[str, Any]) -> str:
    rows, ranks = space["rows"], _ranks(space["rows"])
    body = []
    for name, r in rows.items():
        avg = np.mean([ranks[name][c] for c in COLUMNS])
        seconds = space["seconds"].get(name)
        body.append([name, *[f"{_fmt(c, r[c])} ({ranks[name][c]})" for c in COLUMNS], f"{avg:.1f}",
                     f"{100 * r['coverage']:.1f}", f"{seconds:.1f}" if seconds is not None else "—"])  # fmt: skip
    return markdown_table(["row", *COLUMNS, "avg rank", "coverage %", "train s"], body)


def run(out: Path, quick: bool = False, seeds: int | None = None) -> dict:
    import amalgamator as am

    from . import wordsources as ws

    t_start = time.perf_counter()
    tables = {name: load() for name, load in ws.SOURCES.items()}
    sets = _evaluation_sets(quick)
    eval_words = _evaluation_words(sets)
    vocabulary = _vocabulary(tables, sets, quick)
    results: dict[str, Any] = {"vocabulary": len(vocabulary), "overlap": ws.overlap(tables), "spaces": {},
                               "settings": TRAIN, "quick": quick}  # fmt: skip
    names = list(tables)
    spaces = [list(c) for c in combinations(names, 2)] + [names]
    for combo in spaces:
        key = " + ".join(combo)
        words = [w for w in vocabulary if any(w in tables[n] for n in combo)]
        teachers = [am.Teacher.from_embeddings(tables[n], name=n) for n in combo]
        space: dict[str, Any] = {"words": len(words), "rows": {}, "seconds": {}, "pairs_per_second": {}}
        for n in combo:
            space["rows"][n] = evaluate_row(_restricted(tables[n], words), sets, eval_words)
        for method in METHODS:
            opts = {**TRAIN.get(method, {}), **(QUICK_TRAIN if quick and method in TRAIN else {})}
            t0 = time.perf_counter()
            res = am.amalgamate(teachers, words, method=method, seed=0, progress=False, **opts)
            space["seconds"][method] = time.perf_counter() - t0
            if method == "simme":
                pairs = len(words) * (opts["batch_size"] - 1) / 2 * opts["epochs"]
                space["pairs_per_second"][method] = pairs / max(res.timings["train"], 1e-9)
                space["loss"] = res.history.loss
            space["rows"][method] = evaluate_row(res.student, sets, eval_words)
            progress.note(f"{key}: {method} done in {space['seconds'][method]:.0f} s")
        results["spaces"][key] = space
    results["seconds"] = time.perf_counter() - t_start
    path = _write(out, results)
    Console().print(path.read_text())
    return results


def _write(out: Path, results: dict[str, Any]) -> Path:
    ov = results["overlap"]
    lines = [
        "# Bench: meta-embedding (Family E, thesis Ch. 2 Table 1)",
        "",
        "Sources: spaCy `en_core_web_md` vectors (300-d), the whole-word input token embeddings of all-MiniLM-L6-v2 "
        "(384-d) and word2vec (skip-gram, 100-d, seed 0) trained on the fortune files. Vocabulary sizes: "
        + ", ".join(f"{k} {v:,}" for k, v in ov["sizes"].items())
        + "; overlaps (intersection / union): "
        + "; ".join(f"{k} {v['intersection']:,} / {v['union']:,}" for k, v in ov["pairs"].items())
        + f"; all three {ov['all']['intersection']:,} / {ov['all']['union']:,}.",
        "",
        "Target vocabulary V: the MiniLM and fortunes vocabularies plus every evaluation word "
        f"({results['vocabulary']:,} words), kept where a source of the space knows it. Columns: Spearman's ρ "
        "on WordSim353 and SimLex-999 (gensim's copies; a pair with an unknown word scores 0 and counts), "
        "3CosAdd analogy accuracy over V on the Google questions (a question with an unknown word counts as "
        "wrong), 14-topic classification of the 10,458 fortunes from the mean of their known words' unit "
        "vectors (standardised, logistic regression, 5-fold accuracy), and k-means NMI on 452 words in 7 "
        "categories built from the analogy file's semantic sections (`wordsources.categories`). (n) is the "
        "rank in the column (1 best), avg rank their mean, coverage the share of the evaluation words the row "
        "knows, train s the wall time "
        "of `amalgamate` (sources: none). One seed.",
        "",
    ]
    for key, space in results["spaces"].items():
        pps = space["pairs_per_second"].get("simme")
        lines += [f"## {key.upper()} ({space['words']:,} words)", "", _space_table(space), ""]
        if pps:
            lines += [f"SimME: {pps:,.0f} word pairs per second of training.", ""]
    quick = " --quick" if results["quick"] else ""
    lines += [f"Total {results['seconds'] / 60:.1f} min. Generated by `amalgamator bench metaembedding{quick}` "
              f"on {time.strftime('%Y-%m-%d')} ({machine()}).", ""]  # fmt: skip
    name = "metaembedding-quick" if results["quick"] else "metaembedding"
    path = out / f"{name}.md"
    path.write_text("\n".join(lines))
    write_json(out / f"{name}.json", results)
    return path
