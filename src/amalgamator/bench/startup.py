"""Start-up times of the library and the command line against their budgets (issue 17, item 3).

Each command runs once untimed (a warm file cache), then ``--repeats`` times, round robin, so background load
falls on every command alike; the table gives the median wall time of each:

    python -m amalgamator.bench.startup [--repeats 5] [--python .venv/bin/python]

Budgets: ``amalgamator --help`` and ``--version`` ≤ 0.5 s; ``import amalgamator`` and ``amalgamator methods``
≤ ``import torch`` + 0.5 s (measured in the same run). Exit code 1 when a command is over its budget.
The ``speed`` suite calls :func:`startup_times` and :func:`markdown_table`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIXED_BUDGET = 0.5  # seconds: --help and --version
TORCH_MARGIN = 0.5  # seconds over `import torch`: import amalgamator, amalgamator methods


def _cli(python: str) -> list[str]:
    """The installed console script beside ``python``, else ``python -m amalgamator``."""
    script = Path(python).parent / "amalgamator"
    return [str(script)] if script.exists() else [python, "-m", "amalgamator"]


def commands(python: str = sys.executable) -> dict[str, list[str]]:
    cli = _cli(python)
    return {
        'python -c "import torch"': [python, "-c", "import torch"],
        'python -c "import amalgamator"': [python, "-c", "import amalgamator"],
        "amalgamator --help": [*cli, "--help"],
        "amalgamator --version": [*cli, "--version"],
        "amalgamator methods": [*cli, "methods"],
    }


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds of one run and its exit code."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start, done.returncode


def startup_times(repeats: int = 5, python: str = sys.executable, bytecode: bool = True) -> list[dict[str, object]]:
    """One row per command: ``command``, ``seconds`` (median of ``repeats``; None if the command fails),
    ``runs``, ``exit`` (its exit code), ``budget`` (None for the reference) and ``ok``.

    ``bytecode``: let the warm-up run write ``__pycache__`` (drops ``PYTHONDONTWRITEBYTECODE`` for the commands), so
    the timed runs load byte code as an installed package does instead of compiling every module of the checkout.
    """
    env = {**os.environ, "COLUMNS": "120"}
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmds = commands(python)
    exits = {name: _time(argv, env)[1] for name, argv in cmds.items()}  # warm the file and byte-code caches
    runs: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, argv in cmds.items():
            if exits[name] == 0:  # a command that fails (an older version without it) is not timed
                runs[name].append(_time(argv, env)[0])
    medians = {name: statistics.median(ts) if ts else None for name, ts in runs.items()}
    torch_s = medians['python -c "import torch"']
    if torch_s is None:
        raise RuntimeError(f"{python} cannot import torch: give the environment's interpreter with --python.")
    rows: list[dict[str, object]] = []
    for name, seconds in medians.items():
        if name == 'python -c "import torch"':
            budget, label = None, "(reference)"
        elif name in ("amalgamator --help", "amalgamator --version"):
            budget, label = FIXED_BUDGET, f"≤ {FIXED_BUDGET:.2f} s"
        else:
            budget = torch_s + TORCH_MARGIN
            label = f"≤ import torch + {TORCH_MARGIN:.1f} s = {budget:.2f} s"
        ok = seconds is not None and (budget is None or seconds <= budget)
        rows.append({"command": name, "seconds": seconds, "runs": runs[name], "exit": exits[name], "budget": budget,
                     "budget_label": label, "ok": ok})  # fmt: skip
    return rows


def markdown_table(rows: list[dict[str, object]]) -> str:
    lines = ["| command | median s | budget | within |", "|---|---:|---|---|"]
    for r in rows:
        within = "—" if r["budget"] is None else ("yes" if r["ok"] else "**no**")
        seconds = f"{r['seconds']:.2f}" if r["seconds"] is not None else f"fails (exit {r['exit']})"
        lines.append(f"| `{r['command']}` | {seconds} | {r['budget_label']} | {within} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the environment to measure")
    parser.add_argument(
        "--no-bytecode-cache",
        dest="bytecode",
        action="store_false",
        help="keep PYTHONDONTWRITEBYTECODE as it is (then a checkout without __pycache__ compiles on every run)",
    )
    args = parser.parse_args()
    rows = startup_times(args.repeats, args.python, args.bytecode)
    print(markdown_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
