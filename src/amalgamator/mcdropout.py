"""Monte-Carlo dropout (Gal & Ghahramani 2016, "Dropout as a Bayesian approximation") in few forwards.

MC dropout reads a teacher's uncertainty from K stochastic passes with only its dropout modules active
(MUKI uses K up to 16). Running the model K times in a Python loop repeats everything before the first
dropout, which does not change between passes, and pays each call's overhead K times, so here:

* **Tiled passes** (plan ``"whole"``): one forward over the input tiled K times, pass-major (rows
  ``[pass 0 | pass 1 | ...]``). Valid because the model is in eval mode apart from dropout (batch norm
  uses its running statistics), so rows are independent.
* **Deterministic prefix** (plan ``"prefix"``): when every dropout module sits after a deterministic
  prefix (a frozen encoder and a dropout head: the model, or its single child, is an ``nn.Sequential``
  whose first children hold no dropout), the prefix runs once and only the rest sees the tiled rows.
* **Plain loop** (plan ``"plain"``): the reference, K forwards of the n rows; the fallback.

The statistics are those of the plain loop, mask for mask: during MC each dropout module draws its masks
from one generator per pass (seeded from the global torch generator at the start of each call, so
``torch.manual_seed`` makes a run reproducible and successive batches get fresh masks). Given a tiled
input, a dropout module splits its rows into the K passes' blocks and draws each block's mask from that
pass's generator, exactly the mask the plain loop draws in that pass. A mask is float32 uniforms below
1 - p (cheaper to draw than ``bernoulli_``), so drawing the K masks costs less than torch's own dropout.
Functional dropout inside a module (``F.dropout(x, training=self.training)``) stays off, as before: only
dropout modules are switched on.

Never a wrong answer: a batched plan is used only after a probe on a few rows (two passes) finds it equal
to the plain loop; a model whose rows are not independent (batch statistics), whose dropout does not see
rows first, or that has randomness of its own falls back to the next plan, and finally to the plain loop.
The verdict is kept per model and input layout. The probe also measures the largest activation per row,
which bounds how many passes share one forward (:data:`MAX_TILED_ROWS`, :data:`MAX_TILED_ELEMENTS`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
import torch.nn as nn

from .teachers import _DROPOUT_TYPES, _logits_of

if TYPE_CHECKING:
    from .teachers import Teacher

#: Most rows one tiled forward holds (K·n above it runs as several forwards of whole passes).
MAX_TILED_ROWS = 8192
#: Most elements the largest activation of one tiled forward holds (2**23 float32 = 32 MiB), as measured
#: per row by the probe: 8192 rows of 1024 features, ~20 rows of a 128-token transformer. A single pass
#: is never split, so a model whose one pass is larger runs one pass per forward.
MAX_TILED_ELEMENTS = 2**23
#: Rows of the probe that checks a batched plan against the plain loop, and its passes' seeds (two passes).
PROBE_ROWS = 4
_PROBE_SEEDS = (1234, 5678)
PROBE_PASSES = len(_PROBE_SEEDS)
#: How closely (probabilities) a batched plan must match the plain loop in the probe; float matmuls over
#: more rows may differ in the last bits, a wrong mask or row mixing differs by far more.
PROBE_ATOL = 1e-5

PLANS = ("auto", "plain", "whole", "prefix")
_ALPHA = 1.7580993408473766  # SELU's -scale·alpha: what alpha dropout sets a dropped unit to (before a, b)
_MISSING = object()


class _Unbatchable(Exception):
    """A batched plan met something it cannot split into passes; the caller falls back."""


# Per-pass masks ---------------------------------------------------------------
class _Passes:
    """Which passes the running forward computes (``start``, ``count``), and one generator per pass.

    ``untiled``: the next dropout call gets the batch's rows once (a dropout module right after the
    prefix) and returns them tiled, masking by broadcast instead of copying the rows K times first."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self.start = 0
        self.count: int | None = None
        self.untiled = False
        self._gens: dict[torch.device, list[torch.Generator]] = {}

    def generators(self, device: torch.device) -> list[torch.Generator]:
        """The running passes' generators on ``device`` (each made once, seeded from its pass's seed)."""
        gens = self._gens.get(device)
        if gens is None:
            gens = self._gens[device] = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        assert self.count is not None
        return gens[self.start : self.start + self.count]


def _noise_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One pass's mask shape for one pass's (batched) input ``shape``, as torch draws it: elementwise, or one
    value per (example, channel) for feature dropout."""
    ndim = len(shape)
    if isinstance(module, nn.Dropout1d) and ndim not in (2, 3):
        raise RuntimeError(f"dropout1d: Expected 2D or 3D input, but received a {ndim}D input.")
    if isinstance(module, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout)):
        if ndim < 2:
            raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
        return (shape[0], shape[1]) + (1,) * (ndim - 2)
    return shape


def _unbatched(module: nn.Module, ndim: int) -> bool:
    """Whether torch reads a channel-dropout input as one example without a batch dimension."""
    return (isinstance(module, nn.Dropout1d) and ndim != 3) or (isinstance(module, nn.Dropout3d) and ndim != 5)


def _dropout(module: nn.Module, passes: _Passes, x: torch.Tensor) -> torch.Tensor:
    """A dropout module's forward during MC: the running passes' blocks of rows, each masked from its own
    pass's generator (a float32 uniform below 1 - p keeps a unit, scaled by 1 / (1 - p); alpha dropout with
    torch's affine correction). Out of place even for ``inplace=True``: the value is the same, and the plain
    loop reuses its input across passes."""
    g, untiled = passes.count, passes.untiled
    passes.untiled = False
    p = float(module.p)
    if g is None or x.ndim == 0 or (not untiled and x.shape[0] % g):
        raise _Unbatchable("a dropout input whose rows do not split into the passes")
    if not module.training or p == 0.0:  # a copy when untiled: the prefix output is replayed, never changed
        return _tile(x, g, copy=True) if untiled else x
    if p >= 1.0:
        return _tile(x, g) * 0.0 if untiled else x * 0.0
    rows = x.shape[0] if untiled else x.shape[0] // g
    if _unbatched(module, x.ndim):
        if g != 1 or untiled:
            raise _Unbatchable("channel dropout of an input without a batch dimension")
        shape: tuple[int, ...] = (x.shape[0],) + (1,) * (x.ndim - 1)
    else:
        shape = _noise_shape(module, (rows, *x.shape[1:]))
    noise = torch.empty((g * shape[0], *shape[1:]), dtype=torch.float32, device=x.device)
    for i, gen in enumerate(passes.generators(x.device)):
        torch.rand(
            shape, generator=gen, dtype=torch.float32, device=x.device, out=noise[i * shape[0] : (i + 1) * shape[0]]
        )
    keep = noise.lt_(1.0 - p)  # 1.0 where the unit is kept, else 0.0
    alpha = isinstance(module, (nn.AlphaDropout, nn.FeatureAlphaDropout))
    if alpha:  # x·(keep·a) + (keep − 1)·α·a + α·a·p, regrouped
        a = 1.0 / math.sqrt((_ALPHA * _ALPHA * p + 1.0) * (1.0 - p))
        kept, shift = x * a + _ALPHA * a, _ALPHA * a * (p - 1.0)
    else:
        kept, shift = x * (1.0 / (1.0 - p)), 0.0
    per_pass = (g, rows, *x.shape[1:])
    if x.dtype == torch.float32 and keep.numel() == g * rows * math.prod(x.shape[1:]):
        out = keep.view(per_pass).mul_(kept.reshape(1 if untiled else g, rows, *x.shape[1:]))  # in place
    else:
        mask = keep.to(x.dtype).view(g, rows, *keep.shape[1:])
        out = kept.reshape(1 if untiled else g, rows, *x.shape[1:]) * mask
    if alpha:
        out = out.add_(shift)
    return out.reshape(g * rows, *x.shape[1:])


@contextlib.contextmanager
def _per_pass_masks(model: nn.Module, passes: _Passes) -> Iterator[None]:
    """Swap every dropout module's forward for :func:`_dropout` on ``passes``; restore after."""
    drops = [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]
    saved = [m.__dict__.get("forward", _MISSING) for m in drops]
    try:
        for m in drops:
            m.forward = functools.partial(_dropout, m, passes)
        yield
    finally:
        for m, was in zip(drops, saved, strict=True):
            if was is _MISSING:
                m.__dict__.pop("forward", None)
            else:
                m.forward = was


# Structure ----------------------------------------------------------------------
def _plain_sequential(m: nn.Module) -> TypeGuard[nn.Sequential]:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _holds_dropout(m: nn.Module) -> bool:
    return any(isinstance(s, _DROPOUT_TYPES) for s in m.modules())


@dataclass
class _Prefix:
    """Where the deterministic prefix ends: ``boundary`` is the first module holding dropout (its input is
    tiled), ``modules`` the Sequential children run before it, ``suffix`` every module that sees tiled rows."""

    boundary: nn.Module
    modules: list[nn.Module]
    suffix: list[nn.Module] = field(default_factory=list)


def find_prefix(model: nn.Module) -> _Prefix | None:
    """The deterministic prefix of a model whose dropout all sits in a tail, or None when unsure.

    The model, or its single child, must be an ``nn.Sequential`` (whose forward is Sequential's own): its
    children before the first that holds dropout are the prefix; when that child is itself such a
    Sequential, its leading dropout-free children join the prefix. A prefix module also used after the
    boundary, or no prefix at all, gives None."""
    top: nn.Sequential | None = model if _plain_sequential(model) else None
    if top is None:
        kids = list(model.children())
        top = kids[0] if len(kids) == 1 and _plain_sequential(kids[0]) else None
    if top is None:
        return None
    prefix: list[nn.Module] = []
    suffix: list[nn.Module] = [model]
    seq = top
    while True:
        kids = list(seq)  # as Sequential runs them (children() would drop a module listed twice)
        j = next((i for i, c in enumerate(kids) if _holds_dropout(c)), None)
        if j is None:
            return None
        prefix += kids[:j]
        for later in kids[j + 1 :]:
            suffix += list(later.modules())
        boundary = kids[j]
        if not _plain_sequential(boundary):
            break
        seq = boundary
    suffix += list(boundary.modules())
    if not prefix or {id(m) for m in prefix} & {id(m) for m in suffix}:
        return None
    return _Prefix(boundary, prefix, suffix)


# Running ------------------------------------------------------------------------
def _call(model: nn.Module, inp: Any) -> Any:
    return model(**inp) if isinstance(inp, dict) else model(inp)


def _rows_of(teacher: Teacher, out: Any, rows: int) -> torch.Tensor:
    """Logits of a batched forward as float, checked to hold ``rows`` rows of the teacher's labels."""
    logits = _logits_of(out)
    if logits.ndim != 2 or logits.shape[0] != rows or logits.shape[1] != len(teacher.labels):
        raise _Unbatchable(f"logits of shape {tuple(logits.shape)} for {rows} tiled rows")
    return logits.float()


def _tile(x: torch.Tensor, g: int, copy: bool = False) -> torch.Tensor:
    """``x`` repeated ``g`` times along rows, pass-major; a copy even for one pass when ``copy``."""
    return x if g == 1 and not copy else x.repeat(g, *([1] * (x.ndim - 1)))


def _tile_input(inp: Any, g: int, n: int) -> Any:
    """The model input repeated ``g`` times, pass-major: a tensor, or a dict of tensors with n rows."""
    if isinstance(inp, torch.Tensor) and inp.ndim >= 1 and inp.shape[0] == n:
        return _tile(inp, g)
    if isinstance(inp, dict):
        out = {}
        for key, value in inp.items():
            if isinstance(value, torch.Tensor):
                if value.ndim == 0 or value.shape[0] != n:
                    raise _Unbatchable(f"input {key!r} does not have one row per example")
                out[key] = _tile(value, g)
            else:
                out[key] = value
        return out
    raise _Unbatchable(f"cannot tile an input of type {type(inp).__name__}")


def _head(inp: Any, r: int) -> Any:
    """The first ``r`` rows of a model input (tensor, dict of tensors, list)."""
    if isinstance(inp, dict):
        return {k: v[:r] if isinstance(v, torch.Tensor) and v.ndim else v for k, v in inp.items()}
    return inp[:r]


def _group(n: int, remaining: int, row_elements: int) -> int:
    """Passes in the next forward: as many as fit :data:`MAX_TILED_ROWS` rows and :data:`MAX_TILED_ELEMENTS`
    elements of the largest activation, at least one."""
    fit = min(MAX_TILED_ROWS // max(n, 1), MAX_TILED_ELEMENTS // max(row_elements * n, 1))
    return max(1, min(remaining, fit))


def _plain(teacher: Teacher, batch: Any, inp: Any, k: int, passes: _Passes) -> torch.Tensor:
    """The reference: K forwards of the n rows, pass ``i`` masked from generator ``i``."""
    out = []
    with _per_pass_masks(teacher.model, passes):
        for i in range(k):
            passes.start, passes.count = i, 1
            out.append(teacher.probabilities(teacher._forward(batch, inp)).cpu())
    return torch.stack(out)


def _whole(teacher: Teacher, inp: Any, n: int, k: int, passes: _Passes, row_elements: int) -> torch.Tensor:
    """The whole model over the input tiled, a group of passes per forward."""
    out, start = [], 0
    with _per_pass_masks(teacher.model, passes):
        while start < k:
            g = _group(n, k - start, row_elements)
            passes.start, passes.count = start, g
            logits = _rows_of(teacher, _call(teacher.model, _tile_input(inp, g, n)), g * n)
            out.append(teacher.probabilities(logits).cpu().view(g, n, -1))
            start += g
    return torch.cat(out)


def _prefixed(
    teacher: Teacher, inp: Any, n: int, k: int, passes: _Passes, row_elements: int, prefix: _Prefix
) -> torch.Tensor:
    """The prefix once on the n rows, the rest over its output tiled. Later groups replay the prefix
    modules' recorded outputs instead of running them again."""
    recorded: dict[int, list[Any]] = {id(m): [] for m in prefix.modules}
    replay: dict[int, Iterator[Any]] = {}

    def boundary_hook(_m: nn.Module, args: tuple) -> tuple | None:
        if tiled[0]:  # the boundary module called again within one forward: its input is tiled already
            return None
        if len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].ndim == 0 or args[0].shape[0] != n:
            raise _Unbatchable("the boundary module is not called on one tensor of the batch's rows")
        tiled[0] = True
        if isinstance(prefix.boundary, _DROPOUT_TYPES):  # it tiles while it masks (no copy of the rows first)
            passes.untiled = True
            return None
        return (_tile(args[0], passes.count or 1, copy=True),)  # a copy: the suffix may change it in place

    def record(m: nn.Module, _args: tuple, output: Any) -> None:
        recorded[id(m)].append(output)

    def replayed(m: nn.Module, *_a: Any, **_kw: Any) -> Any:
        try:
            return next(replay[id(m)])
        except StopIteration:
            raise _Unbatchable("the prefix ran differently from its first forward") from None

    tiled = [False]
    unique = list({id(m): m for m in prefix.modules}.values())
    handles = [prefix.boundary.register_forward_pre_hook(boundary_hook)]
    handles += [m.register_forward_hook(record) for m in unique]
    swapped: list[nn.Module] = []
    out, start = [], 0
    try:
        with _per_pass_masks(teacher.model, passes):
            while start < k:
                g = _group(n, k - start, row_elements)
                passes.start, passes.count = start, g
                tiled[0] = False
                replay.update({key: iter(values) for key, values in recorded.items()})
                logits = _call(teacher.model, inp)
                if not tiled[0]:
                    raise _Unbatchable("the boundary module did not run")
                out.append(teacher.probabilities(_rows_of(teacher, logits, g * n)).cpu().view(g, n, -1))
                start += g
                if not swapped and start < k:  # from now on the prefix replays its first outputs
                    for h in handles[1:]:
                        h.remove()
                    del handles[1:]
                    for m in unique:
                        if "forward" in m.__dict__:
                            raise _Unbatchable("a prefix module with its own forward attribute")
                        m.forward = functools.partial(replayed, m)
                        swapped.append(m)
    finally:
        for h in handles:
            h.remove()
        for m in swapped:
            m.__dict__.pop("forward", None)
    return torch.cat(out)


# Choosing a plan ----------------------------------------------------------------
#: model → {(input layout, dropout rates, module structure): (plan, largest activation elements per row)}
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[str, int]]] = weakref.WeakKeyDictionary()


def _layout(inp: Any) -> tuple:
    if isinstance(inp, torch.Tensor):
        return ("tensor", tuple(inp.shape[1:]), inp.dtype, inp.device)
    if isinstance(inp, dict):
        return ("dict", tuple(sorted((str(k), _layout(v)) for k, v in inp.items())))
    if isinstance(inp, (list, tuple)):
        return ("list",)
    return ("other", type(inp).__name__)


def _devices(model: nn.Module, inp: Any) -> list[int]:
    """CUDA devices the model or its input live on: the probe forks their RNG too."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += list(inp.values()) if isinstance(inp, dict) else [inp]
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


def _run(
    plan: str, teacher: Teacher, batch: Any, inp: Any, n: int, k: int, passes: _Passes, row_elements: int
) -> torch.Tensor:
    if plan == "whole":
        return _whole(teacher, inp, n, k, passes, row_elements)
    if plan == "prefix":
        prefix = find_prefix(teacher.model)
        if prefix is None:
            raise _Unbatchable("the model has no deterministic prefix")
        return _prefixed(teacher, inp, n, k, passes, row_elements, prefix)
    return _plain(teacher, batch, inp, k, passes)


def _largest_row(teacher: Teacher, batch: Any, inp: Any, watched: Sequence[nn.Module], r: int, k: int) -> tuple:
    """The plain loop's probabilities (``k`` passes, fixed seeds) on ``r`` rows, and the largest output per
    row of the ``watched`` modules: what bounds the passes one tiled forward holds."""
    largest = [1]

    def measure(_m: nn.Module, _args: tuple, output: Any) -> None:
        items = output if isinstance(output, (tuple, list)) else [output]
        size = sum(t.numel() for t in items if isinstance(t, torch.Tensor))
        largest[0] = max(largest[0], -(-size // max(r, 1)))

    handles = [m.register_forward_hook(measure) for m in {id(m): m for m in watched}.values()]
    try:
        probs = _plain(teacher, batch, inp, k, _Passes(_PROBE_SEEDS[:k]))
    finally:
        for h in handles:
            h.remove()
    return probs, largest[0]


def _probe(teacher: Teacher, batch: Any, inp: Any, n: int, plan: str) -> tuple[bool, int]:
    """Whether ``plan`` equals the plain loop on a few rows (two passes, fixed seeds, the global RNG left
    as it was; any failure is a no), and the largest activation per row of the modules that see tiled rows."""
    r = min(n, PROBE_ROWS)
    sub_batch, sub_inp = _head(batch, r), _head(inp, r)
    model = teacher.model
    prefix = find_prefix(model) if plan == "prefix" else None
    watched = prefix.suffix if prefix is not None else list(model.modules())
    with torch.random.fork_rng(devices=_devices(model, inp)):
        try:
            plain, largest = _largest_row(teacher, sub_batch, sub_inp, watched, r, PROBE_PASSES)
            fast = _run(plan, teacher, sub_batch, sub_inp, r, PROBE_PASSES, _Passes(_PROBE_SEEDS), 1)
        except Exception:  # any failure of a batched plan means: not this plan
            return False, 1
    same = fast.shape == plain.shape and torch.allclose(fast, plain, rtol=0.0, atol=PROBE_ATOL)
    return bool(same), largest


def _verdicts(teacher: Teacher, inp: Any) -> tuple[dict[tuple, tuple[str, int]], tuple]:
    """The model's kept verdicts, and the key of this input layout, dropout rates and module structure."""
    model = teacher.model
    key = (
        _layout(inp),
        tuple(float(m.p) for m in model.modules() if isinstance(m, _DROPOUT_TYPES)),
        tuple(id(m) for m in model.modules()),
    )
    return _VERDICTS.setdefault(model, {}), key


def _choose(teacher: Teacher, batch: Any, inp: Any, n: int) -> tuple[str, int]:
    """The fastest plan the probe finds equal to the plain loop (prefix, whole, plain), kept per layout."""
    known, key = _verdicts(teacher, inp)
    if key not in known:
        candidates = (["prefix"] if find_prefix(teacher.model) is not None else []) + (
            ["whole"] if isinstance(inp, (torch.Tensor, dict)) else []
        )
        known[key] = ("plain", 1)
        for plan in candidates:
            ok, largest = _probe(teacher, batch, inp, n, plan)
            if ok:
                known[key] = (plan, largest)
                break
    return known[key]


def mc_probabilities(
    teacher: Teacher, batch: Any, inp: Any, k: int, plan: str = "auto", info: dict | None = None
) -> torch.Tensor:
    """Probabilities of ``k`` MC dropout passes, shape (k, n, labels); dropout modules already in train mode.

    ``inp`` is the model's input for ``batch`` (prepared once). ``plan``: ``"auto"`` (the fastest plan the
    probe finds equal to the plain loop, see the module docstring), or one forced, unchecked, for comparison:
    ``"plain"`` (the reference loop), ``"whole"``, ``"prefix"``. ``info`` (a dict) receives the plan used.
    The K per-pass seeds are drawn first from the global torch generator, so every plan draws the same masks."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {PLANS}, not {plan!r}")
    seeds = torch.randint(0, 2**62, (k,)).tolist()
    n = len(batch)
    forced = plan != "auto"
    if not forced:
        plan, largest = _choose(teacher, batch, inp, n) if k > 1 and n > 0 else ("plain", 1)
    elif plan == "plain":
        largest = 1
    else:
        prefix = find_prefix(teacher.model) if plan == "prefix" else None
        watched = prefix.suffix if prefix is not None else list(teacher.model.modules())
        r = min(n, PROBE_ROWS)
        with torch.random.fork_rng(devices=_devices(teacher.model, inp)):
            largest = _largest_row(teacher, _head(batch, r), _head(inp, r), watched, r, 1)[1]
    if info is not None:
        info["plan"] = plan
    if forced or plan == "plain":
        return _run(plan, teacher, batch, inp, n, k, _Passes(seeds), largest)
    try:
        return _run(plan, teacher, batch, inp, n, k, _Passes(seeds), largest)
    except Exception:  # the probe passed on a few rows, this batch did not: the plain loop, from now on
        known, key = _verdicts(teacher, inp)
        known[key] = ("plain", 1)
    if info is not None:
        info["plan"] = "plain"
    return _run("plain", teacher, batch, inp, n, k, _Passes(seeds), 1)
