"""Multi-process runs (issue 14): the teacher pass split across processes, DDP training, and the devices and
precision options, all on CPU (gloo). The multi-process tests start real processes through torchrun."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import AmalgamatorError
from amalgamator.store import LOGITS, Ranks, TeacherStore

SCRIPT = Path(__file__).with_name("distributed_run.py")
POOL = 800  # rows of the pool in distributed_run.py


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "AMALGAMATOR_STORE": str(tmp / "store"), "AMALGAMATOR_QUIET": "1",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent / "src")}  # fmt: skip


def _launch(out: Path, method: str, processes: int) -> dict:
    """Run distributed_run.py in ``processes`` processes (one: plain python); its result and row counts."""
    if processes == 1:
        command = [sys.executable, str(SCRIPT), str(out), method]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(SCRIPT), str(out), method]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_env(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    rows: dict[str, list[int]] = {}
    for f in sorted(out.glob("rows-*.txt")):
        teacher = f.name.split("-")[1]
        rows.setdefault(teacher, []).append(sum(int(v) for v in f.read_text().split()))
    result["rows"] = rows
    return result


@pytest.mark.parametrize("method", ["kd", pytest.param("tc", marks=pytest.mark.slow),
                                    pytest.param("kd-ml", marks=pytest.mark.slow)])  # fmt: skip
def test_two_processes_match_one_and_run_each_teacher_once_per_row(method, tmp_path):
    one = _launch(tmp_path / "one", method, 1)
    two = _launch(tmp_path / "two", method, 2)
    assert abs(two["accuracy"] - one["accuracy"]) <= 0.01, (one["accuracy"], two["accuracy"])
    assert two["accuracy"] > 0.7  # it learned
    labeled = 40 if method == "tc" else 0
    for teacher in ("low", "high"):
        # one process: the 2-row probe of each part, then every row once
        assert one["rows"][teacher] == [POOL + labeled + 2 * (1 + (labeled > 0))]
        # two processes: the first probes; each runs the teacher over its own half of every part, once
        assert sum(two["rows"][teacher]) == sum(one["rows"][teacher]), two["rows"]
        assert len(two["rows"][teacher]) == 2 and min(two["rows"][teacher]) == (POOL + labeled) // 2


def test_cli_processes_option_trains_the_same_student(tmp_path, project_dir):
    env = {**_env(tmp_path), "COLUMNS": "120"}
    recipe = project_dir / "recipe.yaml"

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "amalgamator", "run", str(recipe), *extra], capture_output=True,
                              text=True, env=env, timeout=300)  # fmt: skip

    one = run("--out", str(tmp_path / "one"))
    two = run("--out", str(tmp_path / "two"), "--processes", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert "launching 2 processes" in two.stdout
    acc = [json.loads((tmp_path / o / "metrics.json").read_text())["test"]["accuracy"] for o in ("one", "two")]
    assert abs(acc[0] - acc[1]) <= 0.01, acc
    assert (tmp_path / "two" / "student" / "model.safetensors").exists()
    assert two.stdout.count("final loss") == 1  # the first process reports for the run
    bad = run("--out", str(tmp_path / "three"), "--processes", "2", "--mixed-precision", "fp16")
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "fp16" in errors[0] and "GPU" in errors[0]  # once, in one line
    assert "Traceback" not in bad.stderr and "ChildFailedError" not in bad.stderr


@pytest.fixture
def project_dir(tmp_path_factory) -> Path:
    """Two digits teacher folders, a pool, a test file and a recipe."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("ddp-project")
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), np.array([str(v) for v in d.target])
    perm = np.random.default_rng(0).permutation(len(x))
    t, p, s = perm[:600], perm[600:1400], perm[1400:]
    for name, labels in (("low", [str(i) for i in range(5)]), ("high", [str(i) for i in range(5, 10)])):
        keep = np.isin(y[t], labels)
        am.train_classifier(x[t][keep], y[t][keep], labels=labels, epochs=30, progress=False).save(root / name)
    np.savez(root / "pool.npz", x=x[p])
    np.savez(root / "test.npz", x=x[s], y=y[s])
    (root / "recipe.yaml").write_text(
        "teachers: [low, high]\ndata: pool.npz\ntest: test.npz\nmethod: kd\n"
        "train: {epochs: 12, batch_size: 64, seed: 0}\n"
    )
    return root


# The sharded store, in one process: ranks as threads --------------------------------------------------------


def _sharded(store_root: Path, teacher: am.Teacher, inputs: Inputs, count: int, pieces=(LOGITS,)) -> list[dict]:
    """Every rank's ``get`` result, the ranks run as threads sharing one barrier; each rank holds its own copy
    of the teacher, as a process would (feature hooks on one shared module would catch each other's rows)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    failures: list = []
    copies = [copy.deepcopy(teacher) for _ in range(count)]

    def rank(i: int) -> None:
        try:
            results[i] = TeacherStore(store_root).get(copies[i], inputs, pieces, Ranks(i, count, barrier.wait))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    if isinstance(teacher.model, _RowCounter):
        teacher.model.rows += sum(c.model.rows for c in copies)
    return results


class _RowCounter(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


def test_sharded_store_equals_one_pass_and_splits_the_rows(digits, teachers, tmp_path):
    x = digits[0][digits[3]][:301]  # an odd count: the last share is shorter
    inputs = Inputs(x)
    counter = _RowCounter(teachers[0].model)
    teacher = am.Teacher(counter, labels=teachers[0].labels, name="counted", features="inner.1")
    plain = TeacherStore(tmp_path / "plain").get(teacher, inputs, [LOGITS, "features/inner.1"])
    counter.rows = 0
    got = _sharded(tmp_path / "sharded", teacher, inputs, 3, [LOGITS, "features/inner.1"])
    assert counter.rows == len(x)  # each row once, across the three ranks
    for r in got:
        for piece, value in plain.items():
            assert torch.equal(r[piece], value)
    # a later one-process run reads the sharded entry without running the teacher
    counter.rows = 0
    store = TeacherStore(tmp_path / "sharded")
    assert torch.equal(store.get(teacher, inputs)[LOGITS], plain[LOGITS]) and counter.rows == 0
    assert store.stats.hits == 1


def test_damaged_shard_is_recomputed_with_a_warning(digits, teachers, tmp_path):
    inputs = Inputs(digits[0][digits[3]][:100])
    teacher = teachers[0]
    _sharded(tmp_path, teacher, inputs, 2)
    shard = Ranks(1, 2, lambda: None).share(len(inputs))
    key = TeacherStore.key(teacher, inputs.part(*shard), LOGITS)
    path = tmp_path / key[:2] / f"{key}.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    store = TeacherStore(tmp_path)
    with pytest.warns(UserWarning, match="shard fails its checksum"):
        value = store.get(teacher, inputs)[LOGITS]
    assert torch.equal(value, teacher.logits(inputs.values)) and store.stats.computed == 1


def test_a_rank_that_left_its_shard_missing_is_covered_by_the_first(digits, teachers, tmp_path):
    """Rank 1 found the entry (or crashed before computing): rank 0 computes that share when it publishes."""
    inputs = Inputs(digits[0][digits[3]][:64])
    store = TeacherStore(tmp_path)
    start, stop = Ranks(0, 2, lambda: None).share(len(inputs))
    store.get(teacher=teachers[1], inputs=inputs.part(start, stop))  # only rank 0's shard exists
    store._publish_shards(teachers[1], inputs, LOGITS, Ranks(0, 2, lambda: None))
    assert torch.equal(TeacherStore(tmp_path).get(teachers[1], inputs)[LOGITS], teachers[1].logits(inputs.values))


# Devices and precision ----------------------------------------------------------------------------------------


def test_bf16_trains_on_cpu_and_fp16_is_refused_before_any_teacher_runs(digits, teachers):
    x, y, _, pool, test = digits
    full = am.amalgamate(teachers, data=x[pool], method="kd", epochs=6, progress=False, seed=0)
    half = am.amalgamate(teachers, data=x[pool], method="kd", epochs=6, progress=False, seed=0, mixed_precision="bf16")
    assert half.history.loss != full.history.loss  # it did run in bfloat16
    acc = [am.evaluate(r.student, x[test], y[test])["accuracy"] for r in (full, half)]
    assert abs(acc[0] - acc[1]) <= 0.03, acc
    assert next(half.student.network.parameters()).dtype == torch.float32  # weights stay float32
    counter = _RowCounter(teachers[0].model)
    counted = am.Teacher(counter, labels=teachers[0].labels, name="counted")
    with pytest.raises(AmalgamatorError, match="'fp16' needs a GPU"):
        am.amalgamate([counted, teachers[1]], data=x[pool], method="kd", epochs=1, mixed_precision="fp16")
    assert counter.rows == 0
    with pytest.raises(AmalgamatorError, match="mixed_precision must be one of"):
        am.amalgamate(teachers, data=x[pool], method="kd", epochs=1, mixed_precision="int8")


def test_recipe_takes_mixed_precision_and_refuses_a_typo(tmp_path):
    from amalgamator.errors import RecipeError
    from amalgamator.recipe import parse_recipe

    base = {"teachers": ["t"], "data": "pool.npz"}
    assert (
        parse_recipe({**base, "train": {"mixed_precision": "bf16"}}, tmp_path / "r.yaml").train.mixed_precision
        == "bf16"
    )
    with pytest.raises(RecipeError, match="mixed_precision"):
        parse_recipe({**base, "train": {"mixed_precision": "bf61"}}, tmp_path / "r.yaml")


def test_store_moves_a_teacher_to_its_device_for_the_pass_only(digits, teachers, tmp_path, monkeypatch):
    """No GPU here: the moves are recorded, and the inputs' move is the identity."""
    import amalgamator.teachers as teachers_module

    moves: list[str] = []
    teacher = am.Teacher(_RowCounter(teachers[0].model), labels=teachers[0].labels, name="moved")
    real_to = teacher.model.to

    def to(device, *args, **kwargs):
        moves.append(str(device))
        return real_to("cpu")

    monkeypatch.setattr(teacher.model, "to", to)
    monkeypatch.setattr(teachers_module, "_to_device", lambda inp, device: inp)
    store = TeacherStore(tmp_path, device="cuda:0")
    store.get(teacher, Inputs(digits[0][:50]))
    assert moves == ["cuda:0", "cpu"] and teacher._device is None  # there for the pass, back after
    store.get(teacher, Inputs(digits[0][:50]))  # a hit: the teacher does not move
    assert moves == ["cuda:0", "cpu"]


def test_batches_and_method_tensors_follow_the_training_device():
    """No GPU here: the meta device stands in for one (tensors move, no values needed)."""
    from amalgamator.engine import method_on_device, on_device
    from amalgamator.methods import get_method

    batch = {"x": torch.ones(2, 3), "index": torch.arange(2)}
    assert on_device(batch, torch.device("cpu")) is batch
    moved = on_device(batch, torch.device("meta"))
    assert all(v.device.type == "meta" for v in moved.values())
    method = get_method("kd")()
    method.prior = torch.ones(3)
    method_on_device(method, torch.device("meta"))
    assert method.prior.device.type == "meta"
