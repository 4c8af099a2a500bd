"""Teachers (validation, feature taps, MC dropout) and the teacher-output store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import LabelError, TeacherError
from amalgamator.store import LOGITS, TeacherStore, feature_piece, mc_piece


def test_teacher_validates_labels():
    with pytest.raises(LabelError, match="empty"):
        am.Teacher(nn.Linear(4, 2), labels=[], name="t")
    with pytest.raises(LabelError, match="'a' twice"):
        am.Teacher(nn.Linear(4, 2), labels=["a", "a"], name="t")


def test_teacher_is_frozen_and_in_eval_mode():
    m = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    t = am.Teacher(m, labels=["a", "b"], name="t")
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    x = torch.randn(5, 4)
    assert torch.equal(t.run(x)[0], t.run(x)[0])


def test_unknown_feature_path_lists_the_available_ones():
    with pytest.raises(TeacherError, match="no module at path 'body.9'"):
        am.Teacher(nn.Sequential(nn.Linear(4, 2)), labels=["a", "b"], name="t", features="body.9")


def test_feature_tap_returns_the_module_output():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    t = am.Teacher(m, labels=["a", "b"], name="t", features="1")
    x = torch.randn(3, 4)
    _, feats = t.run(x, features=True)
    assert torch.allclose(feats["1"], torch.relu(m[0](x)))


def test_mc_dropout_switches_only_dropout_and_restores():
    m = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    m[1].running_mean.fill_(0.3)
    t = am.Teacher(m, labels=["a", "b", "c"], name="t")
    x = torch.randn(64, 4)
    with t.mc_dropout(p=0.2):
        assert m[2].training and m[2].p == 0.2
        assert not m[1].training  # batch-norm keeps its running statistics
        assert not m[0].training
    assert not m[2].training and m[2].p == 0.5
    probs = t.mc_probs(x, k=4)
    assert probs.shape == (4, 64, 3)
    assert not torch.allclose(probs[0], probs[1])  # the passes really are stochastic
    assert torch.allclose(m[1].running_mean, torch.full((16,), 0.3))  # BN statistics untouched


def test_width_mismatch_names_the_teacher():
    t = am.Teacher(nn.Linear(64, 4), labels=["0", "1", "2"], name="bad")
    with pytest.raises(TeacherError, match=r"teacher 'bad' returns 4 logits per example but has 3 labels"):
        t.run(torch.zeros(2, 64))


def test_shape_rejection_is_one_line():
    t = am.Teacher(nn.Linear(64, 2), labels=["a", "b"], name="small")
    with pytest.raises(TeacherError) as err:
        t.run(torch.zeros(2, 63))
    msg = str(err.value)
    assert "teacher 'small' rejected a batch of shape (2, 63)" in msg and "\n" not in msg


class _NaNModel(nn.Module):
    def forward(self, x):
        out = torch.zeros(len(x), 2)
        out[x[:, 0] > 0.5] = float("nan")
        return out


def test_nan_logits_are_reported_with_count(tmp_path):
    t = am.Teacher(_NaNModel(), labels=["a", "b"], name="nanny")
    x = torch.zeros(10, 3)
    x[[3, 7], 0] = 1.0
    with pytest.raises(
        TeacherError, match=r"'nanny' produced NaN or infinite logits for 2 of 10 examples \(first at row 3\)"
    ):
        TeacherStore(tmp_path).get(t, Inputs(x))


def _teacher(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    return am.Teacher(m, labels=["x", "y", "z"], name=f"t{seed}", features="1")


def test_store_runs_each_teacher_once(tmp_path):
    t, data = _teacher(), Inputs(torch.randn(50, 6))
    store = TeacherStore(tmp_path)
    first = store.get(t, data, [LOGITS, feature_piece("1"), mc_piece(4, 0.1)])
    assert store.stats.computed == 3 and store.stats.hits == 0
    again = TeacherStore(tmp_path)
    second = again.get(t, data, [LOGITS, feature_piece("1"), mc_piece(4, 0.1)])
    assert again.stats.computed == 0 and again.stats.hits == 3
    for k in first:
        assert torch.equal(first[k], second[k])
    assert torch.allclose(first[LOGITS], t.logits(data))


def test_store_keys_depend_on_weights_and_data(tmp_path):
    store = TeacherStore(tmp_path)
    x = Inputs(torch.randn(20, 6))
    keys = {store.key(_teacher(0), x, LOGITS), store.key(_teacher(1), x, LOGITS)}
    keys.add(store.key(_teacher(0), Inputs(torch.randn(20, 6)), LOGITS))
    assert len(keys) == 3
    assert store.key(_teacher(0), x, LOGITS) == store.key(_teacher(0), Inputs(x.values.clone()), LOGITS)


def test_corrupt_entry_is_detected_reported_and_recomputed(tmp_path):
    t, data = _teacher(), Inputs(torch.randn(30, 6))
    store = TeacherStore(tmp_path)
    good = store.get(t, data)[LOGITS]
    path = next(tmp_path.rglob("*.safetensors"))
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch; recomputing"):
        again = TeacherStore(tmp_path)
        got = again.get(t, data)[LOGITS]
    assert torch.equal(got, good) and again.stats.repaired == 1
    assert TeacherStore(tmp_path).get(t, data)[LOGITS].shape == (30, 3)  # repaired on disk


def test_mismatched_sidecar_is_detected(tmp_path):
    t, data = _teacher(), Inputs(torch.randn(30, 6))
    TeacherStore(tmp_path).get(t, data)
    meta = next(tmp_path.rglob("*.json"))
    info = json.loads(meta.read_text())
    info["data_fp"] = "0" * 64
    meta.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="another teacher or dataset"):
        TeacherStore(tmp_path).get(t, data)
    meta.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        TeacherStore(tmp_path).get(t, data)


def test_store_holds_no_pickle(tmp_path):
    TeacherStore(tmp_path).get(_teacher(), Inputs(np.random.rand(10, 6).astype(np.float32)))
    suffixes = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".lock"}  # lock files are empty
