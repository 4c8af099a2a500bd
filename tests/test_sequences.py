"""Sequence inputs and models: NaN end padding, the LSTM and 1-D CNN presets, channel checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.data import Inputs, sequence_lengths
from amalgamator.errors import DataError
from amalgamator.models.sequence import SequenceCNN, SequenceLSTM


def test_pad_sequences_pads_with_nan_and_keeps_lengths():
    seqs = [np.ones((2, 3)), np.ones((2, 5)), np.arange(4.0)[None].repeat(2, 0)]
    x = am.pad_sequences(seqs)
    assert x.shape == (3, 2, 5) and x.dtype == np.float32
    assert sequence_lengths(torch.as_tensor(x)).tolist() == [3, 5, 4]
    assert np.isnan(x[0, :, 3:]).all() and not np.isnan(x[1]).any()
    assert am.pad_sequences([np.arange(3.0), np.arange(2.0)]).shape == (2, 1, 3)  # 1-D → one channel


def test_pad_sequences_refuses_mixed_channels_and_empty():
    with pytest.raises(DataError, match="different channel counts"):
        am.pad_sequences([np.zeros((3, 4)), np.zeros((2, 4))])
    with pytest.raises(DataError, match="empty"):
        am.pad_sequences([])


def test_inputs_accept_nan_end_padding_only():
    x = am.pad_sequences([np.ones((2, 3)), np.ones((2, 5))])
    assert len(Inputs(x)) == 2
    holed = x.copy()
    holed[1, 0, 2] = np.nan  # one channel missing mid-sequence
    with pytest.raises(DataError, match="NaN"):
        Inputs(holed)
    gap = x.copy()
    gap[1, :, 1] = np.nan  # a padded step before real ones
    with pytest.raises(DataError, match="pad with NaN only at the end"):
        Inputs(gap)


@pytest.mark.parametrize("model", [SequenceLSTM(3, hidden=8), SequenceCNN(3, width=4, out_dim=6)])
def test_padding_does_not_change_a_sequence_feature(model):
    """A padded row's feature equals the feature of the same sequence given alone, unpadded."""
    torch.manual_seed(0)
    short, long_ = torch.randn(1, 3, 7), torch.randn(1, 3, 12)
    padded = torch.as_tensor(am.pad_sequences([short[0].numpy(), long_[0].numpy()]))
    model.eval()
    with torch.no_grad():
        together = model(padded)
        alone = torch.cat([model(short), model(long_)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["lstm", "cnn1d"])
def test_sequence_student_trains_saves_and_reloads(preset, tmp_path):
    rng = np.random.default_rng(0)
    y = np.array(["up", "down"] * 20)
    seqs = [np.cumsum(rng.normal(1 if v == "up" else -1, 0.3, size=(2, rng.integers(8, 16))), axis=1) for v in y]
    x = am.pad_sequences(seqs)
    st = am.train_classifier(x, y, student=preset, epochs=30, lr=1e-2)
    assert (st.predict(x) == y).mean() > 0.9  # trends are easy once lengths are respected
    st.save(tmp_path / "s")
    back = am.load_student(tmp_path / "s")
    np.testing.assert_allclose(back.predict_proba(x), st.predict_proba(x), atol=1e-6)
    with pytest.raises(DataError, match="channels"):
        back.predict(np.zeros((2, 3, 10), dtype=np.float32))
