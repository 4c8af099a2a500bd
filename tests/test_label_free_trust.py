"""Label-free amalgamation users can trust (issue 10): one-label teachers, EM prior, gate, temperatures."""

from __future__ import annotations

import pytest
import torch.nn as nn

import amalgamator as am
from amalgamator.errors import MethodError

from .conftest import fit_mlp


@pytest.mark.parametrize("method", ["muki-hard", "muki-soft", "calibrated"])
def test_a_one_label_teacher_is_refused_where_confidence_routes(digits, method):
    """Its softmax is 1 everywhere: MUKI's uncertainty 0 and calibrated's excess confidence 1 on every row,
    so it would win every example. The refusal names the teacher and the way out."""
    x, y, t, p, _ = digits
    lone = am.Teacher(nn.Linear(64, 1), labels=["0"], name="lone")
    other = am.Teacher(fit_mlp(x[t], y[t], ["1", "2", "3"], 16, 0), labels=["1", "2", "3"], name="other")
    with pytest.raises(MethodError, match="teacher 'lone': it has a single label") as err:
        am.amalgamate([lone, other], data=x[p], method=method, epochs=1)
    assert "\n" not in str(err.value) and "kd" in str(err.value)
    am.amalgamate([lone, other], data=x[p], method="kd", epochs=1, progress=False)  # KD reads its raw logit
