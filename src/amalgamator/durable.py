"""Files that survive crashes and concurrent writers: atomic publishing, folder locks, full disks.

Every file the store and the engine keep is written to a temporary name beside its final one,
flushed to disk (``fsync``) and only then renamed over the final name, and the folder is synced
after: a reader sees the old file or the new one, never half of one, whatever kills the writer.
Locks are ``flock`` locks on small files, which the operating system releases when their process
dies: a crashed run never leaves a lock behind that blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from . import faults

try:  # POSIX; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: errno values that mean "the disk (or the user's quota) is full"
FULL = {errno.ENOSPC, errno.EDQUOT}
TMP_SUFFIX = ".tmp"


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL


def size_text(n: float) -> str:
    """``n`` bytes for people: ``812 B``, ``4.1 kB``, ``2.3 MB``, ``1.2 GB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder: Path) -> int | None:
    """Free space on the disk holding ``folder`` (or its nearest existing parent); None if unknown."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def space_message(folder: Path, what: str, needed: int) -> str:
    """One line for a full disk: which folder, how much ``what`` needs and how much is free."""
    free = free_bytes(folder)
    free_text = f", {size_text(free)} free" if free is not None else ""
    return f"no space left on the disk of {folder}: {what} needs {size_text(needed)}{free_text}"


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}{TMP_SUFFIX}")


def sync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover  (some file systems refuse fsync on folders)
        pass
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and flush it to disk (the mode a plain ``open`` gives)."""
    with open(path, "xb") as f:
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        faults.point("write", path)
        f.write(data[half:])
        f.flush()
        os.fsync(f.fileno())


def publish(path: str | Path, data: bytes, sync: bool = True) -> None:
    """Atomically replace ``path`` by a file holding ``data``: temporary file, fsync, rename, folder fsync.

    On any failure the temporary file is removed and the old ``path`` (if any) is left as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        sync_folder(path.parent)


def remove_leftovers(folder: Path, stem: str) -> int:
    """Delete temporary files ``.{stem}*.tmp`` an interrupted writer left in ``folder``; how many.

    Call it only while holding the lock that guards writers of ``stem``."""
    removed = 0
    for tmp in folder.glob(f".{stem}*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


class Busy(Exception):
    """The lock is held by another process; ``holder`` is what it wrote into the lock file."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def lock(path: str | Path, wait: bool = True, holder: str = "", on_wait=None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block.

    ``wait=False`` raises :class:`Busy` at once when another process holds it; otherwise ``on_wait()``
    (if given) is called once before blocking. ``holder`` is written into the file for the refusal
    message of the next one. The lock file is never deleted (deleting a locked file lets two
    processes hold "the" lock); the system drops the lock when the holder exits, even by SIGKILL."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise Busy(os.pread(fd, 400, 0).decode(errors="replace").strip()) from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without flock (ENOLCK, EOPNOTSUPP): go on unlocked
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        if holder:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
