"""Student and teacher architectures, and the presets a user can name as ``student="..."``.

A preset builder turns training inputs and options into ``(featurizer, backbone,
resolved_options)``. The resolved options are saved in ``student.json``, so the same
builder rebuilds the architecture on load without seeing any data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch.nn as nn
from pydantic import BeforeValidator, Field, StrictBool
from typing_extensions import TypedDict

from ..data import Inputs
from ..errors import DataError, MethodError, check_options, suggest
from .cnn import SmallCNN
from .families import FAMILIES, BlockNet, DenseNet, PlainNet, ResNet
from .featurize import FEATURIZERS, Featurizer, Identity
from .mlp import MLP
from .sequence import SequenceCNN, SequenceLSTM, cnn1d_preset, lstm_preset

Builder = Callable[[Inputs | None, dict[str, Any], Featurizer | None], tuple[Featurizer, nn.Module, dict[str, Any]]]
PRESETS: dict[str, Builder] = {}

# Student options, checked by name and range before anything trains (pydantic types).
Width = Annotated[int, Field(ge=1)]
Widths = Annotated[list[Width], BeforeValidator(lambda v: [v] if isinstance(v, int) else v)]
Rate = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
ImageShape = Annotated[list[Width], Field(min_length=3, max_length=3)]
_SEQUENCE = {"dropout": Rate, "standardize": StrictBool, "in_channels": Width}
_FAMILY = {"width": Width, "blocks": Width, "layers": Width, "dropout": Rate, "image_shape": ImageShape}
PRESET_OPTIONS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": Widths, "dropout": Rate, "in_dim": Width},
    "cnn": {
        "width": Width,
        "out_dim": Width,
        "dropout": Rate,
        "block_dropout": Rate,
        "image_shape": ImageShape,
    },
    "text": {"encoder": str, "hidden": Widths, "dropout": Rate, "max_features": Width, "in_dim": Width},
    "lstm": {"hidden": Width, "layers": Width, "bidirectional": StrictBool, **_SEQUENCE},
    "cnn1d": {"width": Width, "out_dim": Width, "kernel": Width, **_SEQUENCE},
    # The multi-task families (models/families.py): width = first block's channels, blocks = how many,
    # layers = convolutions per block (plainnet), residual units per block (resnet), dense layers per block
    # (densenet, whose growth rate is fixed with `growth`, default half of each block's width).
    "plainnet": dict(_FAMILY),
    "resnet": dict(_FAMILY),
    "densenet": {**_FAMILY, "growth": Width},
}


def check_student_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """A preset's options checked by name and value: a misspelt key is an error, never a silent default."""
    if name not in PRESETS:
        raise MethodError(f"unknown student preset {name!r}; presets are {sorted(PRESETS)}.{suggest(name, PRESETS)}")
    return check_options(f"student {name!r}", options or {}, PRESET_OPTIONS.get(name, {}), DataError)


def preset(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        PRESETS[name] = fn
        return fn

    return deco


def _numeric(inputs: Inputs | None, preset_name: str) -> None:
    if inputs is not None and inputs.is_text:
        raise DataError(
            f"student preset {preset_name!r} reads numeric arrays but the data is text; use student='text'."
        )


@preset("mlp")
def _mlp(inputs, options, featurizer):
    _numeric(inputs, "mlp")
    opts = {"hidden": [256, 256], "dropout": 0.1, **options}
    if "in_dim" not in opts:
        opts["in_dim"] = int(math.prod(inputs.shape[1:]))
    feat = featurizer or Identity()
    return feat, MLP(opts["in_dim"], opts["hidden"], opts["dropout"]), opts


def image_shape(shape: tuple[int, ...], preset_name: str = "cnn") -> list[int]:
    """(C, H, W) for rows of a given shape: flat squares, (H, W) or (C, H, W)."""
    row = shape[1:]
    if len(row) == 1:
        side = math.isqrt(row[0])
        if side * side != row[0]:
            raise DataError(
                f"the {preset_name} student needs images; rows have {row[0]} values, not a square. "
                "Reshape to (n, C, H, W) or pass student_options={'image_shape': [C, H, W]}."
            )
        return [1, side, side]
    if len(row) == 2:
        return [1, *row]
    if len(row) == 3:
        return list(row)
    raise DataError(f"the {preset_name} student needs (n, C, H, W) images; got rows of shape {row}.")


@preset("cnn")
def _cnn(inputs, options, featurizer):
    _numeric(inputs, "cnn")
    opts = {"width": 32, "out_dim": 128, "dropout": 0.1, **options}
    if "image_shape" not in opts:
        opts["image_shape"] = image_shape(inputs.shape)
    feat = featurizer or Identity(opts["image_shape"])
    # block_dropout (dropout after each conv block) is opt-in and never added to the resolved options by
    # default: students saved without it keep their student.json and state-dict keys.
    net = SmallCNN(
        opts["image_shape"][0], opts["width"], opts["out_dim"], opts["dropout"], opts.get("block_dropout", 0.0)
    )
    return feat, net, opts


# Defaults per family: 74k, 77k and 85k parameters for one input channel (depths chosen to keep them comparable).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "plainnet": {"width": 8, "blocks": 4, "layers": 2, "dropout": 0.1},
    "resnet": {"width": 8, "blocks": 4, "layers": 1, "dropout": 0.1},
    "densenet": {"width": 8, "blocks": 4, "layers": 3, "dropout": 0.1},
}


def _family(name: str) -> Builder:
    """The builder of one CNN family: options as ``_cnn``'s, the image shape read from the inputs."""

    def build_family(inputs, options, featurizer):
        _numeric(inputs, name)
        opts = {**FAMILY_DEFAULTS[name], **options}
        if "image_shape" not in opts:
            opts["image_shape"] = image_shape(inputs.shape, name)
        feat = featurizer or Identity(opts["image_shape"])
        kwargs = {k: opts[k] for k in ("width", "blocks", "layers", "dropout")}
        if "growth" in opts:  # densenet only (the options check refuses it elsewhere)
            kwargs["growth"] = opts["growth"]
        return feat, FAMILIES[name](opts["image_shape"][0], **kwargs), opts

    return build_family


for _name in FAMILIES:
    PRESETS[_name] = _family(_name)


@preset("text")
def _text(inputs, options, featurizer):
    from .text import text_preset

    return text_preset(inputs, options, featurizer)


PRESETS["lstm"] = lstm_preset
PRESETS["cnn1d"] = cnn1d_preset


# The branched network TargetNet assembles (models/branched.py, `001` Eq. 10). Not a student to train from
# scratch: its options come from method "targetnet", and are what load_student rebuilds it from.
class BranchOption(TypedDict):
    at: Width  # the branch-out block S (1-based)
    hidden: Width  # the filter's hidden width
    teacher: str  # the teacher whose blocks S+1..B and head rows the branch holds (for reading student.json)
    tasks: list[str]  # the tasks it answers (ditto)


PRESET_OPTIONS["branched"] = {
    "base": Literal["plainnet", "resnet", "densenet"],
    "base_options": dict[str, Any],
    "branches": Annotated[list[BranchOption], Field(min_length=1)],
}


@preset("branched")
def _branched(inputs, options, featurizer):
    from .branched import BranchedNet

    if "base" not in options or "branches" not in options:
        raise DataError(
            "student preset 'branched' is the model method 'targetnet' assembles, not one to train from scratch; "
            "train with method='targetnet' and a block student such as student='plainnet'."
        )
    base, branches = options["base"], [dict(b) for b in options["branches"]]
    feat, _, base_options = build(base, inputs, options.get("base_options"), featurizer)
    net = BranchedNet(lambda: build(base, None, base_options, feat)[1], [(b["at"], b["hidden"]) for b in branches])
    return feat, net, {"base": base, "base_options": base_options, "branches": branches}


def featurizer_class(kind: str) -> type[Featurizer]:
    """The featurizer class saved under ``kind``; the text featurizers register on first need."""
    if kind not in FEATURIZERS:
        from . import text  # noqa: F401  (registers "tfidf" and "sentence-encoder")
    if kind not in FEATURIZERS:
        raise DataError(f"unknown featurizer {kind!r} in student.json; known: {sorted(FEATURIZERS)}.")
    return FEATURIZERS[kind]


def build(
    name: str, inputs: Inputs | None, options: dict[str, Any] | None = None, featurizer: Featurizer | None = None
):
    return PRESETS[name](inputs, check_student_options(name, options), featurizer)


__all__ = [
    "FAMILIES",
    "FEATURIZERS",
    "BlockNet",
    "DenseNet",
    "PlainNet",
    "ResNet",
    "Featurizer",
    "Identity",
    "MLP",
    "PRESETS",
    "SequenceCNN",
    "SequenceLSTM",
    "SmallCNN",
    "build",
    "featurizer_class",
    "image_shape",
]
