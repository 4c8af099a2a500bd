"""Order-free classifier chain (thesis `000` Eq. 29–36) and its forced initial state (Eq. 26)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from amalgamator.errors import DataError
from amalgamator.models.chain import ChainClassifier, ChainHead

pytestmark = pytest.mark.usefixtures("one_thread")  # one CPU thread (conftest)


def and_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels y0 = [x0 > 0], y1 = [x1 > 0], y2 = y0 AND y1 (the dependency), y3 = [x2 > 0.5]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y0, y1 = x[:, 0] > 0, x[:, 1] > 0
    return x, torch.stack([y0, y1, y0 & y1, x[:, 2] > 0.5], 1).float()


def train(steps: int, forced_rate: float = 0.0, seed: int = 0) -> ChainClassifier:
    """Full-batch Adam with BCE on the final logits (Eq. 37).

    With ``forced_rate`` > 0 each step forces a random subset of labels to their true values and
    scores only the other labels, so the chain learns to read the forced state.
    """
    torch.manual_seed(seed)
    x, y = and_problem(256, seed=1)
    model = ChainClassifier(6, 4, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        opt.zero_grad()
        mask = torch.rand(y.shape, generator=g) < forced_rate
        logits = model(x, init_probs=y, init_mask=mask) if forced_rate else model(x)
        F.binary_cross_entropy_with_logits(logits[~mask], y[~mask]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> ChainClassifier:
    return train(200)


def is_permutation(order: torch.Tensor, k: torch.Tensor) -> bool:
    """Each row's selection steps are exactly 1..k[row] (ignoring zeros for forced labels)."""
    for row, count in zip(order, k.tolist(), strict=True):
        if sorted(row[row > 0].tolist()) != list(range(1, count + 1)):
            return False
    return True


def test_shapes_and_a_big_batch_is_fast():
    torch.manual_seed(0)
    head = ChainHead(8, 10, hidden=16)
    x = torch.randn(500, 8)
    start = time.perf_counter()
    with torch.no_grad():
        logits = head(x)
    assert time.perf_counter() - start < 2.0
    assert logits.shape == (500, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    clf = ChainClassifier(8, 3, hidden=8, body=(16, 12))
    assert clf(torch.randn(7, 8)).shape == (7, 3)
    assert clf.order(torch.randn(7, 8)).shape == (7, 3)
    assert ChainHead(8, 4)(torch.zeros(0, 8)).shape == (0, 4)


def test_every_label_is_selected_exactly_once():
    torch.manual_seed(0)
    head = ChainHead(5, 9, hidden=16)
    x = torch.randn(300, 5) * 3
    order = head.order(x)
    assert is_permutation(order, torch.full((300,), 9))
    # The selection depends on the row: an order-free chain, not one fixed order.
    assert len({tuple(r) for r in order.tolist()}) > 1


def test_final_logit_is_the_logit_at_the_selecting_step(trained):
    """The first selected label is the one with the highest probability at step 1 (Eq. 32 + selection)."""
    x, _ = and_problem(64, seed=5)
    head, feats = trained.head, trained.body(x)
    with torch.no_grad():
        final, order = head(feats), head.order(feats)
        n = feats.shape[0]
        l0 = head.init(feats)
        h, _ = head.cell(torch.cat([feats, l0, torch.zeros_like(l0)], 1))
        step1 = head.out(h)
    first = (order == 1).float().argmax(1)
    assert torch.equal(first, step1.argmax(1))
    assert torch.allclose(final[torch.arange(n), first], step1[torch.arange(n), first], atol=1e-6)


def test_forced_labels_keep_their_logit_and_rows_need_different_step_counts():
    torch.manual_seed(0)
    head = ChainHead(4, 5, hidden=8)
    x = torch.randn(4, 4)
    probs = torch.tensor([[0.9, 0.0, 0.3, 1.0, 0.5]] * 4)
    mask = torch.tensor(
        [
            [False] * 5,  # free row: 5 steps
            [True, False, False, False, False],  # 4 steps
            [True, True, True, False, False],  # 2 steps
            [True] * 5,  # fully forced: no step
        ]
    )
    with torch.no_grad():
        logits, order = head(x, probs, mask), head.order(x, probs, mask)
        expected = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        assert torch.equal(logits[mask], expected[mask])
        assert (order[mask] == 0).all()
        assert is_permutation(order, (~mask).sum(1))
        # Rows finished early keep their logits: each row alone gives the same result as in the batch.
        for i in range(4):
            alone = head(x[i : i + 1], probs[i : i + 1], mask[i : i + 1])
            assert torch.allclose(alone, logits[i : i + 1], atol=1e-6)
        assert torch.allclose(logits[0], head(x[:1])[0], atol=1e-6)


def test_forcing_changes_the_other_labels_on_a_trained_chain(trained):
    x, _ = and_problem(200, seed=3)
    mask = torch.zeros(200, 4, dtype=torch.bool)
    mask[:, 0] = True
    with torch.no_grad():
        free = trained(x)
        low = trained(x, init_probs=torch.full((200, 4), 0.02), init_mask=mask)
        high = trained(x, init_probs=torch.full((200, 4), 0.98), init_mask=mask)
    assert torch.equal(low[:, 0], torch.full((200,), torch.logit(torch.tensor(0.02)).item()))
    assert (low[:, 1:] - free[:, 1:]).abs().max() > 0.1
    assert (low[:, 1:] - high[:, 1:]).abs().max() > 0.1


def test_gradients_reach_every_part_of_the_chain():
    torch.manual_seed(0)
    model = ChainClassifier(6, 4, hidden=8, body=(8,))
    x, y = and_problem(32, seed=0)
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_beats_the_trivial_baseline(trained):
    x, y = and_problem(2000, seed=3)
    with torch.no_grad():
        pred = (trained(x) > 0).float()
    majority = (y.mean(0) > 0.5).float()
    baseline = (majority == y).float().mean().item()  # ≈ 0.64 here
    hamming = (pred == y).float().mean().item()
    assert hamming > 0.93 > baseline + 0.2
    # The dependent label itself is learnt: y2 = y0 AND y1.
    assert (pred[:, 2] == y[:, 2]).float().mean() > 0.93


def test_forcing_a_parent_label_flips_the_dependent_label():
    """ANT's transfer (Eq. 26): overriding y0 must change the chain's answer for y2 = y0 AND y1.

    A chain reads the forced state only if training showed it such states, so this chain trains
    with random labels forced to their true values (plain BCE training relies on it by chance).
    """
    model = train(300, forced_rate=0.5)
    x, y = and_problem(2000, seed=3)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, 0] = True
    with torch.no_grad():
        pred = model(x) > 0
        assert (pred.float() == y).float().mean() > 0.95
        off = model(x, init_probs=torch.zeros_like(y), init_mask=mask) > 0
        on = model(x, init_probs=torch.ones_like(y), init_mask=mask) > 0
    rows = pred[:, 0] & pred[:, 2]  # y0 predicted 1 and y2 predicted 1: forcing y0 = 0 should make y2 = 0
    assert rows.sum() > 300
    assert (~off[rows, 2]).float().mean() > 0.75
    rows = ~pred[:, 0] & pred[:, 1]  # y0 predicted 0 and y1 predicted 1: forcing y0 = 1 should make y2 = 1
    assert rows.sum() > 300
    assert on[rows, 2].float().mean() > 0.75


def test_same_seed_same_logits():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(ChainClassifier(6, 5, hidden=16, body=(8,))(x))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(8)
    assert not torch.equal(outs[0], ChainClassifier(6, 5, hidden=16, body=(8,))(x))


@pytest.mark.parametrize(
    ("probs", "mask", "needle"),
    [
        (torch.zeros(3, 4), torch.zeros(3, 5, dtype=torch.bool), "init_mask has shape (3, 5)"),
        (torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.bool), "init_probs has shape (2, 4)"),
        (torch.full((3, 4), float("nan")), torch.zeros(3, 4, dtype=torch.bool), "NaN"),
        (torch.full((3, 4), 2.0), torch.ones(3, 4, dtype=torch.bool), "[0, 1]"),
        (None, torch.zeros(3, 4, dtype=torch.bool), "init_probs is missing"),
    ],
)
def test_bad_initial_state_is_a_one_line_error(probs, mask, needle):
    head = ChainHead(6, 4)
    with pytest.raises(DataError) as err:
        head(torch.zeros(3, 6), probs, mask)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and ";" in msg


def test_wrong_feature_width_is_a_clear_error():
    with pytest.raises(DataError, match=r"reads \(n, 6\) features"):
        ChainHead(6, 4)(torch.zeros(3, 5))
