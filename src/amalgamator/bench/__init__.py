"""Benchmark suites: ``amalgamator bench SUITE [--quick] [--seeds N] [--out DIR]``.

Each suite trains its own teachers on class splits of data available on these machines,
amalgamates them with several methods, and writes a markdown table and JSON (mean ± std
over seeds) to ``OUT/<suite>.md`` / ``.json`` (default ``bench/results``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import AmalgamatorError, suggest
from . import digits, multiclass, semisupervised, store_effect

SUITES: dict[str, tuple[Callable[..., dict], str]] = {
    "digits": (digits.run, "the demo's comparison (teachers, ensemble, kd, uhc, supervised) over seeds"),
    "multiclass": (multiclass.run, "Family A on Fashion-MNIST, letters and fortunes (MUKI Tables 1-4, CFL)"),
    "semisupervised": (semisupervised.run, "Family B on SYN and HAPT sequences (thesis Ch. 3 Tables 3-5)"),
    "store": (store_effect.run, "wall time of kd reading the teacher-output store vs running teachers every step"),
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
            f"unknown bench suite {name!r}.{suggest(name, SUITES)} Suites: "
            + "; ".join(f"{k} ({doc})" for k, (_, doc) in SUITES.items())
        )
    fn, _ = SUITES[name]
    out_dir = Path(out) if out is not None else Path("bench") / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        if "rows" not in inspect.signature(fn).parameters:
            raise AmalgamatorError(f"suite {name!r} always runs all its rows; --rows works with: multiclass.")
        return fn(out=out_dir, quick=quick, seeds=seeds, rows=rows)
    return fn(out=out_dir, quick=quick, seeds=seeds)
