"""Small convolutional backbone for small images (digits 8×8, Fashion-MNIST 28×28)."""

from __future__ import annotations

import torch
import torch.nn as nn


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU, the second pooled), global average pooling, a linear layer.

    Works for any spatial size ≥ 4; ``out_dim`` is the width of the final feature. ``dropout`` acts on
    that feature only. ``block_dropout`` > 0 adds an element-wise ``nn.Dropout`` after each conv block
    too, so that every block has dropout, as in MUKI's BERT teachers (p = 0.1 in every layer), and
    Monte-Carlo dropout perturbs the whole network, not only its last layer. At 0 (the default) no module
    is added: the architecture and its state-dict keys are those of a network built without the option.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        out_dim: int = 128,
        dropout: float = 0.1,
        block_dropout: float = 0.0,
    ):
        super().__init__()

        def after_block() -> list[nn.Module]:
            return [nn.Dropout(block_dropout)] if block_dropout > 0 else []

        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            *after_block(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            *after_block(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, out_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
