"""Benchmark teachers: trained on their own classes of a teacher split, cached on disk.

A teacher is a saved student folder under ``$AMALGAMATOR_CACHE/teachers/<key>``, where the
key hashes everything that determines it (dataset, classes, architecture, options, seed and
the exact training rows), so reruns skip training and a change of any input retrains.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api import train_classifier
from ..store import cache_home
from ..teachers import Teacher

CACHE_VERSION = 1


def cache_root() -> Path:
    return cache_home() / "teachers"


@dataclass
class TeacherSpec:
    """How to make one teacher: which labels, which architecture and training options."""

    name: str
    labels: list[str]
    student: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128


def _key(dataset: str, spec: TeacherSpec, seed: int, rows: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, dataset, spec.__dict__, seed], sort_keys=True).encode())
    h.update(np.asarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def cached_teacher(
    dataset: str, spec: TeacherSpec, x: Any, y: np.ndarray, rows: np.ndarray, seed: int, features: str = "backbone"
) -> tuple[Teacher, float]:
    """The teacher for ``spec`` trained on ``rows`` restricted to its labels; (teacher, seconds spent training)."""
    folder = cache_root() / _key(dataset, spec, seed, rows)
    seconds = 0.0
    if not (folder / "student.json").exists():
        keep = rows[np.isin(y[rows], spec.labels)]
        xs = [x[i] for i in keep] if isinstance(x, list) else x[keep]
        t0 = time.perf_counter()
        model = train_classifier(
            xs,
            y[keep],
            student=spec.student,
            labels=spec.labels,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            seed=seed,
            student_options=spec.options,
        )
        seconds = time.perf_counter() - t0
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        model.save(tmp)
        os.replace(tmp, folder)
    return Teacher.from_pretrained(folder, name=spec.name, features=features), seconds


def teacher_set(
    dataset: str, specs: Sequence[TeacherSpec], x: Any, y: np.ndarray, rows: np.ndarray, seed: int
) -> tuple[list[Teacher], float]:
    teachers, total = [], 0.0
    for i, spec in enumerate(specs):
        t, s = cached_teacher(dataset, spec, x, y, rows, seed * 100 + i)
        teachers.append(t)
        total += s
    return teachers, total
