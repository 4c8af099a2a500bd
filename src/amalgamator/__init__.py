"""amalgamator: merge pre-trained teachers with different label sets into one student.

import amalgamator as am
result = am.amalgamate(teachers=[t1, t2], data=x_unlabeled, method="uhc", student="mlp")
result.student.predict(x)
"""

import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

# The public names load on first use (PEP 562): `import amalgamator` and `amalgamator --help` import
# neither torch nor scikit-learn. `from amalgamator import X` and `am.X` work as if imported here.
_EXPORTS: dict[str, str] = {
    "AmalgamatorError": "errors",
    "Diagnosis": "diagnose",
    "FeatureStatistics": "statistics",
    "LabelSpace": "labels",
    "Result": "api",
    "Student": "student",
    "Teacher": "teachers",
    "amalgamate": "api",
    "diagnose": "diagnose",
    "evaluate": "metrics",
    "fit_statistics": "statistics",
    "load_student": "student",
    "pad_sequences": "data",
    "train_classifier": "api",
}

#: Submodules reachable as ``am.<name>`` without importing them first (the eager package loaded them all).
_SUBMODULES = frozenset(
    ("api", "data", "engine", "errors", "io", "kinds", "labels", "methods", "metrics", "models", "progress")
    + ("report", "statistics", "store", "student", "teachers")
)

__all__ = [
    "AmalgamatorError",
    "Diagnosis",
    "FeatureStatistics",
    "LabelSpace",
    "Result",
    "Student",
    "Teacher",
    "__version__",
    "amalgamate",
    "diagnose",
    "evaluate",
    "fit_statistics",
    "load_student",
    "pad_sequences",
    "train_classifier",
]

if _TYPE_CHECKING:
    from .api import Result, amalgamate, train_classifier
    from .data import pad_sequences
    from .diagnose import Diagnosis, diagnose
    from .errors import AmalgamatorError
    from .labels import LabelSpace
    from .metrics import evaluate
    from .statistics import FeatureStatistics, fit_statistics
    from .student import Student, load_student
    from .teachers import Teacher


def __getattr__(name: str) -> _Any:
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


class _Package(_types.ModuleType):
    """The package module: importing the submodule ``amalgamator.diagnose`` binds ``am.diagnose`` to its function
    ``diagnose`` (the public name), not to the submodule, as the eager package did."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if isinstance(value, _types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _EXPORTS:
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
