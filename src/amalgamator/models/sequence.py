"""Sequence classifiers for multichannel time series (thesis `000` Ch. 3): an LSTM and a small 1-D CNN.

Both read ``(n, channels, length)`` batches (``(n, length)`` is one channel). Variable-length
sequences are padded with NaN at the end (:func:`amalgamator.pad_sequences`); the models read
each row's length back from the padding, the LSTM packs the batch so padding never enters its
state, and the CNN pools only over real time steps.

The thesis models the Teacher Trust Learner and the student as LSTMs whose final hidden state
is the feature (Eq. 6 and Eq. 12); :class:`SequenceLSTM` returns exactly that state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..data import Batch, Inputs, sequence_lengths
from ..errors import DataError
from .featurize import Featurizer, register_featurizer


def as_sequences(x: torch.Tensor) -> torch.Tensor:
    """(n, length) → (n, 1, length); (n, channels, length) unchanged."""
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() != 3:
        raise DataError(f"sequence models read (n, channels, length) arrays; got shape {tuple(x.shape)}.")
    return x


def sequence_channels(inputs: Inputs) -> int:
    """Channel count of numeric inputs read as sequences."""
    if inputs.is_text:
        raise DataError("sequence models read numeric (n, channels, length) arrays, not text.")
    return 1 if len(inputs.shape) == 2 else int(as_sequences(inputs.take(slice(0, 1))).shape[1])


class SequenceLSTM(nn.Module):
    """LSTM over time; the feature is the last layer's final hidden state (thesis Eq. 6 / Eq. 12)."""

    def __init__(
        self, in_channels: int, hidden: int = 64, layers: int = 1, dropout: float = 0.1, bidirectional: bool = False
    ):
        super().__init__()
        self.lstm = nn.LSTM(
            in_channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.dropout = nn.Dropout(dropout)
        self.bidirectional = bidirectional
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_sequences(x)
        lengths = sequence_lengths(x)
        steps = torch.nan_to_num(x, nan=0.0).transpose(1, 2)  # (n, length, channels)
        if bool((lengths == steps.shape[1]).all()):
            _, (h, _) = self.lstm(steps)
        else:
            packed = pack_padded_sequence(steps, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
        last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        return self.dropout(last)


class SequenceCNN(nn.Module):
    """Two Conv1d-BN-ReLU blocks, average pooling over the real (unpadded) steps, a linear layer.

    Padded steps are zeroed before each convolution, so a padded row gives exactly the feature of
    the same sequence given alone.
    """

    def __init__(self, in_channels: int, width: int = 32, out_dim: int = 64, kernel: int = 5, dropout: float = 0.1):
        super().__init__()
        pad = kernel // 2
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=pad), nn.BatchNorm1d(c_out), nn.ReLU())
            for c_in, c_out in ((in_channels, width), (width, 2 * width))
        )
        self.proj = nn.Sequential(nn.Linear(2 * width, out_dim), nn.ReLU(), nn.Dropout(dropout))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_sequences(x)
        lengths = sequence_lengths(x)
        mask = (torch.arange(x.shape[2]) < lengths[:, None]).unsqueeze(1).to(x.dtype)
        h = torch.nan_to_num(x, nan=0.0)
        for block in self.blocks:
            h = block(h) * mask
        pooled = h.sum(2) / lengths.clamp_min(1)[:, None].to(h.dtype)
        return self.proj(pooled)


@register_featurizer
class SequenceScaler(Featurizer):
    """Per-channel standardisation fitted on the training sequences (NaN padding ignored, kept).

    LSTMs are sensitive to input scale (HAPT mixes accelerations in g and rotations in rad/s), so
    the sequence presets standardise by default; the statistics are saved with the model.
    """

    type = "sequence-scaler"

    def __init__(self, channels: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.channels = int(channels)
        self.mean = mean if mean is not None else torch.zeros(self.channels)
        self.std = std if std is not None else torch.ones(self.channels)

    def fit(self, inputs: Inputs) -> SequenceScaler:
        x = as_sequences(self._check(inputs.values))  # type: ignore[arg-type]
        per_channel = x.transpose(0, 1).reshape(self.channels, -1)
        real = ~torch.isnan(per_channel)
        count = real.sum(1).clamp_min(1)
        mean = torch.where(real, per_channel, 0.0).sum(1) / count
        var = torch.where(real, (per_channel - mean[:, None]) ** 2, 0.0).sum(1) / count
        self.mean, self.std = mean, var.sqrt().clamp_min(1e-6)
        return self

    def _check(self, batch: Batch) -> torch.Tensor:
        if isinstance(batch, list):
            raise DataError("sequence models read numeric (n, channels, length) arrays, not text.")
        x = as_sequences(batch.float())
        if x.shape[1] != self.channels:
            raise DataError(
                f"sequences have {x.shape[1]} channels but the model was built for {self.channels}; "
                "give every sequence the same channels, in the same order."
            )
        return x

    def __call__(self, batch: Batch) -> torch.Tensor:
        x = self._check(batch)
        return (x - self.mean[None, :, None]) / self.std[None, :, None]

    def config(self) -> dict[str, Any]:
        return {"channels": self.channels}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SequenceScaler:
        return cls(config["channels"], tensors.get("mean"), tensors.get("std"))


def _featurizer(channels: int, standardize: bool, featurizer: Featurizer | None) -> Featurizer:
    if featurizer is not None:
        return featurizer
    return SequenceScaler(channels) if standardize else ChannelCheck(channels)


@register_featurizer
class ChannelCheck(SequenceScaler):
    """Channel check only (``standardize=False``): mean 0, std 1, never fitted."""

    type = "sequence-check"

    def fit(self, inputs: Inputs) -> ChannelCheck:
        self._check(inputs.values)  # type: ignore[arg-type]
        return self


def lstm_preset(inputs: Inputs | None, options: dict[str, Any], featurizer: Featurizer | None):
    opts = {"hidden": 64, "layers": 1, "dropout": 0.1, "bidirectional": False, "standardize": True, **options}
    if "in_channels" not in opts:
        opts["in_channels"] = sequence_channels(inputs)  # type: ignore[arg-type]
    net = SequenceLSTM(opts["in_channels"], opts["hidden"], opts["layers"], opts["dropout"], opts["bidirectional"])
    return _featurizer(opts["in_channels"], opts["standardize"], featurizer), net, opts


def cnn1d_preset(inputs: Inputs | None, options: dict[str, Any], featurizer: Featurizer | None):
    opts = {"width": 32, "out_dim": 64, "kernel": 5, "dropout": 0.1, "standardize": True, **options}
    if "in_channels" not in opts:
        opts["in_channels"] = sequence_channels(inputs)  # type: ignore[arg-type]
    net = SequenceCNN(opts["in_channels"], opts["width"], opts["out_dim"], opts["kernel"], opts["dropout"])
    return _featurizer(opts["in_channels"], opts["standardize"], featurizer), net, opts
