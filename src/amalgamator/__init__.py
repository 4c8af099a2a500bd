"""amalgamator: merge pre-trained teachers with different label sets into one student.

import amalgamator as am
result = am.amalgamate(teachers=[t1, t2], data=x_unlabeled, method="uhc", student="mlp")
result.student.predict(x)
"""

__version__ = "0.1.0"

from .api import Result, amalgamate, train_classifier  # noqa: E402
from .data import pad_sequences  # noqa: E402
from .diagnose import Diagnosis, diagnose  # noqa: E402
from .errors import AmalgamatorError  # noqa: E402
from .labels import LabelSpace  # noqa: E402
from .metrics import evaluate  # noqa: E402
from .statistics import FeatureStatistics, fit_statistics  # noqa: E402
from .student import Student, load_student  # noqa: E402
from .teachers import Teacher  # noqa: E402

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
