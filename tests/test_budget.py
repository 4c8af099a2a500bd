"""The training budget: too few optimiser steps warn with the fix, and steps= replaces epochs=."""

from __future__ import annotations

import numpy as np
import pytest

import amalgamator as am
from amalgamator.errors import DataError, RecipeError
from amalgamator.recipe import parse_recipe


def test_few_steps_warn_with_the_epochs_that_fix_it(digits, teachers):
    x, _, _, p, _ = digits
    pool = x[p[:176]]  # 2 batches of 128: 20 epochs make 40 steps
    with pytest.warns(UserWarning, match=r"only 40 optimiser steps \(20 epochs × 2 batches.*epochs=150 or steps=300"):
        am.amalgamate(teachers, data=pool, method="kd", epochs=20, progress=False)


def test_steps_count_the_epochs(digits, teachers, recwarn):
    x, _, _, p, _ = digits
    res = am.amalgamate(teachers, data=x[p[:176]], method="kd", steps=300, progress=False)
    assert len(res.history.loss) == 150 and res.student.info["train"]["epochs"] == 150
    assert not [w for w in recwarn if "optimiser steps" in str(w.message)]
    clf = am.train_classifier(x[p[:100]], np.asarray(["a", "b"] * 50), steps=10, batch_size=50)
    assert clf.info["train"]["epochs"] == 5


def test_epochs_and_steps_together_are_refused(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    with pytest.raises(DataError, match="epochs= or steps=, not both"):
        am.amalgamate(teachers, data=x[p], epochs=3, steps=100)
    with pytest.raises(DataError, match="steps must be a whole number"):
        am.amalgamate(teachers, data=x[p], steps=0)
    with pytest.raises(RecipeError, match="epochs or steps, not both"):
        parse_recipe({"teachers": ["t"], "data": "d.npz", "train": {"epochs": 3, "steps": 100}}, tmp_path / "r.yaml")
    assert parse_recipe({"teachers": ["t"], "data": "d.npz", "train": {"steps": 100}}).train.steps == 100
