"""Teachers that are not torch models: a Python function, outputs computed elsewhere, a scikit-learn
estimator, an ONNX file.

Each is wrapped as an ``nn.Module`` with no parameters that turns a batch (a tensor, or a list of str for
text data) into logits, inside a :class:`ForeignTeacher`: a :class:`~amalgamator.teachers.Teacher`
whose store key (:meth:`ForeignTeacher.fingerprint`) comes from the adapter's own identity instead of
torch weights. Made by :meth:`Teacher.from_callable`, :meth:`Teacher.from_outputs`,
:meth:`Teacher.from_sklearn` and :meth:`Teacher.from_onnx`. Such a teacher can give its outputs and nothing
else (``capabilities``): no feature taps, no dropout, no gradients, so methods that need those refuse it.

scikit-learn, skops and onnxruntime are imported only inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .data import Batch, Inputs
from .errors import TeacherError
from .errors import first_line as _first_line
from .teachers import Teacher

#: Probabilities are clipped to ``[PROB_FLOOR, 1]`` before their log is taken.
PROB_FLOOR = 1e-7
#: How far a row of probabilities may sum from 1.
SUM_TOLERANCE = 1e-3
RETURNS = ("probs", "logits")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
#: adapter module → (source type shown by ``inspect``, what it is in a sentence)
_SOURCES = {
    "CallableModule": ("callable", "a callable"),
    "SklearnModule": ("scikit-learn", "a scikit-learn model"),
    "MultiLabelSklearnModule": ("scikit-learn", "a scikit-learn model"),
    "OnnxModule": ("onnx", "an ONNX model"),
    "OutputsModule": ("outputs", "outputs computed elsewhere"),
}


class ForeignTeacher(Teacher):
    """A teacher around an adapter module (no torch weights); its fingerprint is the adapter's identity.

    The adapter's ``identity`` (a string) stands in for the weights: the store key hashes it with the
    kind and labels, so two adapters share store entries exactly when their identities match.
    """

    def __init__(
        self, model: nn.Module, labels: Sequence[str], name: str | None, identity: str, kind: str = "multiclass"
    ):
        super().__init__(model, labels=labels, name=name, kind=kind)
        self._identity = identity

    @property
    def source_type(self) -> str:
        """What the teacher was built from (shown by ``amalgamator inspect``)."""
        return _SOURCES.get(type(self.model).__name__, ("callable", ""))[0]

    @property
    def origin(self) -> str:
        """What the teacher is, for a refusal: "a callable", "a scikit-learn model", ..."""
        return _SOURCES.get(type(self.model).__name__, ("", "a callable"))[1]

    @property
    def capabilities(self) -> frozenset[str]:
        """Outputs (and input statistics when it carries them): amalgamator sees what the adapter returns, never
        the model's layers, dropout or gradients."""
        return frozenset({"outputs"} | ({"statistics"} if self.statistics is not None else set()))

    def __repr__(self) -> str:
        return f"ForeignTeacher(name={self.name!r}, source={type(self.model).__name__}, labels={len(self.labels)})"

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256()
            h.update(json.dumps([type(self.model).__qualname__, self.kind, list(self.labels)]).encode())
            h.update(self._identity.encode())
            self._fp = h.hexdigest()
        return self._fp


# Shared checks ------------------------------------------------------------------
def _check_returns(returns: str, who: str) -> None:
    if returns not in RETURNS:
        raise TeacherError(f"{who}: returns={returns!r} is unknown; use 'probs' or 'logits'.")


def _rows(bad: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return f"{len(idx)} row(s) ({shown}{', ...' if len(idx) > limit else ''})"


def _to_logits(out: Any, n: int, width: int, returns: str, who: str, where: str) -> torch.Tensor:
    """Check one chunk of outputs (n, width) and turn it into float32 logits.

    ``where`` names the rows, e.g. ``"rows 0-255 of a batch of 300"``. Probabilities are clipped to
    ``[PROB_FLOOR, 1]`` before the log."""
    try:
        arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TeacherError(
            f"{who} returned something that is not a numeric array for {where} ({_first_line(exc)})."
        ) from None
    if arr.shape != (n, width):
        raise TeacherError(
            f"{who} returned an array of shape {arr.shape} for {where}; expected ({n}, {width}): one row per "
            f"example, one column per label."
        )
    finite = np.isfinite(arr).all(1)
    if not finite.all():
        raise TeacherError(f"{who} returned NaN or infinite values in {_rows(~finite)} of {where}.")
    if returns == "probs":
        negative = (arr < 0).any(1)
        if negative.any():
            raise TeacherError(
                f"{who} returned negative probabilities in {_rows(negative)} of {where}; "
                "if these are scores, use returns='logits'."
            )
        off = np.abs(arr.sum(1) - 1.0) > SUM_TOLERANCE
        if off.any():
            first = int(np.flatnonzero(off)[0])
            raise TeacherError(
                f"{who} returned probabilities whose rows do not sum to 1 in {_rows(off)} of {where} "
                f"(row {first} sums to {arr[first].sum():.4g}); normalize them, or use returns='logits' for scores."
            )
        arr = np.log(np.clip(arr, PROB_FLOOR, 1.0))
    return torch.from_numpy(arr.astype(np.float32))


def _as_numpy(batch: Batch) -> Any:
    return list(batch) if isinstance(batch, list) else batch.detach().cpu().numpy()


# A Python function -----------------------------------------------------------
class CallableModule(nn.Module):
    """``fn(batch as numpy or list of str) -> (n, labels)`` as a module with no parameters."""

    def __init__(self, fn: Callable[[Any], Any], width: int, returns: str, batch_size: int, who: str):
        super().__init__()
        self.fn, self.width, self.returns, self.batch_size, self.who = fn, width, returns, batch_size, who

    def forward(self, batch: Batch) -> torch.Tensor:
        x = _as_numpy(batch)
        n = len(x)
        parts = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            where = f"rows {start}-{stop - 1} of a batch of {n}"
            parts.append(_to_logits(self.fn(x[start:stop]), stop - start, self.width, self.returns, self.who, where))
        return torch.cat(parts)


def _code_identity(code: Any, out: list[str]) -> None:
    out.append(code.co_code.hex())
    out.append(repr(code.co_names))
    for const in code.co_consts:
        if hasattr(const, "co_code"):  # a nested function or comprehension
            _code_identity(const, out)
        else:
            out.append(repr(const))


def callable_identity(fn: Any) -> list[str]:
    """What tells functions apart: module, qualname and, when there is one, the bytecode with its
    constants and names (bound methods, ``functools.partial`` and callable objects are unwrapped)."""
    parts: list[str] = []
    target = fn
    if hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        parts.append(f"partial{fn.args!r}{sorted(fn.keywords.items())!r}")
        target = fn.func
    target = getattr(target, "__func__", target)  # bound method
    call = vars(type(target)).get("__call__") if not isinstance(target, type) else None
    if not hasattr(target, "__code__") and not isinstance(target, type) and hasattr(call, "__code__"):
        parts.append(f"{type(target).__module__}.{type(target).__qualname__}")
        target = call  # a callable object: its class and its __call__ code
    parts.append(f"{getattr(target, '__module__', None)}.{getattr(target, '__qualname__', repr(target))}")
    code = getattr(target, "__code__", None)
    if code is not None:
        _code_identity(code, parts)
    return parts


def from_callable(
    fn: Callable[[Any], Any],
    labels: Sequence[str],
    name: str | None = None,
    returns: str = "probs",
    batch_size: int = 256,
    version: str | None = None,
) -> ForeignTeacher:
    """See :meth:`Teacher.from_callable`."""
    if not callable(fn):
        raise TeacherError(f"teacher {name!r}: from_callable needs a function, not {type(fn).__name__}.")
    name = name if name is not None else getattr(fn, "__qualname__", None) or type(fn).__name__
    who = f"teacher {name!r}"
    _check_returns(returns, who)
    if int(batch_size) < 1:
        raise TeacherError(f"{who}: batch_size must be at least 1, got {batch_size}.")
    identity = json.dumps(["callable", returns, str(name), version, callable_identity(fn)])
    module = CallableModule(fn, len(labels), returns, int(batch_size), who)
    return ForeignTeacher(module, labels, name, identity)


# Outputs computed elsewhere -----------------------------------------------------
def _row_keys(values: torch.Tensor | list[str]) -> list[bytes]:
    """A content hash per row (the bytes of the row as :class:`Inputs` holds it)."""
    if isinstance(values, list):
        return [hashlib.sha256(s.encode("utf-8")).digest() for s in values]
    flat = values.reshape(len(values), -1).contiguous().numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in flat]


class OutputsModule(nn.Module):
    """Fixed outputs served by looking each asked row up by content in the data they were computed on."""

    def __init__(self, logits: torch.Tensor, data: Inputs, who: str):
        super().__init__()
        self.table, self.who, self.n, self.data_fp = logits, who, len(data), data.fingerprint()
        self.is_text = data.is_text
        self.dtype = None if data.is_text else data.values.dtype  # type: ignore[union-attr]
        self.rows: dict[bytes, int] = {}
        for i, key in enumerate(_row_keys(data.values)):
            self.rows.setdefault(key, i)  # a repeated row: the outputs of its first occurrence

    def _refuse(self, why: str) -> TeacherError:
        return TeacherError(
            f"{self.who} only has outputs for the data it was given ({self.n} rows, fingerprint "
            f"{self.data_fp[:12]}); {why}. Compute its outputs on this data and make another "
            "Teacher.from_outputs, or wrap the model itself with Teacher.from_callable."
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        if isinstance(batch, list) != self.is_text:
            raise self._refuse("it was asked about " + ("text" if isinstance(batch, list) else "numeric") + " data")
        if not isinstance(batch, list) and batch.dtype != self.dtype:
            batch = batch.to(self.dtype)
        found = [self.rows.get(k, -1) for k in _row_keys(batch)]
        missing = np.array([i < 0 for i in found])
        if missing.any():
            raise self._refuse(f"{_rows(missing)} of a batch of {len(found)} are not in it")
        return self.table[torch.as_tensor(found, dtype=torch.long)]


def from_outputs(
    outputs: Any, labels: Sequence[str], data: Any, name: str | None = None, returns: str = "probs"
) -> ForeignTeacher:
    """See :meth:`Teacher.from_outputs`."""
    name = name if name is not None else "outputs"
    who = f"teacher {name!r}"
    _check_returns(returns, who)
    inputs = data if isinstance(data, Inputs) else Inputs(data, what=f"{who}'s data")
    arr = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else outputs
    logits = _to_logits(arr, len(inputs), len(labels), returns, who, f"the {len(inputs)} rows of its data")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(arr, dtype=np.float64)).tobytes())
    identity = json.dumps(["outputs", returns, h.hexdigest(), inputs.fingerprint()])
    return ForeignTeacher(OutputsModule(logits, inputs, who), labels, name, identity)


# scikit-learn -----------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_skops(path: Path, trusted: Sequence[str] | None, who: str) -> Any:
    """Load a ``.skops`` file: its scikit-learn, numpy and scipy types are trusted, any other type
    only when listed in ``trusted``."""
    try:
        import skops.io as sio
    except ImportError:
        raise TeacherError(f"{who}: loading {str(path)!r} needs skops; pip install skops.") from None
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise TeacherError(f"{who}: {str(path)!r} is not a readable .skops file ({_first_line(exc)}).") from None
    allowed = set(trusted or ())
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES) and t not in allowed]
    if foreign:
        raise TeacherError(
            f"{who}: {str(path)!r} holds types outside scikit-learn, numpy and scipy: {foreign}. Loading them "
            f"can run their code; if you trust this file, pass trusted={foreign!r} to Teacher.from_sklearn."
        )
    try:
        return sio.load(path, trusted=sorted(set(untrusted) | allowed))
    except Exception as exc:
        raise TeacherError(f"{who}: could not load {str(path)!r} ({_first_line(exc)}).") from None


def _skops_content_hash(blob: bytes) -> str:
    """Hash of what a ``skops.io.dumps`` zip holds, without what varies between dumps of one estimator:
    zip timestamps, object ids (``__id__``) and the id-based names of its array files (each file name is
    replaced by the hash of its content)."""
    with zipfile.ZipFile(BytesIO(blob)) as z:
        files = {i.filename: hashlib.sha256(z.read(i)).hexdigest() for i in z.infolist()}
        schema = json.loads(z.read("schema.json"))
    ids: dict[Any, int] = {}

    def norm(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "__id__":
                    out[k] = ids.setdefault(v, len(ids))
                else:
                    out[k] = norm(v)
            return out
        if isinstance(node, list):
            return [norm(v) for v in node]
        if isinstance(node, str) and node in files:
            return files[node]
        return node

    return hashlib.sha256(json.dumps(norm(schema), sort_keys=True).encode()).hexdigest()


def estimator_identity(est: Any) -> str:
    """An estimator's content hash: of ``skops.io.dumps`` (see :func:`_skops_content_hash`) when skops is installed,
    else of ``repr(get_params())``, ``classes_`` and every fitted array attribute (``coef_``, ...)."""
    try:
        import skops.io as sio

        return "skops:" + _skops_content_hash(sio.dumps(est))
    except Exception:  # no skops, or an estimator it cannot serialize: its parameters and arrays
        pass
    h = hashlib.sha256()
    h.update(f"{type(est).__module__}.{type(est).__qualname__}".encode())
    try:
        h.update(repr(sorted(est.get_params(deep=True).items(), key=lambda kv: kv[0])).encode())
    except Exception:
        h.update(repr(est).encode())
    for attr in sorted(vars(est)):
        if attr.endswith("_") and not attr.startswith("_"):
            val = getattr(est, attr)
            if isinstance(val, np.ndarray):
                h.update(attr.encode())
                h.update(f"{val.dtype}{val.shape}".encode())
                h.update(val.tobytes() if val.dtype != object else repr(val.tolist()).encode())
    return "params:" + h.hexdigest()


class SklearnModule(nn.Module):
    """``log(predict_proba)`` clipped at ``PROB_FLOOR``, or ``decision_function`` scores, as logits."""

    def __init__(self, est: Any, width: int, who: str):
        super().__init__()
        self.est, self.width, self.who = est, width, who
        self.use_proba = hasattr(est, "predict_proba")

    def forward(self, batch: Batch) -> torch.Tensor:
        x = _as_numpy(batch)
        where = f"a batch of {len(x)} rows"
        if self.use_proba:
            return _to_logits(self.est.predict_proba(x), len(x), self.width, "probs", self.who, where)
        scores = np.asarray(self.est.decision_function(x), dtype=np.float64)
        if scores.ndim == 1 and self.width == 2:  # binary: the score favours classes_[1]
            scores = np.stack([-scores / 2, scores / 2], axis=1)
        return _to_logits(scores, len(x), self.width, "logits", self.who, where)


def _is_positive(value: Any) -> bool:
    """Whether an output's only class is the positive one (1, True, "1", "true", "yes")."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value == 1
    return str(value).strip().lower() in ("1", "true", "yes")


def _positive_columns(classes: Sequence[Any], who: str) -> list[tuple[int, bool]]:
    """Per output of a multi-output estimator, (column of the positive class in its ``predict_proba``, whether
    that column exists): the second of two classes (scikit-learn's positive class), or, for an output that saw
    one class only in training, whether that class is the positive one."""
    out = []
    for j, cls in enumerate(classes):
        values = np.asarray(cls).reshape(-1)
        if len(values) == 2:
            out.append((1, True))
        elif len(values) == 1:
            out.append((0, _is_positive(values[0])))
        else:
            raise TeacherError(
                f"{who}: output {j} has {len(values)} classes ({_names(values)}); a multi-label teacher needs two "
                "classes per output (absent/present). A multi-output multi-class estimator is not supported."
            )
    return out


def _names(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


class MultiLabelSklearnModule(nn.Module):
    """A multi-output 0/1 estimator as one logit per label: ``log(p / (1 − p))`` of each output's positive-class
    probability, p clipped to ``[PROB_FLOOR, 1 − PROB_FLOOR]``; without ``predict_proba``, the
    ``decision_function`` scores (n, labels) as they are."""

    def __init__(self, est: Any, positive: list[tuple[int, bool]], who: str):
        super().__init__()
        self.est, self.positive, self.width, self.who = est, positive, len(positive), who
        self.use_proba = hasattr(est, "predict_proba")

    def _positive_proba(self, x: Any) -> np.ndarray:
        """(n, labels) probability of each output's positive class, checked."""
        n, where = len(x), f"a batch of {len(x)} rows"
        raw = self.est.predict_proba(x)
        if isinstance(raw, (list, tuple)):  # MultiOutputClassifier, multi-output forests: one array per output
            if len(raw) != self.width:
                raise TeacherError(f"{self.who} returned {len(raw)} outputs for {where}; expected {self.width}.")
            cols = []
            for j, (arr, (col, present)) in enumerate(zip(raw, self.positive, strict=True)):
                arr = np.asarray(arr, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] <= col:
                    raise TeacherError(
                        f"{self.who} returned probabilities of shape {arr.shape} for output {j} of {where}; "
                        f"expected ({n}, {col + 1}) or wider."
                    )
                cols.append(arr[:, col] if present else np.zeros(n))
            probs = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
        else:  # ClassifierChain and the like: (n, labels) positive-class probabilities
            probs = np.asarray(raw, dtype=np.float64)
            if probs.shape != (n, self.width):
                raise TeacherError(
                    f"{self.who} returned probabilities of shape {probs.shape} for {where}; expected "
                    f"({n}, {self.width}): one column per label."
                )
        bad = ~np.isfinite(probs).all(1) | (probs < 0).any(1) | (probs > 1).any(1)
        if bad.any():
            raise TeacherError(f"{self.who} returned probabilities outside [0, 1] or NaN in {_rows(bad)} of {where}.")
        return probs

    def forward(self, batch: Batch) -> torch.Tensor:
        x = _as_numpy(batch)
        if not self.use_proba:
            scores = self.est.decision_function(x)
            return _to_logits(scores, len(x), self.width, "logits", self.who, f"a batch of {len(x)} rows")
        p = np.clip(self._positive_proba(x), PROB_FLOOR, 1.0 - PROB_FLOOR)
        return torch.from_numpy(np.log(p / (1.0 - p)).astype(np.float32))


def _output_classes(est: Any) -> list[Any] | None:
    """A multi-output estimator's classes per output (``classes_`` as a list of arrays), else None."""
    classes = getattr(est, "classes_", None)
    if isinstance(classes, list):
        return classes
    if isinstance(classes, np.ndarray) and classes.dtype == object and classes.ndim == 1 and len(classes):
        if all(isinstance(c, np.ndarray) for c in classes):
            return list(classes)
    if isinstance(classes, np.ndarray) and classes.ndim == 2:  # one row of classes per output
        return list(classes)
    return None


def from_sklearn(
    estimator_or_path: Any,
    name: str | None = None,
    trusted: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> ForeignTeacher:
    """See :meth:`Teacher.from_sklearn`."""
    if isinstance(estimator_or_path, (str, Path)):
        path = Path(estimator_or_path).expanduser()
        name = name if name is not None else path.stem
        who = f"teacher {name!r}"
        suffix = path.suffix.lower()
        if suffix in _PICKLE_SUFFIXES:
            raise TeacherError(
                f"{who}: {str(path)!r} is a pickle ({suffix}); loading a pickle can run arbitrary code, so "
                "amalgamator does not. Save the estimator with skops.io.dump(estimator, 'model.skops') and give "
                "that file, or load it yourself if you trust it and pass the estimator object."
            )
        if suffix != ".skops":
            raise TeacherError(
                f"{who}: {str(path)!r} is not a .skops file; save the estimator with skops.io.dump(estimator, "
                "'model.skops'), or pass the estimator object."
            )
        if not path.is_file():
            raise TeacherError(f"{who}: {str(path)!r} does not exist.")
        est = load_skops(path, trusted, who)
        identity = "file:" + _sha256_file(path)
    else:
        est = estimator_or_path
        name = name if name is not None else type(est).__name__
        who = f"teacher {name!r}"
        identity = ""
    if not (hasattr(est, "predict_proba") or hasattr(est, "decision_function")):
        raise TeacherError(
            f"{who}: {type(est).__name__} has neither predict_proba nor decision_function; give a classifier."
        )
    classes = getattr(est, "classes_", None)
    if classes is None:
        raise TeacherError(f"{who}: {type(est).__name__} has no classes_; fit it before making it a teacher.")
    per_output = _output_classes(est)
    width = len(per_output) if per_output is not None else len(np.asarray(classes).reshape(-1))
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != width:
            what = "outputs (labels)" if per_output is not None else "classes"
            raise TeacherError(f"{who}: {len(labels)} labels given for {width} {what}; give one name per output.")
    if not identity:
        identity = estimator_identity(est)
    if per_output is not None:
        module: nn.Module = MultiLabelSklearnModule(est, _positive_columns(per_output, who), who)
        names = labels if labels is not None else [str(j) for j in range(width)]
        return ForeignTeacher(module, names, name, json.dumps(["sklearn", identity]), kind="multilabel")
    names = labels if labels is not None else [str(c) for c in np.asarray(classes).reshape(-1)]
    return ForeignTeacher(SklearnModule(est, len(names), who), names, name, json.dumps(["sklearn", identity]))


# ONNX ----------------------------------------------------------------------
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
}


class OnnxModule(nn.Module):
    """An onnxruntime session's chosen output, for its first input, as logits."""

    def __init__(self, session: Any, output: str, width: int, returns: str, who: str):
        super().__init__()
        self.session, self.output, self.width, self.returns, self.who = session, output, width, returns, who
        first = session.get_inputs()[0]
        self.input_name, self.input_type = first.name, first.type
        self.input_rank = len(first.shape) if first.shape is not None else None

    def forward(self, batch: Batch) -> torch.Tensor:
        x = np.asarray(_as_numpy(batch), dtype=_ONNX_DTYPES.get(self.input_type, np.float32))
        if self.input_type == "tensor(string)" and self.input_rank == 2 and x.ndim == 1:
            x = x.reshape(-1, 1)
        (out,) = self.session.run([self.output], {self.input_name: x})
        return _to_logits(out, len(x), self.width, self.returns, self.who, f"a batch of {len(x)} rows")


def _onnx_labels(path: Path) -> list[str] | None:
    """Class labels recorded in the graph (scikit-learn converters' ``classlabels_*`` attributes)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode() for s in attr.strings]
            if attr.name == "classlabels_int64s" and attr.ints:
                return [str(i) for i in attr.ints]
    return None


def from_onnx(
    path: str | Path,
    labels: Sequence[str] | None = None,
    name: str | None = None,
    output: str | None = None,
    returns: str | None = None,
) -> ForeignTeacher:
    """See :meth:`Teacher.from_onnx`."""
    path = Path(path).expanduser()
    name = name if name is not None else path.stem
    who = f"teacher {name!r}"
    if not path.is_file():
        raise TeacherError(f"{who}: ONNX file {str(path)!r} does not exist.")
    try:
        import onnxruntime as ort
    except ImportError:
        raise TeacherError(f"{who}: an ONNX teacher needs onnxruntime; pip install onnxruntime.") from None
    options = ort.SessionOptions()  # torch's thread budget (amalgamate sets it for its teacher passes), not every core
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TeacherError(f"{who}: onnxruntime cannot load {str(path)!r} ({_first_line(exc)}).") from None
    outs = {o.name: o.type for o in session.get_outputs()}
    if output is None:
        tensors = [n for n, t in outs.items() if t in ("tensor(float)", "tensor(double)")]
        probs = [n for n in tensors if "prob" in n.lower()]
        if not tensors:
            raise TeacherError(
                f"{who}: {str(path)!r} has no float tensor output (outputs: {outs}); a scikit-learn model "
                "converted with skl2onnx needs options={'zipmap': False}, or pass output=."
            )
        output = (probs or tensors)[0]
    elif output not in outs:
        raise TeacherError(f"{who}: {str(path)!r} has no output {output!r}; its outputs: {list(outs)}.")
    elif outs[output] not in ("tensor(float)", "tensor(double)"):
        raise TeacherError(
            f"{who}: output {output!r} is {outs[output]}, not a float tensor; a skl2onnx model needs "
            "options={'zipmap': False}."
        )
    if returns is None:
        returns = "probs" if "prob" in output.lower() else "logits"
    _check_returns(returns, who)
    if labels is None:
        labels = _onnx_labels(path)
        if labels is None:
            raise TeacherError(f"{who}: {str(path)!r} records no class labels; pass labels=[...] in output order.")
    identity = json.dumps(["onnx", _sha256_file(path), output, returns])
    return ForeignTeacher(OnnxModule(session, output, len(labels), returns, who), labels, name, identity)
