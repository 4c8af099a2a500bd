"""Order-free classifier chain: ANT's teacher and student architecture (thesis `000` Ch. 4, Eq. 29–36).

A chain predicts labels one at a time and feeds what it has predicted so far back into an LSTM, so
each label is predicted conditioned on the others (Eq. 33). Step 0 (Eq. 29–30) is a linear layer
``L_0 = W x + b`` with hard predictions ``Ŷ_0 = 0``; at step k the LSTM reads ``[x, L_{k−1}, Ŷ_{k−1}]``
(Eq. 31) and emits logits ``L_k`` over all labels (Eq. 32). Among the labels not yet selected, the
one with the highest probability ``σ(L_k)`` is selected, and its hard prediction ``[σ(L_k) > 0.5]``
enters ``Ŷ_k``. A label's final logit is its logit at the step that selected it (Eq. 34), so the
chain's probabilities are ``σ`` of those (Eq. 35–36) and it trains with binary cross-entropy on
them (Eq. 37): gradients reach the logits of the selecting step, while the selection itself is an
argmax.

Selection criterion, thesis vs. here. The thesis (§4.5.3, after Eq. 32) removes the labels already
*positive* in ``Ŷ_{k−1}`` from the candidates and calls the most probable candidate "positive at
this time step". Read literally, a label predicted negative could be picked again and every picked
label would be positive. This module follows SPEC.md instead: the candidates are the labels not yet
*selected* (so each label is selected exactly once and the chain runs ℓ steps, matching the ℓ
factors of Eq. 33 and the one final logit per label of Eq. 34), the criterion is the same highest
``σ(L_k)`` (equivalently the highest logit), and the selected label's hard prediction is
``[σ(L_k) > 0.5]`` rather than always 1, so the final prediction agrees with Eq. 35–36 thresholded
at 0.5.

Initial state (the Knowledge Transfer Module, Eq. 26). A transferee re-runs with a shared label's
probability forced to the transferor's: ``init_mask`` marks forced labels per row and ``init_probs``
holds their probabilities. A forced label starts as already selected, with ``L_0 = logit(p)``
(``p`` clamped to ``[1e-6, 1 − 1e-6]``) and ``Ŷ_0 = [p > 0.5]``, and keeps ``logit(p)`` as its final
logit; the chain then runs only over the remaining labels. ``L_{k−1}`` fed back at step k ≥ 2 is
the LSTM's own output ``L_{k−1}`` (Eq. 31–32), so a forced label's probability reaches later steps
through ``Ŷ`` and the LSTM state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import DataError

EPS = 1e-6


def _check_state(
    features: Tensor, n_labels: int, init_probs: Tensor | None, init_mask: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """The forced state as ``(probs, mask)`` on the features' device and dtype, or None; bad input is a DataError."""
    if init_probs is None and init_mask is None:
        return None
    if init_probs is None or init_mask is None:
        missing = "init_probs" if init_probs is None else "init_mask"
        raise DataError(f"chain initial state: {missing} is missing; pass init_probs and init_mask together.")
    want = (features.shape[0], n_labels)
    for name, t in (("init_probs", init_probs), ("init_mask", init_mask)):
        if tuple(t.shape) != want:
            raise DataError(
                f"chain initial state: {name} has shape {tuple(t.shape)}, expected (n, n_labels) = {want}; "
                "pass one row per input row and one column per chain label."
            )
    probs = torch.as_tensor(init_probs, dtype=features.dtype, device=features.device)
    if torch.isnan(probs).any():
        raise DataError(
            "chain initial state: init_probs contains NaN; fill every entry with a probability "
            "(unforced entries are ignored, e.g. 0.5)."
        )
    mask = torch.as_tensor(init_mask, device=features.device).bool()
    if ((probs < 0) | (probs > 1))[mask].any():
        raise DataError("chain initial state: forced init_probs must lie in [0, 1]; pass probabilities, not logits.")
    return probs, mask


class ChainHead(nn.Module):
    """A chain over ``n_labels`` reading feature vectors (the student's backbone output, or raw inputs).

    ``init`` is W, b of Eq. 29; ``cell`` is the LSTM of Eq. 32 and ``out`` maps its hidden state to
    one logit per label. The loop runs over chain steps only: rows and labels are vectorised.
    """

    def __init__(self, in_dim: int, n_labels: int, hidden: int = 64):
        super().__init__()
        if in_dim < 1 or n_labels < 1 or hidden < 1:
            raise DataError(
                f"ChainHead needs in_dim, n_labels and hidden ≥ 1; got {in_dim}, {n_labels}, {hidden}. "
                "Pass positive sizes."
            )
        self.in_dim, self.n_labels, self.hidden = in_dim, n_labels, hidden
        self.init = nn.Linear(in_dim, n_labels)
        self.cell = nn.LSTMCell(in_dim + 2 * n_labels, hidden)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, features: Tensor, init_probs: Tensor | None = None, init_mask: Tensor | None = None) -> Tensor:
        """(n, n_labels) final logits: each label's logit at the step that selected it (Eq. 34)."""
        return self._run(features, init_probs, init_mask)[0]

    @torch.no_grad()
    def order(self, features: Tensor, init_probs: Tensor | None = None, init_mask: Tensor | None = None) -> Tensor:
        """(n, n_labels) int64 step at which each label was selected: 1..ℓ, and 0 for forced labels."""
        return self._run(features, init_probs, init_mask)[1]

    def _run(self, features: Tensor, init_probs: Tensor | None, init_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise DataError(
                f"ChainHead reads (n, {self.in_dim}) features; got shape {tuple(features.shape)}. "
                "Flatten rows or build the chain with the right in_dim."
            )
        x = features
        n, n_labels = x.shape[0], self.n_labels
        logits = self.init(x)  # Eq. 29: L_0 = W x + b
        hard = torch.zeros_like(logits)  # Eq. 29: Ŷ_0 = 0
        final = torch.zeros_like(logits)
        selected = torch.zeros(n, n_labels, dtype=torch.bool, device=x.device)
        state = _check_state(x, n_labels, init_probs, init_mask)
        if state is not None:  # Eq. 26: forced labels start selected with L_0 = logit(p), Ŷ_0 = [p > 0.5]
            probs, mask = state
            forced = torch.logit(probs.clamp(EPS, 1 - EPS))
            logits = torch.where(mask, forced, logits)
            final = torch.where(mask, forced, final)
            hard = torch.where(mask, (probs > 0.5).to(hard.dtype), hard)
            selected = mask.clone()
        order = torch.zeros(n, n_labels, dtype=torch.long, device=x.device)
        steps = int((~selected).sum(1).max()) if n else 0
        h = x.new_zeros(n, self.hidden)
        c = x.new_zeros(n, self.hidden)
        for k in range(1, steps + 1):
            h, c = self.cell(torch.cat([x, logits, hard], 1), (h, c))  # Eq. 31–32
            logits = self.out(h)
            # Highest σ(L_k) among unselected labels = highest logit; rows already done pick nothing.
            pick = logits.detach().masked_fill(selected, float("-inf")).argmax(1)
            chosen = nn.functional.one_hot(pick, n_labels).bool() & ~selected.all(1, keepdim=True)
            final = torch.where(chosen, logits, final)  # Eq. 34: keep the logit of the selecting step
            hard = torch.where(chosen, (logits.detach() > 0).to(hard.dtype), hard)
            order = torch.where(chosen, k, order)
            selected = selected | chosen
        return final, order


class ChainClassifier(nn.Module):
    """A whole multi-label teacher/student for vector inputs: optional MLP body, then a :class:`ChainHead`.

    ``model(x)`` gives one logit per label like any multi-label model; ANT's transfer passes the
    forced state as ``model(x, init_probs=..., init_mask=...)``.
    """

    def __init__(self, in_dim: int, n_labels: int, hidden: int = 64, body: Sequence[int] = ()):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for w in body:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        self.body = nn.Sequential(*layers)
        self.head = ChainHead(width, n_labels, hidden)
        self.in_dim, self.n_labels = in_dim, n_labels

    def forward(self, x: Tensor, init_probs: Tensor | None = None, init_mask: Tensor | None = None) -> Tensor:
        """(n, n_labels) final logits (Eq. 34); σ of them are the label probabilities (Eq. 35–36)."""
        return self.head(self.body(x), init_probs, init_mask)

    def order(self, x: Tensor, init_probs: Tensor | None = None, init_mask: Tensor | None = None) -> Tensor:
        """(n, n_labels) step at which each label was selected (0 for forced labels)."""
        return self.head.order(self.body(x), init_probs, init_mask)


__all__ = ["ChainClassifier", "ChainHead"]
