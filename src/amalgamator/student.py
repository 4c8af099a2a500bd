"""The student: featurizer → backbone → union head, with label names attached.

A student folder holds ``model.safetensors`` (weights, and any featurizer tensors under
``featurizer.``), ``student.json`` (architecture, label names, kind, method, versions)
and ``report.md``. Nothing is ever pickled. A student built on a custom ``nn.Module``
can be reloaded by passing the same (untrained) module to :func:`load_student`.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from .data import Batch, Inputs
from .errors import DataError, MethodError, TeacherError, shown_path
from .errors import first_line as _first_line
from .io import file_problem, save_tensors
from .kinds import get_kind
from .labels import LabelSpace
from .models import PRESETS, Featurizer, Identity, build, featurizer_class

FORMAT = 1


def _package_version() -> str:
    """The installed amalgamator version, read from the package metadata (the core never imports the API)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amalgamator")
    except PackageNotFoundError:
        return "unknown"


_FEAT_PREFIX = "featurizer."


#: Featurizer types that read a list of strings; every other featurizer reads numeric arrays.
TEXT_FEATURIZERS = frozenset({"tfidf", "sentence-encoder"})


@dataclass(frozen=True)
class InputSpec:
    """What a model reads, as far as it is known: text or numbers, and the shape of one row.

    ``text`` is None when unknown; ``shape`` is one row's shape (any layout of as many values
    is accepted: flat rows are reshaped for a CNN); ``channels`` is set for sequence models,
    whose rows are ``(channels, length)`` of any length (``(length,)`` for one channel).
    """

    text: bool | None = None
    shape: tuple[int, ...] | None = None
    channels: int | None = None

    def describe(self) -> str:
        """The layout in words, or '' when nothing is known."""
        if self.text:
            return "a list of strings"
        if self.shape is not None:
            flat = math.prod(self.shape)
            alt = f" (or {flat} values per row)" if len(self.shape) > 1 else ""
            return f"rows of shape {self.shape}{alt}"
        if self.channels is not None:
            one = " or (length,)" if self.channels == 1 else ""
            return f"sequences with {self.channels} channels, of shape ({self.channels}, length){one}"
        return "numeric arrays" if self.text is False else ""

    def check(self, inputs: Inputs | Batch, what: str, who: str, error: type[Exception] = DataError) -> None:
        """Raise ``error`` in one line when ``inputs`` cannot be what this model reads."""
        is_text = inputs.is_text if isinstance(inputs, Inputs) else isinstance(inputs, list)
        if self.text is None:
            return
        if is_text and not self.text:
            layout = self.describe()
            layout = f" ({layout})" if layout != "numeric arrays" else ""
            raise error(
                f"{who} reads numeric arrays{layout} but {what} is text (a list of strings); "
                "give it numeric data like that it was trained on."
            )
        if is_text:
            return
        shape = tuple(inputs.shape) if isinstance(inputs, Inputs) else tuple(inputs.shape)  # type: ignore[union-attr]
        if self.text:
            raise error(
                f"{who} reads text (a list of strings) but {what} is a numeric array of shape {shape}; "
                "give it the texts themselves."
            )
        row = shape[1:]
        if len(shape) == 1:
            one = "x.reshape(1, -1) for a single example"
            if self.shape == (1,):
                one = "x.reshape(-1, 1) for one value per row"
            raise error(f"{what} is 1-D (shape {shape}); give {who} a 2-D array with one row per example, e.g. {one}.")
        if self.shape is not None and math.prod(row) != math.prod(self.shape):
            raise error(f"{who} expects {self.describe()} but {what} has rows of shape {row}.")
        if self.channels is not None:
            ok = (len(row) == 1 and self.channels == 1) or (len(row) == 2 and row[0] == self.channels)
            if not ok:
                got = f" ({row[0]} channels)" if len(row) == 2 else ""
                raise error(f"{who} expects {self.describe()} but {what} has rows of shape {row}{got}.")


def input_spec(featurizer: Any, architecture: dict[str, Any] | None = None) -> InputSpec:
    """What a featurizer → network pair reads, from the featurizer and the saved preset options."""
    kind = getattr(featurizer, "type", None)
    if kind in TEXT_FEATURIZERS:
        return InputSpec(text=True)
    if isinstance(featurizer, Identity):
        shape = featurizer.shape
        arch = architecture or {}
        in_dim = (arch.get("options") or {}).get("in_dim")
        if shape is None and arch.get("preset") == "mlp" and in_dim is not None:
            shape = (int(in_dim),)
        return InputSpec(text=False, shape=tuple(int(v) for v in shape) if shape is not None else None)
    channels = getattr(featurizer, "channels", None)
    if kind in ("sequence-scaler", "sequence-check") and channels is not None:
        return InputSpec(text=False, channels=int(channels))
    return InputSpec()


class UnionNet(nn.Module):
    """A backbone and a head over the union of labels: linear by default, or the head its kind needs
    (a classifier chain for ``chain`` students)."""

    def __init__(self, backbone: nn.Module, out_dim: int, n_labels: int, head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Linear(out_dim, n_labels)

    def forward_features(self, x: torch.Tensor, **state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the penultimate feature (what feature-matching methods align); ``state`` goes to a
        head that takes one (a chain's forced initial state)."""
        f = self.backbone(x).flatten(1)
        return (self.head(f, **state) if state else self.head(f)), f

    def forward(self, x: torch.Tensor, **state: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, **state)[0]


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
        self._kind = get_kind(kind)
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
        out_dim = _out_dim(backbone, sample)
        head = get_kind(kind).head(out_dim, len(labels))
        net = UnionNet(backbone, out_dim, len(labels), head)
        spec = get_kind(kind).head_spec(head)
        if spec is not None:
            arch["head"] = spec
        return cls(featurizer, net, labels, kind, arch)

    # Inference ----------------------------------------------------------------
    def input_spec(self) -> InputSpec:
        """What x this student reads: text, or numeric rows of a known shape (when the preset says)."""
        return input_spec(self.featurizer, self.architecture)

    @torch.no_grad()
    def logits(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        inputs = x if isinstance(x, Inputs) else Inputs(x, what="x")
        self.input_spec().check(inputs, "x", "the student")
        self.network.eval()
        feats = Inputs(self.featurizer.transform(inputs))  # whole dataset at once: featurizers may cache
        out = []
        for b in feats.batches(batch_size):
            try:
                out.append(self.network(b))
            except Exception as exc:  # a custom module's own complaint, in one line
                arch = self.architecture.get("preset") or self.architecture.get("class") or "custom"
                raise DataError(
                    f"the student ({arch}) rejected x with rows of shape {tuple(inputs.shape[1:])} "
                    f"({_first_line(exc)}); give x in the layout the student was trained on."
                ) from None
        return torch.cat(out)

    def predict_proba(self, x: Any, batch_size: int = 512) -> np.ndarray:
        """(n, len(labels)) probabilities: rows sum to 1 for a multiclass student, one sigmoid per label
        for a multilabel or chain student."""
        return self._kind.probabilities(self.logits(x, batch_size)).numpy()

    def predict(self, x: Any, batch_size: int = 512) -> np.ndarray:
        """Label names (multiclass), or a 0/1 matrix with ``labels`` as columns (multilabel, chain)."""
        return self._kind.predict(self.predict_proba(x, batch_size), self.labels)

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
        save_tensors(tensors, path / "model.safetensors")
        meta = {
            "format": FORMAT,
            "labels": self.labels,
            "kind": self.kind,
            "method": self.method,
            "architecture": self.architecture,
            "featurizer": {"type": self.featurizer.type, "config": self.featurizer.config()},
            "info": self.info,
            "versions": {
                "amalgamator": _package_version(),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (path / "student.json").write_text(json.dumps(meta, indent=2))
        report = self.report or f"# Student\n\nMethod: `{self.method}`. Labels: {', '.join(self.labels)}.\n"
        (path / "report.md").write_text(report)
        return path


def load_student(path: str | Path, backbone: nn.Module | None = None, *, role: str = "student") -> Student:
    """Load a student folder written by :meth:`Student.save` (safetensors + JSON, no pickle).

    ``backbone`` is needed only for students built on a custom module: pass a fresh
    instance of the same architecture and its weights are filled in. ``role="teacher"``
    words errors for a folder loaded as a teacher (:meth:`Teacher.from_pretrained`).

    The folder is untrusted: ``student.json`` is checked field by field, and the architecture it
    describes is first built on the ``meta`` device (no memory) and compared with the weights' shapes,
    so a damaged or hostile file (an unknown preset, absurd widths, a label list that does not match
    the head) is a :class:`~amalgamator.errors.TeacherError` before anything is allocated. Other files
    in the folder (a ``pytorch_model.bin``, ``*.pt``) are never opened.
    """
    path = Path(path)
    teacher = role == "teacher"
    shown = shown_path(path)
    where = f"teacher folder {shown}" if teacher else f"student folder {shown}"
    fix = "re-save or re-export that teacher" if teacher else "re-save the student"

    def corrupt(detail: str) -> TeacherError:
        return TeacherError(f"{where} is corrupt: {detail}; {fix}.")

    meta_path, weights_path = path / "student.json", path / "model.safetensors"
    problem = next(filter(None, (file_problem(p) for p in (path, meta_path, weights_path))), None)
    if problem:
        raise TeacherError(f"cannot read {where}: {problem}.")
    if not meta_path.is_file() or not weights_path.is_file():
        if teacher:
            missing = " and ".join(p.name for p in (meta_path, weights_path) if not p.is_file())
            raise TeacherError(f"{where} is not a complete student folder: {missing} is missing; {fix}.")
        raise TeacherError(f"{str(path)!r} is not a student folder: it needs student.json and model.safetensors.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("kind") == "embedding":
            from .metaembedding import MetaEmbedding

            if teacher:
                raise TeacherError(f"{where} holds a meta-embedding; to teach with it, use "
                                   f"am.Teacher.from_embeddings(am.load_student({str(path)!r})).")  # fmt: skip
            return MetaEmbedding.load(path, meta)  # type: ignore[return-value]
        labels, arch, feat_meta = meta["labels"], meta["architecture"], meta["featurizer"]
    except TeacherError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise corrupt(f"{meta_path.name} cannot be read ({_first_line(exc)})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise corrupt(f"'labels' in {meta_path.name} is not a list of label names")
    if not isinstance(arch, dict):
        raise corrupt(f"'architecture' in {meta_path.name} is not a mapping")
    if not (isinstance(feat_meta, dict) and isinstance(feat_meta.get("type"), str)
            and isinstance(feat_meta.get("config"), dict)):  # fmt: skip
        raise corrupt(f"'featurizer' in {meta_path.name} is not a mapping with a type and a config")
    if not isinstance(meta.get("kind", "multiclass"), str) or not isinstance(meta.get("method"), (str, type(None))):
        raise corrupt(f"'kind' or 'method' in {meta_path.name} is not a name")
    if not isinstance(meta.get("info"), (dict, type(None))):
        raise corrupt(f"'info' in {meta_path.name} is not a mapping")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:
        raise corrupt(f"{weights_path.name} is not a readable safetensors file ({_first_line(exc)})") from None
    feat_tensors = {k[len(_FEAT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_FEAT_PREFIX)}
    net_tensors = {k: v for k, v in tensors.items() if not k.startswith(_FEAT_PREFIX)}
    try:
        featurizer = featurizer_class(feat_meta["type"]).from_saved(feat_meta["config"], feat_tensors)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise corrupt(f"its featurizer cannot be rebuilt from {meta_path.name} ({_first_line(exc)})") from None
    try:
        kind = get_kind(str(meta.get("kind", "multiclass")))
    except (DataError, MethodError) as exc:
        raise corrupt(str(exc).rstrip(".")) from None

    def assemble(bb: nn.Module) -> UnionNet:
        """The backbone with its kind's union head, as ``student.json`` and the weights describe it."""
        if "head" in arch:  # a head its kind rebuilds from the recorded spec (a chain)
            spec = dict(arch["head"])
            in_dim, n_out = int(spec.pop("in_dim")), int(spec.pop("n_labels"))
            if min(in_dim, n_out) < 1:
                raise ValueError(f"a head of {in_dim} inputs and {n_out} outputs")
            net = UnionNet(bb, in_dim, n_out, kind.head(in_dim, n_out, spec))
        elif "head.weight" not in net_tensors:
            raise corrupt(f"{weights_path.name} has no head.weight tensor")
        else:
            head_w = net_tensors["head.weight"]
            if head_w.ndim != 2 or 0 in head_w.shape:
                raise corrupt(f"head.weight in {weights_path.name} has shape {tuple(head_w.shape)}, not (labels, dim)")
            n_out, in_dim = int(head_w.shape[0]), int(head_w.shape[1])
            net = UnionNet(bb, in_dim, n_out)
        if n_out != len(labels):
            raise corrupt(f"{meta_path.name} names {len(labels)} labels but the head has {n_out} outputs")
        width = getattr(bb, "out_dim", None)
        if isinstance(width, int) and width != in_dim:
            raise corrupt(f"the head reads {in_dim} features but the backbone gives {width}")
        return net

    def rebuild(device: str | None) -> UnionNet:
        with torch.device(device) if device else contextlib.nullcontext():
            if arch.get("preset"):
                _, bb, _ = build(str(arch["preset"]), None, arch.get("options"), featurizer)
            else:
                bb = backbone  # type: ignore[assignment]
            return assemble(bb)

    preset = arch.get("preset")
    if preset and (not isinstance(preset, str) or preset not in PRESETS):
        raise corrupt(
            f"{meta_path.name} names the unknown architecture {preset!r} (saved by another amalgamator version?); "
            f"known: {', '.join(sorted(PRESETS))}"
        )
    if not isinstance(arch.get("options", {}), dict):
        raise corrupt(f"the architecture options in {meta_path.name} are not a mapping")
    if not preset and backbone is None:
        if teacher:
            raise TeacherError(
                f"{where} holds a student built on the custom module {arch.get('class')}, which a path alone cannot "
                "rebuild; load it with st = am.load_student(path, backbone=MyModule(...)) and pass st.as_teacher(name)."
            )
        raise TeacherError(
            f"{str(path)!r} holds a student built on the custom module {arch.get('class')}; "
            "pass a fresh instance: load_student(path, backbone=MyModule(...))."
        )
    # First on the meta device: shapes without memory, so absurd widths in student.json never allocate.
    try:
        probe = rebuild("meta")
    except TeacherError:
        raise
    except NotImplementedError:  # a module the meta device cannot build: load_state_dict checks the shapes
        probe = None
    except Exception as exc:  # bad options (a MethodError is a ValueError), sizes that overflow (RuntimeError), ...
        raise corrupt(f"its architecture cannot be rebuilt from {meta_path.name} ({_first_line(exc)})") from None
    if probe is not None:
        _check_shapes(probe, net_tensors, arch, corrupt, where, f"{weights_path.name} and {meta_path.name}")
    try:
        net = rebuild(None)
    except TeacherError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, MemoryError) as exc:
        raise corrupt(f"its architecture cannot be rebuilt from {meta_path.name} ({_first_line(exc)})") from None
    try:
        net.load_state_dict(net_tensors, strict=True)
    except RuntimeError as exc:
        if not arch.get("preset"):
            raise TeacherError(
                f"the weights in {where} do not fit the module passed as backbone= ({_first_line(exc)}); "
                f"pass a fresh instance of {arch.get('class')} built with the same options."
            ) from None
        raise corrupt(
            f"the weights in {weights_path.name} do not fit the architecture in {meta_path.name} ({_first_line(exc)})"
        ) from None
    net.eval()
    st = Student(featurizer, net, labels, meta.get("kind", "multiclass"), arch, meta.get("method"), meta.get("info"))
    report = path / "report.md"
    try:
        st.report = report.read_text(encoding="utf-8") if report.is_file() else ""
    except (OSError, UnicodeDecodeError):
        st.report = ""
    return st


def _check_shapes(probe: nn.Module, tensors: dict[str, torch.Tensor], arch: dict[str, Any], corrupt: Any,
                  where: str, files: str) -> None:  # fmt: skip
    """The weights must have exactly the keys and shapes of the architecture (built on the meta device)."""
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want == got:
        return
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if wrong:
        detail = f"{wrong[0]} is {got[wrong[0]]} in the weights but {want[wrong[0]]} in the architecture"
    elif missing:
        detail = f"the weights lack {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    else:
        detail = f"the weights hold {extra[0]}, which the architecture has not"
    if not arch.get("preset"):
        raise TeacherError(
            f"the weights in {where} do not fit the module passed as backbone= ({detail}); "
            f"pass a fresh instance of {arch.get('class')} built with the same options."
        )
    raise corrupt(f"{files} do not fit together: {detail}")
