"""TargetNet (SPEC Family D): a task-customised student from homogeneous multi-task teachers.

Ye et al. 2019 (`001`) §3. The teachers and the student share one block architecture (a ``plainnet``,
``resnet`` or ``densenet`` of equal options); the user picks the customised task set C (option ``tasks``,
default every union task). What each part implements:

- Eq. 3, the teacher as blocks: teacher n = blocks A_n^1..A_n^B, then its readout and one linear head row
  per task (``model.backbone.blocks``, ``model.backbone.readout``, ``model.head``: a multi-task amalgamator
  student of a block preset), :class:`TeacherBlocks`. The decomposition is checked against the stored
  logits before training.
- Eq. 4, teacher-level filter f_n^k: global pooling and two linear layers giving a channel gate on the
  student's block-k output (:class:`~amalgamator.models.branched.ChannelFilter`; starts as the identity).
- Eq. 5 (feature distance with a task-level filter g) is the formulation the paper sets aside ("the distance
  function is hard to determine ... g seems impossible to define"), and so do we: Eq. 6–7 replace it.
- Eq. 6, entangling: F_un^k = f_n^k(F_u^k) is put in place of teacher n's block-k output, and teacher n's
  blocks k+1..B, readout and head run on it (:meth:`TeacherBlocks.tail`, :func:`entangled_logits`).
  The teachers run live, inside the loss, on ``batch["x"]`` through the student's blocks: their weights are
  frozen (eval mode, no gradient, outside every trained module, never checkpointed), and the gradient flows
  through them to the student's block k and the filters.
- Eq. 7–8, the block loss: L_u = (1/|C|) Σ_n Σ_{i∈C_n} ℓ(O_n^i, O_un^i), ℓ the binary cross-entropy of Eq. 2
  with the teacher's own prediction σ(stored logit) as the target (no labels): :class:`BlockObjective`. The
  original predictions O_n^i are the store's teacher logits, computed once.
- Alg. 1 lines 4–10, block-wise training: stage k trains block k of the student and the filters {f_n^k}
  while blocks 1..k−1 stay unchanged (no gradient, and eval mode, so not even their batch-norm statistics
  move): :class:`StageNet`, one engine pass per block (``stage="block{k}"``, its own checkpoints, so an
  interrupted run resumes at the block and epoch it reached).
- "The final loss values for each block and each task" L^i_k: after stage k, each task's ℓ over the
  training rows in eval mode (the model exactly as it would be assembled, no dropout, no moving weights):
  ``block_losses`` (blocks × tasks), also in ``diagnostics["block_losses"]``.
- Eq. 9, branch-out: S^i = argmin_k L^i_k (:func:`branch_out`; a tie keeps the earlier block).
- Eq. 10, the assembled model for task i: student blocks 1..S^i, filter f_n^{S^i}, teacher n's blocks
  S^i+1..B and its head for task i; the student's blocks after max_i S^i are dropped (§3.5):
  :func:`assemble`, a :class:`~amalgamator.models.branched.BranchedNet` saved as preset ``"branched"``.
  It becomes *the* student of the run (labels = C, kind ``multitask``), saved and loaded like any other.

Choices where the paper is silent, stated:

1. A task named by several teachers is taken from the first teacher that names it (teacher order): the
   paper's C_n are disjoint ("for each task i selected from teacher A_n").
2. Teachers that hold no task of C take no part (they add no term to Eq. 7) and get no filters.
3. The filter's hidden width is max(1, channels // ``reduction``) (default 4); its gate is 2·σ(·).
4. Each block trains for the run's epochs (``block_epochs`` overrides): B engine passes in all.
5. Alg. 1's last step (fine-tuning the branched model) is not in SPEC and not done; the student starts
   from a fresh initialisation (the paper's came from ImageNet, which is not available here).
6. Tasks of one teacher with the same branch-out block share one branch (identical frozen copies in the
   paper's wording): same outputs, fewer parameters.
7. The frozen blocks 1..k−1 run live under ``no_grad`` rather than from a cache of their outputs: they are
   cheap next to the teachers' remaining blocks, and a cache would hold a feature map per row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from ..errors import MethodError, suggest
from ..models import FAMILIES, build
from ..models.branched import ChannelFilter
from ..rows import RowView
from ..student import Student, UnionNet
from ..teachers import Teacher
from .base import Context, Count, Method, StudentOutput, Trainer, register

FAMILY = "D: multi-task union"
PAPER = (
    "Ye et al. 2019, Amalgamating Filtered Knowledge: Learning Task-customized Student from Multi-task "
    "Teachers (IJCAI) §3, Eq. 4–10"
)
#: a task list: at least one name
Tasks = Annotated[list[str], Field(min_length=1)]


# Teachers as blocks (Eq. 3) ---------------------------------------------------------------------------------


@dataclass
class TeacherBlocks:
    """Teacher n seen as Eq. 3 writes it: blocks A_n^1..A_n^B, then readout and linear heads F_n.

    A plain holder, not an ``nn.Module``: the teacher's modules never join a trained or saved module.
    """

    name: str
    blocks: Sequence[nn.Module]
    readout: nn.Module
    head: nn.Linear
    widths: list[int]

    def tail(self, f: torch.Tensor, k: int, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Eq. 6: the teacher's outputs ``rows`` when ``f`` stands for its block-k output (k = 0: the input),
        i.e. blocks k+1..B, readout and the head rows of the chosen tasks."""
        for block in self.blocks[k:]:
            f = block(f)
        rows = torch.as_tensor(rows, dtype=torch.long)
        bias = self.head.bias[rows] if self.head.bias is not None else None
        return F.linear(self.readout(f).flatten(1), self.head.weight[rows], bias)


def teacher_blocks(t: Teacher) -> TeacherBlocks:
    """The Eq. 3 view of a teacher, or a one-line error saying what kind of teacher targetnet reads."""
    model = t.model
    backbone = getattr(model, "backbone", None)
    blocks, readout = getattr(backbone, "blocks", None), getattr(backbone, "readout", None)
    head = getattr(model, "head", None)
    if not isinstance(blocks, nn.ModuleList) or not isinstance(readout, nn.Module) or not isinstance(head, nn.Linear):
        raise MethodError(
            f"method 'targetnet' reads a teacher block by block, but teacher {t.name!r} ({type(model).__name__}) "
            "has no model.backbone.blocks, model.backbone.readout and linear model.head; use a multitask student of "
            "a block preset (plainnet, resnet, densenet) as the teacher, or venus for other architectures."
        )
    widths = [int(w) for w in getattr(backbone, "widths", [])] or [-1] * len(blocks)
    return TeacherBlocks(t.name, blocks, readout, head, widths)


def block_signature(blocks: Sequence[nn.Module]) -> list[list[tuple[str, ...]]]:
    """What makes two block stacks interchangeable: per block, every submodule's type and every tensor's shape."""
    return [
        [(n, type(m).__name__) for n, m in b.named_modules()]
        + [(n, *map(str, v.shape)) for n, v in b.state_dict().items()]
        for b in blocks
    ]


def describe(blocks: Sequence[nn.Module], widths: Sequence[int]) -> str:
    """A stack of blocks in a few words: how many, their widths, what the first is made of."""
    parts = [type(m).__name__ for m in blocks[0].children()] if len(blocks) else []
    made = f" (block 1: {'+'.join(parts[:6])}{'+…' if len(parts) > 6 else ''})" if parts else ""
    return f"{len(blocks)} blocks of widths {list(widths)}{made}"


def check_homogeneous(views: Sequence[TeacherBlocks]) -> None:
    """Refuse teachers whose block stacks differ (count, widths, layers): one line naming venus."""
    ref = views[0]
    for v in views[1:]:
        if block_signature(v.blocks) != block_signature(ref.blocks):
            raise MethodError(
                f"method 'targetnet' needs homogeneous teachers (one block architecture), but teacher {ref.name!r} "
                f"has {describe(ref.blocks, ref.widths)} and teacher {v.name!r} has {describe(v.blocks, v.widths)}; "
                "use venus to amalgamate teachers of different architectures."
            )


# Block-wise training (Eq. 6–7, Alg. 1) -------------------------------------------------------------------


class StageNet(nn.Module):
    """The student's blocks 1..k for stage k: blocks 1..k−1 frozen (no gradient, eval mode whatever the engine
    asks), block k trained. Its output F_u^k is the engine's "features" (and, unused, its "logits")."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i == len(self.blocks) - 1)
        self.train()

    def train(self, mode: bool = True) -> StageNet:
        super().train(mode)
        for block in self.blocks[:-1]:
            block.eval()  # "blocks T^1..T^{k-1} keep unchanged": batch-norm statistics included
        return self

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            for block in self.blocks[:-1]:
                x = block(x)
        f = self.blocks[-1](x)
        return f, f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


@dataclass
class Customised:
    """The task set C split among the teachers: ``owner[i]`` and ``row[i]`` locate task i in its teacher's
    outputs; ``used`` are the teachers owning a task, in order; ``perm`` reorders their outputs, concatenated
    teacher by teacher, into the order of ``tasks``."""

    tasks: list[str]
    owner: list[int]
    row: list[int]
    used: list[int]
    perm: torch.Tensor

    def rows_of(self, n: int) -> list[int]:
        return [r for o, r in zip(self.owner, self.row, strict=True) if o == n]

    @classmethod
    def of(cls, tasks: Sequence[str], spaces: Sequence[Sequence[str]]) -> Customised:
        owner = [next(n for n, s in enumerate(spaces) if t in list(s)) for t in tasks]  # choice 1: first teacher
        row = [list(spaces[n]).index(t) for n, t in zip(owner, tasks, strict=True)]
        used = sorted(set(owner))
        order = [i for n in used for i in range(len(tasks)) if owner[i] == n]
        return cls(list(tasks), owner, row, used, torch.as_tensor(np.argsort(order), dtype=torch.long))


def entangled_logits(
    f_u: torch.Tensor, k: int, filters: Mapping[str, nn.Module], views: Sequence[TeacherBlocks], c: Customised
) -> torch.Tensor:
    """O_un^i for every chosen task, (rows, |C|) in C's order: Eq. 4 then Eq. 6 for each teacher owning tasks."""
    outs = [views[n].tail(filters[str(n)](f_u), k, c.rows_of(n)) for n in c.used]
    return torch.cat(outs, 1)[:, c.perm]


class BlockObjective(Method):
    """Stage k's loss, Eq. 7: the mean over the chosen tasks of ℓ(O_n^i, O_un^i), ℓ = BCE to σ(stored logit)."""

    name = "targetnet-block"
    kinds = frozenset({"multitask"})

    def __init__(self, k: int, filters: nn.ModuleDict, views: Sequence[TeacherBlocks], c: Customised, options: dict):
        super().__init__()
        self.options = dict(options)  # the run's options: part of each stage's checkpoint identity
        self.k, self.filters, self.views, self.c = k, filters, views, c

    def modules(self) -> nn.Module | None:
        return self.filters

    def logits(self, f_u: torch.Tensor) -> torch.Tensor:
        return entangled_logits(f_u, self.k, self.filters, self.views, self.c)

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(out.features), batch["target"])


@torch.no_grad()
def task_losses(
    net: StageNet,
    objective: BlockObjective,
    x: torch.Tensor | RowView,
    target: torch.Tensor,
    batch_size: int = 256,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The converged loss of each task after a stage, (|C|,): ℓ averaged over ``rows`` (default: every row) of
    ``x`` and ``target``, in eval mode, read a batch at a time (a row view is never densified whole)."""
    net.eval()
    objective.filters.eval()
    rows = torch.arange(len(x)) if rows is None else rows
    total = torch.zeros(target.shape[1])
    for i in range(0, len(rows), batch_size):
        r = rows[i : i + batch_size]
        z = objective.logits(net(x[r]))
        total += F.binary_cross_entropy_with_logits(z, target[r], reduction="none").sum(0)
    return total / max(len(rows), 1)


def branch_out(losses: np.ndarray | torch.Tensor) -> np.ndarray:
    """Eq. 9: per task (column), the 1-based block of least recorded loss; a tie keeps the earlier block."""
    return np.asarray(losses, dtype=np.float64).argmin(0) + 1


# Assembly (Eq. 10) -------------------------------------------------------------------------------------------


def assemble(
    base: str,
    base_options: dict[str, Any],
    featurizer: Any,
    trunk: Sequence[nn.Module],
    filters: Mapping[tuple[int, int], ChannelFilter],
    views: Sequence[TeacherBlocks],
    c: Customised,
    at: Sequence[int],
) -> tuple[UnionNet, dict[str, Any]]:
    """Eq. 10: the student network answering C, and its ``architecture`` for ``student.json``.

    ``trunk`` holds the student's trained blocks; ``filters[(S, n)]`` is f_n^S; ``at[i]`` is task i's
    branch-out block. One branch per (teacher, S); its head row for task i is teacher n's head row.
    """
    keys: list[tuple[int, int]] = []
    for n, s in zip(c.owner, at, strict=True):
        if (n, int(s)) not in keys:
            keys.append((n, int(s)))
    branches = [
        {"at": s, "hidden": filters[(s, n)].squeeze.out_features, "teacher": views[n].name,
         "tasks": [t for t, o, a in zip(c.tasks, c.owner, at, strict=True) if (o, int(a)) == (n, s)]}
        for n, s in keys
    ]  # fmt: skip
    options = {"base": base, "base_options": base_options, "branches": branches}
    _, backbone, resolved = build("branched", None, options, featurizer)
    with torch.no_grad():
        for mine, block in zip(backbone.trunk, trunk, strict=False):
            mine.load_state_dict(block.state_dict())
        for branch, (n, s) in zip(backbone.branches, keys, strict=True):
            branch.filter.load_state_dict(filters[(s, n)].state_dict())
            for mine, block in zip(branch.blocks, views[n].blocks[s:], strict=True):
                mine.load_state_dict(block.state_dict())
        width = backbone.widths[-1]
        head = nn.Linear(backbone.out_dim, len(c.tasks))
        head.weight.zero_()
        head.bias.zero_()
        for i, (n, r, s) in enumerate(zip(c.owner, c.row, at, strict=True)):
            b = keys.index((n, int(s)))
            t_head = views[n].head
            head.weight[i, b * width : (b + 1) * width] = t_head.weight[r]
            if t_head.bias is not None:
                head.bias[i] = t_head.bias[r]
    net = UnionNet(backbone, backbone.out_dim, len(c.tasks), head).requires_grad_(True).eval()
    return net, {"preset": "branched", "options": resolved}


def n_weights(module: nn.Module) -> int:
    """Every parameter, trainable or frozen (a teacher's are frozen)."""
    return sum(p.numel() for p in module.parameters())


def check_student(st: Any, preset: str, teacher: TeacherBlocks) -> None:
    """The student must be a block preset whose blocks are the teachers' (it stands in for them, block by block)."""
    fix = "give student='plainnet', 'resnet' or 'densenet' with the options the teachers were built with"
    if st is None or preset not in FAMILIES:
        raise MethodError(
            f"method 'targetnet' trains the student's blocks in place of the teachers' blocks, so the student must "
            f"be a block network like them, not {preset or 'a custom module'!r}; {fix}."
        )
    mine = st.network.backbone
    if block_signature(mine.blocks) != block_signature(teacher.blocks):
        raise MethodError(
            f"method 'targetnet' needs a student with the teachers' blocks, but student {preset!r} has "
            f"{describe(mine.blocks, mine.widths)} and teacher {teacher.name!r} has "
            f"{describe(teacher.blocks, teacher.widths)}; {fix}."
        )


@torch.no_grad()
def check_decomposition(ctx: Context, views: Sequence[TeacherBlocks], n_rows: int = 8) -> None:
    """Each teacher's blocks, readout and head, run on the student's inputs, must give its stored logits: Eq. 6
    feeds the student's featurized inputs through the teachers' blocks, so both must read the same layout."""
    x = ctx.features[:n_rows]
    for i, v in enumerate(views):
        got = v.tail(x, 0, range(len(ctx.teachers[i].labels)))
        want = ctx.logits(i)[:n_rows].float()
        gap = float((got - want).abs().max()) if len(x) else 0.0
        if gap > 1e-3 * (1 + float(want.abs().max())):
            raise MethodError(
                f"method 'targetnet': teacher {v.name!r}'s blocks, readout and head do not reproduce its outputs on "
                f"the student's inputs (largest difference {gap:.3g}); the teachers' forward must be blocks → readout "
                "→ head, reading the images the student reads (the same image shape and preprocessing)."
            )


def combined_history(histories: Sequence[Any]) -> Any:
    """One History over every stage, block 1's epochs first; a resume restored a prefix of them."""
    resumed = 0
    for h in histories:
        if h.resumed_from is None:
            break
        resumed += h.resumed_from
        if h.resumed_from < len(h.loss):
            break
    return dataclasses.replace(
        histories[-1],
        loss=[v for h in histories for v in h.loss],
        seconds=[v for h in histories for v in h.seconds],
        resumed_from=resumed or None,
    )


# The method --------------------------------------------------------------------------------------------------


@register
class TargetNet(Method):
    """Block-wise amalgamation into a branched, task-customised student (module docstring).

    After a run: ``block_losses`` (blocks × tasks, L^i_k), ``branch_points`` (task → S^i), ``owners`` (task →
    teacher), ``stage_histories`` (one engine History per block) and ``parameters`` (assembled student vs the
    teachers' total).
    """

    name = "targetnet"
    paper = PAPER
    family = FAMILY
    summary = "student trained block by block inside homogeneous teachers via filters; tasks branch out (Eq. 9–10)"
    kinds = frozenset({"multitask"})
    #: the student's filtered block output runs through each teacher's later blocks, and the loss back-propagates
    #: through them: live torch teachers
    needs = frozenset({"outputs", "gradients"})
    defaults = {"tasks": None, "block_epochs": None, "reduction": 4}
    rules = {"tasks": Tasks | None, "block_epochs": Count | None, "reduction": Count}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.tasks: list[str] = []
        self.owners: dict[str, str] = {}
        self.block_losses: np.ndarray = np.zeros((0, 0))
        self.branch_points: dict[str, int] = {}
        self.stage_histories: list[Any] = []
        self.parameters: dict[str, int] = {}

    def validate(self, teachers: list[Teacher]) -> None:
        super().validate(teachers)
        names = list(dict.fromkeys(t for te in teachers for t in te.labels))
        asked = self.options["tasks"]
        if asked is not None:
            unknown = [t for t in asked if t not in names]
            if unknown:
                raise MethodError(
                    f"method 'targetnet': task {unknown[0]!r} is not a task of any teacher."
                    f"{suggest(unknown[0], names)} The teachers' tasks: {', '.join(names)}."
                )
            if len(set(asked)) < len(asked):
                raise MethodError(f"method 'targetnet': option 'tasks' names a task twice ({asked}); name each once.")
        check_homogeneous([teacher_blocks(t) for t in teachers])

    def customised(self, teachers: Sequence[Teacher]) -> Customised:
        """C (option ``tasks``, default every union task) and who answers each task."""
        names = list(dict.fromkeys(t for te in teachers for t in te.labels))
        return Customised.of(self.options["tasks"] or names, [list(t.labels) for t in teachers])

    def run(self, ctx: Context, train: Trainer) -> Any:
        """Train blocks 1..B in turn (Eq. 6–7), record L^i_k, branch out (Eq. 9), assemble (Eq. 10)."""
        self.validate(ctx.teachers)
        views = [teacher_blocks(t) for t in ctx.teachers]
        for t in ctx.teachers:
            t.model.eval()
        st = ctx.student
        base = (st.architecture.get("preset") if st is not None else None) or ""
        check_student(st, base, views[0])
        check_decomposition(ctx, views)
        c = self.customised(ctx.teachers)
        stored = [ctx.logits(n)[:, r].float() for n, r in zip(c.owner, c.row, strict=True)]
        target = torch.sigmoid(torch.stack(stored, 1))  # O_n^i, the teachers' original predictions (Eq. 7)
        rows = self.train_rows(ctx)
        blocks = list(st.network.backbone.blocks)
        seed = int(getattr(ctx.config, "seed", 0) or 0)
        epochs = self.options["block_epochs"]
        filters: dict[tuple[int, int], ChannelFilter] = {}
        losses, self.stage_histories = [], []
        for k in range(1, len(blocks) + 1):
            width = int(st.network.backbone.widths[k - 1])
            hidden = max(1, width // int(self.options["reduction"]))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + k)  # stage k's filters: the same on every run and every resume
                stage_filters = nn.ModuleDict({str(n): ChannelFilter(width, hidden) for n in c.used})
            net = StageNet(blocks[:k])
            objective = BlockObjective(k, stage_filters, views, c, self.options)
            self.stage_histories.append(
                train({"target": target}, rows, stage=f"block{k}", epochs=epochs, network=net, objective=objective)
            )
            losses.append(task_losses(net, objective, ctx.features, target, rows=torch.as_tensor(rows)))
            filters.update({(k, n): stage_filters[str(n)] for n in c.used})
        for block in blocks:
            block.requires_grad_(True)
        self.tasks = list(c.tasks)
        self.owners = {t: views[n].name for t, n in zip(c.tasks, c.owner, strict=True)}
        self.block_losses = torch.stack(losses).numpy()
        at = branch_out(self.block_losses)
        self.branch_points = {t: int(s) for t, s in zip(c.tasks, at, strict=True)}
        self._assembly = (base, dict(st.architecture["options"]), st.featurizer, blocks, filters, views, c)
        net, arch = assemble(*self._assembly, at)
        # The assembled network is the run's student (Eq. 10), handed back to the API, which saves it.
        ctx.replace_student(Student(st.featurizer, net, list(c.tasks), "multitask", arch))
        self.parameters = {"student": n_weights(net), "teachers": sum(n_weights(t.model) for t in ctx.teachers)}
        self.diagnostics = {
            "target": target,
            "block_losses": torch.as_tensor(self.block_losses),
            "branch_out": torch.as_tensor(at),
            # ℓ's floor per task: the teacher's own entropy, reached when O_un^i = O_n^i on every row
            "target_entropy": F.binary_cross_entropy(target[rows], target[rows], reduction="none").mean(0),
        }
        return combined_history(self.stage_histories)

    def student_at(self, block: int) -> Student:
        """The assembled student with every chosen task branching out at ``block`` (1-based), whatever
        Eq. 9 chose: the per-block curves of the paper's Fig. 3 score these."""
        if not hasattr(self, "_assembly"):
            raise MethodError("method 'targetnet' has no trained blocks yet: run it first.")
        base, options, featurizer, blocks, filters, views, c = self._assembly
        if not 1 <= block <= len(blocks):
            raise MethodError(f"method 'targetnet': block must be 1..{len(blocks)}, got {block}.")
        net, arch = assemble(base, options, featurizer, blocks, filters, views, c, [block] * len(c.tasks))
        return Student(featurizer, net.eval(), list(c.tasks), "multitask", arch)

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        raise MethodError("method 'targetnet' trains block by block through run(); it has no single student loss.")

    def loss_table(self) -> dict[str, list[float]]:
        """L^i_k per task: {task: [loss after block 1, ..., after block B]}."""
        return {t: [float(v) for v in self.block_losses[:, i]] for i, t in enumerate(self.tasks)}
