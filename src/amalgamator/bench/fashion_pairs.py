"""FashionPairs: a multi-task image benchmark built from Fashion-MNIST, for the thesis's Ch. 5 (VENUS) and TargetNet.

Why it exists: the papers' multi-task data (PASCAL VOC 2007, 3D shapes) cannot be had on these machines, but
Fashion-MNIST can (Debian ``dataset-fashion-mnist``, loaded by :mod:`amalgamator.bench.datasets`; nothing is
downloaded). Like VOC, whose 20 tasks are "the presence or absence of each label" (thesis Sec. 5.6), every
FashionPairs image holds several objects and every task is one binary question: "does the image contain a
<class>?", for the ten Fashion-MNIST classes (task names = class names, :data:`TASKS`).

An image is a 56×56 single-channel canvas split into a 2×2 grid of 28×28 cells (cell 0 top-left, 1 top-right,
2 bottom-left, 3 bottom-right). Per image the generator draws how many items it holds (2, 3 or 4, uniformly),
which cells hold them (a uniformly random subset of that size) and which Fashion-MNIST items fill them; the other
cells stay black. Items are dealt from a seeded shuffle of the allowed source items, reshuffled when used up,
so each is used about equally often. Pixels are the items' own values (``uint8 / 255``), in [0, 1]. About 27 %
of the labels are positive (1 - 0.9^k averaged over k = 2, 3, 4).

:func:`fashion_pairs` builds ``n`` images from one Fashion-MNIST split; :func:`roles` carves the teacher,
student-pool and test parts so that no Fashion-MNIST item in a teacher's images is in the pool's (and each
teacher's items are its own); :func:`teacher_task_sets` gives the teachers' task sets as the thesis does.
Memory: 12.5 KB per image (float32), e.g. 20,000 images take 250 MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from ..errors import DataError
from . import datasets as D
from .yeast import label_set_sizes, shared_fractions, teacher_label_sets

TASKS: list[str] = list(D.FASHION_LABELS)
SIDE = 56
CELL = 28
N_CELLS = 4
MIN_ITEMS, MAX_ITEMS = 2, 4
Split = Literal["train", "test"]

# Independent random streams per purpose, so one seed does not give correlated draws.
_STREAM_PAIRS, _STREAM_ROLES = 11, 12
_SPLIT_CODE = {"train": 0, "test": 1}
_PART_CODE = {"pool": 0, "test": 1}  # teacher t uses code 2 + t

__all__ = [
    "TASKS",
    "Part",
    "Roles",
    "fashion_pairs",
    "label_set_sizes",
    "roles",
    "shared_fractions",
    "teacher_task_sets",
]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


def load_items() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``{split: (images uint8 (n, 28, 28), classes int64 (n,))}``, through the benchmark loader
    (its cache, its ``$AMALGAMATOR_FASHION_MNIST`` override and its one-line error naming the fix)."""
    try:
        bench = D.load("fashion-mnist")
    except DataError as exc:
        raise DataError(f"FashionPairs is built from Fashion-MNIST: {exc}") from None
    if bench.image_shape != (CELL, CELL):
        raise DataError(f"FashionPairs needs 28×28 Fashion-MNIST items; the source has {bench.image_shape} images.")
    index = {name: i for i, name in enumerate(TASKS)}
    out = {}
    for split in ("train", "test"):
        x = bench.x_train if split == "train" else bench.x_test
        y = bench.y_train if split == "train" else bench.y_test
        images = np.rint(np.asarray(x) * 255).astype(np.uint8).reshape(-1, CELL, CELL)  # exact: x = uint8 / 255
        out[split] = (images, np.asarray([index[str(v)] for v in y], dtype=np.int64))
    return out


def _deal(source: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` items from ``source``: a shuffle of it, then another, ... (each item used about equally)."""
    if len(source) == 0:
        raise DataError("FashionPairs has no source items to draw from.")
    rounds = -(-total // len(source))
    return np.concatenate([rng.permutation(source) for _ in range(rounds)])[:total]


def _compose(
    images: np.ndarray, classes: np.ndarray, source: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``n`` canvases from the items ``source`` (indices into ``images``); labels and what was placed where."""
    n_items = rng.integers(MIN_ITEMS, MAX_ITEMS + 1, size=n)
    order = rng.permuted(np.tile(np.arange(N_CELLS), (n, 1)), axis=1)  # a random cell order per image
    occupied = np.zeros((n, N_CELLS), dtype=bool)
    np.put_along_axis(occupied, order, np.arange(N_CELLS)[None, :] < n_items[:, None], axis=1)
    items = np.full((n, N_CELLS), -1, dtype=np.int64)
    items[occupied] = _deal(np.asarray(source, dtype=np.int64), int(n_items.sum()), rng)
    item_classes = np.where(items >= 0, classes[np.maximum(items, 0)], -1)
    x = np.zeros((n, 1, SIDE, SIDE), dtype=np.float32)
    for cell in range(N_CELLS):
        r, c = divmod(cell, 2)
        rows = np.flatnonzero(items[:, cell] >= 0)
        x[rows, 0, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = images[items[rows, cell]].astype(
            np.float32
        ) / np.float32(255)
    y = (item_classes[:, :, None] == np.arange(len(TASKS))[None, None, :]).any(axis=1).astype(np.uint8)
    return x, y, {"items": items, "classes": item_classes, "n_items": n_items}


@overload
def fashion_pairs(
    n: int, seed: int, split: Split = "train", *, info: Literal[False] = False
) -> tuple[np.ndarray, np.ndarray, list[str]]: ...
@overload
def fashion_pairs(
    n: int, seed: int, split: Split = "train", *, info: Literal[True]
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]: ...
def fashion_pairs(n: int, seed: int, split: Split = "train", *, info: bool = False):
    """``n`` FashionPairs images from the Fashion-MNIST ``split``: ``(x, y, task_names)``.

    ``x`` float32 ``(n, 1, 56, 56)`` in [0, 1]; ``y`` uint8 ``(n, 10)``, ``y[i, c] = 1`` iff image i holds an
    item of class ``task_names[c]``. The same ``(n, seed, split)`` always gives the same images, and a larger
    ``n`` does not extend a smaller one (draws are vectorised). With ``info=True`` a fourth element says what
    was placed: ``items`` (n, 4) Fashion-MNIST indices into the split per cell (-1 = empty), ``classes`` (n, 4)
    their class indices (-1 = empty), ``n_items`` (n,), ``split``.
    """
    n = _check_int("n", n, 1)
    seed = _check_int("seed", seed, 0)
    if split not in _SPLIT_CODE:
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    images, classes = load_items()[split]
    rng = np.random.default_rng([_STREAM_PAIRS, _SPLIT_CODE[split], seed])
    x, y, placed = _compose(images, classes, np.arange(len(images)), n, rng)
    if info:
        return x, y, list(TASKS), {**placed, "split": split}
    return x, y, list(TASKS)


# -------------------------------------------------------------------------------------------------------- roles


@dataclass
class Part:
    """One role's images: ``x``, ``y`` as from :func:`fashion_pairs`; ``items``/``classes`` per cell (-1 =
    empty); ``split`` the Fashion-MNIST split the items come from; ``sources`` the sorted item indices this
    part was allowed to draw from (disjoint between a teacher's part and the pool's)."""

    x: np.ndarray
    y: np.ndarray
    items: np.ndarray
    classes: np.ndarray
    split: str
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Roles:
    """Disjoint parts of FashionPairs: ``teachers`` (one :class:`Part` per teacher, each from its own
    Fashion-MNIST training items), ``pool`` (the student's unlabeled data, from training items no teacher saw)
    and ``test`` (from the Fashion-MNIST test split); ``tasks`` the task names (columns of every ``y``)."""

    teachers: list[Part]
    pool: Part
    test: Part
    tasks: list[str]

    @property
    def teacher(self) -> Part:
        """All teachers' images as one part (the only teacher's when there is one)."""
        if len(self.teachers) == 1:
            return self.teachers[0]
        ps = self.teachers
        return Part(
            *(np.concatenate([getattr(p, f) for p in ps]) for f in ("x", "y", "items", "classes")),
            split="train",
            sources=np.sort(np.concatenate([p.sources for p in ps])),
        )


def _partition(classes: np.ndarray, weights: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint groups of item indices, sized in proportion to ``weights``, each class split in the same
    proportions (so every group keeps Fashion-MNIST's balanced classes). Groups come sorted."""
    cuts = np.cumsum(weights)[:-1] / float(sum(weights))
    groups: list[list[np.ndarray]] = [[] for _ in weights]
    for c in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == c))
        bounds = np.rint(cuts * len(members)).astype(np.int64)
        for g, part in enumerate(np.split(members, bounds)):
            groups[g].append(part)
    return [np.sort(np.concatenate(g)) for g in groups]


def roles(seed: int, n_teacher: int, n_pool: int, n_test: int, *, n_teachers: int = 1) -> Roles:
    """Teacher, student-pool and test parts of FashionPairs, with no Fashion-MNIST item shared across roles.

    The Fashion-MNIST training items are dealt, class by class, into ``n_teachers + 1`` disjoint groups in
    proportion to the images each role gets (``n_teacher`` per teacher, ``n_pool``); teacher t's ``n_teacher``
    images use only group t's items and the pool's ``n_pool`` images only the last group's, so no teacher has
    seen any object of the student's unlabeled data. With ``n_teachers > 1`` the teachers are also "trained
    using different data" (thesis Sec. 5.6, Table 12). The ``n_test`` test images use Fashion-MNIST's test
    split. One seed gives one set of parts; each part has its own random stream.
    """
    seed = _check_int("seed", seed, 0)
    n_teacher = _check_int("n_teacher", n_teacher, 1)
    n_pool = _check_int("n_pool", n_pool, 1)
    n_test = _check_int("n_test", n_test, 1)
    n_teachers = _check_int("n_teachers", n_teachers, 1)
    items = load_items()
    images, classes = items["train"]
    groups = _partition(classes, [n_teacher] * n_teachers + [n_pool], np.random.default_rng([_STREAM_ROLES, seed]))
    if any(len(g) == 0 for g in groups):
        raise DataError(
            f"Fashion-MNIST's {len(images)} training items cannot give {n_teachers} teacher(s) and the pool "
            "items of their own in these proportions; ask for fewer teachers or more balanced sizes."
        )

    def part(split: str, code: int, source: np.ndarray, n: int) -> Part:
        imgs, cls = items[split]
        x, y, placed = _compose(imgs, cls, source, n, np.random.default_rng([_STREAM_ROLES, seed, code]))
        return Part(x, y, placed["items"], placed["classes"], split, source)

    teachers = [part("train", 2 + t, groups[t], n_teacher) for t in range(n_teachers)]
    pool = part("train", _PART_CODE["pool"], groups[-1], n_pool)
    test = part("test", _PART_CODE["test"], np.arange(len(items["test"][0])), n_test)
    return Roles(teachers, pool, test, list(TASKS))


# ------------------------------------------------------------------------------------------- teacher protocol


def teacher_task_sets(n_tasks: int, n_teachers: int, shared_fraction: float, seed: int) -> list[list[int]]:
    """The teachers' task sets (sorted task indices; names: ``[TASKS[i] for i in s]``) as in thesis Ch. 5.

    What the thesis says (Sec. 5.6 "Evaluation"):

    - Table 10: "we train a student from the two teachers with heterogeneous architectures—DenseNet [45] for
      Teacher 1 and ResNet18 [40] for Teacher 2. Each of them is trained on the same number of tasks with 30%
      of their tasks shared." -> ``n_teachers=2, shared_fraction=0.3``.
    - Table 11: "We conduct the experiments by reducing the proportion of the number of shared tasks between
      the teachers from 75%, 50%, to 25%." -> 0.75, 0.5, 0.25.
    - Table 12: "the two teachers are trained using different data from the 3D dataset and they have shared
      tasks at approximately 50%." -> 0.5 (and disjoint teacher data: :func:`roles` with ``n_teachers=2``).

    It says no more about how tasks are picked, so this is the multi-label protocol of Ch. 4 (Tables 7-9, "an
    equal number of labels with half of their labels overlapping"), :func:`amalgamator.bench.yeast.
    teacher_label_sets`, reused as is: every teacher gets the same number of tasks, the shared tasks are held
    by every teacher, the union covers all ``n_tasks``, the shared and own tasks are a seeded permutation, and
    ``shared_fraction`` is the fraction of *each teacher's* tasks that the others hold ("30% of their tasks").
    Not every fraction is reachable; the nearest one is taken (:func:`label_set_sizes`, :func:`shared_fractions`
    report it). For FashionPairs' 10 tasks and two teachers: 0.75 -> 6 shared of 8 per teacher (0.75 exactly),
    0.5 -> 4 of 7 (0.57), 0.3 and 0.25 -> 2 of 6 (0.33): 30 % and 25 % coincide on ten tasks. (Read as a
    fraction of the union instead, 2 of 6 is 2/10 = 20 %; the thesis's "approximately 50%" on 3D's four tasks
    fits either reading: 2 shared of 3 per teacher is 67 % of a teacher's tasks, 50 % of the union.)
    """
    return teacher_label_sets(n_tasks, n_teachers, shared_fraction, seed)
