"""Hugging Face sequence classifiers as teachers: safetensors weights, labels from ``id2label``.

Only safetensors checkpoints are loaded (a ``pytorch_model.bin`` is a pickle and could run
code), always from local files with the hub offline. The tokenizer comes from the same
folder and is part of the teacher's fingerprint, since it changes what the model sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import Batch
from ..errors import TeacherError
from ..errors import first_line as _first_line

MAX_LENGTH = 256
_INSTALL = "pip install 'amalgamator[text]'"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


class HFLogits(nn.Module):
    """Wraps a ``*ForSequenceClassification`` model so that ``forward(**tokens)`` returns plain logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs).logits


class HFPreprocess:
    """Tokenizes a list of strings into the keyword tensors the model reads."""

    def __init__(self, tokenizer: Any, folder: Path, max_length: int = MAX_LENGTH):
        self.tokenizer = tokenizer
        self.folder = folder
        self.max_length = max_length
        self._fp: str | None = None

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not isinstance(batch, list):
            raise TeacherError("this Hugging Face teacher reads text; give the data as a list of strings.")
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return dict(enc)  # a plain dict: Teacher calls model(**inputs) only for dicts

    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer files (or its vocabulary) and max_length."""
        if self._fp is None:
            h = hashlib.sha256(f"hf-tokenizer|{self.max_length}".encode())
            files = [self.folder / name for name in _TOKENIZER_FILES if (self.folder / name).is_file()]
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            if not files:
                h.update(json.dumps(self.tokenizer.get_vocab(), sort_keys=True).encode())
            self._fp = h.hexdigest()
        return self._fp


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own loading bars: amalgamator draws its own progress, on terminals only."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _labels(folder: Path) -> list[str]:
    """Label names from config.json's ``id2label``, ordered by index; it must be explicit and complete."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{folder / 'config.json'} is unreadable ({_first_line(exc)}).") from None
    id2label = cfg.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise TeacherError(
            f"{folder / 'config.json'} has no id2label; set model.config.id2label = {{0: 'name', ...}} and re-save."
        )
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise TeacherError(f"{folder / 'config.json'}: id2label keys must be integers, got {list(id2label)}.") from None
    if sorted(by_index) != list(range(len(by_index))):
        raise TeacherError(f"{folder / 'config.json'}: id2label indices must be 0..{len(by_index) - 1}.")
    if all(re.fullmatch(r"LABEL_\d+", name) for name in by_index.values()):
        raise TeacherError(
            f"{folder / 'config.json'} has only the placeholder names LABEL_0..; teachers are merged by label "
            "name, so set model.config.id2label to the real names and re-save."
        )
    num = cfg.get("num_labels", len(by_index))
    if num != len(by_index):
        raise TeacherError(
            f"{folder / 'config.json'} declares num_labels={num} but id2label names {len(by_index)} labels; "
            "give one name per output."
        )
    return [by_index[i] for i in range(len(by_index))]


def load_hf_classifier(path: str | Path) -> tuple[nn.Module, list[str], HFPreprocess]:
    """A local Hugging Face sequence-classification folder as (logits module, label names, tokenizer step)."""
    folder = Path(path)
    os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers (and huggingface_hub) read it
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise TeacherError(f"loading a Hugging Face teacher needs transformers: {_INSTALL}") from None
    has_safetensors = any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
    if not has_safetensors:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
            raise TeacherError(
                f"{str(folder)!r} has only pickle weights (.bin), which amalgamator refuses to load; "
                "re-save them as safetensors: model.save_pretrained(dir, safe_serialization=True)."
            )
        raise TeacherError(f"{str(folder)!r} has no model.safetensors; save the model there with save_pretrained.")
    labels = _labels(folder)
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True
            )
    except Exception as exc:  # transformers' complaint, shortened to one line
        raise TeacherError(f"cannot load the classifier in {str(folder)!r} ({_first_line(exc)}).") from None
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise TeacherError(
            f"cannot load a tokenizer from {str(folder)!r} ({_first_line(exc)}); "
            "save it beside the model: tokenizer.save_pretrained(dir)."
        ) from None
    n_out = getattr(model.config, "num_labels", len(labels))
    if n_out != len(labels):
        raise TeacherError(
            f"{str(folder)!r}: the model has {n_out} outputs but id2label names {len(labels)}; fix config.json."
        )
    limits = [MAX_LENGTH, getattr(model.config, "max_position_embeddings", MAX_LENGTH)]
    if isinstance(getattr(tokenizer, "model_max_length", None), int) and tokenizer.model_max_length < 10**6:
        limits.append(tokenizer.model_max_length)
    model = model.float().eval()
    return HFLogits(model), labels, HFPreprocess(tokenizer, folder, max_length=min(limits))
