"""Batched Monte-Carlo dropout (issue 14, item 4): the tiled and prefix-reusing computations equal the plain
K-pass loop, mask for mask, and fall back to it whenever batching would change the answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator import mcdropout
from amalgamator.data import Inputs
from amalgamator.store import TeacherStore, mc_piece

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-6  # float matmuls over K·n rows instead of n may differ in the last bit


def _teacher(model: nn.Module, labels: int = 4, **kw) -> am.Teacher:
    torch.manual_seed(0)  # the same weights whatever ran before
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return am.Teacher(model, labels=[f"l{i}" for i in range(labels)], name="t", **kw)


def _mc(t: am.Teacher, x, k: int = 6, p: float | None = None, plan: str = "auto", seed: int = 7, **kw):
    """``t._mc_probs`` under ``torch.manual_seed(seed)``, and the plan it used."""
    torch.manual_seed(seed)
    info: dict = {}
    return t._mc_probs(x, k, p, plan=plan, info=info, **kw), info["plan"]


def _assert_plans_agree(t: am.Teacher, x, k: int = 6, p: float | None = None, plans=("whole", "prefix"), **kw):
    ref, _ = _mc(t, x, k, p, plan="plain", **kw)
    n = x.shape[0] if isinstance(x, torch.Tensor) else len(x)
    assert ref.shape == (k, n, len(t.labels))
    for plan in plans:
        got, used = _mc(t, x, k, p, plan=plan, **kw)
        assert used == plan and got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=0.0, atol=ATOL)
    return ref


class _Count(nn.Module):
    """Wraps a module and counts its calls."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_mlp_with_one_dropout_equals_the_plain_loop():
    t = _teacher(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4)))
    x = torch.randn(30, 8)
    ref = _assert_plans_agree(t, x)
    auto, plan = _mc(t, x)
    assert plan == "prefix"
    torch.testing.assert_close(auto, ref, rtol=0.0, atol=ATOL)
    torch.manual_seed(7)
    torch.testing.assert_close(t.mc_probs(x, 6), ref, rtol=0.0, atol=ATOL)  # the public call: same thing
    torch.testing.assert_close(ref.sum(-1), torch.ones(6, 30))
    assert not torch.allclose(ref[0], ref[1])  # the passes really are stochastic
    assert not t.model[2].training and "forward" not in t.model[2].__dict__  # restored


def test_two_dropouts_at_different_points_equal_the_plain_loop():
    m = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4)
    )
    t = _teacher(m)
    x = torch.randn(25, 8)
    ref = _assert_plans_agree(t, x, k=8)
    assert torch.equal(_mc(t, x, k=8)[0], _mc(t, x, k=8)[0])  # same seed, same result
    # each dropout draws its own masks: the same net with the second dropout removed gives other values
    assert not torch.allclose(ref, _mc(_teacher(nn.Sequential(*list(m)[:5], nn.Linear(16, 4))), x, k=8)[0])


@pytest.mark.parametrize("shape", ["nested", "custom head", "wrapper"])
def test_the_deterministic_prefix_runs_once(shape, monkeypatch):
    enc = _Count(nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU()))
    if shape == "nested":  # the boundary is the Dropout inside the head Sequential
        m = nn.Sequential(enc, nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 5)))
    elif shape == "custom head":  # the boundary is a module of its own: its input is tiled

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.drop, self.b = nn.Linear(32, 32), nn.Dropout(0.3), nn.Linear(32, 5)

            def forward(self, h: torch.Tensor) -> torch.Tensor:
                return self.b(self.drop(torch.relu(self.a(h))) + h)

        m = nn.Sequential(enc, Head())
    else:  # the Sequential is the single child of a model with its own forward

        class Wrapper(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(enc, nn.Dropout(0.2), nn.Linear(32, 5))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x * 0.5) * 2.0

        m = Wrapper()
    t = _teacher(m, labels=5)
    x = torch.randn(20, 16)
    ref = _assert_plans_agree(t, x, k=8)
    _mc(t, x, k=8)  # the first call probes the plan on a few rows
    enc.calls = 0
    auto, plan = _mc(t, x, k=8)
    assert plan == "prefix" and enc.calls == 1
    torch.testing.assert_close(auto, ref, rtol=0.0, atol=ATOL)
    # passes in groups (at most 3 passes of 20 rows per forward): the prefix still runs once
    monkeypatch.setattr(mcdropout, "MAX_TILED_ROWS", 60)
    enc.calls = 0
    grouped, _ = _mc(t, x, k=8)
    assert enc.calls == 1
    torch.testing.assert_close(grouped, ref, rtol=0.0, atol=ATOL)


def test_shared_modules_in_the_prefix(monkeypatch):
    act = nn.Tanh()  # used twice in the prefix: replayed in call order when the passes run in groups
    t = _teacher(nn.Sequential(nn.Linear(8, 16), act, nn.Linear(16, 16), act, nn.Dropout(0.3), nn.Linear(16, 3)), 3)
    x = torch.randn(10, 8)
    monkeypatch.setattr(mcdropout, "MAX_TILED_ROWS", 20)
    _assert_plans_agree(t, x, k=5)
    assert _mc(t, x, k=5)[1] == "prefix"
    # a prefix module also used after the dropout: no prefix (its replay would be wrong there), the whole model
    u = _teacher(nn.Sequential(nn.Linear(8, 16), act, nn.Dropout(0.3), nn.Linear(16, 16), act, nn.Linear(16, 3)), 3)
    assert mcdropout.find_prefix(u.model) is None
    _assert_plans_agree(u, x, k=5, plans=("whole",))
    assert _mc(u, x, k=5)[1] == "whole"


def test_a_custom_module_tiles_the_whole_model(monkeypatch):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.drop, self.b = nn.Linear(8, 16), nn.Dropout(0.4), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x))
            return self.b(h + self.drop(h))

    t = _teacher(Residual())
    x = torch.randn(12, 8)
    assert mcdropout.find_prefix(t.model) is None
    ref = _assert_plans_agree(t, x, plans=("whole",))
    auto, plan = _mc(t, x)
    assert plan == "whole"
    torch.testing.assert_close(auto, ref, rtol=0.0, atol=ATOL)
    monkeypatch.setattr(mcdropout, "MAX_TILED_ROWS", 24)  # two passes per forward
    torch.testing.assert_close(_mc(t, x, plan="whole")[0], ref, rtol=0.0, atol=ATOL)


def test_rows_that_depend_on_each_other_fall_back_to_the_plain_loop():
    class Centred(nn.Module):  # subtracts the batch mean: tiling K passes would mix them
        def __init__(self):
            super().__init__()
            self.a, self.drop, self.b = nn.Linear(8, 16), nn.Dropout(0.4), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(torch.relu(self.a(x)))
            return self.b(h - h.mean(0))

    t = _teacher(Centred())
    x = torch.randn(10, 8)
    ref, _ = _mc(t, x, plan="plain")
    assert not torch.allclose(_mc(t, x, plan="whole")[0], ref, atol=1e-3)  # what the probe guards against
    auto, plan = _mc(t, x)
    assert plan == "plain" and torch.equal(auto, ref)


def test_dropout_over_a_dimension_other_than_rows_falls_back_to_the_plain_loop():
    class SeqFirst(nn.Module):  # dropout sees (positions, rows, features): its rows are not the batch's
        def __init__(self):
            super().__init__()
            self.drop, self.b = nn.Dropout(0.5), nn.Linear(24, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(x.view(len(x), 4, 6).transpose(0, 1)).transpose(0, 1)
            return self.b(h.reshape(len(x), 24))

    t = _teacher(SeqFirst())
    x = torch.randn(10, 24)
    ref, _ = _mc(t, x, k=4, plan="plain")
    assert not torch.allclose(_mc(t, x, k=4, plan="whole")[0], ref, atol=1e-3)
    auto, plan = _mc(t, x, k=4)
    assert plan == "plain" and torch.equal(auto, ref)


def test_p_override_and_restore():
    t = _teacher(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4)))
    x = torch.randn(20, 8)
    low = _assert_plans_agree(t, x, p=0.05)
    assert t.model[2].p == 0.5
    high = _mc(t, x, p=0.5)[0]
    assert low.std(0).mean() < high.std(0).mean()  # less dropout, less spread between passes
    zero = _mc(t, x, p=0.0)[0]
    torch.testing.assert_close(zero, t.probabilities(t.run(x)[0]).expand(6, -1, -1), rtol=0.0, atol=ATOL)


def test_multilabel_teacher_gives_sigmoids():
    t = _teacher(nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 4)), kind="multilabel")
    x = torch.randn(15, 8)
    ref = _assert_plans_agree(t, x)
    assert not torch.allclose(ref.sum(-1), torch.ones(6, 15))
    torch.manual_seed(7)
    logits = t._mc_probs(x, 6, plan="plain").logit()
    torch.testing.assert_close(torch.sigmoid(logits), ref, rtol=0.0, atol=ATOL)


def test_text_teacher_with_preprocess_and_featurizer():
    words = ["rain", "goal", "cake", "disk", "wind", "pass"]

    def bag(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[float(t.split().count(w)) for w in words] for t in texts])

    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    texts = ["rain and wind", "goal pass goal", "cake", "disk disk rain", "wind pass cake", "goal"]
    t = _teacher(m, labels=3, preprocess=bag)  # raw text, preprocessed once per call
    ref = _assert_plans_agree(t, texts)
    assert _mc(t, texts)[1] == "prefix"
    prepared = _assert_plans_agree(t, bag(texts), prepared=True)  # what the store passes for a featurizer
    torch.testing.assert_close(prepared, ref, rtol=0.0, atol=ATOL)


def test_text_model_that_reads_strings_reuses_its_prefix():
    class Embed(nn.Module):  # the prefix takes the raw strings: only the prefix plan can batch it
        def forward(self, texts: list[str]) -> torch.Tensor:
            return torch.tensor([[len(s), s.count("a"), s.count(" ")] for s in texts], dtype=torch.float32)

    t = _teacher(nn.Sequential(Embed(), nn.Linear(3, 8), nn.Dropout(0.4), nn.Linear(8, 2)), labels=2)
    texts = ["a cat", "banana", "hello there", "aa a a"]
    ref = _assert_plans_agree(t, texts, plans=("prefix",))
    auto, plan = _mc(t, texts)
    assert plan == "prefix"
    torch.testing.assert_close(auto, ref, rtol=0.0, atol=ATOL)


@pytest.mark.parametrize("drop", [nn.Dropout2d(0.3), nn.FeatureAlphaDropout(0.3), nn.AlphaDropout(0.2)])
def test_conv_teacher_with_channel_dropout(drop):
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), drop, nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    t = _teacher(m, labels=3)
    x = torch.randn(9, 1, 6, 6)
    ref = _assert_plans_agree(t, x, k=5)
    assert _mc(t, x, k=5)[1] == "prefix"
    assert not torch.allclose(ref[0], ref[1])


def _masked(module: nn.Module, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    passes = mcdropout._Passes([seed])
    passes.count = 1
    return mcdropout._dropout(module.train(), passes, x)


def test_masks_have_torch_dropout_semantics():
    out = _masked(nn.Dropout(0.25), torch.ones(400, 50))
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 4 / 3]))
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.01
    chan = _masked(nn.Dropout2d(0.5), torch.ones(50, 8, 3, 3))  # whole channels, per example
    per_channel = chan.flatten(2)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))
    assert 0.4 < float((per_channel[..., 0] == 0).float().mean()) < 0.6
    unbatched = _masked(nn.Dropout1d(0.5), torch.ones(40, 7))  # (C, L): one value per channel
    assert torch.equal(unbatched.amin(1), unbatched.amax(1))
    for alpha in (nn.AlphaDropout(0.3), nn.FeatureAlphaDropout(0.3)):  # torch's affine values, same statistics
        zeros = torch.zeros(300, 20, 4)
        ours, theirs = _masked(alpha, zeros).unique(), alpha.train()(zeros).unique()
        torch.testing.assert_close(ours, theirs)
        unit = torch.randn(2000, 50)
        kept = _masked(nn.AlphaDropout(0.3), unit)
        assert abs(float(kept.mean())) < 0.02 and abs(float(kept.std()) - 1.0) < 0.02


def test_seeded_like_the_store_and_fresh_for_each_batch():
    t = _teacher(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4)))
    x = torch.randn(16, 8)
    torch.manual_seed(3)
    first, second = t.mc_probs(x, 4), t.mc_probs(x, 4)
    torch.manual_seed(3)
    assert torch.equal(t.mc_probs(x, 4), first)
    assert not torch.allclose(first, second)  # the next batch draws other masks
    assert t.mc_probs(x, 1).shape == (1, 16, 4)


def test_store_entries_carry_the_version_and_the_per_batch_means(tmp_path):
    piece = mc_piece(4, 0.1, seed=3)
    assert piece == "mc/k=4,p=0.1,seed=3,v=2"
    t = _teacher(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4)))
    x = torch.randn(40, 8)
    got = TeacherStore(tmp_path, batch_size=16).get(t, Inputs(x), [piece])[piece]
    torch.manual_seed(3)
    want = torch.cat([t._mc_probs(x[i : i + 16], 4, 0.1, plan="plain").mean(0) for i in range(0, 40, 16)])
    torch.testing.assert_close(got, want, rtol=0.0, atol=ATOL)


def test_hugging_face_teacher_with_dict_inputs():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    model = transformers.BertForSequenceClassification(cfg)

    def tokens(texts: list[str]) -> dict[str, torch.Tensor]:
        ids = [[1 + (hash(w) % 49) for w in s.split()][:6] for s in texts]
        width = max(map(len, ids))
        return {
            "input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        }

    t = am.Teacher(model, labels=["a", "b", "c"], name="bert", preprocess=tokens)
    texts = ["the cat sat", "a dog ran far away", "rain", "sun and wind today"]
    ref = _assert_plans_agree(t, texts, k=4, plans=("whole",))
    auto, plan = _mc(t, texts, k=4)
    assert plan == "whole"
    torch.testing.assert_close(auto, ref, rtol=0.0, atol=ATOL)
