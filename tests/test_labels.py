"""LabelSpace: union order, index maps, overlaps — property-based."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amalgamator import LabelSpace
from amalgamator.errors import LabelError
from amalgamator.labels import overlaps, owner_mask

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
spaces = st.lists(st.lists(names, min_size=1, max_size=8, unique=True), min_size=1, max_size=5)


@given(spaces)
def test_union_is_first_appearance_order(lists):
    union = LabelSpace.union([LabelSpace(s) for s in lists])
    expected = list(dict.fromkeys(n for s in lists for n in s))
    assert union.names == expected


@given(spaces)
def test_positions_map_each_teacher_label_to_the_same_name(lists):
    sp = [LabelSpace(s) for s in lists]
    union = LabelSpace.union(sp)
    for s in sp:
        pos = union.positions(s)
        assert [union[i] for i in pos] == s.names
        assert len(set(pos.tolist())) == len(s)


@given(spaces)
def test_owner_mask_and_overlaps_agree(lists):
    sp = [LabelSpace(s) for s in lists]
    union = LabelSpace.union(sp)
    mask = owner_mask(union, sp)
    assert mask.any(0).all()  # every union label has an owner
    shared = overlaps(sp)
    for j, name in enumerate(union):
        owners = np.flatnonzero(mask[:, j]).tolist()
        assert (name in shared) == (len(owners) > 1)
        if name in shared:
            assert shared[name] == owners


@given(st.lists(names, min_size=1, max_size=10, unique=True), st.data())
def test_encode_decode_round_trip(labels, data):
    space = LabelSpace(labels)
    picked = data.draw(st.lists(st.sampled_from(labels), max_size=20))
    assert space.decode(space.encode(picked)).tolist() == picked


def test_empty_and_duplicate_labels_are_refused():
    with pytest.raises(LabelError, match="empty"):
        LabelSpace([])
    with pytest.raises(LabelError, match="'cat' twice"):
        LabelSpace(["cat", "dog", "cat"])


def test_unknown_name_lists_valid_labels():
    with pytest.raises(LabelError, match=r"'fish'.*valid labels are \['cat', 'dog'\]"):
        LabelSpace(["cat", "dog"]).encode(["dog", "fish"])
