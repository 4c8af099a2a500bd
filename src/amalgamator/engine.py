"""The one training loop, on Hugging Face Accelerate, shared by every method.

Determinism: the data order comes from Accelerate's seedable sampler (``data_seed`` = the
run's seed, advanced with ``set_epoch``), and every epoch reseeds the global RNGs with
``seed + epoch`` before it starts. An epoch therefore depends only on the weights and
optimiser state at its start, which is exactly what a checkpoint holds: resuming after
epoch k gives bit-identical weights to an uninterrupted run (on CPU).

Checkpoints (one per epoch, ``out/checkpoints/epoch-KKK/``): ``model.safetensors``
(student network and method modules), ``optimizer.pt`` and ``scheduler.pt`` (plain
tensors and numbers, read back with ``torch.load(weights_only=True)``) and ``state.json``
(the run's fingerprint, the history and the SHA-256 of each file). A checkpoint is written into a
hidden temporary folder, flushed to disk and renamed into place whole, so a crash never leaves a
half checkpoint under an ``epoch-KKK`` name; one that fails its checksums anyway (a disk that lost
writes) is skipped with a warning and the run resumes from the one before.
Multi-process or multi-GPU training needs only ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader, Dataset

from . import durable, faults, progress
from .errors import AmalgamatorError
from .errors import first_line as _first_line
from .methods.base import Method, StudentOutput, tap_outputs
from .rows import hash_bytes, rows_fingerprint

PRECISIONS = ("no", "bf16", "fp16")
RANK_SEED_STRIDE = 1_000_003  # a process's dropout seed: seed + epoch + stride × rank (rank 0: as one process)
FP16_ON_CPU = "mixed precision 'fp16' needs a GPU and this run is on the CPU; use 'bf16' (CPU autocast) or 'no'."

#: fewer optimiser steps than this warn (20 epochs of a 176-row pool make 40); the warning suggests ENOUGH_STEPS
FEW_STEPS, ENOUGH_STEPS = 200, 300


@dataclass
class TrainConfig:
    """Training options with defaults that work for small students on CPU."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    warmup: float = 0.0  # fraction of steps with linear warm-up, then cosine decay to 0
    grad_clip: float | None = 5.0
    progress: bool | None = None
    keep_checkpoints: int = 3  # the latest epochs kept on disk; resume needs only the last
    mixed_precision: str = "no"  # "bf16" or "fp16": the student's forward under autocast (Accelerate)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "seed", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise AmalgamatorError(f"{name} must be a whole number, got {value!r}.")
        for name in ("lr", "weight_decay", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise AmalgamatorError(f"{name} must be a finite number, got {value!r}.")
        if self.epochs < 1:
            raise AmalgamatorError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise AmalgamatorError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not self.lr > 0:
            raise AmalgamatorError(f"lr must be positive, got {self.lr}.")
        if self.weight_decay < 0:
            raise AmalgamatorError(f"weight_decay must be at least 0, got {self.weight_decay}.")
        if self.mixed_precision not in PRECISIONS:
            raise AmalgamatorError(
                f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}."
            )
        if self.mixed_precision == "fp16" and not torch.cuda.is_available():  # checked before any teacher runs
            raise AmalgamatorError(FP16_ON_CPU)
        if self.keep_checkpoints < 1:
            raise AmalgamatorError(
                f"keep_checkpoints must be at least 1 (resume needs the last), got {self.keep_checkpoints}."
            )


@dataclass
class History:
    """Per-epoch mean loss and seconds; ``resumed_from`` is the epoch a resume started after."""

    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def train_seconds(self) -> float:
        """Seconds over every epoch, including those a resumed run read from its checkpoints."""
        return float(sum(self.seconds))

    @property
    def this_call_seconds(self) -> float:
        """Seconds spent training in this call: after a resume, only the epochs trained now."""
        return float(sum(self.seconds[self.resumed_from or 0 :]))


class _Rows(Dataset):
    """Training rows: featurized inputs plus the method's per-row targets."""

    def __init__(self, x: torch.Tensor, targets: dict[str, torch.Tensor], rows: np.ndarray):
        self.x, self.targets, self.rows = x, targets, torch.as_tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.rows[i]
        item = {"x": self.x[r], "index": r}
        item.update({k: v[r] for k, v in self.targets.items()})
        return item

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch sliced from the tensors at once (the DataLoader calls this when it exists): the same
        rows in the same order as collating ``__getitem__`` row by row, without a Python call per row."""
        return self[torch.as_tensor(idx, dtype=torch.long)]

    def batch(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of the rows at ``positions`` (indices into ``rows``)."""
        return self[positions]


def _batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for batches ``_Rows.__getitems__`` already assembled."""
    return batch


class _Trainable(nn.Module):
    """The student network and the method's extra modules, trained (and saved) together."""

    def __init__(self, network: nn.Module, extra: nn.Module | None):
        super().__init__()
        self.network = network
        self.extra = extra if extra is not None else nn.Module()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.forward_features(x)


def _fingerprint(
    cfg: TrainConfig, method: Method, network: nn.Module, x: torch.Tensor, targets: dict[str, torch.Tensor], rows
) -> str:
    """Identity of one engine pass, so that a resume refuses checkpoints of any other pass: the options,
    the method, the network's structure, and the whole content of the inputs, targets and rows (the
    targets carry the teachers: a teacher retrained in place changes them)."""
    h = hashlib.sha256()
    settings = train_identity(cfg)
    h.update(json.dumps([settings, method.name, method.options], sort_keys=True, default=str).encode())
    h.update(json.dumps([[k, list(v.shape)] for k, v in network.state_dict().items()]).encode())
    for name, tensor in [("x", x), *sorted(targets.items())]:
        if isinstance(tensor, torch.Tensor):
            h.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
            hash_bytes(h, tensor)
        else:  # a row view (a pool on disk, sparse rows): its own identity
            h.update(f"{name}{rows_fingerprint(tensor)}".encode())
    h.update(np.ascontiguousarray(rows, dtype=np.int64).reshape(-1).data)  # the bytes ``tobytes`` gave, uncopied
    return h.hexdigest()[:24]


def train_identity(cfg: TrainConfig) -> dict[str, Any]:
    """The training options that decide the result (not progress or how many checkpoints are kept); full
    precision is left out, so runs recorded before mixed precision existed keep their identity."""
    skip = ("progress", "keep_checkpoints") + (("mixed_precision",) if cfg.mixed_precision == "no" else ())
    return {k: v for k, v in asdict(cfg).items() if k not in skip}


def process_state() -> PartialState:
    """This process's place in a run (rank 0 of 1 unless launched by ``--processes``, ``torchrun`` or ``accelerate
    launch``). Accelerate sees CPU-only processes as one distributed run (gloo) only when told ``cpu=True``, so
    every part of a run asks here rather than building its own state (the first construction's options win)."""
    return PartialState(cpu=not torch.cuda.is_available())


def _lr_lambda(total: int, warmup: float):
    warm = int(total * warmup)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress_ = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return f


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    """Published checkpoints, oldest first (temporary folders are hidden: ``.epoch-KKK.*.tmp``)."""
    return sorted(p for p in ckpt_dir.glob("epoch-*") if (p / "state.json").exists())


def fit(
    network: nn.Module,
    method: Method,
    x: torch.Tensor,
    targets: dict[str, torch.Tensor],
    rows: np.ndarray,
    cfg: TrainConfig,
    out: Path | None = None,
    resume: bool = False,
) -> History:
    """Train ``network`` (and ``method.modules()``) on ``rows`` of ``x`` with ``method.loss``."""
    cfg.validate()
    if len(rows) == 0:
        raise AmalgamatorError(f"method {method.name!r} has no rows to train on; give it data (or labels).")
    run_id = _fingerprint(cfg, method, network, x, targets, rows)
    extra = method.modules()
    accelerator, per_process = _accelerator(cfg, has_extra=extra is not None)
    set_seed(cfg.seed)
    model = _Trainable(network, extra)
    loader = DataLoader(_Rows(x, targets, rows), batch_size=per_process, shuffle=True, collate_fn=_batch_as_is)
    options = {"foreach": True, **getattr(method, "optimizer_options", {})}  # the multi-tensor path, not CPU's loop
    if options.get("fused"):
        options.pop("foreach")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **options)
    total_steps = cfg.epochs * len(loader)
    if total_steps < FEW_STEPS and not resume:
        per_epoch = len(loader)
        progress.warn(
            f"{method.name}: only {total_steps} optimiser steps ({cfg.epochs} epochs × {per_epoch} batches of up to "
            f"{cfg.batch_size} rows): too few to learn much. Give epochs={-(-ENOUGH_STEPS // per_epoch)} "
            f"or steps={ENOUGH_STEPS}."
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, cfg.warmup))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    method_on_device(method, accelerator.device)
    step_fn = _plain_step(accelerator, model, optimizer, cfg.grad_clip) or _accelerate_step(
        accelerator, model, optimizer, cfg.grad_clip
    )
    batches = _plain_batches(accelerator, loader.dataset, cfg.batch_size, cfg.seed) or _loader_batches(loader)

    mixed = cfg.mixed_precision != "no"
    history = History()
    start = 0
    ckpt_dir = out / "checkpoints" if out is not None else None
    if resume:
        if ckpt_dir is None:
            raise AmalgamatorError("--resume needs --out: the folder whose checkpoints to continue from.")
        loaded = _resume(ckpt_dir, accelerator, model, optimizer, scheduler, run_id)
        if loaded is not None:
            start, history = loaded
            history.resumed_from = start
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + epoch + RANK_SEED_STRIDE * accelerator.process_index)  # the training RNG
        # (dropout) per epoch, so a resume replays it; each process its own stream, or the halves of a batch
        # would share one dropout mask. The sampler has its own seeded generator (accelerate's set_seed probes
        # devices: ~3 ms per call).
        model.train()
        total, count = 0.0, 0
        with progress.bar(f"epoch {epoch + 1}/{cfg.epochs}", len(loader), cfg.progress) as advance:
            for step, batch in enumerate(batches(epoch)):
                with tap_outputs(network, method.student_taps) as taps:
                    logits, feats = model(batch["x"])
                if mixed:  # losses in float32 whatever precision the forward ran in
                    logits, feats = logits.float(), feats.float()
                    taps = {k: v.float() for k, v in taps.items()}
                loss = method.loss(batch, StudentOutput(logits, feats, dict(taps)))
                value = loss.item()
                if not math.isfinite(value):
                    raise AmalgamatorError(
                        f"the {method.name!r} loss became {value} at epoch {epoch + 1}, step {step + 1}; "
                        "lower the learning rate (lr=), or check the method options and the teachers' outputs."
                    )
                step_fn(loss)
                scheduler.step()
                total += value * len(batch["x"])
                count += len(batch["x"])
                advance(loss=total / count)
        if accelerator.num_processes > 1:  # the mean over every process's rows, the same on each
            sums = accelerator.reduce(torch.tensor([total, float(count)], device=accelerator.device), "sum")
            total, count = float(sums[0]), int(sums[1])
        history.loss.append(total / max(count, 1))
        history.seconds.append(time.perf_counter() - t0)
        if accelerator.is_main_process:
            progress.epoch_done(epoch + 1, cfg.epochs, history.loss[-1], history.seconds[-1], cfg.progress, method.name)
        if ckpt_dir is not None:
            _save_checkpoint(ckpt_dir, epoch, accelerator, model, optimizer, scheduler, run_id, history)
            if accelerator.is_main_process:
                _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    if accelerator.device.type != "cpu":  # the student and the method's modules back where the rest of the run is
        trained.to("cpu")
    network.load_state_dict(trained.network.state_dict())
    network.eval()
    return history


def _accelerator(cfg: TrainConfig, has_extra: bool) -> tuple[Accelerator, int]:
    """The Accelerator of one engine pass and the batch each process takes.

    Across processes (DDP) each global batch of ``batch_size`` rows is split between them, so the steps, the
    learning-rate schedule and the averaged gradients are those of one process; a batch size the processes do
    not divide gives each ``batch_size // processes`` rows. A method's own modules need not take part in every
    step, which DDP must be told."""
    from accelerate.utils import DistributedDataParallelKwargs

    processes = process_state().num_processes
    split = processes > 1 and cfg.batch_size % processes == 0
    per_process = cfg.batch_size if processes == 1 or split else max(1, cfg.batch_size // processes)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if has_extra and processes > 1 else []
    data = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed, split_batches=split)
    _allow_precision(cfg.mixed_precision)
    try:
        accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.mixed_precision,
            dataloader_config=data,
            step_scheduler_with_optimizer=False,
            kwargs_handlers=handlers,
        )
    except ValueError as exc:  # e.g. fp16 without a GPU
        raise AmalgamatorError(
            f"mixed precision {cfg.mixed_precision!r} is not available here ({_first_line(exc)}); on a CPU use "
            "bf16 or no mixed precision, fp16 needs a GPU."
        ) from None
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":  # Accelerate would train in fp32, silently
        raise AmalgamatorError(FP16_ON_CPU)
    return accelerator, per_process


def _allow_precision(precision: str) -> None:
    """Let this run use ``precision`` although an earlier run in this Python process used another.

    Accelerate keeps one process-wide AcceleratorState and refuses an Accelerator with another mixed precision
    ("restart your runtime"), which would make a notebook's second run fail. Its precision state is cleared
    (its private ``_reset_state``, which the distributed PartialState survives) only when the precision changes."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", precision)) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def _plain_step(accelerator: Accelerator, model: nn.Module, optimizer: Any, clip: float | None):
    """The optimiser step as plain PyTorch calls when Accelerate would add nothing to them: no gradient
    scaler (fp16), no DeepSpeed, Megatron, FSDP or XLA, no gradient accumulation. Accelerate's wrappers
    then reduce to exactly these calls (loss.backward(); torch's clip_grad_norm_; the wrapped optimiser's
    step), but pay per step for checks such as an uncached ``importlib.util.find_spec("lomo_optim")`` twice
    per ``AcceleratedOptimizer.step`` (accelerate 1.15; ~10 % of a small model's step). None otherwise."""
    plain_types = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if (accelerator.scaler is not None or accelerator.distributed_type not in plain_types
            or accelerator.gradient_accumulation_steps != 1):  # fmt: skip
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    inner = getattr(optimizer, "optimizer", optimizer)

    def step(loss: torch.Tensor) -> None:
        inner.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        inner.step()

    return step


def _plain_batches(accelerator: Accelerator, rows: _Rows, batch_size: int, seed: int):
    """In one process, an epoch's batches sliced straight from the tensors, in exactly the order of
    Accelerate's seedable sampler (``torch.randperm`` from a generator seeded with seed + epoch) without its
    DataLoader wrapper's per-batch work. None in a distributed run, where Accelerate shards the batches."""
    if accelerator.num_processes != 1:
        return None

    device = accelerator.device

    def batches(epoch: int):
        torch.empty((), dtype=torch.int64).random_()  # the draw a DataLoader iterator makes (its base seed), so
        # the dropout stream, and so the student, stay bit-identical to the DataLoader path
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, len(order), batch_size):
            yield on_device(rows.batch(order[start : start + batch_size]), device)

    return batches


def on_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch on the training device (as Accelerate's DataLoader would put it); on the CPU, the batch itself."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def method_on_device(method: Method, device: torch.device) -> None:
    """Move the tensors a method computed in ``prepare`` and keeps as attributes (class priors, a routing matrix)
    to the training device, so that its ``loss`` never has to: methods know nothing of devices."""
    if device.type == "cpu":
        return
    for name, value in list(vars(method).items()):
        if isinstance(value, torch.Tensor) and value.device != device:
            setattr(method, name, value.to(device))


def _loader_batches(loader: Any):
    """An epoch's batches from Accelerate's prepared DataLoader (distributed runs)."""

    def batches(epoch: int):
        loader.set_epoch(epoch)
        return iter(loader)

    return batches


def _accelerate_step(accelerator: Accelerator, model: nn.Module, optimizer: Any, clip: float | None):
    """The optimiser step through Accelerate (mixed precision, DeepSpeed, FSDP, XLA)."""
    params = list(model.parameters())

    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if clip:
            accelerator.clip_grad_norm_(params, clip)
        optimizer.step()

    return step


CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt")


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Keep the latest ``keep`` complete checkpoints: 30 epochs of a 1 MB student are not 97 MB of disk.

    An old checkpoint is first renamed to a hidden name, then deleted: a crash half way through leaves
    a hidden leftover (removed here next time), never a half-deleted ``epoch-KKK``. The out folder's
    lock guarantees no other process writes here."""
    for old in _checkpoints(ckpt_dir)[:-keep]:
        doomed = ckpt_dir / f".{old.name}.{os.getpid()}-{secrets.token_hex(3)}{durable.TMP_SUFFIX}"
        with contextlib.suppress(OSError):
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    _remove_leftovers(ckpt_dir)
    faults.point("ckpt-pruned", ckpt_dir)


def _remove_leftovers(ckpt_dir: Path) -> None:
    """Delete the hidden temporary folders of a run that was killed while saving or pruning."""
    mine = f".{os.getpid()}-"
    for left in ckpt_dir.glob(f".epoch-*{durable.TMP_SUFFIX}"):
        if mine not in left.name:
            shutil.rmtree(left, ignore_errors=True)


def _save_checkpoint(ckpt_dir, epoch, accelerator, model, optimizer, scheduler, run_id, history) -> None:
    """Publish the checkpoint of ``epoch`` (0-based) whole: temporary folder, fsync, rename."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    name = f"epoch-{epoch + 1:03d}"
    final = ckpt_dir / name
    state = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    blobs = {"model.safetensors": safetensors_bytes(state)}
    for file, obj in (("optimizer.pt", optimizer.state_dict()), ("scheduler.pt", scheduler.state_dict())):
        buf = io.BytesIO()
        accelerator.save(obj, buf)
        blobs[file] = buf.getvalue()
    meta = {"epoch": epoch + 1, "run": run_id, "loss": history.loss, "seconds": history.seconds,
            "files": {file: hashlib.sha256(b).hexdigest() for file, b in blobs.items()}}  # fmt: skip
    blobs["state.json"] = json.dumps(meta, indent=1).encode()  # written last
    tmp = ckpt_dir / f".{name}.{os.getpid()}-{secrets.token_hex(3)}{durable.TMP_SUFFIX}"
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for file, data in blobs.items():
            if file == "state.json":
                faults.point("ckpt-files", tmp)
            durable.write_file(tmp / file, data)
        durable.sync_folder(tmp)
        faults.point("ckpt-publish", tmp)
        if final.exists():  # an unusable checkpoint of this epoch that the resume skipped
            shutil.rmtree(final)
        os.rename(tmp, final)
        durable.sync_folder(ckpt_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        if durable.is_full(exc):
            needed = sum(len(b) for b in blobs.values())
            raise AmalgamatorError(
                f"{durable.space_message(ckpt_dir, f'the checkpoint of epoch {epoch + 1}', needed)}. Free some "
                f"space, then resume (resume=True / --resume): the run continues after epoch {epoch}."
            ) from None
        raise AmalgamatorError(
            f"cannot write the checkpoint of epoch {epoch + 1} to {ckpt_dir} ({exc.strerror or exc}); "
            "give an out folder you can write to."
        ) from None
    faults.point("ckpt-saved", final / "model.safetensors")


class _Unusable(Exception):
    """A checkpoint that cannot be resumed from (incomplete or damaged); the message says why."""


def _read_checkpoint(path: Path, run_id: str) -> tuple[dict, dict, Any, Any]:
    """A checkpoint's state.json, weights, optimizer and scheduler states, every file checked first."""
    try:
        meta = json.loads((path / "state.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("state.json is not a mapping")
    except (OSError, ValueError) as exc:
        raise _Unusable(f"unreadable ({type(exc).__name__})") from None
    if meta.get("run") != run_id:
        raise AmalgamatorError(
            f"checkpoint {path} was made by a run with other settings or data; "
            "resume with the same teachers, data and options, or start fresh in another out folder."
        )
    raw, sums = {}, meta.get("files") if isinstance(meta.get("files"), dict) else {}
    for file in CHECKPOINT_FILES:
        try:
            raw[file] = (path / file).read_bytes()
        except OSError as exc:
            raise _Unusable(f"incomplete ({file}: {exc.strerror or exc})") from None
        want = sums.get(file)  # checkpoints written before checksums have none
        if want is not None and hashlib.sha256(raw[file]).hexdigest() != want:
            raise _Unusable(f"damaged ({file} fails its checksum)")
    try:
        weights = safetensors_load(raw["model.safetensors"])
        opt = torch.load(io.BytesIO(raw["optimizer.pt"]), weights_only=True, map_location="cpu")
        sched = torch.load(io.BytesIO(raw["scheduler.pt"]), weights_only=True, map_location="cpu")
        epoch, loss, seconds = int(meta["epoch"]), list(meta["loss"]), list(meta["seconds"])
    except Exception as exc:  # noqa: BLE001  (a damaged legacy checkpoint: any reader error)
        raise _Unusable(f"unreadable ({type(exc).__name__})") from None
    return {"epoch": epoch, "loss": loss, "seconds": seconds}, weights, opt, sched


def _resume(ckpt_dir, accelerator, model, optimizer, scheduler, run_id) -> tuple[int, History] | None:
    """Load the newest usable checkpoint; an unusable one is reported and the one before it tried."""
    if accelerator.is_main_process and ckpt_dir.is_dir():
        _remove_leftovers(ckpt_dir)
    skipped = 0
    for path in reversed(_checkpoints(ckpt_dir)):
        try:
            meta, weights, opt, sched = _read_checkpoint(path, run_id)
        except _Unusable as why:
            progress.warn(f"checkpoint {path} is {why}; resuming from the one before it.")
            skipped += 1
            continue
        accelerator.unwrap_model(model).load_state_dict(weights)
        optimizer.load_state_dict(opt)
        scheduler.load_state_dict(sched)
        return meta["epoch"], History(loss=meta["loss"], seconds=meta["seconds"])
    if skipped:
        progress.warn(f"no usable checkpoint in {ckpt_dir}: training from the first epoch.")
    return None
