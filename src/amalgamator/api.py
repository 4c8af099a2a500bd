"""``amalgamate``: teachers + data → student, the whole flow in one call."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from accelerate import PartialState
from accelerate.utils import set_seed

from . import progress as _progress
from .data import Inputs
from .engine import History, TrainConfig, fit
from .errors import DataError, MethodError, TeacherError
from .labels import LabelSpace
from .methods import Context, Method, get_method
from .methods.reference import EnsemblePredictor
from .metrics import evaluate
from .store import StoreStats, TeacherStore
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
    if isinstance(teachers, Teacher):
        teachers = [teachers]
    teachers = list(teachers or [])
    if not teachers:
        raise TeacherError("no teachers given: pass teachers=[Teacher(...), ...].")
    for i, t in enumerate(teachers):
        if not isinstance(t, Teacher):
            raise TeacherError(
                f"teachers[{i}] is a {type(t).__name__}; wrap models as am.Teacher(model, labels=[...])."
            )
    return teachers


def _probe(teachers: Sequence[Teacher], parts: Sequence[Inputs]) -> None:
    """Run every teacher on two rows of each input part: shape and width errors surface at once."""
    for t in teachers:
        for part in parts:
            t.run(part.take(slice(0, 2)))


def _split_labeled(labeled: Any, union: LabelSpace) -> tuple[Inputs, torch.Tensor]:
    try:
        x_few, y_few = labeled
    except (TypeError, ValueError):
        raise DataError("labeled must be a pair (x_few, y_few) with y_few as label names.") from None
    x_in = Inputs(x_few, what="labeled x")
    y_names = [str(v) for v in np.asarray(y_few).reshape(-1)]
    if len(y_names) != len(x_in):
        raise DataError(f"labeled x has {len(x_in)} rows but y has {len(y_names)} labels; give one label per row.")
    return x_in, torch.as_tensor(union.encode(y_names, what="labeled y"))


def amalgamate(
    teachers: Sequence[Teacher],
    data: Any = None,
    method: str | Method = "kd",
    student: str | nn.Module = "mlp",
    labeled: tuple[Any, Sequence[str]] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    out: str | Path | None = None,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    method_options: dict[str, Any] | None = None,
    student_options: dict[str, Any] | None = None,
    store: TeacherStore | str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> Result:
    """Train one student over the union of the teachers' labels.

    Args:
        teachers: frozen experts, each with its own label names.
        data: unlabeled examples (numpy array, tensor, torch Dataset, or list of str).
        method: a registered name (``amalgamator methods`` lists them), or a Method instance.
        student: a preset (``"mlp"``, ``"cnn"``, ``"text"``) or an ``nn.Module`` backbone;
            a linear head over the union is added.
        labeled: optional ``(x_few, y_few)``, y as label names; required by ``supervised``.
        epochs, batch_size, seed, lr, weight_decay: training options (see ``TrainConfig``).
        out: folder for checkpoints (one per epoch), the student and its report.
        method_options: the method's own options (e.g. ``{"tau": 2.0}``).
        student_options: preset options (e.g. ``{"hidden": [128]}``).
        store: a TeacherStore or its folder; default ``~/.cache/amalgamator/store``.
        resume: continue from the last checkpoint in ``out``.
        progress: show progress bars (default: on unless AMALGAMATOR_QUIET=1).
    """
    t_start = time.perf_counter()
    if isinstance(method, Method):
        if method_options:
            raise MethodError("pass options to the Method instance itself, not method_options=.")
        method_obj, method = method, method.name
    else:
        method_obj = get_method(method)(**(method_options or {}))
    teachers = _check_teachers(teachers)
    union = LabelSpace.union([t.labels for t in teachers])
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, progress=progress
    )
    cfg.validate()

    parts: list[Inputs] = []
    y_parts: list[torch.Tensor] = []
    if data is not None:
        parts.append(Inputs(data, what="data"))
        y_parts.append(torch.full((len(parts[0]),), -1, dtype=torch.long))
    if labeled is not None:
        x_few, y_few = _split_labeled(labeled, union)
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
    method_obj.validate(teachers)
    _probe(teachers, parts)
    out_path = Path(out) if out is not None else None

    if not method_obj.trains:
        return Result(
            EnsemblePredictor(teachers), method, timings={"total": time.perf_counter() - t_start}, out=out_path
        )

    store_obj = store if isinstance(store, TeacherStore) else TeacherStore(store, progress=progress)
    outputs = []
    for t in teachers:
        pieces = method_obj.pieces(t)
        got = [store_obj.get(t, part, pieces) for part in parts]
        outputs.append({p: torch.cat([g[p] for g in got]) for p in pieces})
    inputs = parts[0] if len(parts) == 1 else Inputs.concat(parts)
    y = torch.cat(y_parts)

    set_seed(seed)
    st = Student.create(student, inputs, list(union), "multiclass", student_options)
    x = st.featurizer.transform(inputs)
    ctx = Context(
        teachers=teachers, union=union, outputs=outputs, inputs=inputs, y=y, student=st, features=x, config=cfg
    )

    def train(targets, rows, stage: str = "", epochs: int | None = None) -> History:
        stage_cfg = replace(cfg, epochs=epochs) if epochs is not None else cfg
        stage_out = (out_path / stage if stage else out_path) if out_path is not None else None
        return fit(st.network, method_obj, x, targets, rows, stage_cfg, out=stage_out, resume=resume)

    history = method_obj.run(ctx, train)

    st.method = method
    st.info = {
        "teachers": [{"name": t.name, "labels": list(t.labels)} for t in teachers],
        "method_options": method_obj.options,
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
        "rows": {"total": int(len(y)), "labeled": int((y >= 0).sum())},
        "final_loss": history.loss[-1],
    }
    timings = {
        "teacher": store_obj.stats.seconds["teacher"],
        "mc": store_obj.stats.seconds["mc"],
        "train": history.train_seconds,
        "total": time.perf_counter() - t_start,
    }
    result = Result(st, method, history, timings, store_obj.stats, out_path, method_obj.diagnostics, method_obj)
    from .report import student_report

    st.report = student_report(result, teachers)
    if out_path is not None and PartialState().is_main_process:
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
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    *,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    student_options: dict[str, Any] | None = None,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> Student:
    """Train a plain supervised classifier with the same presets and engine as students.

    This is how the demo and the benchmarks make teachers: save the result with
    ``.save(dir)`` and load it back with ``Teacher.from_pretrained(dir)``.
    """
    inputs = Inputs(x, what="x")
    names = [str(v) for v in np.asarray(y).reshape(-1)]
    if len(names) != len(inputs):
        raise DataError(f"x has {len(inputs)} rows but y has {len(names)} labels; give one label per row.")
    space = LabelSpace(labels if labels is not None else sorted(set(names)), owner="classifier label list")
    y_idx = torch.as_tensor(space.encode(names))
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, progress=progress
    )
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
        out=Path(out) if out is not None else None,
    )
    st.method = "supervised"
    st.info = {"train": {"epochs": epochs, "seed": seed, "rows": len(inputs)}, "final_loss": history.loss[-1]}
    return st
