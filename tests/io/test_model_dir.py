import os

import numpy as np
import pytest

import kbert
from kbert.io.model_dir import assign_encoder_weights, encoder_weights, read_checkpoint
from helpers.checks import assert_outputs_close
from helpers.tiny import VOCAB, tiny_config

CONFIG = tiny_config()
H = CONFIG.hidden_dim


def test_save_and_load_round_trip(tmp_path):
    model = kbert.build_encoder(CONFIG)
    heads = {"nsp_head/kernel": np.ones((H, 2), np.float32)}
    kbert.save_model(model, CONFIG, tmp_path / "m", VOCAB, lowercase=False, heads=heads)
    assert sorted(os.listdir(tmp_path / "m")) == [
        "config.json", "tokenizer_config.json", "vocab.txt", "weights.safetensors"]
    loaded = kbert.load_model(tmp_path / "m")
    for a, b in zip(model.weights, loaded.weights):
        assert a.path == b.path and np.array_equal(a.numpy(), b.numpy())
    checkpoint = read_checkpoint(tmp_path / "m")
    assert checkpoint.vocab == tuple(VOCAB) and checkpoint.lowercase is False
    assert np.array_equal(checkpoint.weights["nsp_head/kernel"], heads["nsp_head/kernel"])
    x = {"token_ids": np.array([[2, 5, 3]], "int32"), "segment_ids": np.zeros((1, 3), "int32"),
         "padding_mask": np.ones((1, 3), "int32")}
    assert_outputs_close(loaded(x), model(x), atol=0, rtol=0, what="loaded model")


def test_vocab_size_must_match(tmp_path):
    model = kbert.build_encoder(CONFIG)
    with pytest.raises(ValueError, match="vocabulary has 3 tokens but config.vocabulary_size "
                                         f"is {len(VOCAB)}"):
        kbert.save_model(model, CONFIG, tmp_path / "m", VOCAB[:3])
    assert not os.path.exists(tmp_path / "m")


def test_assign_is_all_or_nothing():
    model = kbert.build_encoder(CONFIG)
    before = encoder_weights(model)
    weights = dict(before)
    weights["pooler/kernel"] = np.zeros((H, 4), np.float32)
    weights["token_embedding/embeddings"] = weights["token_embedding/embeddings"] + 1
    with pytest.raises(ValueError, match=rf"'pooler/kernel' has shape \({H}, 4\), "
                                         rf"the model expects \({H}, {H}\)"):
        assign_encoder_weights(model, weights, "test")
    after = encoder_weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights.safetensors is missing"):
        (tmp_path / "config.json").write_text(CONFIG.to_json())
        (tmp_path / "vocab.txt").write_text("\n".join(VOCAB))
        kbert.load_model(tmp_path)
