"""keras-hub presets both ways (kbert.convert.keras_hub): a kbert encoder written as a
BertBackbone preset that keras-hub's own `from_preset` loads with equal outputs, and a
BertBackbone preset saved by keras-hub read into kbert with equal outputs, directly and as
a model reference."""

import dataclasses

import keras_hub
import numpy as np
import pytest

import kbert
from helpers.tiny import VOCAB, random_features, save_tiny_model, tiny_config
from kbert.convert import convert, detect_format
from kbert.convert.references import resolve_model
from kbert.io.model_dir import read_checkpoint


def outputs(model, features):
    out = model(features, training=False)
    return {k: np.asarray(out[k]) for k in ("sequence_output", "pooled_output")}


def assert_same(got, want, atol):
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=0, err_msg=key)


@pytest.fixture(scope="module")
def features():
    return random_features(3, 12, lengths=[12, 7, 3], seed=4)


def test_kbert_encoder_as_a_keras_hub_preset(tmp_path, features):
    config = tiny_config(num_layers=2)
    config = dataclasses.replace(config, activation="gelu_approximate")
    model_dir = save_tiny_model(tmp_path / "kbert", config=config, seed=3)
    preset = convert(model_dir, tmp_path / "preset", to="keras-hub")
    assert detect_format(preset) == "keras-hub"
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    assert_same(outputs(backbone, features), outputs(kbert.load_model(model_dir), features),
                atol=1e-5)
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    assert tuple(tokenizer.get_vocabulary()) == read_checkpoint(model_dir).vocab


def test_exact_gelu_needs_consent(tmp_path, features):
    model_dir = save_tiny_model(tmp_path / "kbert", config=tiny_config(), seed=3)
    with pytest.raises(ValueError, match="tanh approximation of GELU.*--approximate-gelu"):
        convert(model_dir, tmp_path / "preset", to="keras-hub")
    assert not (tmp_path / "preset").exists()
    preset = convert(model_dir, tmp_path / "preset", to="keras-hub", approximate_gelu=True)
    got = outputs(keras_hub.models.BertBackbone.from_preset(preset), features)
    want = outputs(kbert.load_model(model_dir), features)
    difference = max(np.abs(got[k] - want[k]).max() for k in want)
    assert 0 < difference < 1e-2  # the approximation, nothing else


def test_keras_hub_preset_into_kbert(tmp_path, features, monkeypatch):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=32)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=list(VOCAB), lowercase=True)
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    want = outputs(backbone, features)

    model_dir = convert(preset, tmp_path / "kbert")
    checkpoint = read_checkpoint(model_dir)
    assert checkpoint.config.activation == "gelu_approximate"
    assert checkpoint.vocab == tuple(VOCAB) and checkpoint.lowercase
    assert_same(outputs(kbert.load_model(model_dir), features), want, atol=1e-5)

    # As a reference: converted once into the kbert cache.
    monkeypatch.setenv("KBERT_CACHE", str(tmp_path / "cache"))
    cached = resolve_model(preset)
    assert cached.startswith(str(tmp_path / "cache")) and resolve_model(preset) == cached
    assert_same(outputs(kbert.load_model(preset), features), want, atol=1e-5)


def test_kbert_classifier_as_a_keras_hub_text_classifier(tmp_path):
    """A fine-tuned kbert classifier (task.json) becomes a BertTextClassifier preset whose
    predict on raw strings gives kbert's probabilities."""
    from kbert.tasks import TaskSpec, build_task_model, save_task_model
    from kbert.training.finetune import predict
    from helpers.tiny import tiny_encoder

    config = dataclasses.replace(tiny_config(num_layers=2), activation="gelu_approximate")
    spec = TaskSpec("classification", labels=("a", "b", "c"), seq_len=16)
    model = build_task_model(tiny_encoder(config, seed=5), spec)
    # A head with some spread, so that the probabilities tell texts apart.
    model.head.kernel.assign(np.random.default_rng(0).normal(
        0, 1.0, model.head.kernel.shape).astype("float32"))
    model_dir = save_task_model(tmp_path / "clf", model, spec, config, VOCAB)
    preset = convert(model_dir, tmp_path / "preset", to="keras-hub")
    classifier = keras_hub.models.BertTextClassifier.from_preset(preset)
    texts = ["w1 w2 w3", "w7", "w4 w5 w6 w7 w8 w9 w10"]
    logits = np.asarray(classifier.predict(texts, verbose=0), dtype=np.float64)
    got = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log-probabilities
    want = np.log([[p["probabilities"][label] for label in spec.labels]
                   for p in predict(model_dir, texts)])
    assert np.abs(want[0] - want[1]).max() > 0.02  # the texts get different answers
    np.testing.assert_allclose(got, want, atol=1e-5)
