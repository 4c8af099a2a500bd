"""Autoencoded meta-embeddings: ``aaeme``, ``caeme``, ``daeme`` (Bollegala & Bao 2018, "Learning Word
Meta-Embeddings by Autoencoding"; thesis Ch. 2, §2.6 "Compared methods"; SPEC Family E).

One encoder E_j per source j maps its (L2-normalised) vector s_j to an encoding E_j(s_j) ∈ R^h.

- **AAEME**: the meta-embedding is the average of the encodings; a decoder D_j per source reconstructs
  s_j from it.
- **CAEME**: the meta-embedding is the concatenation of the encodings; every D_j decodes from it.
- **DAEME**: the meta-embedding is the concatenation, but D_j decodes s_j from E_j's own part only.

Loss: Σ_j ||D_j(·) − s_j||², the squared reconstruction error of every source. Our readings where the
thesis gives no detail: E_j is one linear layer with tanh, D_j one linear layer; h = ``dim`` (AAEME's
width, each part's width for CAEME/DAEME). Out-of-vocabulary words: where the original builds
synthetic vectors, we mask, as SimME's maskout does: a source that lacks the word neither enters the
meta-embedding (AAEME averages the present sources' encodings; CAEME/DAEME put zeros in its part) nor
is reconstructed (its term is dropped from the loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .base import Count, EmbeddingMethod, StudentOutput, register


class AutoEncoder(nn.Module):
    """Per-source encoders and decoders; ``forward_features`` returns (reconstructions, meta-embedding)."""

    def __init__(self, dims: list[int], hidden: int, combine: str):
        super().__init__()
        self.dims, self.combine = dims, combine
        self.encoders = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        meta = hidden if combine == "average" else hidden * len(dims)
        self.decoders = nn.ModuleList(nn.Linear(hidden if combine == "decoupled" else meta, d) for d in dims)

    def split(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The batch's source vectors and the (rows, sources) mask that ``x``'s last columns carry."""
        m = len(self.dims)
        parts = list(torch.split(x[:, :-m], self.dims, 1))
        return parts, x[:, -m:]

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        parts, mask = self.split(x)
        codes = [
            torch.tanh(e(p)) * mask[:, j : j + 1] for j, (e, p) in enumerate(zip(self.encoders, parts, strict=True))
        ]
        if self.combine == "average":
            meta = torch.stack(codes).sum(0) / mask.sum(1, keepdim=True).clamp_min(1)
        else:
            meta = torch.cat(codes, 1)
        return codes, meta

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, meta = self.encode(x)
        sources = codes if self.combine == "decoupled" else [meta] * len(self.dims)
        recon = torch.cat([d(c) for d, c in zip(self.decoders, sources, strict=True)], 1)
        return recon, meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[1]


class _AEME(EmbeddingMethod):
    combine = ""
    defaults = {"dim": 300}
    rules = {"dim": Count}

    def run(self, ctx: Any, train: Any) -> Any:
        self.dims = [t.dim for t in ctx.tables]
        x = torch.cat([*(ctx.source_vectors(j) for j in range(len(self.dims))), ctx.mask().float()], 1)
        torch.manual_seed(ctx.config.seed)
        net = AutoEncoder(self.dims, int(self.options["dim"]), self.combine)
        history = train(x, {}, net)
        with torch.no_grad():
            ctx.result = torch.cat([net(x[s : s + 4096]) for s in range(0, len(x), 4096)]).numpy()
        return history

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        """Σ_j ||D_j − s_j||² over the sources that know the word, averaged over the batch."""
        x = batch["x"]
        m = len(self.dims)
        target, mask = x[:, :-m], x[:, -m:]
        err = torch.split((out.logits - target) ** 2, self.dims, 1)
        return sum((e.sum(1) * mask[:, j]).sum() for j, e in enumerate(err)) / len(x)


@register
class AAEME(_AEME):
    name = "aaeme"
    paper = "Bollegala & Bao 2018, Learning Word Meta-Embeddings by Autoencoding (AAEME)"
    summary = "autoencoder whose meta-embedding averages the per-source encodings; every source decoded from it"
    combine = "average"


@register
class CAEME(_AEME):
    name = "caeme"
    paper = "Bollegala & Bao 2018, Learning Word Meta-Embeddings by Autoencoding (CAEME)"
    summary = "autoencoder whose meta-embedding concatenates the per-source encodings; every source decoded from it"
    combine = "concat"


@register
class DAEME(_AEME):
    name = "daeme"
    paper = "Bollegala & Bao 2018, Learning Word Meta-Embeddings by Autoencoding (DAEME)"
    summary = "concatenated per-source encodings, each source decoded from its own part only"
    combine = "decoupled"
