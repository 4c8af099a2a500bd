"""The teacher-output store: each teacher runs over each dataset once, the results live on disk.

An entry holds one *piece* of one teacher's output on one dataset: ``logits``, a feature
tap (``features/<module path>``), or Monte-Carlo dropout statistics (``mc/k=<K>,p=<p>``:
the mean of K dropout softmaxes). Its key is derived from the teacher's fingerprint
(weights, labels, kind), the data's fingerprint (content) and the piece, so comparing
several methods on one dataset runs each teacher once.

Entries are safetensors files (no pickle) with a JSON sidecar carrying the SHA-256 of the
file and the identity of what it holds; an entry that fails either check is reported and
recomputed. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import progress
from .data import Inputs
from .errors import StoreError, TeacherError
from .io import save_tensors
from .teachers import Teacher

FORMAT_VERSION = 1
LOGITS = "logits"


def feature_piece(path: str) -> str:
    return f"features/{path}"


def mc_piece(k: int, p: float | None, seed: int = 0) -> str:
    return f"mc/k={k},p={p},seed={seed}"


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


class TeacherStore:
    """Disk cache of teacher outputs keyed by (teacher, data, piece)."""

    def __init__(self, root: str | Path | None = None, batch_size: int = 256, progress: bool | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.batch_size = batch_size
        self.progress = progress
        self.stats = StoreStats()

    # Keys and files ---------------------------------------------------------
    @staticmethod
    def key(teacher: Teacher, inputs: Inputs, piece: str) -> str:
        raw = f"v{FORMAT_VERSION}|{teacher.fingerprint()}|{inputs.fingerprint()}|{piece}"
        return hashlib.sha256(raw.encode()).hexdigest()[:40]

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.root / key[:2]
        return d / f"{key}.safetensors", d / f"{key}.json"

    def _read(self, teacher: Teacher, inputs: Inputs, piece: str) -> torch.Tensor | None:
        key = self.key(teacher, inputs, piece)
        data_path, meta_path = self._paths(key)
        if not data_path.exists() and not meta_path.exists():
            return None
        problem = None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("teacher_fp") != teacher.fingerprint() or meta.get("data_fp") != inputs.fingerprint():
                problem = "it belongs to another teacher or dataset"
            elif meta.get("piece") != piece:
                problem = f"it holds {meta.get('piece')!r}, not {piece!r}"
            elif _sha256(data_path) != meta.get("sha256"):
                problem = "checksum mismatch"
            else:
                tensor = load_file(str(data_path))["value"]
                if tensor.shape[0] != len(inputs):
                    problem = f"it has {tensor.shape[0]} rows, the data has {len(inputs)}"
                else:
                    return tensor
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            problem = f"unreadable ({type(exc).__name__})"
        progress.warn(f"store entry {key} ({teacher.name}, {piece}) is invalid: {problem}; recomputing it.")
        self.stats.repaired += 1
        return None

    def _write(self, teacher: Teacher, inputs: Inputs, piece: str, value: torch.Tensor) -> None:
        key = self.key(teacher, inputs, piece)
        data_path, meta_path = self._paths(key)
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = data_path.with_suffix(f".tmp{os.getpid()}")
            save_tensors({"value": value.contiguous()}, tmp)
            digest = _sha256(tmp)
            os.replace(tmp, data_path)
            meta = {
                "format": FORMAT_VERSION,
                "teacher": teacher.name,
                "teacher_fp": teacher.fingerprint(),
                "data_fp": inputs.fingerprint(),
                "piece": piece,
                "shape": list(value.shape),
                "sha256": digest,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            tmp_meta = meta_path.with_suffix(f".tmp{os.getpid()}")
            tmp_meta.write_text(json.dumps(meta, indent=1))
            os.replace(tmp_meta, meta_path)
        except OSError as exc:
            raise StoreError(
                f"cannot write to the teacher-output store at {self.root} ({exc.strerror}); "
                "set AMALGAMATOR_STORE to a writable folder."
            ) from None

    # Computing ----------------------------------------------------------------
    def _compute_pass(
        self, teacher: Teacher, source: tuple[Inputs, bool], pieces: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """One eval-mode pass giving logits and every requested feature tap."""
        want_features = any(p.startswith("features/") for p in pieces)
        logits, feats = [], {}
        t0 = time.perf_counter()
        rows, prepared = source
        n_batches = -(-len(rows) // self.batch_size)
        with progress.bar(f"teacher {teacher.name}", n_batches, self.progress) as advance:
            for batch in rows.batches(self.batch_size):
                lg, ft = teacher.run(batch, features=want_features, prepared=prepared)
                logits.append(lg)
                for k, v in ft.items():
                    feats.setdefault(k, []).append(v)
                advance()
        self.stats.seconds["teacher"] += time.perf_counter() - t0
        out = {LOGITS: torch.cat(logits)}
        _check_finite(teacher, out[LOGITS])
        for k, v in feats.items():
            out[feature_piece(k)] = torch.cat(v)
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
    def get(self, teacher: Teacher, inputs: Inputs, pieces: Sequence[str] = (LOGITS,)) -> dict[str, torch.Tensor]:
        """Each requested piece of ``teacher``'s output on ``inputs``, from disk or computed once."""
        result: dict[str, torch.Tensor] = {}
        missing = []
        for piece in pieces:
            self._validate_piece(teacher, piece)
            got = self._read(teacher, inputs, piece)
            if got is None:
                missing.append(piece)
            else:
                self.stats.hits += 1
                result[piece] = got
        if not missing:
            return result
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
        return result

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


def _check_finite(teacher: Teacher, value: torch.Tensor) -> None:
    bad = ~torch.isfinite(value).reshape(len(value), -1).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise TeacherError(
            f"teacher {teacher.name!r} produced NaN or infinite logits for {len(rows)} of {len(value)} "
            f"examples (first at row {int(rows[0])}); check the teacher's weights and the input scaling."
        )
