"""DFA: Vanilla KD plus layer-wise feature adaptation.

Shen, Wang, Song, Sun & Song (2019), "Amalgamating Knowledge towards Comprehensive
Classification" (AAAI), as MUKI (`002`) §3.1 uses it as a baseline: "DFA designs a layer-wise
feature adaptation mechanism for providing extra guidance based on Vanilla KD. The student
aligns its features to the merged features of multiple teachers layer by layer." The original
paper is not among the project's papers and neither `002` nor the thesis (`000`) prints a DFA
equation, so its own equation numbers are not cited; the loss is the one SPEC Family A settles:

    Loss = KD(union target ‖ student) + β · mean over (teacher i, layer k) of MSE(A_ik(S_k), T_ik)

- KD term: ``kd.kd_loss``, τ² · mean_x KL(softmax(z/τ) ‖ softmax(s/τ)) with z the teachers'
  logits placed in union order (a shared label takes their mean; SPEC Family A, the Vanilla KD
  baseline of `002` §3.1 and `000` §3.6). It is `002` Eq. 1 with the KL taken as KL(T ‖ S), and
  Hinton's τ² scaling.
- Feature term (SPEC "dfa"; no equation in the sources): S_k is the student's feature at its k-th
  chosen layer, T_ik the output of teacher i's k-th feature tap, and A_ik a small adapter from the
  student's feature to that teacher's (a linear layer for vectors, a 1×1 convolution for maps).
  Each teacher is matched through its own adapter, so the student's feature has to carry every
  teacher's feature (the "merged features"), while the adapters absorb width and basis
  differences. MSE is averaged over elements, then over the (i, k) pairs; β (option ``beta``,
  default 1) weighs it against the KD term.

How this differs from Shen et al. 2019: the thesis (`000` §3.2, its ref. [92]) describes that
method as assuming identical architectures for all teachers and the student, concatenating all
teachers' features at each layer and compressing them with an autoencoder into a compact feature
set that then supervises the student's corresponding layer, layer by layer. Here, following the
SPEC and MUKI's one-sentence description, there is no autoencoder and no concatenation: the
student's feature is mapped to each teacher's feature by a per-teacher adapter, all layers and
the KD term are trained jointly in one stage, and teachers of other architectures are allowed.

Shape rules where the student's and the teacher's features differ: a student map whose
spatial size differs from the teacher's map is adaptive-average-pooled to the teacher's size;
when one side is a map (or a sequence) and the other a vector, the map (sequence) is
global-average-pooled (averaged over positions) to a vector first. Teacher-side pooling is
done once in ``prepare``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MethodError
from ..store import LOGITS, feature_piece
from ..teachers import Teacher
from .base import Context, Method, NonNegative, Positive, StudentOutput, register, union_logits
from .cfl import channels, layout
from .kd import kd_loss

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _pool_vector(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C) and (B, L, d) → (B, d): average over positions."""
    return x.mean((2, 3)) if x.ndim == 4 else x.mean(1)


class _PoolTo(nn.Module):
    """Adaptive average pooling of a student map to the teacher's spatial size."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.size)


class _Mean(nn.Module):
    """Average a map or sequence over its positions (global average pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pool_vector(x)


def plan(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> tuple[nn.Module, Reduce]:
    """The adapter (student reduction + linear/1×1 conv) and the teacher-side reduction for one pair."""
    s_kind, t_kind = layout(s_shape, "the student layer"), layout(t_shape, "the teacher tap")
    cs, ct = channels(s_shape), channels(t_shape)
    if s_kind == t_kind == "map":
        pool: nn.Module = nn.Identity() if s_shape[1:] == t_shape[1:] else _PoolTo(tuple(t_shape[1:]))
        return nn.Sequential(pool, nn.Conv2d(cs, ct, kernel_size=1)), _identity
    if s_kind == t_kind == "sequence" and s_shape[0] == t_shape[0]:
        return nn.Linear(cs, ct), _identity  # position-wise over equal-length sequences
    # Otherwise compare vectors: average any map or sequence over its positions first.
    s_pool: nn.Module = nn.Identity() if s_kind == "vector" else _Mean()
    return nn.Sequential(s_pool, nn.Linear(cs, ct)), (_identity if t_kind == "vector" else _pool_vector)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@register
class DFA(Method):
    """KD plus per-teacher, per-layer feature adapters matched with MSE (Shen et al. 2019, via MUKI §3.1).

    Options: ``student_layers`` — student module paths (e.g. ``"backbone.body.2"``), paired in
    order with each teacher's feature taps; empty (default) means the student's penultimate
    feature, paired with each teacher's single tap. ``beta`` weighs the feature term, ``tau``
    is the KD temperature.
    """

    name = "dfa"
    paper = (
        "Shen et al. 2019, Amalgamating Knowledge towards Comprehensive Classification (AAAI); "
        "as the baseline in Li et al. 2022 (MUKI) §3.1"
    )
    family = "A: multi-class union"
    summary = "Vanilla KD plus per-teacher, per-layer feature adapters matched with MSE"
    needs = frozenset({"outputs", "features"})  # one tap per student layer
    defaults = {"tau": 1.0, "beta": 1.0, "student_layers": []}
    rules = {"tau": Positive, "beta": NonNegative, "student_layers": str | list[str]}

    def __init__(self, **options):
        super().__init__(**options)
        layers = self.options["student_layers"]
        if isinstance(layers, str):
            layers = [layers]
        self.options["student_layers"] = list(layers)
        self.student_taps = list(layers)
        self.adapters: nn.ModuleList | None = None
        self._pairs: list[tuple[int, int]] = []

    @property
    def n_layers(self) -> int:
        return max(1, len(self.student_taps))

    def _layers_text(self) -> str:
        return str(self.student_taps) if self.student_taps else "the student's penultimate feature"

    def pieces(self, teacher: Teacher) -> list[str]:
        return [LOGITS, *(feature_piece(p) for p in teacher.features)]

    def tap_hint(self) -> str:
        return (
            f"create it with Teacher(..., features=[...]), one module path per student layer ({self.n_layers}: "
            f"{self._layers_text()})"
        )

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)  # kinds, and a feature tap on every teacher (``needs``)
        n = self.n_layers
        for t in teachers:
            if len(t.features) != n:
                k = len(t.features)
                raise MethodError(
                    f"method 'dfa' pairs each teacher's feature taps with the student layers in order, but teacher "
                    f"{t.name!r} has {_count(k, 'tap')} and there {'is' if n == 1 else 'are'} "
                    f"{_count(n, 'student layer')} ({self._layers_text()}); give the teacher {_count(n, 'tap')} "
                    f"or set student_layers= to {_count(k, 'student module path')}."
                )

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        shapes = ctx.student_shapes(self.student_taps)
        keys = self.student_taps or ["features"]
        # the KD target: teachers' logits in union order, a shared label takes their mean (SPEC Family A)
        adapters, targets = [], {"target_logits": union_logits(ctx, "mean")}
        self._pairs = []
        for i, t in enumerate(ctx.teachers):
            for k, (key, path) in enumerate(zip(keys, t.features, strict=True)):
                feat = ctx.outputs[i][feature_piece(path)]
                adapter, reduce_t = plan(shapes[key], tuple(feat.shape[1:]))
                adapters.append(adapter)
                targets[f"dfa_feature_{i}_{k}"] = reduce_t(feat)
                self._pairs.append((i, k))
        self.adapters = nn.ModuleList(adapters)
        return targets

    def modules(self) -> nn.Module | None:
        return self.adapters

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        assert self.adapters is not None, "prepare() builds the adapters before training"
        # the KD term: `002` Eq. 1 taken as τ² · KL(T ‖ S) over the union (``kd.kd_loss``)
        kd = kd_loss(batch["target_logits"], out.logits, float(self.options["tau"]))
        student = [out.taps[p] for p in self.student_taps] if self.student_taps else [out.features]
        feat = out.logits.new_zeros(())
        for adapter, (i, k) in zip(self.adapters, self._pairs, strict=True):
            feat = feat + F.mse_loss(adapter(student[k]), batch[f"dfa_feature_{i}_{k}"])  # MSE(A_ik(S_k), T_ik)
        return kd + float(self.options["beta"]) * feat / len(self._pairs)  # KD + β · mean over (i, k) pairs (SPEC)
