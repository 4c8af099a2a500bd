"""Meta-embedding baselines with no training (thesis Ch. 2, §2.6 "Compared methods"; SPEC Family E).

- ``average`` (Coates & Bollegala 2018, "Frustratingly Easy Meta-Embedding"): the mean of the
  sources' L2-normalised vectors. Sources of different widths are zero-padded to the widest (their
  paper's own remedy); a source without the word is skipped (the mean runs over the sources that
  know it), rather than fed a synthetic "unknown" vector.
- ``concat`` (Yin & Schütze 2016, "Learning Word Meta-Embeddings"): the concatenation of the
  L2-normalised source vectors; a source without the word contributes zeros. Its width is the sum of
  the sources' widths.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import EmbeddingMethod, register


class _Direct(EmbeddingMethod):
    """A meta-embedding computed from the source vectors in one pass."""

    def combine(self, ctx: Any) -> torch.Tensor:
        raise NotImplementedError

    def run(self, ctx: Any, train: Any) -> Any:
        ctx.result = self.combine(ctx).numpy()
        return None


@register
class Average(_Direct):
    name = "average"
    paper = "Coates & Bollegala 2018, Frustratingly Easy Meta-Embedding (averaging, zero-padded)"
    summary = "mean of the sources' normalised vectors (zero-padded to the widest), over the sources that know the word"

    def combine(self, ctx: Any) -> torch.Tensor:
        width = max(t.dim for t in ctx.tables)
        total = torch.zeros(len(ctx), width)
        for j in range(len(ctx.teachers)):
            v = ctx.source_vectors(j)
            total[:, : v.shape[1]] += v
        return total / ctx.mask().sum(1, keepdim=True).clamp_min(1)


@register
class Concat(_Direct):
    name = "concat"
    paper = "Yin & Schütze 2016, Learning Word Meta-Embeddings (concatenation)"
    summary = "concatenation of the sources' normalised vectors, zeros for a source without the word"

    def combine(self, ctx: Any) -> torch.Tensor:
        return torch.cat([ctx.source_vectors(j) for j in range(len(ctx.teachers))], 1)
