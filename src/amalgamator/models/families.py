"""Three small CNN families for multi-task amalgamation: a plain conv net, a residual net, a dense net.

Why: the thesis's VENUS experiments (Ch. 5, Tables 10-12) amalgamate teachers of *different* architectures
(DenseNet, ResNet18, VGG, AlexNet), and TargetNet (`001` §3) trains a student block by block against teachers
of the *same* block architecture. These are CPU-sized stand-ins for those families, for 28×28 to 56×56 images.

All three share one skeleton, :class:`BlockNet`: a stack of blocks in ``self.blocks`` (an ``nn.ModuleList``;
block k's output feeds block k + 1), then ``readout`` = global average pooling, flatten, dropout, giving a
feature of width ``out_dim`` = the last block's channels. Block k has ``block_widths(width, blocks)[k]``
output channels in every family (``width`` doubling per block, at most ``8 * width``), so a plain net, a
residual net and a dense net of equal options have interchangeable block outputs of equal shapes. Every
block after the first begins by halving the spatial size (2×2 pooling, ``ceil_mode`` so 7×7 → 4×4 and 1×1
stays 1×1: any number of blocks works on any image size). Like :class:`~amalgamator.models.cnn.SmallCNN`,
the modules read ``(N, C, H, W)`` images; the presets put an ``Identity`` featurizer with the image shape in
front, which reshapes flat rows.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def block_widths(width: int, blocks: int) -> list[int]:
    """Output channels per block: ``width`` doubling each block, capped at ``8 * width`` (keeps deep nets small)."""
    if width < 1 or blocks < 1:
        raise ValueError(f"width and blocks must be positive, got width={width}, blocks={blocks}.")
    return [width * 2 ** min(k, 3) for k in range(blocks)]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift.
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class BlockNet(nn.Module):
    """Blocks applied in turn, then global average pooling → flatten → dropout (the feature, ``out_dim`` wide).

    ``blocks`` is the block-wise view TargetNet needs; ``readout`` turns the last block's output into the
    feature, so ``readout(blocks[-1](...blocks[0](x)))`` is exactly ``forward(x)``. ``widths`` lists each
    block's output channels.
    """

    def __init__(self, blocks: list[nn.Module], widths: list[int], dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.widths = list(widths)
        self.out_dim = self.widths[-1]

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, first to last (the feature maps F^1..F^B of TargetNet's Eq. 3)."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.readout(x)


class PlainNet(BlockNet):
    """VGG-like: each block is ``layers`` conv3×3-BN-ReLU (after 2×2 max pooling from block 2 on).

    The residual net without its shortcuts, at the same default depth (two convolutions per block).
    """

    def __init__(self, in_channels: int = 1, width: int = 8, blocks: int = 4, layers: int = 2, dropout: float = 0.1):
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}.")
        widths = block_widths(width, blocks)
        mods: list[nn.Module] = []
        c_in = in_channels
        for k, c_out in enumerate(widths):
            body: list[nn.Module] = [nn.MaxPool2d(2, ceil_mode=True)] if k else []
            for i in range(layers):
                body += _conv_bn_relu(c_in if i == 0 else c_out, c_out)
            mods.append(nn.Sequential(*body))
            c_in = c_out
        super().__init__(mods, widths, dropout)


class ResidualUnit(nn.Module):
    """He et al.'s basic unit: ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)); the shortcut is a 1×1
    conv + BN when the channel count changes, else the identity."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, c_out),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(BlockNet):
    """Residual net: each block is ``layers`` basic residual units (two 3×3 convolutions each), after 2×2
    max pooling from block 2 on. A small ResNet18 (which has two units per stage)."""

    def __init__(self, in_channels: int = 1, width: int = 8, blocks: int = 4, layers: int = 1, dropout: float = 0.1):
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}.")
        widths = block_widths(width, blocks)
        mods: list[nn.Module] = []
        c_in = in_channels
        for k, c_out in enumerate(widths):
            body: list[nn.Module] = [nn.MaxPool2d(2, ceil_mode=True)] if k else []
            body += [ResidualUnit(c_in if i == 0 else c_out, c_out) for i in range(layers)]
            mods.append(nn.Sequential(*body))
            c_in = c_out
        super().__init__(mods, widths, dropout)


class DenseLayer(nn.Module):
    """One densely connected layer: its input concatenated with ``growth`` new channels (conv3×3-BN-ReLU).

    Post-activation (conv first), unlike DenseNet's BN-ReLU-conv, so the first block does not clip raw pixels.
    """

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(c_in, growth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(BlockNet):
    """Densely connected net (Huang et al.): each block is ``layers`` dense layers, each seeing every earlier
    feature map of the block, then a 1×1 conv-BN-ReLU transition to the block's width; 2×2 average pooling
    (DenseNet's transition pooling) starts every block from the second on.

    Growth rate: half the block's output width (``growth``, when given, fixes it for every block instead).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 8,
        blocks: int = 4,
        layers: int = 3,
        dropout: float = 0.1,
        growth: int | None = None,
    ):
        if layers < 1 or (growth is not None and growth < 1):
            raise ValueError(f"layers and growth must be positive, got layers={layers}, growth={growth}.")
        widths = block_widths(width, blocks)
        mods: list[nn.Module] = []
        c_in = in_channels
        for k, c_out in enumerate(widths):
            g = growth or max(1, c_out // 2)
            body: list[nn.Module] = [nn.AvgPool2d(2, ceil_mode=True)] if k else []
            for i in range(layers):
                body.append(DenseLayer(c_in + i * g, g))
            body += _conv_bn_relu(c_in + layers * g, c_out, kernel=1)
            mods.append(nn.Sequential(*body))
            c_in = c_out
        super().__init__(mods, widths, dropout)


FAMILIES: dict[str, type[BlockNet]] = {"plainnet": PlainNet, "resnet": ResNet, "densenet": DenseNet}


def n_parameters(module: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
