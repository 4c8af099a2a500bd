"""Teachers: frozen pre-trained models that return logits over their own label names.

A Teacher wraps any ``nn.Module``. It never trains: its parameters are frozen and it
runs in eval mode, except that Monte-Carlo dropout passes switch *only* the dropout
modules to train mode (batch-norm keeps its running statistics). Intermediate features
are read by forward hooks on module paths such as ``"body.3"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .data import Batch, Inputs
from .errors import TeacherError
from .errors import first_line as _first_line
from .errors import shown_path as _shown_path
from .kinds import KIND_NAMES, get_kind
from .labels import LabelSpace

#: Kinds of teacher output (see :mod:`amalgamator.kinds`); ``multitask`` and ``embedding`` are accepted
#: so that their families plug in, and refused by every method until then.
KINDS = KIND_NAMES

#: What a teacher can give the methods that amalgamate it (:attr:`Teacher.capabilities`), each with the words
#: a refusal uses; a method states which it needs (``Method.needs``). The names are generic: the core knows them,
#: not which method needs what.
CAPABILITIES: dict[str, str] = {
    "outputs": "outputs on the data",
    "features": "feature taps",
    "dropout": "dropout for Monte-Carlo passes",
    "gradients": "a live module for gradients",
    "statistics": "feature statistics of its training data (am.fit_statistics)",
}

#: the file beside a saved teacher that holds its feature statistics, loaded with it when present
STATISTICS_FILE = "statistics.safetensors"

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _to_device(inp: Any, device: torch.device) -> Any:
    """A model input (a tensor, or a tokenizer's dict of tensors) on ``device``; anything else as it is."""
    if isinstance(inp, torch.Tensor):
        return inp.to(device)
    if isinstance(inp, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    return inp


def _logits_of(out: Any) -> torch.Tensor:
    """Pull the logits tensor out of whatever a model returns (tensor, HF output, tuple)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    raise TeacherError(f"the model returned {type(out).__name__}; a teacher must return a logits tensor.")


def _feature_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TeacherError(f"a feature tap returned {type(out).__name__}, not a tensor.")


def _spec_of(preprocess: Any) -> Any:
    """What a teacher reads, as far as its preprocessing tells (a student's featurizer does; others do not)."""
    from .models import Featurizer
    from .student import InputSpec, input_spec

    return input_spec(preprocess) if isinstance(preprocess, Featurizer) else InputSpec()


class Teacher:
    """A frozen pre-trained model plus the names of the labels its outputs stand for.

    Args:
        model: returns logits of shape (n, len(labels)) for a batch.
        labels: label names, one per output, in output order.
        name: shown in tables and errors; defaults to ``teacher<k>``.
        kind: one of :data:`KINDS`.
        features: module path(s) whose outputs methods such as CFL/DFA need.
        preprocess: maps a raw batch (tensor or list of str) to the model's input
            (a tensor, or a dict of keyword tensors, e.g. a tokenizer's output).
        statistics: feature statistics of the teacher's training data (a file from
            :meth:`~amalgamator.statistics.FeatureStatistics.save`, or the object), which routing
            methods such as ``mahalanobis`` read; their feature tap is added to ``features``.
    """

    #: feature statistics of the training data (:func:`amalgamator.fit_statistics`), or None
    statistics: Any = None

    def __init__(
        self,
        model: nn.Module,
        labels: Sequence[str],
        name: str | None = None,
        kind: str = "multiclass",
        features: str | Sequence[str] | None = None,
        preprocess: Callable[[Batch], Any] | None = None,
        statistics: Any = None,
    ):
        if not isinstance(model, nn.Module):
            from .student import Student

            if isinstance(model, Student):
                raise TeacherError(
                    f"{f'teacher {name!r}: ' if name is not None else ''}am.Teacher was given an amalgamator Student, "
                    "not a model; use student.as_teacher(name) instead (its labels and featurizer come along)."
                )
            raise TeacherError(f"teacher {name!r}: model must be a torch.nn.Module, not {type(model).__name__}.")
        self.name = str(name) if name is not None else f"teacher@{id(self):x}"
        if kind not in KINDS:
            raise TeacherError(f"teacher {self.name!r}: kind {kind!r} is unknown; use one of {list(KINDS)}.")
        self.kind = kind
        self.labels = LabelSpace(labels, owner=f"teacher {self.name!r}'s label list")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.features: list[str] = [features] if isinstance(features, str) else list(features or [])
        for path in self.features:
            self._module_at(path)
        self.preprocess = preprocess
        self._fp: str | None = None
        #: The folder it was loaded from (``from_pretrained``), else None: made in Python.
        self.folder: Path | None = None
        self._spec = _spec_of(preprocess)
        if statistics is not None:
            self.attach_statistics(statistics)

    def attach_statistics(self, statistics: Any) -> None:
        """Carry feature statistics of the training data (an object or a ``.safetensors`` file), checked
        against this teacher's labels; a feature tap they were computed at is added to ``features``."""
        from .statistics import INPUT, FeatureStatistics

        stats = statistics if isinstance(statistics, FeatureStatistics) else FeatureStatistics.load(statistics)
        if [str(v) for v in stats.labels] != list(self.labels):
            raise TeacherError(
                f"teacher {self.name!r}: its statistics are for labels {stats.labels}, not its labels "
                f"{list(self.labels)}; recompute them with am.fit_statistics(teacher, x_train)."
            )
        if stats.space != INPUT and stats.space not in (self.features or []):
            self._module_at(stats.space)
            self.features = [*self.features, stats.space]
        self.statistics = stats

    def __repr__(self) -> str:
        return f"Teacher(name={self.name!r}, kind={self.kind!r}, labels={len(self.labels)})"

    # Structure ------------------------------------------------------------
    def _module_at(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n][:20]
            raise TeacherError(
                f"teacher {self.name!r} has no module at path {path!r}; available paths include {names}."
            ) from None

    @property
    def has_dropout(self) -> bool:
        return any(isinstance(m, _DROPOUT_TYPES) for m in self.model.modules())

    @property
    def capabilities(self) -> frozenset[str]:
        """What this teacher can give (:data:`CAPABILITIES`), so a method it cannot serve is refused before any
        work: a torch model gives outputs and gradients (it is a live module), feature taps when it was made with
        ``features=``, and dropout for Monte-Carlo passes when its model has dropout modules."""
        caps = {"outputs", "gradients"}
        if self.statistics is not None:
            caps.add("statistics")
        if self.features:
            caps.add("features")
        if self.has_dropout:
            caps.add("dropout")
        return frozenset(caps)

    @property
    def origin(self) -> str | None:
        """What the teacher is when it is not a torch model ("a callable", ...), for messages; None for a torch
        model, whose missing feature taps can still be given (``features=``)."""
        return None

    # Running ---------------------------------------------------------------
    def _prepare(self, batch: Batch) -> Any:
        """The model's input for a raw batch: checked against what the teacher reads, then preprocessed."""
        self._spec.check(batch, "the data", f"teacher {self.name!r}")
        return self.preprocess(batch) if self.preprocess is not None else batch

    def _layout_hint(self) -> str:
        """How to fix data the model rejected: a folder's expected layout, or preprocess= for Python teachers."""
        if self.folder is None:
            return "give data in the layout the teacher was trained on, or pass preprocess= to reshape it."
        layout = self._spec.describe()
        if layout:
            return f"the teacher folder {str(self.folder)!r} reads {layout}; give the data in that layout."
        return f"give the data in the layout the teacher in {str(self.folder)!r} was trained on."

    def _forward(self, batch: Batch, inp: Any = None) -> torch.Tensor:
        """Logits for a batch; ``inp`` is the already preprocessed input, to run the model on it again."""
        if inp is None:
            inp = self._prepare(batch)
        device = getattr(self, "_device", None)
        if device is not None:
            inp = _to_device(inp, device)
        try:
            out = self.model(**inp) if isinstance(inp, dict) else self.model(inp)
        except TeacherError:
            raise
        except Exception as exc:  # the model's own complaint, shortened to one line
            shape = len(batch) if isinstance(batch, list) else tuple(batch.shape)
            raise TeacherError(
                f"teacher {self.name!r} rejected a batch of shape {shape} ({_first_line(exc)}); {self._layout_hint()}"
            ) from None
        logits = _logits_of(out)
        self._check_logits(logits, len(batch))
        return logits.float()

    @contextlib.contextmanager
    def on_device(self, device: str | torch.device | None) -> Iterator[None]:
        """Run the model on ``device`` for a block (the store's teacher pass on a GPU), then move it back where
        it was and free the device memory: a teacher holds an accelerator only while its outputs are stored.
        Outputs always come back to the CPU. ``None`` or the device the model is on: nothing moves."""
        device = torch.device(device) if device is not None else None
        if device is None or not isinstance(self.model, nn.Module):  # a callable, ONNX or scikit-learn teacher
            yield
            return
        params = list(self.model.parameters()) + list(self.model.buffers())
        home = params[0].device if params else torch.device("cpu")
        if device == home:
            yield
            return
        self.model.to(device)
        self._device = device
        try:
            yield
        finally:
            self._device = None
            self.model.to(home)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def _check_logits(self, logits: torch.Tensor, n: int) -> None:
        if logits.ndim != 2 or logits.shape[0] != n:
            raise TeacherError(
                f"teacher {self.name!r} returned logits of shape {tuple(logits.shape)} for {n} examples; "
                f"expected ({n}, {len(self.labels)})."
            )
        if logits.shape[1] != len(self.labels):
            raise TeacherError(
                f"teacher {self.name!r} returns {logits.shape[1]} logits per example but has "
                f"{len(self.labels)} labels; give exactly one label name per output."
            )

    def source(self, inputs: Inputs) -> tuple[Inputs, bool]:
        """What to batch over, and the ``prepared=`` flag for its batches: the whole dataset preprocessed
        once when the preprocessing is a featurizer (it may cache on disk, e.g. sentence embeddings), else
        the raw inputs."""
        transform = getattr(self.preprocess, "transform", None)
        if transform is None or inputs.mapped:  # a pool on disk is preprocessed batch by batch, never whole
            return inputs, False
        self._spec.check(inputs, "the data", f"teacher {self.name!r}")
        return Inputs(transform(inputs), what=f"teacher {self.name!r} features"), True

    @torch.no_grad()
    def run(
        self, batch: Batch, features: bool = False, prepared: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eval-mode logits for a batch, and the outputs of the feature taps if asked.

        ``prepared=True``: the batch is already preprocessed (from :meth:`source`)."""
        self.model.eval()
        caught: dict[str, torch.Tensor] = {}
        handles = []
        if features:
            for path in self.features:

                def hook(_m, _i, out, _p=path):
                    caught[_p] = _feature_of(out).detach().float().cpu()

                handles.append(self._module_at(path).register_forward_hook(hook))
        try:
            logits = self._forward(batch, batch if prepared else None)
        finally:
            for h in handles:
                h.remove()
        return logits.cpu(), caught

    def logits(self, x: Any, batch_size: int = 256) -> torch.Tensor:
        """Eval-mode logits for a whole dataset (array, tensor, Dataset or list of str)."""
        inputs = x if isinstance(x, Inputs) else Inputs(x, what="x")
        source, prepared = self.source(inputs)
        return torch.cat([self.run(b, prepared=prepared)[0] for b in source.batches(batch_size)])

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The teacher's logits as its kind reads them: softmax (multiclass) or a sigmoid per label."""
        return get_kind(self.kind).probabilities(logits)

    def predict(self, x: Any) -> np.ndarray:
        """The teacher's own label names (multiclass: it can only ever name its own labels), or a 0/1
        matrix over its labels (multilabel, chain)."""
        return get_kind(self.kind).predict(self.probabilities(self.logits(x)).numpy(), list(self.labels))

    @torch.no_grad()
    def forced(self, x: torch.Tensor, init_probs: torch.Tensor, init_mask: torch.Tensor) -> torch.Tensor:
        """A chain teacher's logits with some labels forced (ANT's Knowledge Transfer Module, thesis Eq. 26):
        ``init_mask`` (n, labels) marks the forced labels, ``init_probs`` their probabilities. ``x`` is a
        batch as the store ran it (raw, or the teacher featurizer's output when it has one)."""
        if self.kind != "chain":
            raise TeacherError(
                f"teacher {self.name!r} is {self.kind}, not a chain: only chain teachers accept forced labels."
            )
        prepared = getattr(self.preprocess, "transform", None) is not None
        inp = x if prepared else self._prepare(x)
        self.model.eval()
        try:
            out = self.model(inp, init_probs=init_probs, init_mask=init_mask)
        except Exception as exc:
            raise TeacherError(
                f"chain teacher {self.name!r} rejected a forced initial state ({_first_line(exc)}); a chain model "
                "must accept model(x, init_probs=..., init_mask=...)."
            ) from None
        logits = _logits_of(out)
        self._check_logits(logits, len(x))
        return logits.float().cpu()

    @contextlib.contextmanager
    def mc_dropout(self, p: float | None = None) -> Iterator[None]:
        """Switch only dropout modules to train mode (optionally with rate ``p``); restore after."""
        drops = [m for m in self.model.modules() if isinstance(m, _DROPOUT_TYPES)]
        saved = [(m.training, m.p) for m in drops]
        self.model.eval()
        try:
            for m in drops:
                m.train()
                if p is not None:
                    m.p = p
            yield
        finally:
            for m, (was, rate) in zip(drops, saved, strict=True):
                m.train(was)
                m.p = rate
            self.model.eval()

    def mc_probs(self, batch: Batch, k: int, p: float | None = None, prepared: bool = False) -> torch.Tensor:
        """Probabilities (softmax, or sigmoids for multilabel kinds) of ``k`` Monte-Carlo dropout passes
        (MC dropout, Gal & Ghahramani 2016): shape (k, n, len(labels)).

        The passes run batched (:mod:`amalgamator.mcdropout`): one forward over the rows tiled K times,
        and a deterministic prefix (a frozen encoder before a dropout head) only once. Pass ``i`` draws its
        masks from its own generator, seeded from the global torch generator when the call starts, so
        ``torch.manual_seed`` makes the result reproducible and it equals the plain K-pass loop."""
        return self._mc_probs(batch, k, p, prepared)

    @torch.no_grad()
    def _mc_probs(
        self,
        batch: Batch,
        k: int,
        p: float | None = None,
        prepared: bool = False,
        plan: str = "auto",
        info: dict | None = None,
    ) -> torch.Tensor:
        """:meth:`mc_probs` with its plan chosen: ``"plain"`` is the reference K-pass loop; ``"whole"`` and
        ``"prefix"`` force a batched plan unchecked (tests compare them); ``info`` receives the plan used."""
        from .mcdropout import mc_probabilities

        inp = batch if prepared else self._prepare(batch)  # once, not K times
        with self.mc_dropout(p):
            return mc_probabilities(self, batch, inp, k, plan=plan, info=info)

    # Identity --------------------------------------------------------------
    def fingerprint(self) -> str:
        """SHA-256 over the weights, buffers, labels and kind: the store's key for this teacher.

        Cached while the weights stay as they are: changing them in place (``load_state_dict``, an
        optimiser step, ``param.add_``) bumps their version counters, replacing one changes its
        identity, and either makes the next call hash the new weights, so a teacher retrained in
        memory never gets its old outputs from the store."""
        stamp = self._weights_stamp()
        if self._fp is None or stamp != getattr(self, "_fp_stamp", None):
            self._fp = None
            self._fp_stamp = stamp
            h = hashlib.sha256()
            h.update(json.dumps([type(self.model).__qualname__, self.kind, list(self.labels)]).encode())
            for key, val in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(f"{val.dtype}{tuple(val.shape)}".encode())
                h.update(val.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            if self.preprocess is not None and hasattr(self.preprocess, "fingerprint"):
                h.update(self.preprocess.fingerprint().encode())
            self._fp = h.hexdigest()
        return self._fp

    def _weights_stamp(self) -> tuple:
        """Which tensors the model holds and how often each was changed in place (cheap: no hashing)."""
        stamp = []
        for key, val in self.model.state_dict(keep_vars=True).items():
            try:
                version = val._version
            except RuntimeError:  # an inference-mode tensor keeps no version counter
                version = -1
            stamp.append((key, id(val), val.data_ptr(), version))
        return tuple(stamp)

    # Loading ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        name: str | None = None,
        features: str | Sequence[str] | None = None,
        kind: str | None = None,
        statistics: Any = None,
    ) -> Teacher:
        """Load a saved amalgamator student folder, or a Hugging Face sequence-classification folder.

        ``statistics`` (a file or object) are the feature statistics the teacher carries; without it a
        ``statistics.safetensors`` file in the folder is loaded.

        A student folder (``student.json`` + ``model.safetensors``) lets a student serve as a
        teacher in a later amalgamation; its kind is the one ``student.json`` records. A Hugging Face
        folder takes its labels from ``config.id2label``, its kind from ``config.problem_type``
        (``multi_label_classification`` → multilabel) and its tokenizer from the same folder (needs the
        ``text`` extra). ``kind`` states the kind; a folder that records another is refused.
        """
        from .io import file_problem

        problem = file_problem(path)
        if problem is not None:
            raise TeacherError(f"cannot load a teacher from {_shown_path(path)}: {problem}.")
        path = Path(path)
        if path.is_file():
            raise TeacherError(
                f"{str(path)!r} exists but is a file; a teacher is loaded from a folder (an amalgamator student "
                "folder or a Hugging Face checkpoint folder), or made in Python: load the model yourself (e.g. "
                "torch.load(path, weights_only=True) into its module) and wrap it as am.Teacher(model, labels=...)."
            )
        if not path.is_dir():
            raise TeacherError(f"teacher folder {str(path)!r} does not exist.")
        if (path / "student.json").exists():
            from .student import load_student

            st = load_student(path, role="teacher")
            _same_kind(path, kind, st.kind)
            teacher = cls(
                st.network,
                labels=st.labels,
                name=name or path.name,
                kind=st.kind,
                features=features,
                preprocess=st.featurizer,
            )
            teacher._spec = st.input_spec()
            teacher.folder = path
            return _with_statistics(teacher, statistics)
        if (path / "config.json").exists():
            from .models.hf import load_hf_classifier

            model, labels, preprocess = load_hf_classifier(path)
            recorded = _hf_kind(path)
            _same_kind(path, kind, recorded)
            teacher = cls(
                model, labels=labels, name=name or path.name, kind=recorded, features=features, preprocess=preprocess
            )
            teacher.folder = path
            return _with_statistics(teacher, statistics)
        raise TeacherError(
            f"{str(path)!r} is neither an amalgamator student folder (student.json) nor a Hugging Face "
            "checkpoint folder (config.json)."
        )

    @classmethod
    def from_embeddings(cls, source: Any, name: str | None = None, limit: int | None = None) -> EmbeddingTeacher:
        """A word-embedding teacher (kind ``embedding``): a word → vector table with its own vocabulary and width.

        ``source``: a ``{word: vector}`` dict; a word2vec-format file (``.txt``/``.vec``, optionally
        ``.gz``, or ``.bin``), read streaming; a gensim ``KeyedVectors``; a spaCy ``Vocab`` or ``Language``
        (its vectors table); or a :class:`~amalgamator.wordvectors.WordVectors`. ``limit`` keeps the first
        ``limit`` words of a file (word2vec files list frequent words first).
        """
        from .wordvectors import WordVectors, read_word_vectors

        if hasattr(source, "table") and hasattr(source, "words") and not isinstance(source, WordVectors):
            # a MetaEmbedding: a meta-embedding can teach a later one
            source = WordVectors(source.words, source.table, name=name or getattr(source, "method", None))
        if isinstance(source, WordVectors):
            table = source if limit is None else WordVectors(source.words[:limit], source.vectors[:limit], source.name)
        else:
            table = read_word_vectors(source, name=name, limit=limit)
        default = table.name or (Path(source).stem if isinstance(source, (str, Path)) else None)
        return EmbeddingTeacher(table, name=name or default)

    @classmethod
    def from_callable(
        cls,
        fn: Callable[[Any], Any],
        labels: Sequence[str],
        name: str | None = None,
        returns: str = "probs",
        batch_size: int = 256,
        version: str | None = None,
    ) -> Teacher:
        """A Python function as a teacher: ``fn(batch)`` gets a numpy array (a list of str for text data)
        of at most ``batch_size`` rows and returns an array (n, len(labels)).

        ``returns="probs"``: probabilities, turned into logits as ``log(clip(p, 1e-7, 1))``; ``"logits"``:
        used as they are. Every call's result is checked: a wrong shape, NaN/inf, negative probabilities or
        probability rows not summing to 1 (tolerance 1e-3) raise a TeacherError naming the teacher and rows.

        The store key hashes the labels, ``returns``, the name, ``version`` and the function's module,
        qualname and bytecode with its constants. Anything outside the code (a closure's model, a global
        it reads) is not seen: when such a thing changes, give a new ``version`` (or name), or the store
        serves the old function's outputs.
        """
        from .foreign import from_callable

        return from_callable(fn, labels, name=name, returns=returns, batch_size=batch_size, version=version)

    @classmethod
    def from_outputs(
        cls, outputs: Any, labels: Sequence[str], data: Any, name: str | None = None, returns: str = "probs"
    ) -> Teacher:
        """Outputs already computed on ``data`` (array (n, len(labels)), probabilities or logits) as a teacher.

        It serves exactly that data: each row asked for is looked up by content (a hash per row, as the
        data reads after conversion to float32/int64 or text), so any batch, subset or reordering of
        ``data`` works; a row not in ``data`` raises a TeacherError. A row that occurs several times in
        ``data`` gets the outputs of its first occurrence. Probabilities are clipped to [1e-7, 1] before
        the log. The store key hashes the outputs and the data's fingerprint.
        """
        from .foreign import from_outputs

        return from_outputs(outputs, labels, data, name=name, returns=returns)

    @classmethod
    def from_sklearn(
        cls,
        estimator_or_path: Any,
        name: str | None = None,
        trusted: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
    ) -> Teacher:
        """A fitted scikit-learn classifier (or a ``.skops`` file of one) as a teacher.

        Labels are ``classes_`` as strings, in the estimator's order (or ``labels``, one name per class in
        that order). Logits are ``log(predict_proba)`` clipped at 1e-7, or, without ``predict_proba``, the
        ``decision_function`` scores (a binary score ``s`` becomes ``[-s/2, s/2]``).

        A multi-label estimator (``classes_`` a list with one 0/1 class pair per output: a
        ``MultiOutputClassifier``, a forest fit on a 0/1 matrix, a ``ClassifierChain``) gives a ``multilabel``
        teacher: one label per output, named by ``labels`` (scikit-learn records no output names; default
        ``"0"``, ``"1"``, ...: give names when its labels are to meet other teachers'), and per label the logit
        ``log(p / (1 - p))`` of the positive class's probability ``p`` clipped to ``[1e-7, 1 - 1e-7]`` (so
        within ±16.1), or ``decision_function`` scores as they are. An output that saw one class only in
        training has probability 1 when that class is 1/True/"yes", else 0.

        A path must be a ``.skops`` file (needs ``skops``): its scikit-learn, numpy and scipy types are
        trusted; any other type is refused unless listed in ``trusted``. Pickles (``.pkl``, ``.pickle``,
        ``.joblib``) are refused: loading one can run arbitrary code; save with ``skops.io.dump`` instead.

        The store key is the file's SHA-256 for a path; for an estimator, a hash of ``skops.io.dumps``
        (its member contents) when skops is installed, else of ``repr(get_params())``, ``classes_`` and
        the fitted array attributes (``coef_``, ...).
        """
        from .foreign import from_sklearn

        return from_sklearn(estimator_or_path, name=name, trusted=trusted, labels=labels)

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        labels: Sequence[str] | None = None,
        name: str | None = None,
        output: str | None = None,
        returns: str | None = None,
    ) -> Teacher:
        """An ONNX file run with onnxruntime (needs ``onnxruntime``) as a teacher, fed on its first input.

        ``output``: the output to read; by default the first float tensor output, preferring one named like
        ``probabilities`` (a skl2onnx classifier needs ``options={"zipmap": False}``). ``returns``: ``"probs"``
        or ``"logits"``; by default probs when the output's name contains "prob". ``labels``: by default the
        class labels the graph records (skl2onnx's ``classlabels_*``, read with ``onnx``). The store key is
        the file's SHA-256 with the output and ``returns``. The session runs with ``$AMALGAMATOR_THREADS``
        intra-op threads, else one per two cores (as ``amalgamate``'s torch passes), not onnxruntime's every core.
        """
        from .foreign import from_onnx

        return from_onnx(path, labels=labels, name=name, output=output, returns=returns)


class _Table(nn.Module):
    """An embedding table as a module with no parameters (the rows stay in the table, never copied)."""

    def __init__(self, table: Any):
        super().__init__()
        self.table = table

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.table.vectors[rows.numpy()])


class EmbeddingTeacher(Teacher):
    """A word → vector table as a teacher (kind ``embedding``); see :meth:`Teacher.from_embeddings`.

    It gives vectors for words, not logits for examples: only the embedding methods (``simme``,
    ``average``, ``concat``, ``aaeme``, ``caeme``, ``daeme``) use it. ``labels`` names its vector axes.
    """

    def __init__(self, table: Any, name: str | None = None):
        self.table = table
        self.name = str(name) if name is not None else f"embeddings@{id(self):x}"
        self.kind = "embedding"
        self.labels = LabelSpace([f"d{i}" for i in range(table.dim)], owner=f"teacher {self.name!r}'s vector axes")
        self.model = _Table(table).eval()
        self.features = []
        self.preprocess = None
        self._fp = None
        self.folder = None
        self._spec = _spec_of(None)

    def __repr__(self) -> str:
        return f"EmbeddingTeacher(name={self.name!r}, words={len(self.table)}, dim={self.table.dim})"

    @property
    def capabilities(self) -> frozenset[str]:
        """A table gives its vectors (its outputs) and nothing else."""
        return frozenset({"outputs"})

    @property
    def origin(self) -> str | None:
        return "a word-embedding table"

    @property
    def vocabulary(self) -> list[str]:
        return self.table.words

    def __contains__(self, word: object) -> bool:
        return word in self.table

    def fingerprint(self) -> str:
        return self.table.fingerprint()

    def vectors(self, words: Sequence[str]) -> np.ndarray:
        """One row per word, zeros for a word outside this teacher's vocabulary."""
        rows = self.table.rows(words)
        out = np.zeros((len(rows), self.table.dim), dtype=np.float32)
        out[rows >= 0] = self.table.vectors[rows[rows >= 0]]
        return out

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise TeacherError(
            f"teacher {self.name!r} is a word-embedding table: it gives vectors for words, not outputs for "
            "examples; amalgamate it with an embedding method (simme, average, concat, aaeme, caeme, daeme)."
        )

    logits = run


def _with_statistics(teacher: Teacher, statistics: Any) -> Teacher:
    """Attach the given statistics, else the folder's ``statistics.safetensors`` when there is one."""
    found = teacher.folder / STATISTICS_FILE if teacher.folder is not None else None
    if statistics is None and found is not None and found.exists():
        statistics = found
    if statistics is not None:
        teacher.attach_statistics(statistics)
    return teacher


def _hf_kind(folder: Path) -> str:
    """A Hugging Face classifier's kind from ``config.problem_type`` (multiclass unless multi-label)."""
    try:
        problem = json.loads((folder / "config.json").read_text()).get("problem_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return "multiclass"
    return "multilabel" if problem == "multi_label_classification" else "multiclass"


def _same_kind(folder: Path, stated: str | None, recorded: str) -> None:
    """A kind stated by the user (a recipe's ``kind:``) must be the folder's own."""
    if stated is not None and stated != recorded:
        raise TeacherError(
            f"teacher folder {str(folder)!r} holds a {recorded} model but kind {stated!r} was given; "
            f"drop kind or set it to {recorded!r}."
        )
