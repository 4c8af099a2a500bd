"""Common Feature Learning (CFL).

Luo, Wang, Fang, Hu, Tao & Song (2019), "Knowledge Amalgamation from Heterogeneous Networks
by Common Feature Learning" (`003`) §4, with the details the paper leaves open taken from
the authors' code (VainF/CommonFeatureLearning, and CFL in their group's KamalEngine):

- adaption layers (§4.1): one per teacher and one for the student, mapping each one's
  feature to a common width of 256 (a 1×1 convolution for maps, a linear layer for vectors,
  each followed by a ReLU as in the authors' code);
- shared extractor (§4.1): three residual blocks (the first projects 256 → 128) applied
  position-wise with the same weights to the student and to every teacher: a network of
  1×1 convolutions, written with ``nn.Linear`` on channels-last positions so that one set
  of weights serves vector features (one position) and maps (H·W positions) alike;
- L_M (Eq. 1–3): Σ_i MMD(f̂_Ti, f̂_S), the biased MMD estimator of Eq. 2 with a sum of RBF
  kernels exp(−‖a − b‖² / 2σ²) over the authors' bandwidth bank σ ∈ {1e-3 … 2} (SPEC), on
  L2-normalised common-space features (the paper's "normalized f̂");
- L_R (Eq. 4): Σ_i MSE(F'_Ti, F_Ti), each teacher's original feature reconstructed from its
  common-space feature by a per-teacher decoder (Linear → ReLU → Linear, position-wise, as
  in the authors' code; MSE rather than the printed ‖·‖₂, as in their code and the SPEC);
- L_C (Eq. 5): soft cross-entropy of the student's logits against the KD target
  softmax(union logits / τ), τ² scaled (the authors' ``SoftCELoss``; SPEC Family A);
- L = α L_C + (1 − α)(L_M + L_R) (Eq. 6).

Multi-label teachers (kinds ``multilabel`` and ``chain``; SPEC Family C: "``cfl`` as Family A with
BCE targets", the CFL baseline of thesis `000` §4.6): everything above is unchanged except L_C, which
becomes τ² · BCE(σ(s/τ), σ(z̄/τ)) per union label, z̄ the mean of the logits of the teachers that know
the label (one teacher: its logit), i.e. ``kd-ml``'s target; at the default τ = 1 it is exactly
kd-ml's loss. Multi-task teachers (kind ``multitask``; SPEC Family D, the CFL baseline of thesis
`000` §5.6) take the same BCE path: their features are the final shared representation they tap. The
multi-class path is untouched.

Maps (teacher taps of shape (C, H, W)): the adaption layer and extractor run on every
position, the decoder reconstructs the full map, and for the MMD the common-space map is
global-average-pooled, so that every side contributes one common vector per row and the
rows of a batch are the MMD samples. (The authors flatten each row's C·H·W map into one
vector instead, which needs the student's and the teacher's maps to have the same spatial
size; here the student's feature is its flattened penultimate vector, so that never holds.)
Sequence taps (L, d), e.g. a transformer's hidden states, are treated like maps with L
positions (channels last); their mean includes padding positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MethodError
from ..teachers import Teacher
from .base import Context, Method, Positive, Probability, StudentOutput, register, soft_cross_entropy, union_logits
from .multilabel import MULTILABEL_KINDS

#: RBF bandwidths σ of the authors' code (``CFLoss(sigmas=[0.001, 0.01, 0.05, 0.1, 0.2, 1, 2])``).
SIGMAS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.2, 1.0, 2.0)
ADAPT_WIDTH = 256  # §4.1: "the channel number of f_S and f_Ti is 256"
COMMON_WIDTH = 128  # §4.1: "the channel number [of the common space] is taken to be 128"


# Feature layouts -------------------------------------------------------------------------------


def layout(shape: Sequence[int], what: str) -> str:
    """``"vector"`` (d,), ``"sequence"`` (L, d) or ``"map"`` (C, H, W) for a per-row feature shape."""
    kinds = {1: "vector", 2: "sequence", 3: "map"}
    if len(shape) not in kinds:
        raise MethodError(
            f"{what} has per-row shape {tuple(shape)}; feature methods read vectors (d,), sequences (L, d) "
            "or maps (C, H, W): tap another module."
        )
    return kinds[len(shape)]


def channels(shape: Sequence[int]) -> int:
    """Channel (feature) width of a per-row shape: last axis for vectors/sequences, first for maps."""
    return int(shape[0]) if len(shape) == 3 else int(shape[-1])


def to_positions(x: torch.Tensor) -> torch.Tensor:
    """(B, P, C) channels-last view of a (B, d), (B, L, d) or (B, C, H, W) batch."""
    if x.ndim == 2:
        return x.unsqueeze(1)
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2)
    return x


# MMD (Eq. 2) -------------------------------------------------------------------------------------


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances. :func:`mmd` passes float64: the σ = 1e-3 kernel is exp(−5·10⁵ d²), so float32
    rounding (d² ≈ 1e-7 between identical rows) would turn into loss; float64 keeps identical rows 0 apart."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T).clamp_min(0)


#: exponents below this are taken at it: exp(−700) ≈ 1e-304 is 0 next to the kernel's other terms (the σ = 2 term
#: alone is at least exp(−1/2) between unit vectors), and it keeps exp off its slow underflow path, which the small
#: bandwidths hit for nearly every pair (measured: 8 × slower)
EXP_FLOOR = -700.0


def _kernel(d: torch.Tensor, gammas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_σ exp(−γ_σ d) and Σ_σ γ_σ exp(−γ_σ d) (minus its derivative in d), elementwise, on one (n, m) matrix."""
    e = torch.exp((-gammas[:, None, None] * d).clamp_min(EXP_FLOOR))  # (S, n, m)
    return e.sum(0), torch.tensordot(gammas, e, 1)


class _MMD(torch.autograd.Function):
    """Eq. 2 on unit rows, with its gradient in closed form rather than through 21 kernel matrices.

    For K(a, b) = Σ_σ exp(−γ_σ‖a − b‖²), ∂K/∂a = −2 W(a, b)(a − b) with W = Σ_σ γ_σ exp(−γ_σ‖a − b‖²); so with
    W_xx, W_xy, W_yy the matrices of W and r(W) = W·1 their row sums,
    ∂MMD/∂x = −(4/n²)(diag(r(W_xx)) x − W_xx x) + (4/nm)(diag(r(W_xy)) x − W_xy y), and symmetrically for y.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        kxx, wxx = _kernel(_sq_dists(x, x), gammas)
        kyy, wyy = _kernel(_sq_dists(y, y), gammas)
        kxy, wxy = _kernel(_sq_dists(x, y), gammas)
        ctx.save_for_backward(x, y, wxx, wyy, wxy)
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        x, y, wxx, wyy, wxy = ctx.saved_tensors
        n, m = len(x), len(y)
        gx = -4 / n**2 * (wxx.sum(1, keepdim=True) * x - wxx @ x)
        gx = gx + 4 / (n * m) * (wxy.sum(1, keepdim=True) * x - wxy @ y)
        gy = -4 / m**2 * (wyy.sum(1, keepdim=True) * y - wyy @ y)
        gy = gy + 4 / (n * m) * (wxy.sum(0)[:, None] * y - wxy.T @ x)
        return grad * gx, grad * gy, None


def mmd(x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float] = SIGMAS, normalize: bool = True) -> torch.Tensor:
    """Squared MMD between samples ``x`` (n, ...) and ``y`` (m, ...), Eq. 2 of `003`.

    Biased (V-statistic) estimator with the kernel Σ_σ exp(−‖a − b‖² / 2σ²); rows are
    flattened and, as the paper says, L2-normalised first. n and m may differ (C_T, C_S).
    Zero for identical samples; clamped at 0 like the authors' code. Computed in float64 (see
    :func:`_sq_dists`) with the gradient of :class:`_MMD`.
    """
    x, y = x.flatten(1), y.flatten(1)
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    gammas = torch.tensor([1.0 / (2.0 * s * s) for s in sigmas], dtype=torch.float64, device=x.device)
    value = _MMD.apply(x.double(), y.double(), gammas)
    return value.clamp_min(0).to(x.dtype)


# The common feature learning block (§4.1, Fig. 2) ----------------------------------------------------


class _ResBlock(nn.Module):
    """Position-wise (1×1) residual block: ReLU(fc2(ReLU(fc1(x))) + proj(x)), the authors' ResBlock layout.

    The paper's blocks have "1×1 stride"; the authors' code uses 3×3 kernels on equal-sized
    maps. Here the student's feature is a vector (a 1×1 map, on which a padded 3×3 kernel only
    uses its centre tap), so 1×1 blocks lose nothing and let one extractor serve every side.
    No batch-norm, as in the authors' first release.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(cin, cout), nn.Linear(cout, cout)
        self.proj = nn.Linear(cin, cout, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(x))) + self.proj(x))


def _adaption(shape: Sequence[int], width: int) -> nn.Module:
    """1×1 conv for maps, linear for vectors and sequences (position-wise), then ReLU."""
    if layout(shape, "feature") == "map":
        return nn.Sequential(nn.Conv2d(channels(shape), width, kernel_size=1), nn.ReLU())
    return nn.Sequential(nn.Linear(channels(shape), width), nn.ReLU())


class CommonSpace(nn.Module):
    """Adaption layers, shared extractor and per-teacher decoders (`003` Fig. 2)."""

    def __init__(self, student_shape: Sequence[int], teacher_shapes: Sequence[Sequence[int]]):
        super().__init__()
        self.align_s = _adaption(student_shape, ADAPT_WIDTH)
        self.align_t = nn.ModuleList(_adaption(s, ADAPT_WIDTH) for s in teacher_shapes)
        self.extractor = nn.Sequential(
            _ResBlock(ADAPT_WIDTH, COMMON_WIDTH),
            _ResBlock(COMMON_WIDTH, COMMON_WIDTH),
            _ResBlock(COMMON_WIDTH, COMMON_WIDTH),
        )
        self.dec_t = nn.ModuleList(
            nn.Sequential(nn.Linear(COMMON_WIDTH, channels(s)), nn.ReLU(), nn.Linear(channels(s), channels(s)))
            for s in teacher_shapes
        )

    def common(self, align: nn.Module, feature: torch.Tensor) -> torch.Tensor:
        """Common-space positions (B, P, 128) of a feature batch."""
        return self.extractor(to_positions(align(feature)))

    def student(self, feature: torch.Tensor) -> torch.Tensor:
        return self.common(self.align_s, feature)

    def common_all(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`student` and :meth:`teacher` of every teacher in one pass of the shared extractor over the
        positions of all sides stacked (the same weights act position-wise; a third of the small products)."""
        sides = [to_positions(self.align_s(student))]
        sides += [to_positions(align(f)) for align, f in zip(self.align_t, teachers, strict=True)]
        flat = self.extractor(torch.cat([h.reshape(-1, h.shape[-1]) for h in sides]))
        parts = flat.split([h.shape[0] * h.shape[1] for h in sides])
        return [part.view(h.shape[0], h.shape[1], -1) for part, h in zip(parts, sides, strict=True)]

    def teacher(self, i: int, feature: torch.Tensor) -> torch.Tensor:
        return self.common(self.align_t[i], feature)


# The method ---------------------------------------------------------------------------------------


@register
class CFL(Method):
    """Common Feature Learning (`003` §4): student and teachers meet in a learned common space.

    ``alpha`` (Eq. 6) defaults to 0.5. The paper gives no value. The authors' group's
    KamalEngine implementation weighs KD, MMD and reconstruction equally (weights [1, 1, 1]),
    which is α = 0.5 up to a constant factor; their first release (VainF/CommonFeatureLearning)
    used L_C + 10 (L_M + L_R), i.e. α = 1/11. On digits α = 0.5 matches Vanilla KD
    (0.86–0.87) while α = 1/11 loses about 4 points (0.82), so the equal weighting is the default.
    ``tau`` is the temperature of the soft target (Eq. 5), with τ² scaling.
    """

    name = "cfl"
    paper = "Luo et al. 2019, Knowledge Amalgamation from Heterogeneous Networks by Common Feature Learning (IJCAI) §4"
    family = "A: multi-class union"
    summary = "features matched by MMD in a learned common space, plus KD on the logits"
    defaults = {"alpha": 0.5, "tau": 1.0}
    rules = {"alpha": Probability, "tau": Positive}  # Eq. 6 mixes two terms with α and 1 − α
    kinds = frozenset({"multiclass", "multitask"}) | MULTILABEL_KINDS
    needs = frozenset({"outputs", "features"})  # its last feature tap, matched in the common space

    def __init__(self, **options):
        super().__init__(**options)
        self.block: CommonSpace | None = None
        #: whether L_C is the per-label BCE (multi-label or multi-task teachers) rather than the softmax CE
        self.multilabel = False

    def pieces(self, teacher: Teacher) -> list[str]:
        return self.tapped_pieces(teacher)

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        tau = float(self.options["tau"])
        feats = [self.tap(ctx, i) for i in range(len(ctx.teachers))]
        for t, f in zip(ctx.teachers, feats, strict=True):
            layout(f.shape[1:], f"teacher {t.name!r}'s feature tap {t.features[-1]!r}")
        student_shape = ctx.student_shapes()["features"]
        self.block = CommonSpace(student_shape, [f.shape[1:] for f in feats])
        self.multilabel = any(t.kind in MULTILABEL_KINDS | {"multitask"} for t in ctx.teachers)
        mean = union_logits(ctx, "mean") / tau
        targets = {"target_prob": torch.sigmoid(mean) if self.multilabel else mean.softmax(-1)}
        targets.update({f"cfl_feature_{i}": f for i, f in enumerate(feats)})
        return targets

    def modules(self) -> nn.Module | None:
        return self.block

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        assert self.block is not None, "prepare() builds the common space before training"
        alpha, tau = float(self.options["alpha"]), float(self.options["tau"])
        if self.multilabel:  # Eq. 5 with per-label BCE targets (SPEC Family C)
            l_c = (tau**2) * F.binary_cross_entropy_with_logits(out.logits / tau, batch["target_prob"])
        else:
            l_c = (tau**2) * soft_cross_entropy(batch["target_prob"], out.logits / tau)  # Eq. 5
        f_ts = [batch[f"cfl_feature_{i}"] for i in range(len(self.block.align_t))]
        h_s, *h_ts = self.block.common_all(out.features, f_ts)
        h_s = h_s.mean(1)
        l_m = out.logits.new_zeros(())
        l_r = out.logits.new_zeros(())
        for i, (f_t, h_t) in enumerate(zip(f_ts, h_ts, strict=True)):
            l_m = l_m + mmd(h_t.mean(1), h_s)  # Eq. 2–3
            l_r = l_r + F.mse_loss(self.block.dec_t[i](h_t), to_positions(f_t))  # Eq. 4
        return alpha * l_c + (1 - alpha) * (l_m + l_r)  # Eq. 6

    @torch.no_grad()
    def common_features(
        self, student_features: torch.Tensor, teacher_features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Common-space vectors (n, 128) of the student and of each teacher, e.g. for a t-SNE plot.

        ``student_features`` is the student's penultimate feature (``network.forward_features(x)[1]``),
        ``teacher_features[i]`` the output of teacher i's last feature tap on the same rows.
        Use the method instance that was passed to ``amalgamate`` (it holds the trained block).
        """
        if self.block is None:
            raise MethodError("common_features needs a trained CFL: pass this instance to amalgamate(method=...).")
        if len(teacher_features) != len(self.block.align_t):
            raise MethodError(
                f"common_features got {len(teacher_features)} teacher feature batches; "
                f"the method was trained with {len(self.block.align_t)} teachers."
            )
        was = self.block.training
        self.block.eval()
        try:
            param = next(self.block.parameters())
            s = self.block.student(student_features.to(param)).mean(1)
            ts = [self.block.teacher(i, f.to(param)).mean(1) for i, f in enumerate(teacher_features)]
        finally:
            self.block.train(was)
        return s, ts
