"""The student: featurizer → backbone → union head, with label names attached.

A student folder holds ``model.safetensors`` (weights, and any featurizer tensors under
``featurizer.``), ``student.json`` (architecture, label names, kind, method, versions)
and ``report.md``. Nothing is ever pickled. A student built on a custom ``nn.Module``
can be reloaded by passing the same (untrained) module to :func:`load_student`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from . import __version__
from .data import Inputs
from .errors import DataError, TeacherError
from .labels import LabelSpace
from .models import Featurizer, Identity, build, featurizer_class

FORMAT = 1
_FEAT_PREFIX = "featurizer."


class UnionNet(nn.Module):
    """A backbone and a linear head over the union of labels."""

    def __init__(self, backbone: nn.Module, out_dim: int, n_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(out_dim, n_labels)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the penultimate feature (what feature-matching methods align)."""
        f = self.backbone(x).flatten(1)
        return self.head(f), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def _out_dim(backbone: nn.Module, sample: torch.Tensor) -> int:
    if hasattr(backbone, "out_dim"):
        return int(backbone.out_dim)
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(sample[:2])
    except Exception as exc:
        raise DataError(
            f"the student module rejected a batch of shape {tuple(sample[:2].shape)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
        ) from None
    finally:
        backbone.train(was)
    if not isinstance(out, torch.Tensor):
        raise DataError(f"the student module must return a tensor, not {type(out).__name__}.")
    return int(out[0].numel())


class Student:
    """A trained model over the union label space, usable without amalgamator's training code."""

    def __init__(
        self,
        featurizer: Featurizer,
        network: UnionNet,
        labels: Sequence[str],
        kind: str = "multiclass",
        architecture: dict[str, Any] | None = None,
        method: str | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.featurizer = featurizer
        self.network = network
        self.labels = list(LabelSpace(labels, owner="student label list"))
        self.kind = kind
        self.architecture = architecture or {"preset": None}
        self.method = method
        self.info = dict(info or {})
        self.report = ""

    def __repr__(self) -> str:
        arch = self.architecture.get("preset") or self.architecture.get("class")
        return f"Student({arch}, {len(self.labels)} labels, method={self.method!r})"

    # Construction ------------------------------------------------------------
    @classmethod
    def create(
        cls,
        spec: str | nn.Module,
        inputs: Inputs,
        labels: Sequence[str],
        kind: str = "multiclass",
        options: dict[str, Any] | None = None,
    ) -> Student:
        """Build an untrained student for ``inputs`` from a preset name or any backbone module."""
        if isinstance(spec, str):
            featurizer, backbone, resolved = build(spec, inputs, options)
            featurizer.fit(inputs)
            if "in_dim" not in resolved and hasattr(featurizer, "out_dim"):  # width known only after fitting
                featurizer, backbone, resolved = build(
                    spec, inputs, {**resolved, "in_dim": featurizer.out_dim}, featurizer
                )
            arch = {"preset": spec, "options": resolved}
        elif isinstance(spec, nn.Module):
            if inputs.is_text:
                raise DataError("a custom student module needs numeric data; for text use student='text'.")
            featurizer, backbone = Identity(), spec
            arch = {"preset": None, "class": f"{type(spec).__module__}.{type(spec).__qualname__}"}
        else:
            raise DataError(f"student must be a preset name or an nn.Module, not {type(spec).__name__}.")
        sample = featurizer(inputs.take(slice(0, 2)))
        net = UnionNet(backbone, _out_dim(backbone, sample), len(labels))
        return cls(featurizer, net, labels, kind, arch)

    # Inference ----------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        inputs = x if isinstance(x, Inputs) else Inputs(x, what="x")
        self.network.eval()
        feats = Inputs(self.featurizer.transform(inputs))  # whole dataset at once: featurizers may cache
        return torch.cat([self.network(b) for b in feats.batches(batch_size)])

    def predict_proba(self, x: Any, batch_size: int = 512) -> np.ndarray:
        """(n, len(labels)) probabilities; rows sum to 1 for a multiclass student."""
        lg = self.logits(x, batch_size)
        if self.kind == "multiclass":
            return lg.softmax(-1).numpy()
        return torch.sigmoid(lg).numpy()

    def predict(self, x: Any, batch_size: int = 512) -> np.ndarray:
        """Label names (multiclass), or a 0/1 matrix over ``labels`` for other kinds."""
        proba = self.predict_proba(x, batch_size)
        if self.kind == "multiclass":
            return np.asarray(self.labels, dtype=str)[proba.argmax(1)]
        return (proba > 0.5).astype(np.int64)

    def as_teacher(self, name: str | None = None):
        """This student as a frozen :class:`~amalgamator.Teacher` for a later amalgamation."""
        from .teachers import Teacher

        return Teacher(self.network, self.labels, name=name or "student", kind=self.kind, preprocess=self.featurizer)

    # Persistence -----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        tensors.update({_FEAT_PREFIX + k: v.contiguous() for k, v in self.featurizer.tensors().items()})
        save_file(tensors, str(path / "model.safetensors"))
        meta = {
            "format": FORMAT,
            "labels": self.labels,
            "kind": self.kind,
            "method": self.method,
            "architecture": self.architecture,
            "featurizer": {"type": self.featurizer.type, "config": self.featurizer.config()},
            "info": self.info,
            "versions": {
                "amalgamator": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (path / "student.json").write_text(json.dumps(meta, indent=2))
        report = self.report or f"# Student\n\nMethod: `{self.method}`. Labels: {', '.join(self.labels)}.\n"
        (path / "report.md").write_text(report)
        return path


def load_student(path: str | Path, backbone: nn.Module | None = None) -> Student:
    """Load a student folder written by :meth:`Student.save` (safetensors + JSON, no pickle).

    ``backbone`` is needed only for students built on a custom module: pass a fresh
    instance of the same architecture and its weights are filled in.
    """
    path = Path(path)
    meta_path, weights_path = path / "student.json", path / "model.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise TeacherError(f"{str(path)!r} is not a student folder: it needs student.json and model.safetensors.")
    try:
        meta = json.loads(meta_path.read_text())
        labels, arch, feat_meta = meta["labels"], meta["architecture"], meta["featurizer"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise TeacherError(f"{meta_path} is corrupt ({type(exc).__name__}: {exc}); re-save the student.") from None
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:
        raise TeacherError(f"{weights_path} is corrupt or not safetensors ({exc}); re-save the student.") from None
    feat_tensors = {k[len(_FEAT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_FEAT_PREFIX)}
    net_tensors = {k: v for k, v in tensors.items() if not k.startswith(_FEAT_PREFIX)}
    featurizer = featurizer_class(feat_meta["type"]).from_saved(feat_meta["config"], feat_tensors)
    if arch.get("preset"):
        _, bb, _ = build(arch["preset"], None, arch["options"], featurizer)
    elif backbone is not None:
        bb = backbone
    else:
        raise TeacherError(
            f"{str(path)!r} holds a student built on the custom module {arch.get('class')}; "
            "pass a fresh instance: load_student(path, backbone=MyModule(...))."
        )
    head_w = net_tensors["head.weight"]
    net = UnionNet(bb, head_w.shape[1], head_w.shape[0])
    net.load_state_dict(net_tensors, strict=True)
    net.eval()
    st = Student(featurizer, net, labels, meta.get("kind", "multiclass"), arch, meta.get("method"), meta.get("info"))
    report = path / "report.md"
    st.report = report.read_text() if report.exists() else ""
    return st
