"""Errors a user can act on: each names the problem and the fix in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AmalgamatorError(ValueError):
    """Base class for every error raised on bad input.

    Subclasses ValueError so that callers catching the conventional type keep working.
    """


class LabelError(AmalgamatorError):
    """A label list is empty, duplicated, or names a label outside the union."""


class TeacherError(AmalgamatorError):
    """A teacher's outputs do not match what it declares, or it rejects the data."""


class DataError(AmalgamatorError):
    """Input data has the wrong type, shape or content."""


class MethodError(AmalgamatorError):
    """Unknown method name, or a method asked for something it cannot do."""


class RecipeError(AmalgamatorError):
    """A recipe file is malformed."""


class StoreError(AmalgamatorError):
    """A teacher-output store entry cannot be read or written."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
