"""The branched multi-task network TargetNet assembles (Ye et al. 2019, `001` §3.4–3.5, Eq. 4 and 10).

Why a model of its own: after block-wise training, each customised task i keeps the student's blocks
1..S_i, the teacher-level filter f_n^{S_i} and teacher n's blocks S_i+1..B with its head for task i
(Eq. 10). Tasks share the student's first blocks and branch out at different depths, so the model is
no longer one chain of blocks with one linear head.

Layout (so that :func:`amalgamator.load_student` rebuilds it like any preset, and the student's
``UnionNet`` keeps its single linear head):

- ``trunk``: the student's blocks 1..max_i S_i (the blocks after the last branch-out are dropped, §3.5);
- ``branches``: one :class:`Branch` per (teacher, branch-out block) pair: the filter f_n^S (:class:`ChannelFilter`,
  Eq. 4), the teacher's blocks S+1..B and its readout (pooling, flatten, dropout). The paper replicates the
  teacher's following blocks for every task; tasks of one teacher that branch out at the same block would
  get identical frozen copies, so they share one branch here (same outputs, fewer parameters);
- the network's output is the branches' features side by side; the student's linear head reads them, with
  each task's row holding its teacher's head row over its own branch's slice and zeros elsewhere.

The preset ``"branched"`` (models/__init__.py) rebuilds this from ``student.json``: the block family and its
options (``base``, ``base_options``, as the teachers and the student were built) and the branches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .families import BlockNet


class ChannelFilter(nn.Module):
    """Eq. 4's teacher-level filter f_n^k: global pooling and two linear layers giving a per-channel gate
    that rescales the student's block output before teacher n's next block reads it.

    The gate is 2·σ(·), in (0, 2), and the second layer starts at zero, so a new filter is exactly the
    identity: training starts by handing the teacher the student's feature unscaled (an SE gate σ(·) alone
    would start by halving it, and could only attenuate).
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        self.identity_()

    def identity_(self) -> ChannelFilter:
        """Make the filter the identity (gate 1 on every channel); returns itself."""
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)
        return self

    def gate(self, f: torch.Tensor) -> torch.Tensor:
        """(N, C) channel weights from the globally pooled feature map."""
        return 2 * torch.sigmoid(self.excite(torch.relu(self.squeeze(f.mean((2, 3))))))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.gate(f)[:, :, None, None]


class Branch(nn.Module):
    """One task stream of Eq. 10 after the shared blocks: filter f_n^S, teacher n's blocks S+1..B, readout."""

    def __init__(self, at: int, filter_: ChannelFilter, blocks: Sequence[nn.Module], readout: nn.Module):
        super().__init__()
        self.at = int(at)  # the branch-out block S (1-based): the trunk output this branch reads
        self.filter = filter_
        self.blocks = nn.ModuleList(blocks)
        self.readout = readout

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.filter(f)
        for block in self.blocks:
            h = block(h)
        return self.readout(h).flatten(1)


class BranchedNet(nn.Module):
    """Shared trunk blocks, then one :class:`Branch` per (teacher, branch-out block); the output is the
    branches' features concatenated (``out_dim`` = branches × the last block's width).

    ``make_base`` builds a fresh network of the block family (the teachers' and the student's architecture);
    ``branches`` lists (branch-out block S, filter hidden width) pairs. Weights are filled in afterwards
    (TargetNet's assembly, or the saved state dict on load).
    """

    def __init__(self, make_base: Callable[[], BlockNet], branches: Sequence[tuple[int, int]]):
        super().__init__()
        if not branches:
            raise ValueError("a branched network needs at least one branch.")
        base = make_base()
        n_blocks = len(base.blocks)
        for at, hidden in branches:
            if not 1 <= at <= n_blocks or hidden < 1:
                raise ValueError(f"branch at block {at} (hidden {hidden}) does not fit a {n_blocks}-block network.")
        depth = max(at for at, _ in branches)
        self.trunk = nn.ModuleList(list(base.blocks)[:depth])
        self.widths = list(base.widths)
        built = []
        for at, hidden in branches:
            donor = make_base()  # fresh blocks S+1..B of the family, overwritten by the teacher's weights
            filter_ = ChannelFilter(self.widths[at - 1], hidden)
            built.append(Branch(at, filter_, list(donor.blocks)[at:], copy.deepcopy(donor.readout)))
        self.branches = nn.ModuleList(built)
        self.out_dim = len(built) * self.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block in self.trunk:
            x = block(x)
            outs.append(x)
        return torch.cat([b(outs[b.at - 1]) for b in self.branches], 1)
