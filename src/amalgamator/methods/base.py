"""The uniform surface every amalgamation method has, and the registry that names them.

A method is a small class:

- ``needs``: what it needs of every teacher, by capability name (outputs, features, dropout, gradients;
  :data:`~amalgamator.teachers.CAPABILITIES`); ``validate`` refuses a teacher that cannot give it;
- ``pieces(teacher)``: which stored teacher outputs it needs (logits, feature taps, MC stats);
- ``prepare(ctx)``: computes per-example training targets once from those outputs;
- ``modules()``: any extra trainable parts (adaptors, extractors), trained with the student;
- ``loss(batch, out)``: the training loss for a batch given the student's output.

The engine drives every method the same way and knows nothing about any of them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from pydantic import Field, StrictBool

from ..data import Inputs
from ..errors import MethodError, check_options, suggest
from ..kinds import teacher_kinds
from ..labels import LabelSpace, owner_mask
from ..rows import RowView
from ..store import LOGITS, feature_piece
from ..teachers import CAPABILITIES, Teacher

REGISTRY: dict[str, type[Method]] = {}

# Option rules (pydantic types): every method option is checked by name and range before anything runs.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
Steps = Annotated[int, Field(ge=0)]
Flag = StrictBool


def Range(**bounds: float) -> Any:  # noqa: N802  (a type, spelled like one)
    """A finite float within pydantic bounds, e.g. ``Range(gt=0, le=1)``."""
    return Annotated[float, Field(allow_inf_nan=False, **bounds)]


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in REGISTRY:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    unknown = set(cls.needs) - set(CAPABILITIES)
    if unknown:
        raise RuntimeError(f"method {cls.name!r} needs {sorted(unknown)}; the capabilities are {list(CAPABILITIES)}")
    REGISTRY[cls.name] = cls
    return cls


def methods_for(kinds: set[str]) -> list[str]:
    """Registered methods that accept teachers of every kind in ``kinds``."""
    return sorted(name for name, cls in REGISTRY.items() if kinds <= cls.kinds)


def methods_serving(teachers: Sequence[Teacher]) -> list[str]:
    """Registered methods that accept these teachers' kinds and, with their default options, need nothing the
    teachers cannot give."""
    kinds = teacher_kinds(teachers)
    fit = []
    for name, cls in REGISTRY.items():
        if kinds <= cls.kinds:
            method = cls()
            if all(method.needs_of(t) <= t.capabilities for t in teachers):
                fit.append(name)
    return sorted(fit)


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name``; unknown names suggest close matches."""
    if name not in REGISTRY:
        raise MethodError(
            f"unknown method {name!r}.{suggest(name, REGISTRY)} Run `amalgamator methods` for the list: "
            f"{', '.join(sorted(REGISTRY))}."
        )
    return REGISTRY[name]


@dataclass
class StudentOutput:
    """What the student produced for a batch: union logits, its penultimate feature, and the
    outputs of the student module paths the method asked for in ``student_taps``."""

    logits: torch.Tensor
    features: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Context:
    """Everything ``prepare`` may read. Rows are the training rows: unlabeled data, then labeled."""

    teachers: list[Teacher]
    union: LabelSpace
    outputs: list[dict[str, torch.Tensor]]
    inputs: Inputs
    y: torch.Tensor  # union index per row, -1 where unlabeled; multilabel kinds: (rows, union) 0/1, -1 unlabeled
    student: Any = None  # the untrained Student (featurizer + network), for shape probes
    extras: dict[str, Any] = field(default_factory=dict)
    #: the student's featurized inputs, one row per training row: a tensor, or a RowView (e.g. sparse TF-IDF)
    #: that densifies only the rows asked for, so read it in batches (``network_outputs``), not whole
    features: torch.Tensor | RowView | None = None
    config: Any = None  # the run's TrainConfig (methods that train auxiliary networks reuse it)

    @property
    def unlabeled(self) -> torch.Tensor:
        """(rows,) bool; ``y`` is a union index per row, or a 0/1 row (−1 where unlabeled) for multilabel kinds."""
        return self.y < 0 if self.y.ndim == 1 else (self.y < 0).all(1)

    def fresh_network(self, n_outputs: int) -> nn.Module:
        """A newly initialised network of the student's architecture with ``n_outputs`` outputs, for
        auxiliary models that read the same features (TC's Teacher Trust Learner)."""
        net = copy.deepcopy(self.student.network)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        net.head = nn.Linear(getattr(net.head, "in_features", None) or net.head.in_dim, n_outputs)
        return net

    def replace_student(self, student: Any) -> None:
        """Hand back a different trained student (TargetNet's assembled branches): the run saves and
        returns ``ctx.student`` after ``Method.run``, whatever it is then."""
        self.student = student

    @property
    def spaces(self) -> list[LabelSpace]:
        return [t.labels for t in self.teachers]

    @property
    def owners(self) -> torch.Tensor:
        """(n_teachers, n_union) bool: which teacher names which union label."""
        return torch.as_tensor(owner_mask(self.union, self.spaces))

    def positions(self, i: int) -> torch.Tensor:
        """Union indices of teacher ``i``'s labels, in the teacher's own order."""
        return torch.as_tensor(self.union.positions(self.teachers[i].labels))

    def logits(self, i: int) -> torch.Tensor:
        return self.outputs[i][LOGITS]

    def release_outputs(self) -> None:
        """Let go of the teachers' outputs (they stay on disk in the store) once a method has computed what it trains
        on from them: a large pool then does not hold both while the student trains. Emptied in place, so no other
        holder of these dicts keeps them alive."""
        for out in self.outputs:
            out.clear()

    def student_shapes(self, taps: list[str] = ()) -> dict[str, tuple[int, ...]]:
        """Per-row shapes of the student's penultimate feature (key ``"features"``) and of ``taps``."""
        net = self.student.network
        sample = self.student.featurizer(self.inputs.take(slice(0, 2)))
        was = net.training
        net.eval()
        try:
            with torch.no_grad(), tap_outputs(net, taps) as caught:
                _, feats = net.forward_features(sample)
        finally:
            net.train(was)
        shapes = {"features": tuple(feats.shape[1:])}
        shapes.update({k: tuple(v.shape[1:]) for k, v in caught.items()})
        return shapes

    @property
    def labeled(self) -> torch.Tensor:
        return ~self.unlabeled

    def __len__(self) -> int:
        return len(self.y)


class Method:
    """Base class. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: "never", "optional" or "required": whether the method uses labeled rows.
    uses_labels: ClassVar[str] = "never"
    #: False for reference rows that produce no student (the ensemble).
    trains: ClassVar[bool] = True
    #: options and their defaults; ``__init__`` rejects anything else by name.
    defaults: ClassVar[dict[str, Any]] = {}
    #: a pydantic-checkable type per option (``Positive``, ``Literal["a", "b"]``, ...); an option
    #: without a rule must have its default's type.
    rules: ClassVar[dict[str, Any]] = {}
    #: module paths inside the student network whose outputs ``loss`` reads (``out.taps``).
    student_taps: list[str] = []
    #: the teacher kinds this method amalgamates (:mod:`amalgamator.kinds`)
    kinds: ClassVar[frozenset[str]] = frozenset({"multiclass"})
    #: what it needs of every teacher (:data:`~amalgamator.teachers.CAPABILITIES`); most need only outputs
    needs: ClassVar[frozenset[str]] = frozenset({"outputs"})
    #: when a need depends on an option, how (shown by ``amalgamator methods``)
    needs_note: ClassVar[str] = ""
    #: the teacher layer a feature tap belongs on, named when a torch teacher has none
    tap_layer: ClassVar[str] = "final feature layer"
    #: extra keyword arguments for the engine's AdamW (e.g. ``{"fused": True}`` for one large table)
    optimizer_options: ClassVar[dict[str, Any]] = {}
    #: set when the user asked for a published variant of the method (MUKI's K = 1 ablation): a sentence
    #: the run records in ``student.json`` and ``report.md``
    variant: str = ""

    @classmethod
    def student_kind(cls, kinds: set[str]) -> str:
        """The kind of student this method trains from teachers of ``kinds`` (a chain student for ANT)."""
        if kinds in ({"multiclass"}, {"multitask"}):
            return next(iter(kinds))
        return "multilabel"

    def __init__(self, **options: Any):
        rules = {k: self.rules.get(k, _rule_of(v)) for k, v in self.defaults.items()}
        self.options = {**self.defaults, **check_options(f"method {self.name!r}", options, rules, MethodError)}
        #: per-row quantities a method computed in ``prepare`` (e.g. MUKI's uncertainties), for analysis.
        self.diagnostics: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"

    def pieces(self, teacher: Teacher) -> list[str]:
        return [LOGITS]

    @staticmethod
    def tapped_pieces(teacher: Teacher) -> list[str]:
        """Logits and the teacher's last feature tap, for methods that match teachers' features."""
        return [LOGITS] + ([feature_piece(teacher.features[-1])] if teacher.features else [])

    @staticmethod
    def tap(ctx: Context, i: int) -> torch.Tensor:
        """Teacher ``i``'s stored output at its last feature tap, one row per training row."""
        return ctx.outputs[i][feature_piece(ctx.teachers[i].features[-1])]

    def validate(self, teachers: list[Teacher]) -> None:
        """Refuse teachers this method cannot use, with an actionable message naming the methods that fit:
        teachers of another kind, or teachers that cannot give what it needs. Runs before any teacher pass."""
        self.check_kinds(teachers)
        self.check_capabilities(teachers)

    # Capabilities --------------------------------------------------------------------------------
    def needs_of(self, teacher: Teacher) -> frozenset[str]:
        """What this method, with its options, needs of ``teacher`` (default :attr:`needs`)."""
        return self.needs

    def variant_without(self, capability: str) -> str:
        """A published variant of this method that does without ``capability`` (MUKI's K = 1 ablation), said in
        a refusal; it runs only when the user asks for it. "" when there is none."""
        return ""

    def tap_hint(self) -> str:
        """How to give a torch teacher the feature tap this method reads."""
        return f"create it with Teacher(..., features='<{self.tap_layer}>') (the module path of that layer)"

    def require_taps(self, teachers: list[Teacher], what: str, layer: str) -> None:
        """Refuse a teacher without a feature tap, saying which module path to give (methods now declare
        ``needs = {"outputs", "features"}`` instead, which also refuses teachers that can have no taps)."""
        for t in teachers:
            if not t.features:
                raise MethodError(
                    f"method {self.name!r} needs {what} {t.name!r}: create it with "
                    f"Teacher(..., features='<{layer}>') (the module path of that layer)."
                )

    def check_capabilities(self, teachers: list[Teacher]) -> None:
        """Refuse the first teacher that cannot give something this method needs, naming the teacher, what is
        missing, any variant of the method that does without it, and the methods that work with these teachers."""
        for t in teachers:
            missing = [c for c in CAPABILITIES if c in self.needs_of(t) and c not in t.capabilities]
            if missing:
                raise MethodError(self._refusal(t, missing[0], teachers))

    def _refusal(self, teacher: Teacher, capability: str, teachers: list[Teacher]) -> str:
        what = CAPABILITIES[capability]
        if teacher.origin is None and capability == "features":  # a torch model: a tap is one argument away
            said = f"method {self.name!r} needs a feature tap on teacher {teacher.name!r}: {self.tap_hint()}"
        elif teacher.origin is None and capability == "dropout":
            said = f"method {self.name!r} needs {what}, which teacher {teacher.name!r} cannot give: its model has no "
            said += "dropout modules"
        else:
            said = f"method {self.name!r} needs {what}, which teacher {teacher.name!r} "
            said += f"({teacher.origin or 'a torch model'}) cannot give"
        variant = self.variant_without(capability)
        fit = methods_serving(teachers)
        return (
            said
            + (f". {variant}" if variant else "")
            + "; "
            + (f"methods that work with these teachers: {', '.join(fit)}." if fit
               else "no method in this version works with these teachers.")
        )  # fmt: skip

    def check_kinds(self, teachers: list[Teacher]) -> None:
        """Refuse teachers of a kind this method does not amalgamate, naming the methods for theirs."""
        kinds = teacher_kinds(teachers)
        bad = [t for t in teachers if t.kind not in self.kinds]
        if bad:
            fit = methods_for(kinds)
            raise MethodError(
                f"method {self.name!r} amalgamates {' or '.join(sorted(self.kinds))} teachers, but "
                f"{', '.join(f'{t.name!r} is {t.kind}' for t in bad[:3])}; "
                + (f"methods for these teachers: {', '.join(fit)}." if fit else
                   f"no method in this version amalgamates {' + '.join(sorted(kinds))} teachers.")
            )  # fmt: skip

    def refuse_single_label(self, teachers: list[Teacher], why: str) -> None:
        """A one-label teacher's softmax is 1 on every example: methods that route by a teacher's confidence
        would let it win every example. Refuse it, saying what to do."""
        single = [t.name for t in teachers if len(t.labels) < 2]
        if single:
            raise MethodError(
                f"method {self.name!r} cannot use teacher {single[0]!r}: it has a single label, so its softmax is 1 "
                f"on every example and {why}. Give it a second output (e.g. an 'other' class), or use kd."
            )

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Per-row tensors the loss needs (first dimension = number of training rows)."""
        return {}

    def train_rows(self, ctx: Context) -> np.ndarray:
        """Indices of the rows to train on (default: all)."""
        return np.arange(len(ctx))

    def modules(self) -> nn.Module | None:
        return None

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        raise NotImplementedError

    def run(self, ctx: Context, train: Trainer) -> Any:
        """Train the student and return the engine's History. The default is one engine pass over
        ``prepare``'s targets; methods with several stages (self-training rounds) override it. ``loss`` reads only
        its batch, so the teachers' outputs are released before training (``Context.release_outputs``)."""
        targets, rows = self.prepare(ctx), self.train_rows(ctx)
        ctx.release_outputs()
        return train(targets, rows)


class EmbeddingMethod(Method):
    """A meta-embedding method (family E): word-embedding teachers, no store pieces (the sources' tables
    are read directly through :class:`~amalgamator.metaembedding.EmbeddingContext`), and ``run`` sets
    ``ctx.result`` to the (words × d) table."""

    family = "E: meta-embedding"
    kinds = frozenset({"embedding"})
    #: a (words × d) table is one huge parameter: torch's fused AdamW steps it ~9× faster on CPU than the
    #: default per-parameter path (0.04 vs 0.39 s for 243k × 300, measured)
    optimizer_options = {"fused": True}

    @classmethod
    def student_kind(cls, kinds: set[str]) -> str:
        return "embedding"

    def pieces(self, teacher: Teacher) -> list[str]:
        return []


def _rule_of(default: Any) -> Any:
    """The rule for an option declared without one: its default's type (any value when None)."""
    if isinstance(default, bool):
        return Flag
    return Any if default is None else type(default)


@torch.no_grad()
def network_outputs(
    net: nn.Module, x: torch.Tensor | RowView, batch_size: int = 512, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Eval-mode outputs of ``net`` for every row of ``x`` (or the rows at ``rows``, in that order), in batches,
    without gradients. Rows are read one batch at a time, so a row view is never densified whole."""
    net.eval()
    if rows is None:
        return torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return torch.cat([net(x[rows[i : i + batch_size]]) for i in range(0, len(rows), batch_size)])


#: ``train(targets, rows, stage="", epochs=None) -> History``: one engine pass on the student network;
#: ``stage`` names a separate checkpoint folder, ``epochs`` overrides the run's epoch count.
Trainer = Callable[..., Any]


def epochs_for(rows: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """At least ``epochs``, and enough epochs for ``min_steps`` optimiser steps: a few dozen labeled
    rows make one batch per epoch, and ten steps train nothing."""
    per_epoch = max(1, -(-rows // batch_size))
    return max(epochs, -(-min_steps // per_epoch))


@contextlib.contextmanager
def tap_outputs(module: nn.Module, paths: list[str]):
    """Collect the outputs of submodules at ``paths`` into a dict while the context is open."""
    caught: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        try:
            sub = module.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in module.named_modules() if n][:30]
            raise MethodError(f"the student has no module at path {path!r}; its paths include {names}.") from None

        def hook(_m, _i, out, _p=path):
            caught[_p] = out[0] if isinstance(out, (tuple, list)) else out

        handles.append(sub.register_forward_hook(hook))
    try:
        yield caught
    finally:
        for h in handles:
            h.remove()


def softmax(z: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis, written out: torch's kernel is slow over a few classes (2,000 × 5 rows:
    ~200 µs against ~50 µs here, one thread), and fits over a whole pool (``calibrated``'s temperatures and
    balancing, ``mahalanobis``' routing) take hundreds of them."""
    e = (z - z.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of −Σ_j target_j log softmax(logits)_j, optionally weighted per row.

    Equal to KL(target ‖ softmax(logits)) up to the target's entropy, a constant.
    """
    per_row = -(target * logits.log_softmax(-1)).sum(-1)
    if weight is not None:
        per_row = per_row * weight
    return per_row.mean()


def place_in_union(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], n_union: int, reduce: str) -> torch.Tensor:
    """Teachers' logits side by side in union order, (rows, n_union); ``parts`` holds, per teacher,
    the union positions of its labels and its logits. A label named by several teachers gets the
    ``mean`` (KD, SPEC Family A) or the ``max`` (ensemble) of their logits."""
    n = len(parts[0][1])
    if reduce == "max":
        best = torch.full((n, n_union), -torch.inf)
        for pos, lg in parts:
            best[:, pos] = torch.maximum(best[:, pos], lg)
        return best
    total, count = torch.zeros(n, n_union), torch.zeros(n_union)
    for pos, lg in parts:  # in place: the sums and quotients of ``total[:, pos] += lg; total / count``, bit for bit
        if lg.dtype == total.dtype:  # without a copy of the columns (a teacher's positions are distinct)
            total.index_add_(1, torch.as_tensor(pos, dtype=torch.long), lg)
        else:  # e.g. float64 logits: added in their precision, as before
            total[:, pos] += lg
        count[pos] += 1
    return total.div_(count)  # and without a second (rows, n_union) tensor


def union_logits(ctx: Context, reduce: str = "mean") -> torch.Tensor:
    """The stored teacher logits of every training row placed in union order (see :func:`place_in_union`);
    every union label is named by some teacher, so no column is left empty."""
    parts = [(ctx.positions(i), ctx.logits(i)) for i in range(len(ctx.teachers))]
    return place_in_union(parts, len(ctx.union), reduce)
