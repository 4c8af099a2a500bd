"""Time one SimME epoch on the union of the three benchmark word-vector sources (issue 13's acceptance figure).

Run: .venv/bin/python scripts/simme-union-epoch.py  (needs the bench data: spaCy md vectors, MiniLM, fortunes)
Prints the vocabulary size, wall and training seconds, word pairs per second and peak RSS.
"""

import os
import resource
import time
import warnings

os.environ.setdefault("AMALGAMATOR_QUIET", "1")
warnings.simplefilter("ignore")

import torch  # noqa: E402

import amalgamator as am  # noqa: E402
from amalgamator.bench import wordsources  # noqa: E402

torch.set_num_threads(1)
teachers = [am.Teacher.from_embeddings(load(), name=name) for name, load in wordsources.SOURCES.items()]
start = time.time()
res = am.amalgamate(teachers, None, method="simme", epochs=1, batch_size=512, lr=0.01, weight_decay=0.0, progress=False)
words, train = len(res.student), res.timings["train"]
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(
    f"words {words:,}  wall {time.time() - start:.1f} s  train {train:.1f} s  "
    f"pairs/s {words * 511 / 2 / train:,.0f}  peak RSS {peak_gb:.1f} GB"
)
