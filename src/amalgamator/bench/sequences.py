"""Sequence datasets for the semi-supervised benchmark (thesis `000` Ch. 3, Tables 3–5).

- ``syn``: the thesis's SYN, synthetic control charts (Alcock & Manolopoulos 1999), 600 series
  of length 60 in 6 classes, shipped with the package in ``bench/data/syn`` (``$AMALGAMATOR_SYN``
  overrides it).
- ``hapt``: smartphone activity windows (the thesis's HAR), see :mod:`amalgamator.bench.hapt`.
- ``japanese-vowels``: aeon's bundled JapaneseVowels, 12 channels, lengths 7–29: the small
  variable-length, multichannel case (NaN-padded with :func:`amalgamator.pad_sequences`).

Every loader returns a :class:`SequenceSet`: ``(n, channels, length)`` float32 arrays and label
names, with the data's own train/test split where it has one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import pad_sequences
from ..errors import DataError

SYN_PACKAGED = Path(__file__).resolve().parent / "data" / "syn"  # package data, see its README.md
SYN_CLASSES = ("normal", "cyclic", "increasing", "decreasing", "upward_shift", "downward_shift")


@dataclass
class SequenceSet:
    """A sequence classification dataset with a train/test split and its class order."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def syn_folder() -> Path:
    """Where the SYN text files are: ``$AMALGAMATOR_SYN`` if set, else the copy shipped in the package."""
    env = os.environ.get("AMALGAMATOR_SYN")
    folder = Path(env) if env else SYN_PACKAGED
    if (folder / "syn_train.txt").exists() and (folder / "syn_test.txt").exists():
        return folder
    where = f"AMALGAMATOR_SYN={env}" if env else f"the package folder {folder} (a broken install?)"
    raise DataError(
        f"the SYN control-chart files (syn_train.txt, syn_test.txt) were not found in {where}; "
        "unset AMALGAMATOR_SYN to use the copy shipped with amalgamator, or point it at their folder."
    )


def _read_syn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path} is not a SYN file (class then 60 values per line): {exc}") from None
    codes = table[:, 0].astype(int)
    if table.shape[1] != 61 or codes.min() < 1 or codes.max() > 6:
        raise DataError(f"{path}: expected a class 1–6 and 60 values per line, got {table.shape[1]} columns.")
    return table[:, None, 1:], np.asarray(SYN_CLASSES)[codes - 1]


def load_syn() -> SequenceSet:
    """SYN with its 300/300 train/test split; labels are the class names in :data:`SYN_CLASSES`."""
    folder = syn_folder()
    x_train, y_train = _read_syn(folder / "syn_train.txt")
    x_test, y_test = _read_syn(folder / "syn_test.txt")
    return SequenceSet("syn", x_train, y_train, x_test, y_test, SYN_CLASSES)


def load_japanese_vowels() -> SequenceSet:
    """aeon's JapaneseVowels (270 train / 370 test, 12 channels, 9 speakers), NaN-padded."""
    try:
        from aeon.datasets import load_classification
    except ImportError:
        raise DataError("JapaneseVowels comes with aeon: pip install aeon (or pip install -e '.[bench]').") from None
    xs, ys = {}, {}
    for split in ("train", "test"):
        x, y = load_classification("JapaneseVowels", split=split)
        xs[split], ys[split] = list(x), np.asarray([f"speaker-{v}" for v in y])
    padded = pad_sequences(xs["train"] + xs["test"], what="JapaneseVowels")  # one length for both splits
    n_train = len(xs["train"])
    classes = tuple(sorted(set(ys["train"]), key=lambda s: int(s.split("-")[1])))
    return SequenceSet("japanese-vowels", padded[:n_train], ys["train"], padded[n_train:], ys["test"], classes)


def labeled_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of the rows, stratified by class when there are at least as many
    rows as classes (so 2 % of SYN's 300 still shows every class once), else uniform."""
    n = max(1, int(round(fraction * len(y))))
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    if n < len(classes):
        return np.sort(rng.choice(len(y), n, replace=False))
    from sklearn.model_selection import train_test_split

    picked, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(picked)
