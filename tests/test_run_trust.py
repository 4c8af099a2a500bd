"""Runs a user can believe: resume only what it was, options checked, inputs checked before training,
out folders checked first, threads, one line per epoch, pruned checkpoints, a full run report."""

from __future__ import annotations

import copy
import json
import os
import re
import stat

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator import cli, engine
from amalgamator.errors import DataError, MethodError, RecipeError, TeacherError

from .conftest import HIGH, LOW, fit_mlp

KW = dict(method="kd", batch_size=64, seed=5, progress=False)


def _crash_after(monkeypatch, epoch_index: int):
    """Make the engine raise KeyboardInterrupt right after saving the checkpoint of ``epoch_index`` (0-based)."""
    real = engine._save_checkpoint

    def save_then_crash(ckpt_dir, epoch, *args):
        real(ckpt_dir, epoch, *args)
        if epoch == epoch_index:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_save_checkpoint", save_then_crash)
    return real


def _weights_equal(a, b) -> bool:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _epochs(folder) -> list[str]:
    return sorted(d.name for d in (folder / "checkpoints").iterdir())


@pytest.fixture
def own_teachers(digits):
    """Teachers this test may retrain in place (the session fixture must stay untouched)."""
    x, y, t, _, _ = digits
    return [
        am.Teacher(fit_mlp(x[t], y[t], LOW, 32, 0), labels=LOW, name="low"),
        am.Teacher(fit_mlp(x[t], y[t], HIGH, 48, 1), labels=HIGH, name="high"),
    ]


# Item 1: stale resume -------------------------------------------------------------------------------


def test_retrained_teacher_never_resumes_the_old_run(digits, own_teachers, tmp_path, monkeypatch):
    """The issue's scenario: run A finished; a teacher retrained in place; a fresh run B into the same
    folder is killed after epoch 2; resuming must continue B, never hand back A's student."""
    x, y, t, p, _ = digits
    out = tmp_path / "run"
    am.amalgamate(own_teachers, data=x[p], epochs=6, out=out, keep_checkpoints=10, **KW)

    retrained = copy.deepcopy(own_teachers)
    retrained[0] = am.Teacher(fit_mlp(x[t], y[t], LOW, 32, 7), labels=LOW, name="low")  # other weights, same name
    with pytest.raises(DataError, match="teacher 'low' has other weights") as err:
        am.amalgamate(retrained, data=x[p], epochs=6, out=out, **KW)
    assert "\n" not in str(err.value) and "overwrite" in str(err.value)
    with pytest.raises(DataError, match="teacher 'low' has other weights"):
        am.amalgamate(retrained, data=x[p], epochs=6, out=out, resume=True, **KW)

    real = _crash_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        am.amalgamate(retrained, data=x[p], epochs=6, out=out, overwrite=True, **KW)
    monkeypatch.setattr(engine, "_save_checkpoint", real)
    assert _epochs(out) == ["epoch-001", "epoch-002"], "run A's epochs 3-6 must be gone"

    resumed = am.amalgamate(retrained, data=x[p], epochs=6, out=out, resume=True, **KW)
    assert resumed.history.resumed_from == 2
    fresh_b = am.amalgamate(retrained, data=x[p], epochs=6, out=tmp_path / "b", **KW)
    assert _weights_equal(resumed.student, fresh_b.student)


def test_fresh_run_over_same_settings_starts_clean(digits, teachers, tmp_path, monkeypatch):
    x, _, _, p, _ = digits
    out = tmp_path / "run"
    am.amalgamate(teachers, data=x[p], epochs=3, out=out, keep_checkpoints=5, **KW)
    _crash_after(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        am.amalgamate(teachers, data=x[p], epochs=3, out=out, keep_checkpoints=5, **KW)
    assert _epochs(out) == ["epoch-001"], "a fresh run never leaves epochs of an earlier run behind"


@pytest.mark.parametrize(
    "change, says",
    [
        ({"student_options": {"hidden": [32]}}, "student options"),
        ({"method_options": {"tau": 3.0}}, "method options"),
        ({"lr": 0.01}, "train lr"),
    ],
)
def test_resume_with_other_settings_is_a_clear_refusal(digits, teachers, tmp_path, change, says):
    x, _, _, p, _ = digits
    am.amalgamate(teachers, data=x[p], epochs=2, out=tmp_path, **KW)
    with pytest.raises(DataError, match="cannot resume") as err:
        am.amalgamate(teachers, data=x[p], epochs=2, out=tmp_path, resume=True, **{**KW, **change})
    assert says.split()[0] in str(err.value) and "\n" not in str(err.value)


def test_other_data_is_a_refusal_too(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    am.amalgamate(teachers, data=x[p], epochs=1, out=tmp_path, **KW)
    with pytest.raises(DataError, match="the data differs"):
        am.amalgamate(teachers, data=x[p][:-1], epochs=1, out=tmp_path, resume=True, **KW)


def test_tc_trust_learner_checkpoints_and_resumes(digits, teachers, tmp_path, monkeypatch):
    """TC trains its trust learner through the engine's train(): its own stage folder, resumable."""
    x, y, _, p, _ = digits
    kw = dict(
        **{**KW, "method": "tc"},
        labeled=(x[p[:60]], y[p[:60]]),
        epochs=2,
        method_options={"ttl_epochs": 2, "min_steps": 0},
    )
    full = am.amalgamate(teachers, data=x[p], out=tmp_path / "full", **kw)
    assert (tmp_path / "full" / "trust" / "checkpoints").is_dir()
    real = _crash_after(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        am.amalgamate(teachers, data=x[p], out=tmp_path / "cut", **kw)
    monkeypatch.setattr(engine, "_save_checkpoint", real)
    resumed = am.amalgamate(teachers, data=x[p], out=tmp_path / "cut", resume=True, **kw)
    assert _weights_equal(full.student, resumed.student)


# Item 11: pruning, timings, readable files -----------------------------------------------------------


def test_only_the_last_checkpoints_are_kept(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    am.amalgamate(teachers, data=x[p], epochs=5, out=tmp_path, **KW)
    assert _epochs(tmp_path) == ["epoch-003", "epoch-004", "epoch-005"]
    with pytest.raises(am.AmalgamatorError, match="keep_checkpoints"):
        am.amalgamate(teachers, data=x[p], epochs=1, keep_checkpoints=0, **KW)


def test_resumed_timings_never_exceed_the_total(digits, teachers, tmp_path, monkeypatch):
    x, _, _, p, _ = digits
    real = _crash_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        am.amalgamate(teachers, data=x[p], epochs=4, out=tmp_path, **KW)
    monkeypatch.setattr(engine, "_save_checkpoint", real)
    res = am.amalgamate(teachers, data=x[p], epochs=4, out=tmp_path, resume=True, **KW)
    assert res.timings["train"] <= res.timings["total"]
    assert res.timings["train"] == pytest.approx(res.history.seconds[-1])
    assert "Resumed after epoch 3" in (tmp_path / "report.md").read_text()


def test_saved_weights_are_as_readable_as_the_json(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    old = os.umask(0o022)
    try:
        am.amalgamate(teachers, data=x[p], epochs=1, out=tmp_path, **KW)
    finally:
        os.umask(old)
    for f in [tmp_path / "student" / "model.safetensors", *tmp_path.glob("checkpoints/*/model.safetensors")]:
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == stat.S_IMODE((tmp_path / "student" / "student.json").stat().st_mode) == 0o644, (f, oct(mode))


# Item 3: options checked by name and range -----------------------------------------------------------


@pytest.mark.parametrize("options", [{"hiden": [64]}, {"dropuot": 0.2}, {"dropout": 1.5}, {"hidden": [0]}])
def test_student_options_are_checked(digits, teachers, options):
    x, _, _, p, _ = digits
    with pytest.raises(DataError, match="student 'mlp'") as err:
        am.amalgamate(teachers, data=x[p], epochs=1, student_options=options, **KW)
    key = next(iter(options))
    assert "\n" not in str(err.value)
    if key in ("hiden", "dropuot"):
        assert "Did you mean" in str(err.value)
    with pytest.raises(DataError, match="student 'mlp'"):
        am.train_classifier(x[p], np.asarray(["a", "b"] * 300), epochs=1, student_options=options)


def test_student_options_for_a_custom_module_are_refused(digits, teachers):
    x, _, _, p, _ = digits
    with pytest.raises(DataError, match="student_options apply to a preset"):
        am.amalgamate(teachers, data=x[p], epochs=1, student=torch.nn.Linear(64, 8), student_options={"hidden": [3]})


@pytest.mark.parametrize(
    "method, options, says",
    [
        ("kd", {"tau": -1}, "greater than 0"),
        ("kd", {"tau": 0}, "greater than 0"),
        ("uhc", {"tau": "hot"}, "valid number"),
        ("muki-soft", {"k": 0}, "greater than or equal to 1"),
        ("muki-hard", {"p": 1.0}, "less than 1"),
        ("cfl", {"alpha": 2}, "less than or equal to 1"),
        ("calibrated", {"prior": "emm"}, "'uniform', 'estimate', 'em' or 'none'"),
        ("selftrain", {"threshold": 0}, "greater than 0"),
        ("muki-soft", {"reweight": "yes"}, "valid boolean"),
    ],
)
def test_method_options_are_range_checked(digits, teachers, method, options, says):
    x, y, _, p, _ = digits
    with pytest.raises(MethodError, match=f"method '{method}' option") as err:
        am.amalgamate(teachers, data=x[p], labeled=(x[p[:20]], y[p[:20]]), method=method, method_options=options)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_training_options_are_checked(digits, teachers):
    x, _, _, p, _ = digits
    for bad, says in [
        ({"epochs": 2.5}, "whole number"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": float("nan")}, "lr"),
    ]:
        with pytest.raises(am.AmalgamatorError, match=says):
            am.amalgamate(teachers, data=x[p], **{**KW, **bad})


def test_recipe_student_option_typo_is_caught_before_anything_runs(tmp_path):
    from amalgamator.recipe import parse_recipe

    with pytest.raises(RecipeError, match="student_options: student 'mlp' has no option 'hiden'. Did you mean: hidden"):
        parse_recipe({"teachers": ["t"], "data": "d.npz", "student_options": {"hiden": [64]}}, tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="option 'tau' must be greater than 0"):
        parse_recipe(
            {"teachers": ["t"], "data": "d.npz", "method": "kd", "method_options": {"tau": 0}}, tmp_path / "r.yaml"
        )


# Items 4-5: inputs and out checked before training ------------------------------------------------------


def test_out_that_is_a_file_or_unwritable_fails_before_the_teachers_run(digits, teachers, tmp_path):
    x, _, _, p, _ = digits
    store = tmp_path / "store"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="is a file"):
        am.amalgamate(teachers, data=x[p], epochs=1, out=blocker, store=store, **KW)
    with pytest.raises(DataError, match="cannot write to out folder"):
        am.amalgamate(teachers, data=x[p], epochs=1, out=blocker / "inside", store=store, **KW)
    assert not store.exists() or not any(store.rglob("*.safetensors")), "no teacher may run before out is checked"


def test_student_passed_as_a_teacher_points_to_as_teacher(digits, teachers):
    x, _, _, p, _ = digits
    st = am.amalgamate(teachers, data=x[p], epochs=1, **KW).student
    with pytest.raises(TeacherError, match=r"as_teacher"):
        am.amalgamate([teachers[0], st], data=x[p], epochs=1, **KW)


def _project(tmp_path, digits, teachers, test_x):
    x, y, _, p, s = digits
    folders = []
    for t, labels in zip(teachers, (LOW, HIGH), strict=True):
        st = am.train_classifier(x[p][np.isin(y[p], labels)], y[p][np.isin(y[p], labels)], labels=labels, epochs=3)
        st.save(tmp_path / t.name)
        folders.append(t.name)
    np.savez(tmp_path / "pool.npz", x=x[p])
    np.savez(tmp_path / "test.npz", x=test_x, y=y[s][: len(test_x)])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"teachers: [{', '.join(folders)}]\ndata: pool.npz\ntest: test.npz\nmethod: kd\n"
        "train: {epochs: 2, batch_size: 64}\n"
    )
    return recipe


def test_wrong_test_width_fails_before_training(digits, teachers, tmp_path, capsys):
    x, _, _, _, s = digits
    recipe = _project(tmp_path, digits, teachers, x[s][:50, :60])
    with pytest.raises(SystemExit) as done:
        cli.main(["run", str(recipe), "--out", str(tmp_path / "out")])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "test file" in err and "(60,)" in err and "(64,)" in err, err
    assert not (tmp_path / "out" / "checkpoints").exists(), "nothing may train before the test file is checked"


# Items 10-11: threads, epoch lines, verbosity, the run report --------------------------------------------


def test_threads_are_set_for_the_call_and_restored(digits, teachers, monkeypatch):
    x, _, _, p, _ = digits
    before = torch.get_num_threads()
    seen = []
    real = engine.fit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr("amalgamator.api.fit", spy)
    am.amalgamate(teachers, data=x[p], epochs=1, threads=1, **KW)
    assert seen == [1] and torch.get_num_threads() == before
    monkeypatch.setenv("AMALGAMATOR_THREADS", "lots")
    with pytest.raises(DataError, match="AMALGAMATOR_THREADS"):
        am.amalgamate(teachers, data=x[p], epochs=1, **KW)
    monkeypatch.setenv("AMALGAMATOR_THREADS", "1")
    seen.clear()
    am.amalgamate(teachers, data=x[p], epochs=1, **KW)
    assert seen == [1]


def test_default_threads_do_not_oversubscribe(monkeypatch):
    from amalgamator.api import default_threads

    monkeypatch.delenv("AMALGAMATOR_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_threads() == 8


def test_run_report_epoch_lines_and_quiet(digits, teachers, tmp_path, capsys, monkeypatch):
    x, _, _, _, s = digits
    recipe = _project(tmp_path, digits, teachers, x[s][:80])
    monkeypatch.delenv("AMALGAMATOR_QUIET", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.main(["run", str(recipe), "--out", str(tmp_path / "out")])
    assert done.value.code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if re.search(r"epoch \d+/\d+", line)]
    assert len(lines) == 2 and "epoch 2/2" in lines[1] and "loss" in lines[1] and " s" in lines[1], err
    report = (tmp_path / "out" / "report.md").read_text()
    for part in ("| lr |", "| batch_size |", "## Recipe", "pool.npz", "### Per class", "### Confusion matrix"):
        assert part in report, part
    assert (tmp_path / "out" / "confusion.png").exists()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["test"]["n"] == 80

    monkeypatch.delenv("AMALGAMATOR_QUIET", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["run", str(recipe), "--out", str(tmp_path / "out2"), "--quiet"])
    assert not re.search(r"epoch \d+/\d+", capsys.readouterr().err)
