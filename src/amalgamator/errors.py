"""Errors a user can act on: each names the problem and the fix in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


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


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters: a library's complaint inside one of ours."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


def shown_path(path: object, limit: int = 160) -> str:
    """``repr`` of a path for a message; one the system refused as too long is cut in the middle, so the
    message stays one readable line."""
    text = str(path)
    if len(text) > limit:
        text = f"{text[: limit // 2]}...{text[-limit // 2 :]}"
    return repr(text)


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def check_options(
    owner: str,
    options: Mapping[str, Any],
    rules: Mapping[str, Any],
    error: type[AmalgamatorError] = AmalgamatorError,
) -> dict[str, Any]:
    """Options checked by name and by value, before anything trains.

    ``rules`` maps each option name to a type pydantic can validate (``Annotated[float,
    Field(gt=0)]``, ``Literal["a", "b"]``, ...). An unknown name suggests the closest valid one; a
    value of the wrong type or out of range names the option, the rule and the value. Returns the
    options with values as validated (``"2"`` from a command line becomes ``2.0``).
    """
    from pydantic import ValidationError

    if not isinstance(options, Mapping):
        raise error(f"{owner} options must be a mapping of names to values, not {type(options).__name__}.")
    unknown = sorted(set(options) - set(rules))
    if unknown:
        raise error(
            f"{owner} has no option {unknown[0]!r}.{suggest(str(unknown[0]), rules)} "
            f"Its options: {', '.join(sorted(rules)) or 'none'}."
        )
    checked: dict[str, Any] = {}
    for key, value in options.items():
        try:
            checked[key] = _adapter(rules[key]).validate_python(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            raise error(f"{owner} option {key!r} must be {msg}; got {value!r}.") from None
    return checked


_ADAPTERS: dict[Any, Any] = {}


def _adapter(rule: Any) -> Any:
    from pydantic import TypeAdapter

    key = repr(rule)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(rule)
    return _ADAPTERS[key]
