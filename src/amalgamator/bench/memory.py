"""Part of bench suite ``speed`` (issue 14): memory flat in the pool's size.

A synthetic pool of up to 1,000,000 × 64 float32 rows (ten Gaussian classes) is written as ``.npy`` files; two
MLP teachers (five classes each, trained on 20,000 labelled rows) are amalgamated into an MLP student with
``kd`` for one epoch, each run in a fresh process on one torch thread with a cold store. Each process reports
its peak resident memory (``VmHWM``: ``ru_maxrss`` would carry over the parent's peak, which Linux keeps across
``exec``) and how fast the store was built. Two ways of giving the pool:

- **file**: ``data=Path("pool.npy")``: rows read from the file as they are used (``amalgamator.data.RowFile``);
- **array**: ``data=np.load("pool.npy")``: the whole array in memory, for comparison.

Target (issue 14): the file's peak for 1,000,000 rows at most 1.3 × that for 100,000 rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..store import cache_home

ROWS = (100_000, 300_000, 1_000_000)
QUICK_ROWS = (10_000, 30_000, 100_000)
FEATURES, CLASSES = 64, 10
TARGET = 1.3

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
import amalgamator as am
folder, pool, store, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
teachers = [am.Teacher.from_pretrained(folder / f"teacher-{i}") for i in range(2)]
data = Path(pool) if how == "file" else np.load(pool)
t0 = time.perf_counter()
res = am.amalgamate(teachers, data=data, method="kd", epochs=1, batch_size=1024, store=store, progress=False, seed=0)
wall = time.perf_counter() - t0
rows = len(data) if how != "file" else int(np.load(pool, mmap_mode="r").shape[0])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_mb": peak / 1024, "wall_s": wall,
                  "teacher_s": res.timings["teacher"], "train_s": res.timings["train"], "rows": rows}))
"""


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(0).normal(0, 1.5, (CLASSES, FEATURES)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    return (centers[y] + rng.normal(0, 1, (n, FEATURES))).astype(np.float32), y


def _pool(folder: Path, n: int) -> Path:
    """``pool-<n>.npy``, written in chunks of 100,000 rows (the writer never holds it whole); cached."""
    path = folder / f"pool-{n}.npy"
    if not path.exists():
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, FEATURES))
        for start in range(0, n, 100_000):
            out[start : start + 100_000] = _sample(min(100_000, n - start), 1000 + start)[0]
        out.flush()
        del out
        tmp.rename(path)
    return path


def _teachers(folder: Path) -> None:
    """Two MLP teachers on five classes each, saved as student folders (cached)."""
    from ..api import train_classifier

    x, y = _sample(20_000, 1)
    for i, labels in enumerate((range(0, 5), range(5, 10))):
        where = folder / f"teacher-{i}"
        if (where / "model.safetensors").exists():
            continue
        keep = np.isin(y, list(labels))
        names = [str(v) for v in labels]
        st = train_classifier(x[keep], y[keep].astype(str), labels=names, epochs=3, progress=False,
                              student_options={"hidden": [128]})  # fmt: skip
        st.save(where)


def _measure(folder: Path, pool: Path, how: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as store:
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(pool), store, how], capture_output=True,
                              text=True, env={**_env(), "AMALGAMATOR_QUIET": "1"}, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"memory run failed ({how}, {pool.name}): {done.stderr[-2000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    got["store_rows_per_s"] = got["rows"] / max(got["teacher_s"], 1e-9)
    got["train_rows_per_s"] = got["rows"] / max(got["train_s"], 1e-9)
    return got


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def memory_curve(out: Path, quick: bool = False) -> dict[str, Any]:
    """Peak memory against pool rows, for the pool as a file and as an array; the plot beside the results."""
    folder = cache_home() / "bench-parts" / ("memory-quick" if quick else "memory")
    folder.mkdir(parents=True, exist_ok=True)
    _teachers(folder)
    sizes = QUICK_ROWS if quick else ROWS
    runs: dict[str, list[dict[str, Any]]] = {"file": [], "array": []}
    for n in sizes:
        pool = _pool(folder, n)
        for how in runs:
            progress.note(f"memory: {n:,} rows as {how}")
            runs[how].append(_measure(folder, pool, how))
    ratio = {how: r[-1]["peak_mb"] / r[0]["peak_mb"] for how, r in runs.items()}
    plot = _plot(sizes, runs, out / ("speed-memory-quick.png" if quick else "speed-memory.png"))
    return {"rows": list(sizes), "runs": runs, "ratio": ratio, "target": TARGET, "plot": plot.name}


def _plot(sizes: tuple[int, ...], runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for how, label in (("file", "pool as a .npy file"), ("array", "pool as an array in memory")):
        ax.plot(sizes, [r["peak_mb"] for r in runs[how]], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("pool rows (64 float32 features)")
    ax.set_ylabel("peak resident memory, MB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title("kd, 2 MLP teachers, 1 epoch", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory_markdown(r: dict[str, Any]) -> str:
    """The memory section of ``speed.md``."""
    lines = [
        "## Memory against pool size (issue 14)",
        "",
        f"`kd` with two MLP teachers into an MLP student, one epoch, batch 1,024, a fresh process per run on one "
        f"torch thread with a cold store; a synthetic pool of up to {r['rows'][-1]:,} × {FEATURES} float32 rows "
        "given as a `.npy` file (`data=Path(...)`: rows read as they are used) or as an array in memory.",
        "",
        "| rows | file: peak MB | array: peak MB | store rows/s (file) | student rows/s (file) | whole run s (file) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, n in enumerate(r["rows"]):
        f, a = r["runs"]["file"][i], r["runs"]["array"][i]
        lines.append(f"| {n:,} | {f['peak_mb']:.0f} | {a['peak_mb']:.0f} | {f['store_rows_per_s']:,.0f} | "
                     f"{f['train_rows_per_s']:,.0f} | {f['wall_s']:.1f} |")  # fmt: skip
    met = "met" if r["ratio"]["file"] <= r["target"] else "missed"
    lines += [
        "",
        f"Peak for {r['rows'][-1]:,} rows against {r['rows'][0]:,}: file {r['ratio']['file']:.2f} × (target ≤ "
        f"{r['target']} ×: {met}); array {r['ratio']['array']:.2f} ×. ![memory]({r['plot']})",
    ]
    return "\n".join(lines)
