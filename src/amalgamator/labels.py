"""Label spaces: each teacher's label names, their union, and the maps between them.

Labels are identified by name, never by index: two teachers that both name "cat"
share that label. The union is ordered by first appearance (teacher order, then
each teacher's own order), as SPEC.md prescribes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import LabelError


class LabelSpace(Sequence[str]):
    """An ordered set of label names with fast name → index lookup."""

    def __init__(self, names: Iterable[str], owner: str = "label list"):
        names = [str(n) for n in names]
        if not names:
            raise LabelError(f"{owner} is empty: give at least one label name.")
        seen: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in seen:
                raise LabelError(
                    f"{owner} names {n!r} twice (positions {seen[n]} and {i}): label names must be unique."
                )
            seen[n] = i
        self._names = tuple(names)
        self._index = seen

    # Sequence protocol -------------------------------------------------
    def __getitem__(self, i):  # type: ignore[override]
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelSpace):
            return self._names == other._names
        if isinstance(other, (list, tuple)):
            return list(self._names) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        return f"LabelSpace({list(self._names)!r})"

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def index(self, name: str, *args) -> int:  # type: ignore[override]
        try:
            return self._index[name]
        except KeyError:
            raise LabelError(f"unknown label {name!r}; known labels: {list(self._names)}") from None

    def encode(self, names: Iterable[str], what: str = "y") -> np.ndarray:
        """Map label names to indices; an unknown name is an error that lists the valid ones."""
        out = []
        for i, n in enumerate(names):
            j = self._index.get(str(n))
            if j is None:
                raise LabelError(
                    f"{what}[{i}] is {str(n)!r}, which no teacher knows; "
                    f"valid labels are {list(self._names)}. Drop such rows or add a teacher that knows it."
                )
            out.append(j)
        return np.asarray(out, dtype=np.int64)

    def decode(self, indices: Iterable[int]) -> np.ndarray:
        return np.asarray([self._names[int(i)] for i in indices], dtype=object).astype(str)

    # Union ----------------------------------------------------------------
    @classmethod
    def union(cls, spaces: Sequence[LabelSpace]) -> LabelSpace:
        """Union of several spaces in first-appearance order."""
        if not spaces:
            raise LabelError("no label spaces to unite: give at least one teacher.")
        names: dict[str, None] = {}
        for s in spaces:
            for n in s:
                names.setdefault(n, None)
        return cls(names, owner="label union")

    def positions(self, sub: LabelSpace) -> np.ndarray:
        """Indices in this (union) space of each of ``sub``'s labels, in ``sub``'s order."""
        missing = [n for n in sub if n not in self._index]
        if missing:
            raise LabelError(f"labels {missing} are not in the union {list(self._names)}.")
        return np.asarray([self._index[n] for n in sub], dtype=np.int64)


def owner_mask(union: LabelSpace, spaces: Sequence[LabelSpace]) -> np.ndarray:
    """Boolean matrix (n_spaces, len(union)): mask[i, j] is True iff space i names union label j."""
    mask = np.zeros((len(spaces), len(union)), dtype=bool)
    for i, s in enumerate(spaces):
        mask[i, union.positions(s)] = True
    return mask


def overlaps(spaces: Sequence[LabelSpace]) -> dict[str, list[int]]:
    """Labels named by more than one space, mapped to the indices of the spaces that name them."""
    owners: dict[str, list[int]] = {}
    for i, s in enumerate(spaces):
        for n in s:
            owners.setdefault(n, []).append(i)
    return {n: who for n, who in owners.items() if len(who) > 1}
