"""Benchmark suites: ``amalgamator bench SUITE [--quick] [--seeds N] [--out DIR]``.

Each suite trains its own teachers on class splits of data available on these machines,
amalgamates them with several methods, and writes a markdown table and JSON (mean ± std
over seeds) to ``OUT/<suite>.md`` / ``.json`` (default ``bench/results``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..errors import AmalgamatorError, suggest


class Suite(NamedTuple):
    """A registered suite: the module under ``amalgamator.bench`` whose ``run`` it calls, and one line
    saying what it measures (shown by ``amalgamator bench --help`` and an unknown-suite error)."""

    module: str
    description: str

    def runner(self) -> Callable[..., dict]:
        """The suite's ``run`` function, imported only when the suite runs (``--help`` stays light)."""
        return importlib.import_module(f"{__name__}.{self.module}").run


SUITES: dict[str, Suite] = {
    "digits": Suite("digits", "the demo's comparison (teachers, ensemble, kd, uhc, supervised) over seeds"),
    "multiclass": Suite("multiclass", "Family A on Fashion-MNIST, letters and fortunes (MUKI Tables 1-4, CFL)"),
    "semisupervised": Suite("semisupervised", "Family B on SYN and HAPT sequences (thesis Ch. 3 Tables 3-5)"),
    "multilabel": Suite("multilabel", "Family C on Yeast: ANT and its baselines (thesis Ch. 4 Tables 7-9)"),
    "multitask": Suite("multitask", "Family D on FashionPairs and Yeast: VENUS, baselines (thesis Ch. 5 Tables 10-12)"),
    "metaembedding": Suite(
        "metaembedding", "Family E: SimME and baselines on three word-vector sources (thesis Ch. 2)"
    ),
    "experts": Suite("experts", "many narrow teachers (4 to 13): routing methods against oracle routing (issue 19)"),
    "speed": Suite("speed", "against a bare PyTorch floor: kd on digits, TC on SYN (published settings), start-up"),
    "store": Suite("store_effect", "wall time of kd reading the teacher-output store vs running teachers every step"),
}


def run_suite(
    name: str,
    quick: bool = False,
    seeds: int | None = None,
    out: str | Path | None = None,
    rows: list[str] | None = None,
) -> dict:
    """Run one suite and write its results; returns what was written. ``rows`` recomputes only those
    rows of an existing result (suites that support it)."""
    import inspect

    if name not in SUITES:
        raise AmalgamatorError(
            f"unknown bench suite {name!r}.{suggest(name, SUITES)} Suites: {', '.join(SUITES)} "
            "(`amalgamator bench --help` says what each measures)."
        )
    fn = SUITES[name].runner()
    out_dir = Path(out) if out is not None else Path("bench") / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        if "rows" not in inspect.signature(fn).parameters:
            raise AmalgamatorError(
                f"suite {name!r} always runs all its rows; --rows works with: multiclass, semisupervised, "
                "speed (its parts)."
            )
        return fn(out=out_dir, quick=quick, seeds=seeds, rows=rows)
    return fn(out=out_dir, quick=quick, seeds=seeds)
