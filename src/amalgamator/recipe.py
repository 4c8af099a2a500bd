"""YAML recipes for ``amalgamator run`` and ``amalgamator inspect``.

A recipe names the teachers (saved folders), the data files, the method and the student,
so a whole amalgamation is one reviewable file. The schema is strict (unknown keys are
errors, not silently ignored: a misspelt ``epoch`` would otherwise train with defaults),
and every problem is reported as one :class:`~amalgamator.errors.RecipeError` line that
says where it is and what would be valid. Relative paths are taken against the recipe's
own folder, so a recipe and its files can move together.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import AmalgamatorError, RecipeError, first_line, suggest
from .io import file_problem, load_table, require_labels, resolve_path

_STRICT = ConfigDict(extra="forbid")


def _scalar_str(v: Any) -> Any:
    """YAML reads ``name: 1`` or ``features: 3`` as numbers; module paths and names are strings."""
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _str_list(v: Any) -> Any:
    """One name or a list of names (YAML may read them as numbers) → a list of strings."""
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return [str(v)]
    return [_scalar_str(x) for x in v] if isinstance(v, list) else v


def _no_nul(v: Any) -> Any:
    """A path with a NUL character names no file (and would crash the OS calls): refused up front."""
    if isinstance(v, str) and "\x00" in v:
        raise ValueError("a path cannot contain a NUL character")
    return v


class _PathSpec(BaseModel):
    """A spec that may also be written as a bare path."""

    model_config = _STRICT

    path: str

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, v: Any) -> Any:
        return {"path": str(v)} if isinstance(v, (str, Path)) else v

    @field_validator("path", mode="after")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return _no_nul(v)


class DataSpec(_PathSpec):
    """A data file: a bare path, or a path with the columns to read."""

    text_column: str | None = None
    feature_columns: list[str] | None = None
    label_column: str | None = None
    label_columns: list[str] | None = None  # multi-label: 0/1 columns, one per label

    @field_validator("feature_columns", "label_columns", mode="before")
    @classmethod
    def _columns(cls, v: Any) -> Any:
        return _str_list(v)


class TeacherSpec(_PathSpec):
    """A saved teacher folder (amalgamator student or Hugging Face checkpoint), or with ``kind: embedding``
    a word-vector file (word2vec ``.txt``/``.vec``/``.bin``); or ``sklearn: model.skops`` or
    ``onnx: model.onnx`` (with ``labels:`` when the ONNX graph records none) instead of ``path:``."""

    path: str | None = None  # type: ignore[assignment]
    name: str | None = None
    features: list[str] | None = None
    kind: Literal["multiclass", "multilabel", "chain", "multitask", "embedding"] | None = (
        None  # checked against the folder's own
    )
    sklearn: str | None = None
    onnx: str | None = None
    labels: list[str] | None = None
    statistics: str | None = None  # feature statistics file (am.fit_statistics(...).save(path))

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        return _scalar_str(v)

    @field_validator("features", "labels", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        return _str_list(v)

    @field_validator("sklearn", "onnx", "statistics", mode="after")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        return _no_nul(v)

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        given = [k for k in ("path", "sklearn", "onnx") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, sklearn or onnx per teacher (got {given or 'none'})")
        if self.labels is not None and self.onnx is None:
            raise ValueError("labels apply to onnx teachers only (other teachers carry their own label names)")
        return self


class TrainSpec(BaseModel):
    """Training options; the same defaults as :func:`amalgamator.amalgamate`."""

    model_config = _STRICT

    # Upper bounds only refuse the absurd (a mistyped exponent), never a plausible run.
    epochs: int | None = Field(10, ge=1, le=1_000_000)  # None when steps is given
    steps: int | None = Field(None, ge=1, le=10**12)  # optimiser steps instead of epochs
    batch_size: int = Field(128, ge=1, le=2**31 - 1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's seed range
    keep_checkpoints: int = Field(3, ge=1, le=1_000_000)
    threads: int | None = Field(None, ge=1, le=65_536)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # fp16 needs a GPU

    @model_validator(mode="before")
    @classmethod
    def _one_budget(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("steps") is not None:
            if v.get("epochs") is not None:
                raise ValueError("give epochs or steps, not both")
            v = {**v, "epochs": None}
        return v


class Recipe(BaseModel):
    """A whole amalgamation: teachers, data, method, student and training options."""

    model_config = _STRICT

    teachers: list[TeacherSpec] = Field(min_length=1)
    data: DataSpec | None = None
    labeled: DataSpec | None = None
    test: DataSpec | None = None
    method: str = "auto"
    method_options: dict[str, Any] = Field(default_factory=dict)
    student: str = "mlp"
    student_options: dict[str, Any] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    out: str | None = None

    @field_validator("out", mode="after")
    @classmethod
    def _out(cls, v: Any) -> Any:
        return _no_nul(v)

    _source: Path | None = PrivateAttr(default=None)
    _shown: str = PrivateAttr(default="recipe")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, v: Any) -> Any:
        """``train:`` or ``method_options:`` left empty in YAML reads as null: take the defaults."""
        if isinstance(v, dict):
            v = {
                k: val
                for k, val in v.items()
                if not (val is None and k in ("train", "method_options", "student_options"))
            }
        return v

    # Paths ---------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """The folder relative paths are taken against: the recipe file's, else the working directory."""
        return self._source.parent if self._source is not None else Path.cwd()

    @property
    def where(self) -> str:
        """The recipe file as the user named it, to start error messages."""
        return self._shown

    def resolve(self, path: str) -> Path:
        return resolve_path(path, self.base_dir)

    def out_dir(self, out: str | Path | None = None) -> Path:
        """``out`` if given, else the recipe's ``out:``, else ``out/`` beside the recipe."""
        if out is not None:
            return Path(out).expanduser().resolve()
        return self.resolve(self.out or "out")

    # Checks ----------------------------------------------------------------------------
    def check(self) -> Recipe:
        """Checks that need the registries (method, options, student preset), as RecipeErrors."""
        from .methods import get_method
        from .models import PRESETS, check_student_options

        embedding = [t.kind == "embedding" for t in self.teachers]
        if any(embedding) and not all(embedding):
            raise RecipeError(f"{self.where}: teachers: word-embedding teachers (kind: embedding) amalgamate only "
                              "with each other; give every teacher kind: embedding, or none.")  # fmt: skip
        if any(embedding) and (self.labeled is not None or self.test is not None):
            raise RecipeError(f"{self.where}: an embedding recipe takes no labeled: or test: file; evaluate the "
                              "result with `amalgamator evaluate OUT/student` (word similarity).")  # fmt: skip
        if self.data is None and self.labeled is None and not any(embedding):
            raise RecipeError(f"{self.where}: give data: (unlabeled examples) and/or labeled: (with labels).")
        try:
            cls = get_method(self.method)
        except AmalgamatorError as exc:
            raise RecipeError(f"{self.where}: method: {exc}") from None
        try:
            cls(**self.method_options)
        except (TypeError, ValueError) as exc:  # AmalgamatorError is a ValueError
            raise RecipeError(f"{self.where}: method_options: {first_line(exc).split(': ', 1)[-1]}") from None
        if cls.uses_labels == "required" and self.labeled is None:
            raise RecipeError(
                f"{self.where}: method {self.method!r} trains on labels: add labeled: (a file with labels)."
            )
        if self.student not in PRESETS:
            raise RecipeError(
                f"{self.where}: student: unknown preset {self.student!r}.{suggest(self.student, PRESETS)} "
                f"Presets: {', '.join(sorted(PRESETS))}."
            )
        try:
            check_student_options(self.student, self.student_options)
        except AmalgamatorError as exc:
            raise RecipeError(f"{self.where}: student_options: {exc}") from None
        return self

    # Building ----------------------------------------------------------------------------
    def build_teachers(self) -> list:
        """Load every teacher folder; a name defaults to the folder's name."""
        from .teachers import Teacher

        def build(t: TeacherSpec) -> Teacher:
            teacher = source(t)
            if t.statistics is not None:
                teacher.attach_statistics(self.resolve(t.statistics))
            return teacher

        def source(t: TeacherSpec) -> Teacher:
            if t.sklearn is not None:
                return Teacher.from_sklearn(self.resolve(t.sklearn), name=t.name or Path(t.sklearn).stem)
            if t.onnx is not None:
                return Teacher.from_onnx(self.resolve(t.onnx), labels=t.labels, name=t.name or Path(t.onnx).stem)
            if t.kind == "embedding":
                return Teacher.from_embeddings(self.resolve(str(t.path)), name=t.name)
            return Teacher.from_pretrained(self.resolve(str(t.path)), name=t.name, features=t.features, kind=t.kind)

        return [build(t) for t in self.teachers]

    def vocabulary(self) -> list[str] | None:
        """An embedding recipe's ``data:``: a text file of words, one per line (None: the sources' union)."""
        if self.data is None:
            return None
        path = self.resolve(self.data.path)
        problem = file_problem(path)
        if problem:
            raise RecipeError(f"{self.where}: data: cannot read the word list {str(path)!r}: {problem}.")
        try:
            return [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{self.where}: data: {path} cannot be read as a word list ({exc}).") from None

    def load(self, role: str, need_labels: bool = False) -> tuple[Any, np.ndarray | None] | None:
        """Read the ``data`` / ``labeled`` / ``test`` file, or None when the recipe has none."""
        spec: DataSpec | None = getattr(self, role)
        if spec is None:
            return None
        x, y = load_table(spec.model_dump(), self.base_dir)
        if need_labels:
            y = require_labels(y, spec.model_dump(), role, self.base_dir)
        return x, y


# Loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last) and keys that are not
    plain values (a list or mapping as a key)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _models_in(field.annotation) if field is not None else []
        if not inner:
            return None
        model = inner[0]
    return model


def _owner_of(key: str) -> str | None:
    """Where a key misplaced at the wrong level belongs, e.g. ``epochs`` → ``train``."""
    for name, field in Recipe.model_fields.items():
        for sub in _models_in(field.annotation):
            if key in sub.model_fields:
                return f"{name}[...]" if typing.get_origin(field.annotation) is list else name
    return None


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _shown(value: Any) -> str:
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 4, 4, 60, 60
    text = short.repr(value)  # bounded: a value may be huge (YAML aliases) or recursive
    return (text[:60] + "…") if len(text) > 60 else text


def explain(exc: ValidationError, where: str = "recipe") -> str:
    """One line for the first problem pydantic found (the rest are counted, not listed)."""
    errors = exc.errors()
    err = errors[0]
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    more = (
        f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after this one)" if len(errors) > 1 else ""
    )
    if kind == "extra_forbidden":
        key, parent = str(loc[-1]), loc[:-1]
        model = _model_at(parent)
        valid = list(model.model_fields) if model is not None else []
        at = f"in {_loc(parent)}" if parent else "at the top level"
        hint = suggest(key, valid)
        if not hint and (owner := _owner_of(key)) and parent != (owner,):
            hint = f" It belongs under {owner}: ({owner}.{key})."
        return f"{where}: unknown key {key!r} {at}.{hint} Valid keys: {', '.join(valid)}.{more}"
    if kind == "missing":
        parent = loc[:-1]
        at = _loc(parent) if parent else "the top level"
        return f"{where}: {at} is missing the required key {str(loc[-1])!r}.{more}"
    field = _loc(loc) or "recipe"
    model = _model_at(loc)
    if kind in ("model_type", "model_attributes_type"):
        keys = ", ".join(model.model_fields) if model is not None else ""
        shape = "a path or a mapping" if model is not None and "path" in model.model_fields else "a mapping"
        return f"{where}: {field} must be {shape} (keys: {keys}), got {_shown(value)}.{more}"
    if kind == "too_short" and loc == ("teachers",):
        return f"{where}: teachers is empty; list at least one teacher folder.{more}"
    if kind in _EXPECTED:
        return f"{where}: {field} must be {_EXPECTED[kind]}, got {_shown(value)} ({type(value).__name__}).{more}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {field}: {msg[:1].lower()}{msg[1:]}, got {_shown(value)}.{more}"


def parse_recipe(data: Any, source: str | Path | None = None) -> Recipe:
    """Validate an already-parsed mapping; ``source`` (the file) anchors relative paths."""
    where = str(source) if source is not None else "recipe"
    if data is None:
        raise RecipeError(f"{where} is empty; a recipe needs at least teachers: and data:.")
    if not isinstance(data, dict):
        raise RecipeError(
            f"{where} must be a mapping of keys (teachers:, data:, method:, ...), not a {type(data).__name__}."
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(explain(exc, where)) from None
    recipe._source = Path(source).resolve() if source is not None else None
    recipe._shown = where
    return recipe.check()


#: A recipe is a few dozen lines; these bound what a hostile or broken file can make the parser do.
MAX_RECIPE_BYTES = 16 * 2**20
MAX_RECIPE_NODES = 100_000


def _too_big(data: Any, budget: int = MAX_RECIPE_NODES) -> bool:
    """Whether ``data`` has more than ``budget`` values, counting a value each time it is reached: YAML aliases
    can make a small file expand exponentially (a "billion laughs"), or refer to themselves."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return False


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; every problem is a one-line RecipeError."""
    problem = file_problem(path)
    if problem:
        raise RecipeError(f"cannot read the recipe {str(path)!r}: {problem}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise RecipeError(f"recipe file {path.resolve()} does not exist.")
    if path.is_dir():
        raise RecipeError(f"{path.resolve()} is a folder; give the recipe's .yaml file.")
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{path} is {path.stat().st_size / 2**20:.0f} MB; a recipe is a short YAML file (data belongs in "
                "the files it names)."
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise RecipeError(f"{path}: YAML error: the recipe is nested too deeply to be a recipe.") from None
    except (ValueError, OverflowError) as exc:  # an integer of thousands of digits, a date in year 0, ...
        raise RecipeError(f"{path}: YAML error: a value cannot be read ({first_line(exc)}).") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        started = f" ({context} started at line {cmark.line + 1})" if context and cmark is not None else ""
        kind = "YAML error" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise RecipeError(f"{path}: {kind}{at}: {problem}{started}.") from None
    if _too_big(data):
        raise RecipeError(
            f"{path}: the recipe expands to more than {MAX_RECIPE_NODES:,} values (YAML aliases repeating "
            "themselves?); write the recipe out plainly."
        )
    return parse_recipe(data, path)


def run(
    recipe: Recipe,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    mixed_precision: str | None = None,
):
    """Train as the recipe says and evaluate on its ``test`` file: returns ``(result, metrics or None)``.
    ``epochs`` or ``steps`` override the recipe's training budget.

    All files are read, the teachers loaded and every part (pool, labeled, test) checked against the
    teachers before training, so a bad test file fails in seconds rather than after the last epoch.
    """
    from .api import amalgamate, check_inputs
    from .data import Inputs

    teachers = recipe.build_teachers()
    if all(t.kind == "embedding" for t in teachers):
        result = amalgamate(teachers=teachers, data=recipe.vocabulary(), method=recipe.method,
                            epochs=epochs if epochs is not None or steps is not None else recipe.train.epochs,
                            steps=steps if epochs is not None or steps is not None else recipe.train.steps,
                            batch_size=recipe.train.batch_size, seed=recipe.train.seed, out=recipe.out_dir(out),
                            lr=recipe.train.lr, weight_decay=recipe.train.weight_decay,
                            method_options=recipe.method_options, resume=resume, overwrite=overwrite,
                            keep_checkpoints=recipe.train.keep_checkpoints,
                            threads=threads if threads is not None else recipe.train.threads,
                            progress=progress,
                            mixed_precision=mixed_precision or recipe.train.mixed_precision)  # fmt: skip
        return result, None
    data = recipe.load("data")
    labeled = recipe.load("labeled", need_labels=True)
    test = recipe.load("test", need_labels=True)
    parts = [Inputs(d[0], what=f"{role} file {recipe.resolve(getattr(recipe, role).path)}")
             for role, d in (("data", data), ("labeled", labeled), ("test", test)) if d is not None]  # fmt: skip
    check_inputs(teachers, parts)
    out_path = recipe.out_dir(out)
    result = amalgamate(
        teachers=teachers,
        data=data[0] if data is not None else None,
        method=recipe.method,
        student=recipe.student,
        labeled=labeled,
        epochs=epochs if epochs is not None or steps is not None else recipe.train.epochs,
        steps=steps if epochs is not None or steps is not None else recipe.train.steps,
        batch_size=recipe.train.batch_size,
        seed=recipe.train.seed,
        out=out_path,
        lr=recipe.train.lr,
        weight_decay=recipe.train.weight_decay,
        method_options=recipe.method_options,
        student_options=recipe.student_options,
        resume=resume,
        overwrite=overwrite,
        keep_checkpoints=recipe.train.keep_checkpoints,
        threads=threads if threads is not None else recipe.train.threads,
        progress=progress,
        mixed_precision=mixed_precision or recipe.train.mixed_precision,
    )
    from .engine import process_state

    if not process_state().is_main_process:  # the first process evaluates and writes for the run
        return result, None
    metrics = None
    if test is not None:
        from .report import test_report

        metrics, section = test_report(result.student, test[0], test[1], out_path)
        (out_path / "metrics.json").write_text(json.dumps({"test": metrics}, indent=2))
    report = out_path / "report.md"
    if result.history is not None and report.exists():
        files = {role: str(recipe.resolve(getattr(recipe, role).path))
                 for role in ("data", "labeled", "test") if getattr(recipe, role) is not None}  # fmt: skip
        lines = [f"\n## Recipe\n\nRecipe `{recipe.where}`.\n", "| part | file |", "| --- | --- |"]
        lines += [f"| {role} | `{path}` |" for role, path in files.items()]
        text = report.read_text().rstrip() + "\n" + "\n".join(lines) + "\n"
        if test is not None:
            text += "\n" + section
        report.write_text(text)
        (out_path / "student" / "report.md").write_text(text)
    return result, metrics


__all__ = ["DataSpec", "Recipe", "TeacherSpec", "TrainSpec", "explain", "load_recipe", "parse_recipe", "run"]
