"""Progress display and the library's console, on rich.

Bars go to stderr and vanish when done, and are drawn only on a terminal, so they never
pollute logs; ``AMALGAMATOR_QUIET=1`` silences them, ``progress=True`` forces them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def quiet() -> bool:
    """Silent when asked, and in every process of a multi-process run but the first (it speaks for all)."""
    return os.environ.get("AMALGAMATOR_QUIET", "") not in ("", "0") or not _first_process()


def _first_process() -> bool:
    """Rank 0, or not a multi-process run (``torchrun`` and ``accelerate launch`` set RANK)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def verbose() -> bool:
    return os.environ.get("AMALGAMATOR_VERBOSE", "") not in ("", "0")


def enabled(flag: bool | None = None) -> bool:
    """Whether to draw progress bars: ``flag`` if given, else on a terminal unless quiet."""
    if flag is not None:
        return flag
    return not quiet() and console.is_terminal


def epoch_done(epoch: int, epochs: int, loss: float, seconds: float, flag: bool | None = None, what: str = "") -> None:
    """One line per finished epoch where no bar is drawn (a log file, CI, ``nohup``) or when verbose,
    so that a long run is never silent until its end. Quiet (or ``progress=False``) prints nothing."""
    if flag is False or quiet():
        return
    if enabled(flag) and not verbose():
        return
    label = f"{what} " if what else ""
    console.print(f"{label}epoch {epoch}/{epochs}  loss {loss:.4f}  {seconds:.1f} s", markup=False, highlight=False)


def note(message: str) -> None:
    """A one-line note on stderr (what the library did on the user's behalf); silent when quiet."""
    if not quiet():
        console.print(message, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def bar(description: str, total: int, show: bool | None = None) -> Iterator[callable]:
    """Yield ``advance(n=1, **fields)``; draws a transient bar when progress is enabled."""
    if not enabled(show):
        yield lambda n=1, **fields: None
        return
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    )
    with prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            prog.update(task, advance=n, info=info)

        yield advance


def warn(message: str) -> None:
    """A one-line warning on stderr (also sent through ``warnings`` so tests can catch it)."""
    import warnings

    if _first_process():
        warnings.warn(message, UserWarning, stacklevel=3)
