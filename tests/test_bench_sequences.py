"""Sequence benchmark data: SYN control charts, JapaneseVowels, labeled subsets, the report."""

from __future__ import annotations

import numpy as np
import pytest

from amalgamator.bench.sequences import SYN_CLASSES, labeled_subset, load_japanese_vowels, load_syn
from amalgamator.data import Inputs, sequence_lengths
from amalgamator.errors import DataError


def test_syn_has_the_thesis_shape():
    d = load_syn()
    assert d.x_train.shape == (300, 1, 60) and d.x_test.shape == (300, 1, 60)
    assert d.classes == SYN_CLASSES
    assert {c: int((d.y_train == c).sum()) for c in SYN_CLASSES} == dict.fromkeys(SYN_CLASSES, 50)


def test_syn_missing_or_malformed_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "syn_train.txt").write_text("1 2 3\n")
    (tmp_path / "syn_test.txt").write_text("1 2 3\n")
    monkeypatch.setenv("AMALGAMATOR_SYN", str(tmp_path))
    with pytest.raises(DataError, match="60 values per line"):
        load_syn()


def test_labeled_subset_is_stratified_and_seeded():
    y = np.repeat(np.array(SYN_CLASSES), 50)
    pick = labeled_subset(y, 0.02, seed=3)
    assert len(pick) == 6 and sorted(y[pick]) == sorted(SYN_CLASSES)  # 2 % of 300: one per class
    np.testing.assert_array_equal(pick, labeled_subset(y, 0.02, seed=3))
    assert len(labeled_subset(y, 0.01, seed=0)) == 3  # fewer rows than classes: uniform draw


def test_japanese_vowels_is_nan_padded_multichannel():
    pytest.importorskip("aeon")
    d = load_japanese_vowels()
    assert d.x_train.shape[:2] == (270, 12) and d.x_test.shape[:2] == (370, 12)
    assert d.x_train.shape[2] == d.x_test.shape[2]
    lengths = sequence_lengths(Inputs(d.x_train).values)
    assert lengths.min() >= 7 and lengths.max() <= 29 and len(set(lengths.tolist())) > 5
    assert len(d.classes) == 9 and set(d.y_test) <= set(d.classes)
