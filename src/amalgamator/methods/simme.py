"""``simme``: Similarity-Preserving Meta-Embedding (thesis ``000``, Ch. 2, §2.5; SPEC Family E).

Teachers are word-embedding tables with different vocabularies and widths. SimME learns one
table **M** (t × d, t = |V| words of the target vocabulary) whose cosine similarities reproduce each
source's cosine similarities on word pairs, counting only the sources that know both words.

- **Relation-Encoder** (§2.5.1). Eq. 1: e_k = M x_k + b (x_k the one-hot of word w_k, b a shared
  bias): :class:`RelationEncoder`. Eq. 2: y_p = cos(e_k, e_l) for a pair p = (w_k, w_l).
  Source j's score y_p^j = cos(s_k^j, s_l^j).
- **Loss** Eq. 3, with **maskout** Eq. 4–5: J(M) = (1/n) Σ_p Σ_j 1[p ∈ S^j] (y_p − y_p^j)², where
  1[p ∈ S^j] is 1 when source j holds both words (a *nonmutual* pair is learnt from the sources
  that observe it, never from a synthetic vector).

Pairs (settled in SPEC: all t² pairs are infeasible, sample them each epoch): the engine shuffles
the vocabulary every epoch into batches of B words, and every pair inside a batch is a training pair
(B(B − 1)/2 pairs per batch, t(B − 1)/2 per epoch). Each pair is a uniform draw from V × V, the
draws change every epoch, and the whole batch is one matrix product per source (no Python loop over
pairs). ``batch_size`` therefore sets the pairs per epoch.

Start (the thesis does not say how M is initialised): ``init="svd"`` (default) starts from the
truncated SVD of the concatenated normalised sources (zeros where a source lacks the word), so the
first epochs refine relations the sources already share; ``init="random"`` draws M from N(0,
``init_std``²). Each word's row is updated once per epoch (when its batch comes), so a random start
needs many epochs on a large vocabulary.

OOV: the meta-embedding covers every word of V (by default the union of the sources' vocabularies);
a word outside V has no vector (see :mod:`amalgamator.metaembedding`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn

from .base import Count, EmbeddingMethod, Positive, StudentOutput, register


class RelationEncoder(nn.Module):
    """Eq. 1: the meta-embedding table M (one row per word) plus a shared bias b."""

    def __init__(self, words: int, dim: int, init_std: float = 0.1, seed: int = 0, start: torch.Tensor | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.M = nn.Parameter(torch.randn(words, dim, generator=g) * init_std if start is None else start.clone())
        self.b = nn.Parameter(torch.zeros(dim))

    def forward_features(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.M[idx] + self.b
        return e, e

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_features(idx)[0]

    def table(self) -> torch.Tensor:
        return (self.M + self.b).detach()


def svd_start(sources: list[torch.Tensor], dim: int, scale: float) -> torch.Tensor:
    """The rows of the concatenated (normalised, zero where OOV) sources projected on their top ``dim``
    principal directions, rescaled to mean row norm ``scale``: a start whose cosines already resemble the
    sources', so training refines relations instead of discovering them from noise."""
    x = torch.cat(sources, 1)
    q = min(dim, x.shape[1], len(x))
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    start = torch.zeros(len(x), dim)
    start[:, :q] = u[:, :q] * s[:q]
    return start * (scale / start.norm(dim=1).mean().clamp_min(1e-8))


def cosine_matrix(v: torch.Tensor) -> torch.Tensor:
    """Eq. 2 for every pair of rows of ``v`` at once."""
    u = v / v.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return u @ u.T


@register
class SimME(EmbeddingMethod):
    name = "simme"
    paper = (
        "Thadajarassiri 2023, Knowledge Amalgamation from Heterogeneous Pre-Trained Models (PhD thesis, WPI) "
        "Ch. 2 §2.5: Similarity-Preserving Meta-Embedding (SimME), Eq. 1-5"
    )
    summary = "a table whose word-pair cosines match each source's, pairs counted only where a source knows both words"
    defaults = {"dim": 300, "init": "svd", "init_std": 0.1}
    rules = {"dim": Count, "init": Literal["svd", "random"], "init_std": Positive}

    def run(self, ctx: Any, train: Any) -> Any:
        self.lookups = [ctx.lookup(j) for j in range(len(ctx.teachers))]
        dim, std = int(self.options["dim"]), float(self.options["init_std"])
        start = None
        if self.options["init"] == "svd":
            start = svd_start([ctx.source_vectors(j) for j in range(len(ctx.teachers))], dim, std * dim**0.5)
        net = RelationEncoder(len(ctx), dim, std, ctx.config.seed, start)
        history = train(torch.arange(len(ctx)), {}, net)
        ctx.result = net.table().numpy()
        return history

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        """Eq. 4 over every pair of the batch's words (upper triangle of the B × B pair matrix)."""
        idx = batch["x"]
        y = cosine_matrix(out.logits)  # Eq. 2 in M
        pairs = torch.ones_like(y, dtype=torch.bool).triu(1)
        total = y.new_zeros(())
        for table, rows in self.lookups:
            r = rows[idx]
            s = table[r]  # normalised source vectors, the zero row for OOV
            known = r != len(table) - 1
            observed = pairs & known[:, None] & known[None, :]  # Eq. 5: 1[p ∈ S^j]
            total = total + ((y - s @ s.T) ** 2 * observed).sum()
        return total / pairs.sum().clamp_min(1)
