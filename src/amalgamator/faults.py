"""Fault injection for the crash-safety tests: a no-op unless ``AMALGAMATOR_FAULT`` is set (test-only).

The store, the checkpoints and every atomic write call :func:`point` at the moments where a crash
would hurt most. ``AMALGAMATOR_FAULT`` names what to do there, as comma-separated
``ACTION@POINT:N`` items (the N-th time this process reaches POINT, counting from 1):

``kill``    SIGKILL this process (no clean-up runs, as when the machine loses power or OOM-kills it)
``tear``    truncate the file the point names to half its length, then SIGKILL (a torn write that
            reached its final name: what a crash without ``fsync`` may leave)
``enospc``  raise ``OSError(ENOSPC)`` (a full disk)

Points: ``write`` (half way through any atomic file write), ``store-data`` (an entry's data file
written, not yet published), ``store-meta`` (data published, sidecar not yet), ``store-entry`` (entry
complete), ``ckpt-files`` (a checkpoint's files written, no ``state.json`` yet), ``ckpt-publish``
(complete in its temporary folder, not yet renamed), ``ckpt-saved`` (published, older ones not yet
pruned), ``ckpt-pruned``. For example ``AMALGAMATOR_FAULT=kill@store-entry:3``. Any other value
(``count``) only counts the points reached (:func:`hits`): how a test learns where it can strike.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

ENV = "AMALGAMATOR_FAULT"
ACTIONS = ("kill", "tear", "enospc")
_hits: dict[str, int] = {}


def point(name: str, path: str | Path | None = None) -> None:
    """Reached fault point ``name`` (``path``: the file it concerns); acts only as ``AMALGAMATOR_FAULT`` says."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        target, _, count = where.partition(":")
        if action not in ACTIONS or target != name or int(count or 1) != _hits[name]:
            continue
        if action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path else None)
        if action == "tear" and path is not None and Path(path).is_file():
            size = Path(path).stat().st_size
            with open(path, "r+b") as f:
                f.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def hits() -> dict[str, int]:
    """How often each point was reached since the last :func:`reset` (counted only while the variable is set)."""
    return dict(_hits)


def reset() -> None:
    """Forget the counts (a test that runs several faulty calls in one process)."""
    _hits.clear()
