"""A digits amalgamation for the multi-process tests, run by torchrun (or plainly, as one process).

``python -m torch.distributed.run --standalone --nproc_per_node N tests/distributed_run.py OUT METHOD``
Every teacher forward appends its row count to ``OUT/rows-<teacher>-<pid>.txt``; the first process writes
``OUT/result.json`` (test accuracy, losses). Teachers are trained here with fixed seeds, so every process
(and the one-process reference) holds identical teachers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

import amalgamator as am

LOW, HIGH = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]


class Counting(nn.Module):
    """A teacher network that records how many rows each forward saw (per process)."""

    def __init__(self, inner: nn.Module, name: str, out: Path):
        super().__init__()
        self.inner, self.name, self.out = inner, name, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with open(self.out / f"rows-{self.name}-{os.getpid()}.txt", "a") as f:
            f.write(f"{len(x)}\n")
        return self.inner(x)


def main(out: Path, method: str, seed: int = 0) -> None:
    torch.set_num_threads(1)
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(str)
    perm = np.random.default_rng(0).permutation(len(x))
    train, pool, test = perm[:600], perm[600:1400], perm[1400:]
    out.mkdir(parents=True, exist_ok=True)
    multilabel = method.endswith("-ml")
    teachers = []
    for seed, (name, labels) in enumerate((("low", LOW), ("high", HIGH))):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, len(labels)))
        keep = np.isin(y[train], labels)
        xt = torch.as_tensor(x[train][keep])
        yt = torch.as_tensor([labels.index(v) for v in y[train][keep]])
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        for _ in range(80):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
        kind = "multilabel" if multilabel else "multiclass"
        teachers.append(am.Teacher(Counting(net.eval(), name, out), labels=labels, name=name, kind=kind))
    labeled = (x[pool[:40]], y[pool[:40]]) if method == "tc" else None
    result = am.amalgamate(teachers, data=x[pool], method=method, labeled=labeled, epochs=12, batch_size=64,
                           seed=seed, out=out / "run", progress=False)  # fmt: skip
    if os.environ.get("RANK", "0") == "0":
        names = np.asarray(result.student.labels)  # the top label, for either kind
        score = float((names[result.student.predict_proba(x[test]).argmax(1)] == y[test]).mean())
        (out / "result.json").write_text(json.dumps({"accuracy": score, "loss": result.history.loss}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
