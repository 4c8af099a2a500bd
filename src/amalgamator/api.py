"""``amalgamate``: teachers + data → student, the whole flow in one call."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import durable
from . import progress as _progress
from .data import Inputs
from .engine import History, TrainConfig, fit, process_state, train_identity
from .errors import DataError, MethodError, TeacherError
from .kinds import multilabel_targets, teacher_kinds
from .labels import LabelSpace
from .methods import Context, Method, get_method
from .methods.base import epochs_for
from .methods.reference import EnsemblePredictor
from .metrics import evaluate
from .models import check_student_options
from .rows import FeatureView
from .store import Ranks, StoreStats, TeacherStore
from .student import Student
from .teachers import Teacher


@dataclass
class Result:
    """What :func:`amalgamate` returns: the student (or the ensemble predictor) and how it was made."""

    student: Student | EnsemblePredictor
    method: str
    history: History | None = None
    timings: dict[str, float] = field(default_factory=dict)
    store: StoreStats | None = None
    out: Path | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    method_object: Method | None = None  # the trained method (its adaptors etc.), for analysis

    def evaluate(self, x: Any, y: Sequence[str]) -> dict[str, float]:
        return evaluate(self.student, x, y)


def _check_teachers(teachers: Sequence[Teacher]) -> list[Teacher]:
    if isinstance(teachers, (Teacher, Student)):
        teachers = [teachers]
    teachers = list(teachers or [])
    if not teachers:
        raise TeacherError("no teachers given: pass teachers=[Teacher(...), ...].")
    for i, t in enumerate(teachers):
        if isinstance(t, Student):
            raise TeacherError(
                f"teachers[{i}] is a trained Student; pass it as a teacher with student.as_teacher(name)."
            )
        if not isinstance(t, Teacher):
            raise TeacherError(
                f"teachers[{i}] is a {type(t).__name__}; wrap models as am.Teacher(model, labels=[...])."
            )
    return teachers


# Threads ---------------------------------------------------------------------------------------

THREADS_ENV = "AMALGAMATOR_THREADS"


def default_threads() -> int:
    """``$AMALGAMATOR_THREADS``, else one intra-op thread per two usable cores (at least 1, at most 8).

    Students and teacher passes here are small: more threads spend their time synchronising, and on
    a busy machine they oversubscribe the cores (the demo on 2 cores beside two busy processes: 17.5 s
    with one thread, 46.4 s with two; idle: 11.4 s and 11.0 s).
    """
    n = env_count(THREADS_ENV, "1")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)  # processes on this machine (torchrun sets it)
    return n if n is not None else max(1, min(8, usable_cores() // 2 // max(1, local)))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def env_count(name: str, example: str) -> int | None:
    """A whole number of at least 1 from environment variable ``name``, or None when it is unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise DataError(f"{name}={raw!r} is not a whole number; unset it or give e.g. {example}.") from None
    if n < 1:
        raise DataError(f"{name} must be at least 1, got {n}.")
    return n


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``n`` intra-op threads (default :func:`default_threads`), then restore torch's count."""
    n = default_threads() if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DataError(f"threads must be a whole number of at least 1, got {n!r}.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


# Run identity and the out folder ---------------------------------------------------------------

RUN_FILE = "run.json"


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _student_identity(student: str | nn.Module, options: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(student, str):
        return {"preset": student, "options": options or {}}
    shapes = [[k, list(v.shape), str(v.dtype)] for k, v in student.state_dict().items()]
    return {"module": f"{type(student).__module__}.{type(student).__qualname__}", "structure": _digest(shapes)}


def run_settings(
    teachers: Sequence[Teacher],
    parts: Sequence[Inputs],
    y: torch.Tensor,
    method: Method,
    student: str | nn.Module,
    student_options: dict[str, Any] | None,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """Everything that decides a run's result: a resume must match it exactly.

    Teachers by weight fingerprint (a teacher retrained in place is another teacher), data by
    content, the labels, the method and its options, the student and its options, and the
    training options (not progress, threads or how many checkpoints are kept).
    """
    train = train_identity(cfg)
    return {
        "teachers": [{"name": t.name, "weights": t.fingerprint()[:24], "features": list(t.features)} for t in teachers],
        "data": [p.fingerprint()[:24] for p in parts],
        "labels": _digest(y.numpy().tobytes()),
        "method": {"name": method.name, "options": json.loads(json.dumps(method.options, default=str))},
        "student": json.loads(json.dumps(_student_identity(student, student_options), default=str)),
        "train": train,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two runs' settings, in words a user can act on."""
    said: list[str] = []
    old_t = {t["name"]: t for t in old.get("teachers", [])}
    new_t = {t["name"]: t for t in new.get("teachers", [])}
    if list(old_t) != list(new_t):
        said.append(f"teachers {list(old_t)} → {list(new_t)}")
    else:
        for name, t in new_t.items():
            if t["weights"] != old_t[name]["weights"]:
                said.append(f"teacher {name!r} has other weights (retrained or replaced)")
            elif t != old_t[name]:
                said.append(f"teacher {name!r} taps other features")
    if old.get("data") != new.get("data"):
        said.append("the data differs")
    if old.get("labels") != new.get("labels"):
        said.append("the labeled rows differ")
    for key in ("method", "student", "train"):
        a, b = old.get(key, {}), new.get(key, {})
        if a != b:
            changed = [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            said.append(f"{key} {'; '.join(changed)}")
    return said or ["the settings were written by another version of amalgamator"]


def _checkpoint_dirs(out: Path) -> list[Path]:
    """Checkpoint folders of a run: ``out/checkpoints`` and each stage's ``out/<stage>/checkpoints``."""
    return [d for d in [out / "checkpoints", *out.glob("*/checkpoints")] if d.is_dir() and any(d.glob("epoch-*"))]


def _writable_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"out {out} is a file; give a folder for the checkpoints, the student and its report.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(
            f"cannot write to out folder {out} ({exc.strerror or exc}); choose a folder you can write to."
        ) from None


LOCK_FILE = ".amalgamator.lock"


@contextlib.contextmanager
def out_lock(out: Path | None) -> Iterator[None]:
    """Hold ``out/.amalgamator.lock`` (an ``flock``) for a whole run: a second run into the same folder
    is refused with the holder's pid instead of interleaving checkpoints. The system releases the lock
    when its process ends, however it ends, so a killed run never blocks the next one. Only the main
    process of a distributed run takes it. ``None`` (no out folder): nothing to hold."""
    if out is None or not process_state().is_main_process:
        yield
        return
    _writable_folder(out)
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    try:
        with durable.lock(out / LOCK_FILE, wait=False, holder=holder):
            yield
    except durable.Busy as busy:
        raise DataError(
            f"out folder {out} is in use by another run ({busy.holder or 'holder unknown'}); wait for it to finish "
            "or give another out folder (two runs writing one folder would mix their checkpoints)."
        ) from None


def prepare_out(out: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Check ``out`` before any teacher runs, so that no work is lost and no stale run is picked up.

    A resume continues only a run with identical settings (``run.json``); a fresh run into a folder
    that holds another run's checkpoints is refused unless ``overwrite``, and a fresh run over the
    same settings clears the old checkpoints first, so epochs of two runs can never mix.
    """
    _writable_folder(out)
    state = process_state()
    run_file = out / RUN_FILE
    try:
        old = json.loads(run_file.read_text()) if run_file.exists() else None
    except (OSError, json.JSONDecodeError):
        old = {}
    ckpts = _checkpoint_dirs(out)
    same = old is not None and old.get("settings") == settings
    if resume:
        if ckpts and not same:
            why = "; ".join(_differences(old.get("settings", {}), settings)) if old else "it has no run.json"
            raise DataError(
                f"cannot resume from {out}: its checkpoints come from a run with other settings ({why}). "
                "Resume with exactly the same teachers, data and options, or start fresh in another out folder "
                "(or pass overwrite=True / --overwrite to replace it)."
            )
        if not ckpts:
            _progress.warn(f"nothing to resume in {out} (no checkpoints): training from the first epoch.")
    elif ckpts:
        if not same and not overwrite:
            why = "; ".join(_differences(old.get("settings", {}), settings)) if old else "it has no run.json"
            raise DataError(
                f"out folder {out} holds checkpoints of another run ({why}). Choose a fresh out folder, "
                "resume that run with its own settings, or pass overwrite=True / --overwrite to replace it."
            )
        if state.is_main_process:
            for d in ckpts:
                shutil.rmtree(d)
            _progress.note(f"{out}: removed the checkpoints of an earlier run; starting from the first epoch.")
    if state.is_main_process:
        record = json.dumps({"settings": settings, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1).encode()
        durable.remove_leftovers(out, RUN_FILE)  # a temporary run.json of a run that was killed (we hold the lock)
        try:
            durable.publish(run_file, record)  # a crash never leaves half of it
        except OSError as exc:
            if durable.is_full(exc):
                raise DataError(f"{durable.space_message(out, RUN_FILE, len(record))}; free some space.") from None
            raise DataError(f"cannot write {run_file} ({exc.strerror or exc}); use a writable folder.") from None
    state.wait_for_everyone()


def _probe(teachers: Sequence[Teacher], parts: Sequence[Inputs]) -> None:
    """Run every teacher on two rows of each input part: shape and width errors surface at once. In a
    multi-process run the main process probes (the launcher stops the others when it fails)."""
    if not process_state().is_main_process:
        return
    for t in teachers:
        for part in parts:
            t.run(part.take(slice(0, 2)))


def _split_labeled(labeled: Any, union: LabelSpace, kind: str = "multiclass") -> tuple[Inputs, torch.Tensor]:
    """The labeled rows and their targets: a union index per row (multiclass), or a 0/1 row over the
    union for multilabel kinds (a 0/1 matrix in union order, or one list of label names per row)."""
    try:
        x_few, y_few = labeled
    except (TypeError, ValueError):
        raise DataError("labeled must be a pair (x_few, y_few) with y_few as label names.") from None
    x_in = Inputs(x_few, what="labeled x")
    if kind != "multiclass":
        y = multilabel_targets(y_few, list(union), "labeled y")
        if len(y) != len(x_in):
            raise DataError(f"labeled x has {len(x_in)} rows but y has {len(y)}; give one label row per example.")
        return x_in, torch.as_tensor(y, dtype=torch.float32)
    y_names = [str(v) for v in np.asarray(y_few).reshape(-1)]
    if len(y_names) != len(x_in):
        raise DataError(f"labeled x has {len(x_in)} rows but y has {len(y_names)} labels; give one label per row.")
    return x_in, torch.as_tensor(union.encode(y_names, what="labeled y"))


def amalgamate(
    teachers: Sequence[Teacher],
    data: Any = None,
    method: str | Method = "auto",
    student: str | nn.Module = "mlp",
    labeled: tuple[Any, Sequence[str]] | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    method_options: dict[str, Any] | None = None,
    student_options: dict[str, Any] | None = None,
    store: TeacherStore | str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep_checkpoints: int = 3,
    threads: int | None = None,
    progress: bool | None = None,
    mixed_precision: str = "no",
) -> Result:
    """Train one student over the union of the teachers' labels.

    Args:
        teachers: frozen experts, each with its own label names.
        data: unlabeled examples (numpy array, tensor, torch Dataset, or list of str), or the path of a ``.npy``
            file (``np.save``): a float32 pool on disk is read as it is used, so memory stays flat in its size.
        method: a registered name (``amalgamator methods`` lists them), or a Method instance; the
            default ``"auto"`` picks one from the labels given and the routing diagnosis, and says why.
        student: a preset (``"mlp"``, ``"cnn"``, ``"text"``, ``"lstm"``, ``"cnn1d"``) or an ``nn.Module``
            backbone; a linear head over the union is added.
        labeled: optional ``(x_few, y_few)``, y as label names; required by ``supervised``.
        epochs: passes over the data (default 10); or give ``steps``, the number of optimiser steps,
            and the epochs are counted for you. Fewer than 200 steps warn: a student learns little.
        batch_size, seed, lr, weight_decay: training options (see ``TrainConfig``).
        out: folder for checkpoints (one per epoch), ``run.json``, the student and its report.
        method_options: the method's own options (e.g. ``{"tau": 2.0}``), checked by name and range.
        student_options: preset options (e.g. ``{"hidden": [128]}``), checked by name and range.
        store: a TeacherStore or its folder; default ``~/.cache/amalgamator/store``.
        resume: continue from the last checkpoint in ``out``; refused unless every setting matches.
        overwrite: replace another run's checkpoints in ``out`` (otherwise that is refused).
        keep_checkpoints: how many of the latest epoch checkpoints to keep (resume needs only the last).
        threads: torch intra-op threads for this call (default: ``$AMALGAMATOR_THREADS``, else one
            per two cores); torch's own setting is restored afterwards.
        progress: show progress bars (default: on a terminal unless AMALGAMATOR_QUIET=1).
        mixed_precision: ``"bf16"`` or ``"fp16"`` (GPU only) runs the student's forward under autocast through
            Accelerate; losses stay in float32. Default ``"no"``.

    Several processes (``amalgamator run --processes N``, ``torchrun`` or ``accelerate launch`` running a
    script that calls this): each process runs the teachers over its share of the rows once, and the student
    trains with DDP; the result is returned in every process and saved by the first.
    """
    check_budget(epochs, steps)
    with torch_threads(threads):
        return _amalgamate(
            teachers, data, method, student, labeled, out,
            TrainConfig(epochs=epochs or 10, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                        progress=progress, keep_checkpoints=keep_checkpoints, mixed_precision=mixed_precision),
            method_options, student_options, store, resume, overwrite, steps,
        )  # fmt: skip


def check_budget(epochs: int | None, steps: int | None) -> None:
    """``epochs`` or ``steps``, not both; ``steps`` a whole number of at least 1."""
    if epochs is not None and steps is not None:
        raise DataError(f"give epochs= or steps=, not both (got epochs={epochs}, steps={steps}).")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise DataError(f"steps must be a whole number of at least 1, got {steps!r}.")


def _method(method: str | Method, options: dict[str, Any] | None) -> tuple[Method, str]:
    if isinstance(method, Method):
        if options:
            raise MethodError("pass options to the Method instance itself, not method_options=.")
        return method, method.name
    return get_method(method)(**(options or {})), method


def check_student(student: str | nn.Module, options: dict[str, Any] | None) -> None:
    """The student choice and its options, checked before anything runs."""
    if isinstance(student, nn.Module):
        if options:
            raise DataError(
                "student_options apply to a preset student; for your own nn.Module, set its options when you build it."
            )
    elif isinstance(student, str):
        check_student_options(student, options)
    else:
        raise DataError(f"student must be a preset name or an nn.Module, not {type(student).__name__}.")


def check_inputs(teachers: Sequence[Teacher], parts: Sequence[Inputs]) -> None:
    """Every input part (pool, labeled rows, test rows) in one layout that every teacher accepts, before
    any training: a wrong width in a test file fails in seconds, not after the last epoch."""
    first = parts[0]
    for part in parts[1:]:
        if part.is_text != first.is_text:
            kinds = {True: "text", False: "numeric"}
            raise DataError(
                f"{part.what} is {kinds[part.is_text]} but {first.what} is {kinds[first.is_text]}; "
                "give every part the same kind of data."
            )
        if not first.is_text and len(first.shape) == len(part.shape) == 3 and first.shape[1] != part.shape[1]:
            raise DataError(
                f"{part.what} has {part.shape[1]} channels but {first.what} has {first.shape[1]}; "
                "every sequence needs the same channels."
            )
        if not first.is_text and not _same_row_layout(first.shape, part.shape):
            raise DataError(
                f"{part.what} has rows of shape {part.shape[1:]} but {first.what} has rows of shape "
                f"{first.shape[1:]}; every part must have the layout the teachers and the student read."
            )
    _probe(teachers, parts)


def _same_row_layout(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal row shapes; sequences ``(channels, length)`` may differ in length only."""
    if len(a) == 3 and len(b) == 3:
        return a[1] == b[1]
    return a[1:] == b[1:]


def _amalgamate(
    teachers, data, method, student, labeled, out, cfg: TrainConfig, method_options, student_options, store,
    resume: bool, overwrite: bool, steps: int | None = None,
) -> Result:  # fmt: skip
    """The flow in named steps: check inputs, fill the store, build the student, build the context,
    train, save."""
    from accelerate.utils import set_seed

    t_start = time.perf_counter()
    method_obj, method = _method(method, method_options)
    teachers = _check_teachers(teachers)
    if "embedding" in teacher_kinds(teachers):
        method_obj.validate(teachers)
        cfg.validate()
        with out_lock(Path(out).expanduser() if out is not None else None):  # held to the end, as below
            return _amalgamate_embeddings(
                teachers, data, method_obj, method, cfg, out, resume, overwrite, steps, t_start
            )
    union = LabelSpace.union([t.labels for t in teachers])
    kind = method_obj.student_kind(teacher_kinds(teachers))
    cfg.validate()
    check_student(student, student_options)
    method_obj.validate(teachers)
    parts, y = _gather_rows(data, labeled, union, kind, method_obj, method, teachers)
    check_inputs(teachers, parts)
    out_path = Path(out).expanduser() if out is not None else None
    if resume and out_path is None:
        raise DataError("resume needs out: the folder whose checkpoints to continue from.")
    if not method_obj.trains:
        return Result(
            EnsemblePredictor(teachers), method, timings={"total": time.perf_counter() - t_start}, out=out_path
        )
    if steps is not None:  # as many epochs as give at least ``steps`` optimiser steps over every row
        cfg = replace(cfg, epochs=epochs_for(len(y), cfg.batch_size, 1, steps))
    with out_lock(out_path):  # held to the end: a second run into this folder is refused, not interleaved
        if out_path is not None:
            settings = run_settings(teachers, parts, y, method_obj, student, student_options, cfg)
            prepare_out(out_path, settings, resume, overwrite)

        store_obj, outputs = _fill_store(teachers, parts, method_obj, store, cfg)
        inputs = parts[0] if len(parts) == 1 else Inputs.concat(parts)
        set_seed(cfg.seed)
        st = Student.create(student, inputs, list(union), kind, student_options)
        x = FeatureView(inputs, st.featurizer) if inputs.mapped else st.featurizer.transform(inputs)  # a pool on
        # disk is featurized a batch at a time, as the engine asks for it: memory stays flat in the pool's size
        ctx = Context(
            teachers=teachers, union=union, outputs=outputs, inputs=inputs, y=y, student=st, features=x, config=cfg
        )
        history = method_obj.run(ctx, _trainer(st, method_obj, x, cfg, out_path, resume))
        st = ctx.student  # a method may hand back another student (Context.replace_student)
        return _finish(st, method, method_obj, teachers, student_options, cfg, y, history, store_obj, out_path, t_start)


def _amalgamate_embeddings(
    teachers: list[Teacher], data: Any, method_obj: Method, method: str, cfg: TrainConfig, out: Any,
    resume: bool, overwrite: bool, steps: int | None, t_start: float,
) -> Result:  # fmt: skip
    """The flow for word-embedding teachers: the target vocabulary (``data``: a list of words, or None for
    the union of the sources'), each source's rows, the method (which trains through the engine when it
    learns), and a saved :class:`~amalgamator.metaembedding.MetaEmbedding`."""
    from accelerate.utils import set_seed

    from .metaembedding import EmbeddingContext, MetaEmbedding, target_vocabulary

    words, unknown = target_vocabulary([t.table for t in teachers], data)
    if unknown:
        _progress.warn(f"{unknown} of the given words are in no source's vocabulary: left out (no source says "
                       "anything about them).")  # fmt: skip
    if not words:
        raise DataError("none of the given words is in any source's vocabulary: nothing to embed.")
    if steps is not None:
        cfg = replace(cfg, epochs=epochs_for(len(words), cfg.batch_size, 1, steps))
    out_path = Path(out).expanduser() if out is not None else None
    if resume and out_path is None:
        raise DataError("resume needs out: the folder whose checkpoints to continue from.")
    if out_path is not None:
        train_opts = train_identity(cfg)
        settings = {"teachers": [{"name": t.name, "weights": t.fingerprint()[:24]} for t in teachers],
                    "data": _digest("\n".join(words).encode()),
                    "method": {"name": method_obj.name,
                               "options": json.loads(json.dumps(method_obj.options, default=str))},
                    "train": train_opts}  # fmt: skip
        prepare_out(out_path, settings, resume, overwrite)
    set_seed(cfg.seed)
    ctx = EmbeddingContext(list(teachers), words, [t.table.rows(words) for t in teachers], cfg)

    def train(x: torch.Tensor, targets: dict[str, torch.Tensor], network: nn.Module, stage: str = "") -> History:
        """One engine pass over the rows of ``x`` (every word, once per epoch)."""
        stage_out = (out_path / stage if stage else out_path) if out_path is not None else None
        return fit(network, method_obj, x, targets, np.arange(len(x)), cfg, out=stage_out, resume=resume)

    history = method_obj.run(ctx, train)
    if ctx.result is None:
        raise MethodError(f"method {method!r} set no meta-embedding (ctx.result); this is a bug in the method.")
    info = {"teachers": [{"name": t.name, "kind": t.kind, "words": len(t.table), "dim": t.table.dim} for t in teachers],
            "method_options": method_obj.options, "words": len(words),
            "coverage": {t.name: float((r >= 0).mean()) for t, r in zip(teachers, ctx.rows, strict=True)},
            "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                      "weight_decay": cfg.weight_decay, "seed": cfg.seed}}  # fmt: skip
    student = MetaEmbedding(words, ctx.result, method, info)
    timings = {"train": history.this_call_seconds if history else 0.0, "total": time.perf_counter() - t_start}
    result = Result(student, method, history, timings, None, out_path, method_obj.diagnostics, method_obj)  # type: ignore[arg-type]
    from .report import embedding_report

    student.report = embedding_report(result, teachers)
    if out_path is not None and process_state().is_main_process:
        student.save(out_path / "student")
        (out_path / "report.md").write_text(student.report)
    return result


def _gather_rows(
    data: Any, labeled: Any, union: LabelSpace, kind: str, method_obj: Method, method: str, teachers: list[Teacher]
) -> tuple[list[Inputs], torch.Tensor]:
    """Step 1, the rows: the unlabeled data, then the labeled rows, with their targets (``Context.y``)."""
    parts: list[Inputs] = []
    y_parts: list[torch.Tensor] = []
    width = () if kind == "multiclass" else (len(union),)
    if data is not None:
        parts.append(Inputs(data, what="data"))
        y_parts.append(torch.full((len(parts[0]), *width), -1, dtype=torch.long if not width else torch.float32))
    if labeled is not None:
        x_few, y_few = _split_labeled(labeled, union, kind)
        parts.append(x_few)
        y_parts.append(y_few)
    if not parts:
        raise DataError("no data: pass data= (unlabeled examples) and/or labeled=(x, y).")
    if labeled is not None and method_obj.uses_labels != "never" and len(y_parts[-1]) < len(teachers):
        _progress.warn(
            f"the labeled set has {len(y_parts[-1])} examples for {len(teachers)} teachers: too few to learn "
            "anything about every teacher; label at least a few examples per teacher."
        )
    if method_obj.uses_labels == "required" and labeled is None:
        raise MethodError(f"method {method!r} trains on labels: pass labeled=(x, y) with y as label names.")
    return parts, _joined(y_parts)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts one after the other; a single part as it is (``torch.cat`` would copy it: a pool's size of
    memory for nothing)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _fill_store(
    teachers: list[Teacher], parts: list[Inputs], method_obj: Method, store: Any, cfg: TrainConfig
) -> tuple[TeacherStore, list[dict[str, torch.Tensor]]]:
    """Step 2: every teacher's outputs on every row, run once and kept on disk."""
    store_obj = store if isinstance(store, TeacherStore) else TeacherStore(store, progress=cfg.progress)
    device = process_state().device
    if store_obj.device is None and device.type != "cpu":  # teachers run on this process's GPU, then leave it
        store_obj.device = device
    ranks = store_ranks()
    outputs = []
    for t in teachers:
        pieces = method_obj.pieces(t)
        got = [store_obj.get(t, part, pieces, ranks=ranks) for part in parts]
        outputs.append({p: _joined([g[p] for g in got]) for p in pieces})
    return store_obj, outputs


def store_ranks() -> Ranks | None:
    """In a multi-process run, this process's share of every teacher pass (None in one process)."""
    state = process_state()
    if state.num_processes == 1:
        return None
    return Ranks(state.process_index, state.num_processes, state.wait_for_everyone)


def _trainer(
    st: Student, method_obj: Method, x: Any, cfg: TrainConfig, out_path: Path | None, resume: bool
) -> Callable[..., History]:
    """Step 5's engine pass, handed to the method (methods never import the engine)."""

    def train(
        targets: dict[str, torch.Tensor],
        rows: Any,
        stage: str = "",
        epochs: int | None = None,
        network: nn.Module | None = None,
        objective: Method | None = None,
        lr: float | None = None,
    ) -> History:
        """One engine pass: the student (or an auxiliary ``network`` with its ``objective``, e.g. TC's
        trust learner) on ``rows``; a ``stage`` keeps its own checkpoints under ``out/<stage>/``."""
        changes = {k: v for k, v in {"epochs": epochs, "lr": lr}.items() if v is not None}
        stage_cfg = replace(cfg, **changes) if changes else cfg
        stage_out = (out_path / stage if stage else out_path) if out_path is not None else None
        return fit(
            network if network is not None else st.network,
            objective if objective is not None else method_obj,
            x, targets, rows, stage_cfg, out=stage_out, resume=resume,
        )  # fmt: skip

    return train


def _finish(
    st: Student, method: str, method_obj: Method, teachers: list[Teacher], student_options: Any,
    cfg: TrainConfig, y: torch.Tensor, history: History, store_obj: TeacherStore, out_path: Path | None,
    t_start: float,
) -> Result:  # fmt: skip
    """Step 6: record how the student was made, write its report, save it."""
    labeled = (y >= 0) if y.ndim == 1 else (y >= 0).all(1)
    st.method = method
    st.info = {
        "teachers": [{"name": t.name, "labels": list(t.labels), "kind": t.kind} for t in teachers],
        "method_options": method_obj.options,
        "student_options": dict(student_options or {}),
        "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                  "weight_decay": cfg.weight_decay, "seed": cfg.seed},
        "rows": {"total": int(len(y)), "labeled": int(labeled.sum())},
        "final_loss": history.loss[-1],
    }  # fmt: skip
    if getattr(method_obj, "choice", None):
        st.info["method_choice"] = method_obj.choice
    if getattr(method_obj, "variant", ""):
        st.info["method_variant"] = method_obj.variant
    timings = {
        "teacher": store_obj.stats.seconds["teacher"],
        "mc": store_obj.stats.seconds["mc"],
        "train": history.this_call_seconds,
        "total": time.perf_counter() - t_start,
    }
    result = Result(st, method, history, timings, store_obj.stats, out_path, method_obj.diagnostics, method_obj)
    from .report import student_report

    st.report = student_report(result, teachers)
    if out_path is not None and process_state().is_main_process:
        st.save(out_path / "student")
        (out_path / "report.md").write_text(st.report)
    if store_obj.stats.repaired:
        _progress.console.print(f"[yellow]repaired {store_obj.stats.repaired} corrupt store entries[/]")
    return result


def train_classifier(
    x: Any,
    y: Sequence[str],
    student: str | nn.Module = "mlp",
    labels: Sequence[str] | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    *,
    steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    student_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> Student:
    """Train a plain supervised classifier with the same presets and engine as students.

    This is how the demo and the benchmarks make teachers: save the result with
    ``.save(dir)`` and load it back with ``Teacher.from_pretrained(dir)``.
    """
    from accelerate.utils import set_seed

    inputs = Inputs(x, what="x")
    names = [str(v) for v in np.asarray(y).reshape(-1)]
    if len(names) != len(inputs):
        raise DataError(f"x has {len(inputs)} rows but y has {len(names)} labels; give one label per row.")
    space = LabelSpace(labels if labels is not None else sorted(set(names)), owner="classifier label list")
    y_idx = torch.as_tensor(space.encode(names))
    check_budget(epochs, steps)
    if steps is not None:
        epochs = epochs_for(len(inputs), batch_size, 1, steps)
    cfg = TrainConfig(
        epochs=epochs or 20, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, progress=progress
    )
    cfg.validate()
    check_student(student, student_options)
    out_path = Path(out).expanduser() if out is not None else None
    with torch_threads(threads), out_lock(out_path):
        set_seed(seed)
        st = Student.create(student, inputs, list(space), "multiclass", student_options)
        method = get_method("supervised")()
        ctx = Context(teachers=[], union=space, outputs=[], inputs=inputs, y=y_idx)
        history = fit(
            st.network,
            method,
            st.featurizer.transform(inputs),
            method.prepare(ctx),
            method.train_rows(ctx),
            cfg,
            out=out_path,
        )
    st.method = "supervised"
    st.info = {"train": {"epochs": cfg.epochs, "seed": seed, "rows": len(inputs)}, "final_loss": history.loss[-1]}
    return st
