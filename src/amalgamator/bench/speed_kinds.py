"""Part of bench suite ``speed`` (issue 14): the kinds beyond multi-class, each method against its floor.

The per-method comparison of :mod:`.speed` runs on multi-class teachers (Fashion-MNIST, fortunes). The other
kinds have their own data, taken from their suites:

- **multi-label** (``kd-ml``, ``calibrated-ml``, ``bl``, ``aka``, ``ant``, ``cfl``): Yeast, the multi-label suite's
  Table 7 setting (two order-free chain teachers, half their labels shared; ANT reads chains, so the
  teachers are chains), an MLP student of 128 units;
- **multi-task** (``must``, ``kd-mt``, ``cfl``, ``venus``, ``targetnet``): FashionPairs (canvases of Fashion-MNIST
  items, ten "does it hold a <class>?" tasks), the multi-task suite's TargetNet setting (two ResNet stand-in
  teachers, 30 % shared: TargetNet needs teachers of one architecture) at that suite's quick budget (1,000
  teacher and pool images), a ResNet student;
- **embedding** (``average``, ``concat``, ``simme``, ``aaeme``, ``caeme``, ``daeme``): the word-vector sources of the
  meta-embedding suite, on the words of their union.

Multi-label and multi-task rows run through :func:`.speed.method_case` exactly as the multi-class ones (cold
call, floor, one store for every row, teachers in the loop); their floor's bare loop trains the student with
BCE against fixed sigmoid targets, the loss these kinds train with. Embedding methods have no student apart from
their own model (the meta-embedding *is* what they train), so they have no "student's training alone" to hold
them to, and their teachers are lookup tables read directly (no store): their table gives each call's training
and the rest.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import progress

ML_ROWS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("kd-ml", "kd-ml", {}, False), ("calibrated-ml", "calibrated-ml", {}, False), ("bl", "bl", {}, False),
    ("aka", "aka", {}, False), ("ant", "ant", {}, False), ("cfl", "cfl", {}, False),
]  # fmt: skip
MT_ROWS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("must", "must", {}, False), ("kd-mt", "kd-mt", {}, False), ("cfl", "cfl", {}, False),
    ("venus", "venus", {}, False), ("targetnet", "targetnet", {}, False),
]  # fmt: skip
EMBEDDING_METHODS = ("average", "concat", "simme", "aaeme", "caeme", "daeme")
#: embedding cold calls shorter than this are repeated (the fastest kept); the trained ones take 10–20 s each
REPEAT_EMBEDDING_S = 5.0


def multilabel_problem(mc: Any, seed: int = 0) -> Any:
    """Yeast, two chain teachers with half their labels shared (the multi-label suite's Table 7 setting)."""
    from . import multilabel as ML
    from .speed import Problem

    b = ML.budget(False)
    job = ML.split_and_teachers(next(s for s in ML.SETTINGS if s.key == "2t-50"), seed, b)
    x_pool = job["splits"]["x_train"][job["pool"]]
    setup = {"pool": len(x_pool), "teacher_rows": len(job["teach"]), "bank": False,
             "teacher_note": f"trained here as the multi-label suite trains them ({b.teacher_steps} steps)",
             "teachers": ["chain (128-unit body, 64-unit LSTM cell)"] * 2,
             "student": "mlp {'hidden': [128]}"}  # fmt: skip
    return Problem("Yeast, 2 chain teachers, half their labels shared (multi-label)", job["teachers"], x_pool,
                   (x_pool[:0], np.zeros(0)), "mlp", {"hidden": [128]}, b.lr, setup)  # fmt: skip


def multitask_problem(mc: Any, seed: int = 0) -> Any:
    """FashionPairs, two ResNet stand-in teachers at 30 % shared tasks (the multi-task suite's TargetNet setting,
    homogeneous as TargetNet needs) at that suite's quick budget."""
    from . import multitask as MT
    from .speed import Problem

    setting, b, d, _names, _sets, teachers, _out = MT._job_start(MT.TARGETNET, seed, True)
    x_pool = d["pool"][0]
    student, options = MT.STUDENTS[setting.data]
    setup = {"pool": len(x_pool), "teacher_rows": sum(len(p[0]) for p in d["teachers"]), "bank": False,
             "teacher_note": f"trained here as the multi-task suite's quick budget trains them "
                             f"({b.teacher_epochs} epochs)",
             "teachers": list(setting.teachers), "student": f"{student} {options}".strip()}  # fmt: skip
    return Problem("FashionPairs (Fashion-MNIST items), two ResNet stand-ins, 30 % shared (multi-task)",
                   teachers, x_pool, (x_pool[:0], np.zeros(0)), student, dict(options), b.lr, setup)  # fmt: skip


def embedding_case(quick: bool = False) -> dict[str, Any]:
    """Every embedding method on the meta-embedding suite's sources: wall time of a call split into training and
    the rest (the sources' lookups, the vocabulary's matrices, ``prepare``). Embedding teachers are lookup tables:
    the run reads them directly, no teacher-output store is involved."""
    import amalgamator as am

    from . import wordsources as ws
    from .metaembedding import QUICK_TRAIN, TRAIN
    from .speed import REPEATS

    tables = {name: load() for name, load in ws.SOURCES.items()}
    names = list(tables)
    # the meta-embedding suite's base vocabulary (MiniLM's and the fortunes' words), without its evaluation words
    base = [w for n in ("minilm", "fortunes-w2v") if n in tables for w in tables[n].words] or [
        w for t in tables.values() for w in t.words
    ]
    words = list(dict.fromkeys(base))[: 2000 if quick else None]
    teachers = [am.Teacher.from_embeddings(tables[n], name=n) for n in names]
    out: dict[str, Any] = {"title": f"word-vector sources {', '.join(names)}", "words": len(words), "rows": {}}
    for method in EMBEDDING_METHODS:
        opts = {**TRAIN.get(method, {}), **(QUICK_TRAIN if quick and method in TRAIN else {})}
        calls: list[dict[str, float]] = []
        while len(calls) < (1 if quick else REPEATS) and not (calls and calls[-1]["wall_s"] >= REPEAT_EMBEDDING_S):
            t0 = time.perf_counter()
            res = am.amalgamate(teachers, words, method=method, seed=0, progress=False, threads=1, **opts)
            wall, train = time.perf_counter() - t0, res.timings.get("train", 0.0)
            calls.append({"wall_s": wall, "train_s": train, "outside_s": wall - train})
        out["rows"][method] = {"options": opts, **min(calls, key=lambda c: c["wall_s"])}
        progress.console.print(f"  {method}: {out['rows'][method]['wall_s']:.1f} s")
    return out


def embedding_markdown(e: dict[str, Any]) -> list[str]:
    from ..report import markdown_table

    head = ["## Per method: embedding teachers", ""]
    if "skipped" in e:
        return [*head, f"Skipped: {e['skipped']}", ""]
    body = [[name, f"{r['wall_s']:.2f}", f"{r['train_s']:.2f}", f"{r['outside_s']:.2f}",
             ", ".join(f"{k} {v}" for k, v in r["options"].items()) or "—"]
            for name, r in e["rows"].items()]  # fmt: skip
    return [*head,
            f"Teachers: {e['title']}; {e['words']:,} words (MiniLM's and the fortunes' vocabularies); training "
            f"options as in the meta-embedding suite. One torch thread; calls under {REPEAT_EMBEDDING_S:.0f} s are "
            "the fastest of 3. Embedding teachers are lookup tables, read directly (no teacher-output store). No "
            "floor ratio: an embedding method's model is what it trains, there is no student to train alone.", "",
            markdown_table(["method", "call s", "training s", "other s (lookups, matrices, prepare)", "options"],
                           body), ""]  # fmt: skip
