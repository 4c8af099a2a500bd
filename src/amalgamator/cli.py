"""The ``amalgamator`` command line: demo, run, evaluate, inspect, methods, bench.

Tables go to stdout, progress and errors to stderr. Any error a user can act on
(:class:`~amalgamator.errors.AmalgamatorError`) is one red ``error: ...`` line and exit
code 2, never a traceback; Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import AmalgamatorError

#: Typer vendors click in recent versions; find its ClickException whichever click it uses.
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="amalgamator",
    help="Merge pre-trained teachers with different label sets into one student, from unlabeled data.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _out() -> Console:
    """Tables and results on stdout; made per call so it follows sys.stdout (captured in tests).

    Markup is off: label names and paths such as ``[CLS]`` must print as they are.
    """
    return Console(highlight=False, markup=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "—" if v is None else str(v)


def _names(labels: Sequence[str], limit: int = 12) -> str:
    labels = list(labels)
    shown = ", ".join(labels[:limit])
    return shown + (f", … (+{len(labels) - limit})" if len(labels) > limit else "")


def _interrupted(out: Path | None, command: str) -> typer.Exit:
    """Ctrl-C: say what survives and how to go on; exit 130 like a shell."""
    if out is not None:
        _err().print(
            Text(f"interrupted. Checkpoints under {out} let `amalgamator {command} --resume` continue.", "yellow"),
            soft_wrap=True,
        )
    else:
        _err().print(Text("interrupted.", "yellow"))
    return typer.Exit(130)


def _missing_module(exc: ModuleNotFoundError, module: str, what: str) -> None:
    if exc.name == module:
        raise AmalgamatorError(f"{what} is not available in this installation ({module} is missing).") from None


def _verbosity(verbose: bool, quiet: bool, threads: int | None = None) -> None:
    """``--verbose`` / ``--quiet`` / ``--threads`` for this process: the library reads them from the environment."""
    import os

    if threads is not None:
        os.environ["AMALGAMATOR_THREADS"] = str(threads)
    if verbose and quiet:
        raise AmalgamatorError("--verbose and --quiet contradict each other; give one.")
    if quiet:
        os.environ["AMALGAMATOR_QUIET"] = "1"
    if verbose:
        os.environ["AMALGAMATOR_VERBOSE"] = "1"
        os.environ.pop("AMALGAMATOR_QUIET", None)


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="A line per epoch even on a terminal.")]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or epoch lines: results, warnings and errors.")
]
Threads = Annotated[
    int | None,
    typer.Option(min=1, help="Torch threads (default: $AMALGAMATOR_THREADS, else one per two cores)."),
]


def _print_version(value: bool) -> None:
    """``--version``: the package version, then exit (nothing but typer and rich is imported for it)."""
    if value:
        from . import __version__

        _out().print(f"amalgamator {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# Commands ----------------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="Folder for the demo's teachers, students and report (default: demo-out).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer epochs: a smoke test in seconds.")] = False,
    threads: Threads = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Run the bundled end-to-end example (digits, two teachers, several methods); no setup."""
    _verbosity(verbose, quiet, threads)
    try:
        from .demo import run_demo
    except ModuleNotFoundError as exc:
        _missing_module(exc, "amalgamator.demo", "the demo")
        raise
    try:
        run_demo(**({"out": out} if out is not None else {}), quick=quick)
    except KeyboardInterrupt:
        raise _interrupted(None, "demo") from None


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the recipe's out:, else out/).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace another run's checkpoints in OUT (refused otherwise).")
    ] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the recipe's training epochs.")] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Train for this many optimiser steps instead of epochs.")
    ] = None,
    threads: Threads = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes to run in (DDP through torchrun: each runs the teachers over its share of the "
            "rows, then trains on its share of each batch). One per GPU; on CPU, gloo.",
        ),
    ] = 1,
    mixed_precision: Annotated[
        str | None,
        typer.Option(help="no, bf16 or fp16 (fp16 needs a GPU): the student's forward under autocast."),
    ] = None,
) -> None:
    """Train a student as RECIPE says; writes OUT/student, OUT/report.md and checkpoints."""
    from .recipe import load_recipe
    from .recipe import run as run_recipe

    _verbosity(verbose, quiet, threads)
    if mixed_precision is not None and mixed_precision not in ("no", "bf16", "fp16"):
        raise typer.BadParameter(f"--mixed-precision must be no, bf16 or fp16, not {mixed_precision!r}.")
    rec = load_recipe(recipe)  # a bad recipe fails here, once, before any process starts
    out_dir = rec.out_dir(out)
    if processes > 1 and not _launched():
        forwarded = _run_options(out, resume, overwrite, epochs, steps, threads, verbose, quiet, mixed_precision)
        raise typer.Exit(_launch(processes, ["run", str(recipe), *forwarded]))
    try:
        result, metrics = run_recipe(rec, out=out_dir, resume=resume, overwrite=overwrite, epochs=epochs, steps=steps,
                                     mixed_precision=mixed_precision)  # fmt: skip
    except KeyboardInterrupt:
        again = f"run {recipe}" + (f" --out {out}" if out is not None else "")
        raise _interrupted(out_dir, again) from None
    if not _first_process():
        return
    _out().print(summary_table(result, metrics))
    if result.history is not None:
        _out().print(f"student → {out_dir / 'student'}\nreport  → {out_dir / 'report.md'}", soft_wrap=True)
    else:
        _out().print(f"{result.method} trains nothing: no student was written.", soft_wrap=True)


def _launched() -> bool:
    """Inside a process that torchrun or accelerate launch started (they set WORLD_SIZE)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _first_process() -> bool:
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def _run_options(out, resume, overwrite, epochs, steps, threads, verbose, quiet, mixed_precision) -> list[str]:
    """The command-line options of ``run`` as each launched process must receive them."""
    args = [f"--out={out}"] if out is not None else []
    flags = {"--resume": resume, "--overwrite": overwrite, "--verbose": verbose, "--quiet": quiet}
    args += [flag for flag, on in flags.items() if on]
    values = {"--epochs": epochs, "--steps": steps, "--threads": threads, "--mixed-precision": mixed_precision}
    return args + [f"{name}={value}" for name, value in values.items() if value is not None]


def _launch(processes: int, args: list[str]) -> int:
    """Run ``amalgamator ARGS`` in ``processes`` processes on this machine through torchrun (PyTorch's own
    launcher; ``--standalone`` picks a free port); its exit code. The processes' output is their own; the
    launcher's summary of a failed process is shortened to one line."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "amalgamator", *args]  # fmt: skip
    _out().print(f"launching {processes} processes: torchrun --standalone --nproc_per_node={processes} "
                 f"-m amalgamator {' '.join(args)}", soft_wrap=True, markup=False, highlight=False)  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace") as launched:
        assert launched.stderr is not None
        said: set[str] = set()
        for line in launched.stderr:  # live: each epoch's line as it comes
            if _launcher_noise(line) or (line.startswith("error:") and line in said):  # each process's same error
                continue
            said.add(line)
            sys.stderr.write(line)
            sys.stderr.flush()
    return launched.returncode


def _launcher_noise(line: str) -> bool:
    """torchrun's own lines (its banner, and its traceback and summary when a process fails, which would bury
    the process's one-line error)."""
    text = line.strip()
    return (not text or set(text) <= set("*=-") or text.startswith(("Setting OMP_NUM_THREADS", "Traceback", "File "))
            or line.startswith(("  ", "torch.distributed", "[")) or "elastic" in line or "ChildFailedError" in line
            or text.endswith(" FAILED")
            or text.startswith(("time ", "host ", "rank ", "exitcode", "error_file", "traceback", "Failures:",
                                "Root Cause", "<NO_OTHER_FAILURES>", "raise ", "return ", "sys.exit(")))  # fmt: skip


@app.command()
def evaluate(
    student_dir: Annotated[Path, typer.Argument(help="A student folder (student.json + model.safetensors).")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labeled data: .npz, .csv, .tsv, .parquet or .jsonl; for a meta-embedding, "
            "a word-pair file ('word1 word2 score'; default WordSim353 and SimLex-999).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    text_column: Annotated[str | None, typer.Option(help="Column holding texts (tables).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding label names (default y or label).")] = None,
    label_columns: Annotated[
        str | None, typer.Option(help="Multi-label tables: comma-separated 0/1 columns, one per label.")
    ] = None,
) -> None:
    """Score a saved student on a labeled data file.

    Multiclass: rows whose label the student does not know count as errors in accuracy; a warning
    names them, and accuracy_known scores the other rows. Multilabel and chain students: subset
    accuracy, Hamming loss, F1 micro and macro (an npz ``y`` 0/1 matrix with ``label_names``, table
    columns named by --label-columns, or jsonl lists of label names).
    """
    import warnings

    from .io import load_table, require_labels
    from .metrics import evaluate as am_evaluate
    from .student import load_student

    student = load_student(student_dir)
    if getattr(student, "kind", "") == "embedding":
        _evaluate_embedding(student, student_dir, data, as_json)
        return
    if data is None:
        raise typer.BadParameter("give --data: a labeled data file to score the student on.")
    spec = {"path": data, "text_column": text_column, "label_column": label_column,
            "label_columns": label_columns.split(",") if label_columns else None}  # fmt: skip
    x, y = load_table(spec, Path.cwd())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = am_evaluate(student, x, require_labels(y, spec, "evaluation data", Path.cwd()))
    for w in caught:  # printed whatever the warning filters say: an unscorable row is never silent
        _show_warning(w.message, w.category)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    unknown = bool(metrics.get("unknown_labels"))
    notes = {
        "accuracy": "every row; unknown labels count as errors",
        "unknown_labels": "rows whose label the student does not know",
        "accuracy_known": "only the rows whose label the student knows",
    }
    table = Table(title=f"{student_dir} on {data}")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    if unknown:
        table.add_column("note")
    for k, v in flat_metrics(metrics).items():
        table.add_row(k, _fmt(v), *([notes.get(k, "")] if unknown else []))
    _out().print(table)


def _evaluate_embedding(student: Any, student_dir: Path, data: str | None, as_json: bool) -> None:
    """The similarity table of a meta-embedding: Spearman's ρ (pairs with an unknown word score 0) and
    over the covered pairs, with the coverage, on each word-pair set."""
    from .metaembedding import read_word_pairs, similarity_scores, standard_similarity_sets

    sets = {Path(data).name: Path(data)} if data is not None else standard_similarity_sets()
    metrics = {name: similarity_scores(student, *read_word_pairs(path)) for name, path in sets.items()}
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    table = Table(title=f"{student_dir}: word similarity (Spearman ρ; a pair with an unknown word scores 0)")
    for col in ("set", "pairs", "coverage", "ρ (all pairs)", "ρ (covered pairs)"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for name, m in metrics.items():
        table.add_row(name, f"{int(m['pairs'])}", f"{100 * m['coverage']:.1f} %", f"{m['spearman']:.3f}",
                      f"{m['spearman_covered']:.3f}")  # fmt: skip
    _out().print(table)


@app.command()
def inspect(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    pool: Annotated[
        Path | None,
        typer.Option("--data", help="An unlabeled pool to diagnose routing on (runs the teachers once)."),
    ] = None,
    prior: Annotated[
        str, typer.Option(help="Class prior for the diagnosis: uniform, estimate (or em) or none.")
    ] = "uniform",
    plot: Annotated[Path | None, typer.Option(help="Where to write the diagnosis bar chart (PNG).")] = None,
) -> None:
    """Show a recipe's teachers, their label spaces and union, overlaps, and suitable methods;
    with --data, diagnose whether label-free amalgamation will route examples to the right teacher."""
    from .labels import LabelSpace, overlaps
    from .recipe import load_recipe

    rec = load_recipe(recipe)
    teachers = rec.build_teachers()
    con = _out()

    table = Table(title="teachers")
    for col in ("name", "kind", "#labels", "labels", "capabilities"):
        table.add_column(
            col, no_wrap=col in ("name", "kind", "#labels"), min_width=12 if col == "capabilities" else None
        )
    for t in teachers:
        source = getattr(t, "source_type", None)  # a teacher that is not a torch model says what it is
        caps = capability_names(t.capabilities)
        if t.features:  # the taps' module paths beside "features"
            caps = caps.replace("features", f"features ({', '.join(t.features)})")
        table.add_row(t.name, f"{t.kind} ({source})" if source else t.kind, str(len(t.labels)), _names(t.labels), caps)
    con.print(table)

    spaces = [t.labels for t in teachers]
    union = LabelSpace.union(spaces)
    con.print(f"union: {len(union)} labels: {_names(union, 40)}", soft_wrap=True, markup=False)
    shared = overlaps(spaces)
    if shared:
        ov = Table(title="overlapping labels")
        ov.add_column("label", no_wrap=True)
        ov.add_column("named by")
        for label, who in shared.items():
            ov.add_row(label, ", ".join(teachers[i].name for i in who))
        con.print(ov)
    else:
        con.print("overlapping labels: none (the label sets are disjoint)")

    data = Table(title="data")
    for col in ("role", "file", "rows", "type", "labels"):
        data.add_column(col, no_wrap=col != "file")
    for role in ("data", "labeled", "test"):
        spec = getattr(rec, role)
        if spec is None:
            continue
        x, y = rec.load(role)
        kind = "text" if isinstance(x, list) else f"numeric {tuple(x.shape[1:])}"
        data.add_row(role, str(rec.resolve(spec.path)), str(len(x)), kind, "yes" if y is not None else "no")
    con.print(data)

    ms = Table(title="methods")
    ms.add_column("method", no_wrap=True)
    ms.add_column("family")
    ms.add_column("suitable", no_wrap=True)
    ms.add_column("why not")
    for name, family, ok, reason in suitable_methods(teachers, has_labeled=rec.labeled is not None):
        mark = "yes" if ok else "no"
        ms.add_row(f"{name} *" if name == rec.method else name, family, mark, reason)
    con.print(ms)
    con.print("* the recipe's method", style="dim")
    if pool is not None:
        _diagnosis(teachers, pool, prior, plot if plot is not None else recipe.parent / "diagnosis.png", con)


def _diagnosis(teachers: Sequence[Any], data: Path, prior: str, plot: Path, con: Console) -> None:
    """``inspect --data``: the routing diagnosis as tables, advice and a bar chart."""
    from .diagnose import diagnose
    from .io import load_table

    if prior not in ("uniform", "estimate", "em", "none"):
        raise AmalgamatorError(f"--prior must be uniform, estimate (or em) or none; got {prior!r}.")
    x, _ = load_table({"path": str(data)}, Path.cwd())
    d = diagnose(teachers, x, prior=prior)
    verdict = "RISKY" if d.risky else "ok"
    used = prior
    con.print(
        f"routing diagnosis on {data} ({len(x)} rows, prior {used}): {verdict}, "
        f"estimated mis-routing {100 * d.risk:.1f} %",
        soft_wrap=True,
    )
    tt = Table(title="teachers on the pool")
    for col in ("teacher", "pool share", "mean top prob", "calibrated expectation", "temperature", "flag"):
        tt.add_column(col, no_wrap=col in ("teacher", "flag"))  # headers wrap, never cut
    for t in d.teachers:
        tt.add_row(t.name, f"{t.share:.2f}", f"{t.mean_top:.3f}", f"{t.expected_top:.3f}", f"{t.temperature:.2f}",
                   "overconfident" if t.overconfident else "")  # fmt: skip
    con.print(tt)
    ct = Table(title="class mass on the pool")
    for col in ("class", "prior", "naive (kd) mass", "calibrated mass", "flag"):
        ct.add_column(col, no_wrap=True)
    for lb, p, m, c in zip(d.labels, d.prior, d.naive_mass, d.calibrated_mass, strict=True):
        ct.add_row(lb, f"{p:.3f}", f"{m:.3f}", f"{c:.3f}", "sink" if lb in d.sinks else "")
    con.print(ct)
    for line in d.advice:
        con.print(f"- {line}", soft_wrap=True)
    con.print(f"chart → {d.plot(plot)}")


def suitable_methods(teachers: Sequence[Any], has_labeled: bool) -> list[tuple[str, str, bool, str]]:
    """Every registered method with whether these teachers and data meet its needs, and why not."""
    from .methods import REGISTRY

    rows = []
    for name, cls in sorted(REGISTRY.items(), key=lambda kv: (kv[1].family, kv[0])):
        reason = ""
        if cls.uses_labels == "required" and not has_labeled:
            reason = "needs labeled: data"
        else:
            try:
                cls().validate(list(teachers))
            except AmalgamatorError as exc:  # the table itself lists the methods that work
                reason = str(exc).split("; methods that work with these teachers:")[0]
        rows.append((name, cls.family, not reason, reason))
    return rows


@app.command()
def methods() -> None:
    """List every registered method with its family, paper, teacher kinds, labels and what it needs of teachers."""
    from .methods import REGISTRY

    table = methods_table(REGISTRY)
    _out().print(table)


def capability_names(capabilities: Any) -> str:
    """Capability names in their canonical order (outputs, features, dropout, gradients)."""
    from .teachers import CAPABILITIES

    return ", ".join(c for c in CAPABILITIES if c in capabilities)


def methods_table(registry: dict[str, Any]) -> Table:
    """The methods listing; names never wrap or truncate, so scripts can read them as words. "needs" is what a
    method needs of every teacher (``Method.needs``; a teacher's ``capabilities`` must cover it)."""
    table = Table(title="amalgamation methods")
    width = max((len(n) for n in registry), default=4)
    table.add_column("name", no_wrap=True, min_width=width, overflow="ignore")
    table.add_column("family", ratio=1)
    table.add_column("paper", ratio=2)
    table.add_column("summary", ratio=3)
    table.add_column("kinds", no_wrap=True)
    table.add_column("labels", no_wrap=True)
    table.add_column("needs", ratio=1)
    for name, cls in sorted(registry.items(), key=lambda kv: (kv[1].family, kv[0])):
        kinds = ", ".join(sorted(getattr(cls, "kinds", ())))
        needs = capability_names(getattr(cls, "needs", {"outputs"}))
        note = getattr(cls, "needs_note", "")
        table.add_row(name, cls.family, cls.paper, cls.summary, kinds, cls.uses_labels,
                      f"{needs} ({note})" if note else needs)  # fmt: skip
    return table


def _suites_help() -> str:
    """``bench --help``'s list of suites, one per line, from the suite registry."""
    try:
        from .bench import SUITES
    except ImportError:  # an installation without the benchmarks: `bench` says so when run
        return ""
    return "[bold]Suites[/bold]\n\n" + "\n\n".join(f"  {name}: {s.description}" for name, s in SUITES.items())


@app.command(epilog=_suites_help(), rich_help_panel=None)
def bench(
    suite: Annotated[str, typer.Argument(help="The benchmark suite: one of those listed below.")],
    quick: Annotated[bool, typer.Option("--quick", help="Small and fast: a smoke test of the suite.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds to average over (default: the suite's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for results and tables.")] = None,
    rows: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated rows to (re)compute into an existing result (multiclass, semisupervised; "
            "speed: its parts)."
        ),
    ] = None,
    threads: Threads = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Reproduce a paper's table: train its teachers, amalgamate with each method, tabulate."""
    _verbosity(verbose, quiet, threads)
    try:
        from .bench import run_suite
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError):
            _missing_module(exc, "amalgamator.bench", "the benchmarks")
        if "run_suite" in str(exc):
            raise AmalgamatorError("the benchmarks are not available in this installation.") from None
        raise
    options: dict[str, Any] = {"quick": quick}
    if seeds is not None:
        if seeds < 1:
            raise AmalgamatorError(f"--seeds must be at least 1, got {seeds}.")
        options["seeds"] = seeds
    if out is not None:
        options["out"] = out
    if rows:
        options["rows"] = [r.strip() for r in rows.split(",") if r.strip()]
    try:
        run_suite(suite, **options)
    except KeyboardInterrupt:
        raise _interrupted(None, "bench") from None


# Output helpers ------------------------------------------------------------------------------


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-task metrics (``{"accuracy": {task: v}}``) as ``accuracy[task]`` rows beside the others."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            flat.update({f"{k}[{t}]": x for t, x in v.items()})
        else:
            flat[k] = v
    return flat


def summary_table(result: Any, metrics: dict[str, Any] | None) -> Table:
    """What ``run`` reports: method, labels, epochs, final loss, timings, test metrics."""
    table = Table(title="amalgamation", show_header=False)
    table.add_column("", no_wrap=True, style="bold")
    table.add_column("")
    student = result.student
    table.add_row("method", result.method)
    table.add_row("labels", f"{len(student.labels)}: {_names(student.labels)}")
    hist = result.history
    if hist is not None:
        done = len(hist.loss)  # a resumed history holds the checkpointed epochs too
        resumed = f" (resumed after epoch {hist.resumed_from})" if hist.resumed_from else ""
        table.add_row("epochs", f"{done}{resumed}")
        if hist.loss:
            table.add_row("final loss", f"{hist.loss[-1]:.4f}")
    if result.store is not None:
        table.add_row("teacher store", f"{result.store.hits} hits, {result.store.computed} computed")
    if result.timings:
        table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    for k, v in flat_metrics(metrics or {}).items():
        table.add_row(f"test {k}", _fmt(v))
    return table


def _error(message: str) -> None:
    """One red line: no markup parsing (messages hold [lists]) and no wrapping."""
    line = " ".join(str(message).split())
    _err().print(Text(f"error: {line}", style="red"), soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Library warnings as one yellow line, without the source-line noise of the default format."""
    line = " ".join(str(message).split())
    _err().print(Text(f"warning: {line}", style="yellow"), soft_wrap=True)


def _recipe_errors() -> tuple[type[Exception], ...]:
    """pydantic's and yaml's errors: what an invalid recipe raises."""
    import pydantic
    import yaml

    return (pydantic.ValidationError, yaml.YAMLError)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: runs the app and turns user errors into one line, exit 2."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            rv = app(args=list(argv) if argv is not None else None, prog_name="amalgamator", standalone_mode=False)
    except AmalgamatorError as exc:
        _error(str(exc))
        sys.exit(2)
    except _recipe_errors() as exc:  # evaluated only when an error gets here: pydantic and yaml load on demand
        _error(f"invalid recipe: {str(exc).splitlines()[0]}")
        sys.exit(2)
    except _ClickException as exc:
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
        except Exception:  # an older typer without rich_utils: click's plain message
            exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        _err().print(Text("interrupted.", "yellow"))
        sys.exit(130)
    except KeyboardInterrupt:
        _err().print(Text("interrupted.", "yellow"))
        sys.exit(130)
    except OSError as exc:  # disk full, permission denied: the environment, not a bug
        _error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
