"""Multi-layer perceptron backbone: the default student for vector data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class MLP(nn.Module):
    """Linear → ReLU → Dropout blocks; ``out_dim`` is the width of the last hidden layer."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
