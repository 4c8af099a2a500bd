"""The multi-task CNN families (models/families.py) and their presets "plainnet", "resnet", "densenet"."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.bench.fashion_pairs import fashion_pairs
from amalgamator.data import Inputs
from amalgamator.errors import DataError
from amalgamator.models import FAMILIES, PRESETS, build
from amalgamator.models.families import BlockNet, block_widths, n_parameters
from tests.test_fashion_pairs import synthetic_items, write_idx

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["plainnet", "resnet", "densenet"]
# Parameter counts at the defaults (width 8, 4 blocks, one input channel): stated range, checked below.
DEFAULT_PARAMS = (50_000, 120_000)


def family(name: str, seed: int = 0, **options) -> BlockNet:
    torch.manual_seed(seed)
    return FAMILIES[name](1, **options)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [56, 28])
def test_output_and_block_shapes(name, side):
    net = family(name).eval()
    x = torch.rand(3, 1, side, side)
    assert net(x).shape == (3, net.out_dim) and net.out_dim == 64
    sizes = [side, side // 2, side // 4, -(-side // 8)]  # 56: 56, 28, 14, 7; 28: 28, 14, 7, 4
    outs = net.block_outputs(x)
    assert [tuple(o.shape[1:]) for o in outs] == [(w, s, s) for w, s in zip(net.widths, sizes, strict=True)]


@pytest.mark.parametrize("name", NAMES)
def test_blocks_compose_to_forward(name):
    net = family(name).eval()  # eval: BatchNorm running stats and no dropout, so both paths are deterministic
    x = torch.rand(4, 1, 56, 56)
    h = x
    for block in net.blocks:
        h = block(h)
    feature = h.mean(dim=(2, 3))  # global average pooling, flattened
    torch.testing.assert_close(feature, net(x))
    torch.testing.assert_close(net.readout(net.block_outputs(x)[-1]), net(x))


def test_parameter_counts():
    counts = {name: n_parameters(family(name)) for name in NAMES}
    wide = {name: n_parameters(family(name, width=16)) for name in NAMES}
    print("parameters at the defaults:", counts, "| width 16:", wide)
    assert all(DEFAULT_PARAMS[0] <= c <= DEFAULT_PARAMS[1] for c in counts.values()), counts
    assert all(200_000 <= c <= 400_000 for c in wide.values()), wide
    assert max(counts.values()) / min(counts.values()) < 1.3  # comparable sizes, so comparisons are fair


def test_options_and_determinism():
    assert block_widths(8, 6) == [8, 16, 32, 64, 64, 64]
    deep = family("resnet", blocks=6, layers=2, width=4).eval()
    assert len(deep.blocks) == 6 and deep(torch.rand(2, 1, 28, 28)).shape == (2, 32)  # 1×1 maps still pool
    small = family("densenet", blocks=2, growth=3, width=6)
    assert small.out_dim == 12 and small(torch.rand(2, 1, 56, 56)).shape == (2, 12)
    assert family("plainnet", layers=1).blocks[0][0].in_channels == 1
    three = FAMILIES["plainnet"](3).eval()
    assert three(torch.rand(2, 3, 32, 32)).shape == (2, 64)
    for name in NAMES:
        a, b = family(name, seed=7).state_dict(), family(name, seed=7).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        c = family(name, seed=8).state_dict()
        assert any(not torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError):
        family("plainnet", layers=0)


@pytest.mark.parametrize("name", NAMES)
def test_presets_build_save_and_load(name, tmp_path):
    assert name in PRESETS
    x = np.random.default_rng(0).random((12, 1, 56, 56), dtype=np.float32)
    feat, net, opts = build(name, Inputs(x), {"width": 4})
    assert opts["image_shape"] == [1, 56, 56] and opts["width"] == 4 and opts["blocks"] == 4
    assert isinstance(net, FAMILIES[name]) and net.out_dim == 32
    _, net_flat, opts_flat = build(name, Inputs(x.reshape(12, -1)), {"width": 4})  # flat square rows
    assert opts_flat == opts and n_parameters(net_flat) == n_parameters(net)
    tasks = [f"task{i}" for i in range(5)]
    st = am.Student.create(name, Inputs(x.reshape(12, -1)), tasks, kind="multitask", options={"width": 4})
    st.save(tmp_path / "st")
    back = am.load_student(tmp_path / "st")
    assert back.architecture == st.architecture and back.labels == tasks and back.kind == "multitask"
    np.testing.assert_array_equal(back.predict_proba(x), st.predict_proba(x))
    np.testing.assert_array_equal(back.predict_proba(x.reshape(12, -1)), st.predict_proba(x))


def test_preset_options_are_checked():
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(DataError, match="blocks"):
        build("resnet", Inputs(x), {"block": 3})
    with pytest.raises(DataError, match="growth"):
        build("resnet", Inputs(x), {"growth": 3})  # densenet only
    with pytest.raises(DataError, match="width"):
        build("plainnet", Inputs(x), {"width": 0})
    with pytest.raises(DataError, match="plainnet student needs images"):
        build("plainnet", Inputs(np.zeros((2, 50), dtype=np.float32)))
    _, net, opts = build("densenet", Inputs(x), {"growth": 2, "layers": 1})
    assert opts["growth"] == 2 and net.blocks[0][0].body[0].out_channels == 2


def test_existing_cnn_preset_unchanged():
    x = np.zeros((2, 64), dtype=np.float32)
    _, net, opts = build("cnn", Inputs(x))
    assert opts == {"width": 32, "out_dim": 128, "dropout": 0.1, "image_shape": [1, 8, 8]}
    assert type(net).__name__ == "SmallCNN"


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor]:
    """32 FashionPairs images from the real builder, over a small synthetic Fashion-MNIST (no Debian package
    needed, the user's data cache untouched)."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for stem, n in (("train", 100), ("t10k", 20)):
        items, classes = synthetic_items(n, rng)
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", items)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", classes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMALGAMATOR_FASHION_MNIST", str(folder))
        mp.setenv("AMALGAMATOR_CACHE", str(tmp_path_factory.mktemp("cache")))
        x, y, _ = fashion_pairs(32, 0)
    return torch.from_numpy(x), torch.from_numpy(y).float()


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_reduce_bce(name, tiny_pairs):
    x, y = tiny_pairs
    net = family(name)
    head = nn.Linear(net.out_dim, 10)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-2)
    start = time.perf_counter()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(head(net(x)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    print(f"{name}: BCE {losses[0]:.3f} -> {losses[-1]:.3f} in {seconds:.2f} s")
    assert losses[-1] < 0.8 * losses[0]
    assert seconds < 5
