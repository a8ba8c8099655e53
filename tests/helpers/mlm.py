"""References for the fill-mask and embedding checks that do not run kbert's forward path.

- `pretrained_model_dir`: a tiny model directory with masked-LM and NSP heads whose
  masked-LM guesses are sharp and depend on the context (so the order of the top-k
  candidates is a real check, not a tie between near-uniform probabilities).
- `pack_words`: ids packed by hand for texts made of whole vocabulary words.
- `encoder_outputs`: Keras' own Functional model running the graph the encoder declares
  (not `BertEncoder.call` / `rows`, which kbert's commands run).
- `mlm_logits`: BERT's masked-LM head in numpy, from the model directory's weights file.
"""

import math
import os

import keras
import numpy as np
from safetensors.numpy import load_file

from helpers.tiny import tiny_config, tiny_encoder
from kbert.io.model_dir import WEIGHTS_FILE, read_checkpoint, save_model
from kbert.models.encoder import load_model
from kbert.models.pretrainer import build_pretrainer, head_weights


def pretrained_model_dir(path, vocab, num_layers=1, seed=0):
    """A randomly initialised tiny encoder (`helpers.tiny.tiny_config`) with pre-training
    heads for `vocab`, saved as a kbert model directory; returns its path.

    A fresh head guesses almost uniformly (logits within ~0.2 of each other), so rounding
    could reorder candidates: a LayerNorm scale of 15 spreads the logits to a standard
    deviation of ~3.5, and a random output bias makes a dropped bias visible.
    """
    config = tiny_config(len(vocab), num_layers=num_layers)
    encoder = tiny_encoder(config, seed)
    heads = head_weights(build_pretrainer(encoder, config))
    rng = np.random.default_rng(seed)
    gamma = "mlm_head/intermediate_layer_norm/gamma"
    heads[gamma] = np.full_like(heads[gamma], 15.0)
    heads["mlm_head/output_bias"] = rng.normal(
        0.0, 1.0, heads["mlm_head/output_bias"].shape).astype(np.float32)
    return save_model(encoder, config, path, vocab, heads=heads)


def pack_words(vocab, texts, seq_len):
    """token_ids / segment_ids / padding_mask int32 [B, seq_len] packed by hand:
    [CLS] + the vocabulary index of each whitespace-separated word + [SEP], then [PAD]s.
    Words must be vocabulary entries as written ("[MASK]" included)."""
    index = {token: i for i, token in enumerate(vocab)}
    token_ids = np.full((len(texts), seq_len), index["[PAD]"], np.int32)
    for row, text in enumerate(texts):
        ids = [index["[CLS]"]] + [index[w] for w in text.split()] + [index["[SEP]"]]
        assert len(ids) <= seq_len, f"{text!r} does not fit in {seq_len}"
        token_ids[row, :len(ids)] = ids
    padding_mask = (token_ids != index["[PAD]"]).astype(np.int32)
    return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids),
            "padding_mask": padding_mask}


def encoder_outputs(model_dir, features):
    """The encoder of `model_dir` run by Keras' Functional model on the graph it declares.

    Returns:
        "layers": every block's output, a list of float64 [B, T, H];
        "sequence_output" float64 [B, T, H]; "pooled_output" float64 [B, H].
    """
    encoder = load_model(model_dir)
    functional = keras.Model(encoder.input, encoder.output)
    outputs = functional({k: np.asarray(v, np.int32) for k, v in features.items()},
                         training=False)
    return {"layers": [np.asarray(h, np.float64) for h in outputs["encoder_outputs"]],
            "sequence_output": np.asarray(outputs["sequence_output"], np.float64),
            "pooled_output": np.asarray(outputs["pooled_output"], np.float64)}


def mlm_logits(model_dir, hidden):
    """BERT's masked-LM head in numpy (float64): dense H->H, exact GELU, LayerNorm, then
    the tied token embedding matrix transposed plus the output bias.

    Args:
        model_dir: a model directory with masked-LM heads.
        hidden: float [..., H], encoder rows at the positions to predict.

    Returns:
        float64 [..., V].
    """
    config = read_checkpoint(model_dir).config
    assert config.activation == "gelu", "the reference implements the exact GELU only"
    w = {k: v.astype(np.float64) for k, v in
         load_file(os.path.join(model_dir, WEIGHTS_FILE)).items()}
    x = np.asarray(hidden, np.float64) @ w["mlm_head/intermediate_dense/kernel"]
    x = x + w["mlm_head/intermediate_dense/bias"]
    x = 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    x = (x - mean) / np.sqrt(variance + config.layer_norm_epsilon)
    x = x * w["mlm_head/intermediate_layer_norm/gamma"] + w[
        "mlm_head/intermediate_layer_norm/beta"]
    return x @ w["token_embedding/embeddings"].T + w["mlm_head/output_bias"]


def softmax(logits):
    """Softmax over the last axis (float64)."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
