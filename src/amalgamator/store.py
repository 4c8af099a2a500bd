"""The teacher-output store: each teacher runs over each dataset once, the results live on disk.

An entry holds one *piece* of one teacher's output on one dataset: ``logits``, a feature
tap (``features/<module path>``), or Monte-Carlo dropout statistics (``mc/k=<K>,p=<p>``:
the mean of K dropout softmaxes). Its key is derived from the teacher's fingerprint
(weights, labels, kind), the data's fingerprint (content) and the piece, so comparing
several methods on one dataset runs each teacher once.

Entries are safetensors files (no pickle) with a JSON sidecar carrying the SHA-256 of the
file and the identity of what it holds; an entry that fails either check is reported and
recomputed. Each file is published atomically (temporary file, fsync, rename; the sidecar last),
so a crash at any moment leaves either a valid entry or one that fails its checks, never a wrong
one read as valid. Processes that need the same teacher's outputs on the same data at once take
turns through a lock file (``locks/``): one computes, the others then read its entries. A full disk
is one line naming the folder and the space the entry needs; nothing half-written stays behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from . import durable, faults, progress
from .data import Inputs
from .errors import StoreError, TeacherError
from .teachers import Teacher

FORMAT_VERSION = 1
LOGITS = "logits"


def feature_piece(path: str) -> str:
    return f"features/{path}"


def mc_piece(k: int, p: float | None, seed: int = 0) -> str:
    return f"mc/k={k},p={p},seed={seed},v=2"  # v=2: per-pass dropout generators (amalgamator.mcdropout)


def cache_home() -> Path:
    """Where amalgamator keeps caches: ``$AMALGAMATOR_CACHE``, else ``~/.cache/amalgamator``."""
    return Path(os.environ.get("AMALGAMATOR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "amalgamator"))


def default_root() -> Path:
    """``$AMALGAMATOR_STORE``, else ``$AMALGAMATOR_CACHE/store``, else ``~/.cache/amalgamator/store``."""
    if os.environ.get("AMALGAMATOR_STORE"):
        return Path(os.environ["AMALGAMATOR_STORE"])
    return cache_home() / "store"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class StoreStats:
    """What the store did during a run: hits, computed pieces, recomputed corrupt entries, seconds."""

    hits: int = 0
    computed: int = 0
    repaired: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"teacher": 0.0, "mc": 0.0})


@dataclass(frozen=True)
class Ranks:
    """This process's place in a multi-process run (``index`` of ``count``), and a barrier that returns when
    every process reaches it. With it the store splits each teacher pass: every rank runs the teachers over
    its own contiguous share of the rows once, and all ranks read the shares back as one entry."""

    index: int
    count: int
    barrier: Callable[[], None]

    def share(self, n: int, index: int | None = None) -> tuple[int, int]:
        """The rows ``[start, stop)`` of ``n`` that rank ``index`` (default: this one) computes."""
        i = self.index if index is None else index
        per = -(-n // self.count)
        start = min(n, i * per)
        return start, min(n, start + per)


class TeacherStore:
    """Disk cache of teacher outputs keyed by (teacher, data, piece)."""

    def __init__(
        self,
        root: str | Path | None = None,
        batch_size: int = 256,
        progress: bool | None = None,
        device: str | torch.device | None = None,
    ):
        self.root = Path(root) if root is not None else default_root()
        self.batch_size = batch_size
        self.progress = progress
        self.device = device  # where teachers run while their outputs are computed (None: where they are)
        self.stats = StoreStats()

    # Keys and files ---------------------------------------------------------
    @staticmethod
    def key(teacher: Teacher, inputs: Inputs, piece: str) -> str:
        raw = f"v{FORMAT_VERSION}|{teacher.fingerprint()}|{inputs.fingerprint()}|{piece}"
        return hashlib.sha256(raw.encode()).hexdigest()[:40]

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.root / key[:2]
        return d / f"{key}.safetensors", d / f"{key}.json"

    def _lock_path(self, teacher: Teacher, inputs: Inputs) -> Path:
        """The lock file guarding the entries of one (teacher, data) pair: one pass computes all its pieces."""
        pair = hashlib.sha256(f"{teacher.fingerprint()}|{inputs.fingerprint()}".encode()).hexdigest()[:40]
        return self.root / "locks" / f"{pair}.lock"

    def _read(self, teacher: Teacher, inputs: Inputs, piece: str) -> tuple[torch.Tensor | None, str | None]:
        """The entry's tensor, or None and why it is not usable (None: there is no entry at all)."""
        key = self.key(teacher, inputs, piece)
        data_path, meta_path = self._paths(key)
        has_data, has_meta = data_path.exists(), meta_path.exists()
        if not has_data and not has_meta:
            return None, None
        if not has_meta:
            return None, "incomplete (its sidecar is missing: an interrupted write)"
        if not has_data and b'"shards"' not in meta_path.read_bytes():
            return None, "incomplete (its data file is missing)"
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("teacher_fp") != teacher.fingerprint() or meta.get("data_fp") != inputs.fingerprint():
                return None, "it belongs to another teacher or dataset"
            if meta.get("piece") != piece:
                return None, f"it holds {meta.get('piece')!r}, not {piece!r}"
            if "shards" in meta:
                tensor, problem = self._read_shards(meta["shards"])
                if tensor is None:
                    return None, problem
            elif _sha256(data_path) != meta.get("sha256"):
                return None, "checksum mismatch"
            else:
                tensor = load_file(str(data_path))["value"]
            if tensor.shape[0] != len(inputs):
                return None, f"it has {tensor.shape[0]} rows, the data has {len(inputs)}"
            return tensor, None
        except (OSError, ValueError, KeyError, AttributeError, json.JSONDecodeError, SafetensorError) as exc:
            return None, f"unreadable ({type(exc).__name__})"  # a file that is not safetensors is never unpickled

    def _report(self, teacher: Teacher, inputs: Inputs, piece: str, problem: str) -> None:
        key = self.key(teacher, inputs, piece)
        self.stats.repaired += 1
        if problem.startswith("incomplete"):  # what a killed run leaves: expected, a note is enough
            progress.note(f"store entry {key} ({teacher.name}, {piece}) is {problem}; recomputing it.")
        else:
            progress.warn(f"store entry {key} ({teacher.name}, {piece}) is invalid: {problem}; recomputing it.")

    def _read_shards(self, shards: object) -> tuple[torch.Tensor | None, str | None]:
        """The rows of a sharded entry (its sidecar lists the shards' keys and checksums), in order."""
        if not isinstance(shards, list) or not shards:
            return None, "its shard list is damaged"
        parts = []
        for shard in shards:
            path = self._paths(str(shard.get("key", "")))[0] if isinstance(shard, dict) else None
            if path is None or not path.exists():
                return None, "incomplete (a shard is missing)"
            if _sha256(path) != shard.get("sha256"):
                return None, "a shard fails its checksum"
            parts.append(load_file(str(path))["value"])
        return torch.cat(parts), None

    def _publish_shards(self, teacher: Teacher, inputs: Inputs, piece: str, ranks: Ranks) -> None:
        """The entry of ``piece`` on the whole of ``inputs`` as the list of the ranks' shards (each an entry on
        its own rows, computed here if a rank left it missing), so every rank reads one entry. Call it holding
        the pair's lock."""
        shards = []
        for i in range(ranks.count):
            start, stop = ranks.share(len(inputs), i)
            if stop <= start:
                continue
            part = inputs.part(start, stop)
            if self._read(teacher, part, piece)[0] is None:  # that rank left its shard missing: compute it here
                self._compute(teacher, part, [piece], {})
            key = self.key(teacher, part, piece)
            meta = json.loads(self._paths(key)[1].read_text())
            shards.append({"key": key, "rows": [start, stop], "sha256": meta["sha256"]})
        meta = {"format": FORMAT_VERSION, "teacher": teacher.name, "teacher_fp": teacher.fingerprint(),
                "data_fp": inputs.fingerprint(), "piece": piece, "shards": shards,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        data_path, meta_path = self._paths(self.key(teacher, inputs, piece))
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                data_path.unlink()  # a whole-entry file of an earlier, damaged entry: the shards replace it
            durable.publish(meta_path, json.dumps(meta, indent=1).encode())
        except OSError as exc:
            raise StoreError(
                f"cannot write to the teacher-output store at {self.root} ({exc.strerror or exc}); "
                "set AMALGAMATOR_STORE to a writable folder."
            ) from None

    def _write(self, teacher: Teacher, inputs: Inputs, piece: str, value: torch.Tensor) -> None:
        """Publish one entry: the data file, then the sidecar that vouches for it (each atomically).

        Until the sidecar lands the entry reads as incomplete; a sidecar never points at data it did
        not checksum. Call it holding the pair's lock."""
        key = self.key(teacher, inputs, piece)
        data_path, meta_path = self._paths(key)
        data = safetensors_bytes({"value": value.detach().cpu().contiguous()})
        meta = {
            "format": FORMAT_VERSION,
            "teacher": teacher.name,
            "teacher_fp": teacher.fingerprint(),
            "data_fp": inputs.fingerprint(),
            "piece": piece,
            "shape": list(value.shape),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        meta_bytes = json.dumps(meta, indent=1).encode()
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            durable.remove_leftovers(data_path.parent, key)  # temporary files of a writer that was killed
            tmp = durable.temporary_name(data_path)
            try:
                durable.write_file(tmp, data)
                faults.point("store-data", tmp)
                with contextlib.suppress(FileNotFoundError):
                    meta_path.unlink()  # an old sidecar must never vouch for the new data, even for a moment
                os.replace(tmp, data_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            faults.point("store-meta", data_path)
            durable.publish(meta_path, meta_bytes)
            faults.point("store-entry", data_path)
        except OSError as exc:
            if durable.is_full(exc):
                with contextlib.suppress(OSError):
                    data_path.unlink()  # the data without its sidecar is useless: give the space back
                what = f"teacher {teacher.name!r}'s {piece} ({len(value)} rows)"
                raise StoreError(
                    f"{durable.space_message(self.root, what, len(data) + len(meta_bytes))}. Free some space "
                    "(or set AMALGAMATOR_STORE to a folder on another disk), then run again: entries already "
                    "stored are kept (an interrupted run continues with --resume / resume=True)."
                ) from None
            raise StoreError(
                f"cannot write to the teacher-output store at {self.root} ({exc.strerror or exc}); "
                "set AMALGAMATOR_STORE to a writable folder."
            ) from None

    # Computing ----------------------------------------------------------------
    def _compute_pass(
        self, teacher: Teacher, source: tuple[Inputs, bool], pieces: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """One eval-mode pass giving logits and every requested feature tap, each batch written into tensors
        allocated once for all rows (no list of small tensors to concatenate: half the peak memory, and no heap
        fragmentation over millions of rows)."""
        want_features = any(p.startswith("features/") for p in pieces)
        out: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        rows, prepared = source
        n = len(rows)
        n_batches = -(-n // self.batch_size)
        with progress.bar(f"teacher {teacher.name}", n_batches, self.progress) as advance:
            for start in range(0, n, self.batch_size):
                batch = rows.take(slice(start, start + self.batch_size))
                lg, ft = teacher.run(batch, features=want_features, prepared=prepared)
                for piece, value in ((LOGITS, lg), *((feature_piece(k), v) for k, v in ft.items())):
                    if piece not in out:
                        out[piece] = torch.empty((n, *value.shape[1:]), dtype=value.dtype)
                    out[piece][start : start + len(value)] = value
                advance()
        self.stats.seconds["teacher"] += time.perf_counter() - t0
        _check_finite(teacher, out[LOGITS])
        return {p: out[p] for p in pieces if p in out}

    def _compute_mc(self, teacher: Teacher, source: tuple[Inputs, bool], piece: str) -> torch.Tensor:
        params = dict(kv.split("=") for kv in piece.split("/", 1)[1].split(","))
        k, p, seed = int(params["k"]), (None if params["p"] == "None" else float(params["p"])), int(params["seed"])
        t0 = time.perf_counter()
        means = []
        rows, prepared = source
        n_batches = -(-len(rows) // self.batch_size)
        with (
            torch.random.fork_rng(devices=[]),
            progress.bar(f"MC dropout {teacher.name} (K={k})", n_batches, self.progress) as advance,
        ):
            torch.manual_seed(seed)
            for batch in rows.batches(self.batch_size):
                means.append(teacher.mc_probs(batch, k, p, prepared=prepared).mean(0))
                advance()
        self.stats.seconds["mc"] += time.perf_counter() - t0
        value = torch.cat(means)
        _check_finite(teacher, value)
        return value

    # Public -------------------------------------------------------------------
    def get(
        self, teacher: Teacher, inputs: Inputs, pieces: Sequence[str] = (LOGITS,), ranks: Ranks | None = None
    ) -> dict[str, torch.Tensor]:
        """Each requested piece of ``teacher``'s output on ``inputs``, from disk or computed once.

        Reading needs no lock (files are replaced atomically). What is missing is computed holding the
        (teacher, data) pair's lock: a second process that wants the same entries waits, then reads them.
        With ``ranks`` (every process of a multi-process run calls this together) each process computes
        only its share of the rows; the result is the same entry on every rank."""
        if ranks is not None and ranks.count > 1:
            return self._get_sharded(teacher, inputs, pieces, ranks)
        result: dict[str, torch.Tensor] = {}
        missing = []
        for piece in pieces:
            self._validate_piece(teacher, piece)
            got, _ = self._read(teacher, inputs, piece)
            if got is None:
                missing.append(piece)
            else:
                self.stats.hits += 1
                result[piece] = got
        if not missing:
            return result
        with self._locked(teacher, inputs):
            still = []
            for piece in missing:  # again under the lock: another process may have just written it
                got, problem = self._read(teacher, inputs, piece)
                if got is not None:
                    self.stats.hits += 1
                    result[piece] = got
                    continue
                if problem is not None:
                    self._report(teacher, inputs, piece, problem)
                still.append(piece)
            if still:
                self._compute(teacher, inputs, still, result)
        return {p: result[p] for p in pieces if p in result}

    def _get_sharded(
        self, teacher: Teacher, inputs: Inputs, pieces: Sequence[str], ranks: Ranks
    ) -> dict[str, torch.Tensor]:
        """``get`` in a multi-process run: each rank runs the teacher over its own rows into a shard entry;
        then rank 0 publishes the whole entry as the list of shards, and every rank reads it. Each row goes
        through the teacher once across all ranks. Every rank reaches both barriers, whatever it found."""
        for piece in pieces:
            self._validate_piece(teacher, piece)
        missing = [p for p in pieces if self._read(teacher, inputs, p)[0] is None]
        start, stop = ranks.share(len(inputs))
        if missing and stop > start:
            self.get(teacher, inputs.part(start, stop), missing)
        ranks.barrier()
        if missing and ranks.index == 0:
            with self._locked(teacher, inputs):
                for piece in missing:
                    if self._read(teacher, inputs, piece)[0] is None:
                        self._publish_shards(teacher, inputs, piece, ranks)
        ranks.barrier()
        result = {}
        for piece in pieces:
            got, problem = self._read(teacher, inputs, piece)
            if got is None:
                raise StoreError(
                    f"teacher {teacher.name!r}'s {piece} on this data is not readable after the ranks built it "
                    f"({problem or 'no entry'}); every process must see the same store folder (AMALGAMATOR_STORE)."
                )
            result[piece] = got
            if piece not in missing:
                self.stats.hits += 1
        return result

    @contextlib.contextmanager
    def _locked(self, teacher: Teacher, inputs: Inputs):
        """Hold the (teacher, data) pair's lock; a note when another process holds it and this one waits."""
        path = self._lock_path(teacher, inputs)

        def waiting() -> None:
            progress.note(f"waiting for another process computing teacher {teacher.name!r}'s outputs on this data")

        held = contextlib.ExitStack()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(durable.lock(path, holder=f"pid {os.getpid()}", on_wait=waiting))
        except OSError as exc:
            held.close()
            raise StoreError(
                f"cannot write to the teacher-output store at {self.root} ({exc.strerror or exc}); "
                "set AMALGAMATOR_STORE to a writable folder."
            ) from None
        with held:
            yield

    def _compute(self, teacher: Teacher, inputs: Inputs, missing: list[str], result: dict) -> None:
        with teacher.on_device(self.device):  # moved there for this pass only, and back after
            self._compute_on_device(teacher, inputs, missing, result)

    def _compute_on_device(self, teacher: Teacher, inputs: Inputs, missing: list[str], result: dict) -> None:
        t0 = time.perf_counter()
        source = teacher.source(inputs)  # preprocessed once for the logits pass and every MC pass
        self.stats.seconds["teacher"] += time.perf_counter() - t0
        plain = [p for p in missing if not p.startswith("mc/")]
        if plain:
            computed = self._compute_pass(teacher, source, plain)
            for piece, value in computed.items():
                self._write(teacher, inputs, piece, value)
                result[piece] = value
                self.stats.computed += 1
        for piece in (p for p in missing if p.startswith("mc/")):
            value = self._compute_mc(teacher, source, piece)
            self._write(teacher, inputs, piece, value)
            result[piece] = value
            self.stats.computed += 1

    @staticmethod
    def _validate_piece(teacher: Teacher, piece: str) -> None:
        if piece.startswith("features/"):
            path = piece.split("/", 1)[1]
            if path not in teacher.features:
                raise TeacherError(
                    f"teacher {teacher.name!r} has no feature tap {path!r}; create it with "
                    f"Teacher(..., features={path!r}) (its taps: {teacher.features or 'none'})."
                )
        elif piece != LOGITS and not piece.startswith("mc/"):
            raise StoreError(f"unknown store piece {piece!r}; use 'logits', 'features/<path>' or mc_piece(...).")


#: rows of a teacher's outputs checked for NaN at a time: no mask the size of the outputs
CHECK_ROWS = 1 << 16


def _check_finite(teacher: Teacher, value: torch.Tensor) -> None:
    flat = value.reshape(len(value), -1)
    count, first = 0, -1
    for start in range(0, len(flat), CHECK_ROWS):
        bad = ~torch.isfinite(flat[start : start + CHECK_ROWS]).all(1)
        if bad.any():
            first = first if count else start + int(bad.nonzero()[0, 0])
            count += int(bad.sum())
    if count:
        raise TeacherError(
            f"teacher {teacher.name!r} produced NaN or infinite logits for {count} of {len(value)} "
            f"examples (first at row {first}); check the teacher's weights and the input scaling."
        )
