"""Start-up stays light (issue 17): `import amalgamator` and `amalgamator --help` / `--version` import none of the
heavy libraries, which load inside the functions that use them. Behaviour checks in fresh interpreters, no timings
(`amalgamator bench speed` measures those: amalgamator.bench.startup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import amalgamator as am

from .conftest import run_cli

HEAVY = ("sklearn", "scipy", "matplotlib", "transformers", "pandas", "accelerate")
COMMANDS = ("demo", "run", "evaluate", "inspect", "methods", "bench")

#: Prints, as JSON on the last line of stdout, which of the given top-level modules are loaded.
_REPORT = "import json, sys; print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))"


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has imported after running ``code``."""
    script = f"{code}\n{_REPORT.format(names=names)}"
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(*args: str) -> str:
    """Code running the console-script entry point with ``args``, its output swallowed, its exit code checked."""
    return (
        "import contextlib, io\nfrom amalgamator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try:\n        main({list(args)!r})\n    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code"
    )


def test_import_loads_no_heavy_library():
    assert _loaded_after("import amalgamator", HEAVY) == []


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_do_not_import_torch(args):
    assert _loaded_after(_cli(*args), ("torch", *HEAVY)) == []


def test_public_names_load_on_use_without_sklearn_scipy_pandas_matplotlib_transformers():
    code = (
        "import amalgamator as am\nfrom amalgamator import *  # noqa: F403\n"
        "missing = [n for n in am.__all__ if n not in globals()]\nassert not missing, missing"
    )
    assert _loaded_after(code, ("sklearn", "scipy", "matplotlib", "transformers", "pandas")) == []


def test_lazy_names_are_the_real_objects():
    from amalgamator.api import amalgamate
    from amalgamator.teachers import Teacher

    assert am.amalgamate is amalgamate and am.Teacher is Teacher
    assert am.models.__name__ == "amalgamator.models"  # submodules the eager package loaded stay reachable
    assert set(am.__all__) <= set(dir(am))
    with pytest.raises(AttributeError):
        am.no_such_name  # noqa: B018


def test_diagnose_is_the_function_whichever_is_imported_first():
    """``amalgamator.diagnose`` is a submodule and a public function; ``am.diagnose`` is the function."""
    code = (
        "import sys\nfrom amalgamator.diagnose import Diagnosis\nimport amalgamator as am\n"
        "assert am.diagnose is sys.modules['amalgamator.diagnose'].diagnose, am.diagnose"
    )
    assert _loaded_after(code, ()) == []
    assert am.diagnose is sys.modules["amalgamator.diagnose"].diagnose


def test_version_prints_the_package_version(capsys):
    assert run_cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"amalgamator {am.__version__}"


def test_help_lists_every_command():
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "amalgamator", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and "--version" in out.stdout
    listed = {line.split()[1] for line in out.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 1}
    assert set(COMMANDS) <= listed
