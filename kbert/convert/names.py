"""The one table that relates kbert weight names to the Hugging Face and original TF1 ones.

Every BERT tensor has a *kind* that says how its array changes between layouts. Dense
kernels are [in, out] in Keras and TF1 but [out, in] in PyTorch (`nn.Linear.weight`);
Keras' `MultiHeadAttention` further splits the head axis out of q/k/v and output kernels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kbert.config import BertConfig

# Kinds of tensor (see `to_kbert`).
PLAIN = "plain"              # same array in every layout
LINEAR = "linear"            # dense kernel: Keras [in, out]
HEADS_IN = "heads_in"        # q/k/v kernel: Keras [H, N, H/N]
HEADS_BIAS = "heads_bias"    # q/k/v bias: Keras [N, H/N]
HEADS_OUT = "heads_out"      # attention output kernel: Keras [N, H/N, H]
OUT_IN = "out_in"            # TF1's NSP `output_weights`, stored [out, in] even in TF1


@dataclasses.dataclass(frozen=True)
class Entry:
    kbert: str   # kbert key (Keras variable path or head key)
    hf: str      # Hugging Face name, without the optional "bert." prefix for encoder names
    tf1: str     # original google-research/bert name
    kind: str


def _layer_entries(i: int) -> list[Entry]:
    k, hf, tf = (f"transformer_layer_{i}/", f"encoder.layer.{i}.",
                 f"bert/encoder/layer_{i}/")
    entries = []
    for part in ("query", "key", "value"):
        entries += [
            Entry(f"{k}self_attention_layer/{part}/kernel", f"{hf}attention.self.{part}.weight",
                  f"{tf}attention/self/{part}/kernel", HEADS_IN),
            Entry(f"{k}self_attention_layer/{part}/bias", f"{hf}attention.self.{part}.bias",
                  f"{tf}attention/self/{part}/bias", HEADS_BIAS),
        ]
    sub_layers = [  # (kbert layer, HF module, TF1 scope)
        ("self_attention_layer/attention_output", "attention.output.dense",
         "attention/output/dense"),
        ("self_attention_layer_norm", "attention.output.LayerNorm", "attention/output/LayerNorm"),
        ("feedforward_intermediate_dense", "intermediate.dense", "intermediate/dense"),
        ("feedforward_output_dense", "output.dense", "output/dense"),
        ("feedforward_layer_norm", "output.LayerNorm", "output/LayerNorm"),
    ]
    for keras_name, hf_name, tf_name in sub_layers:
        if "LayerNorm" in hf_name:
            entries += [Entry(f"{k}{keras_name}/gamma", f"{hf}{hf_name}.weight",
                              f"{tf}{tf_name}/gamma", PLAIN),
                        Entry(f"{k}{keras_name}/beta", f"{hf}{hf_name}.bias",
                              f"{tf}{tf_name}/beta", PLAIN)]
        else:
            kind = HEADS_OUT if keras_name.endswith("attention_output") else LINEAR
            entries += [Entry(f"{k}{keras_name}/kernel", f"{hf}{hf_name}.weight",
                              f"{tf}{tf_name}/kernel", kind),
                        Entry(f"{k}{keras_name}/bias", f"{hf}{hf_name}.bias",
                              f"{tf}{tf_name}/bias", PLAIN)]
    return entries


def encoder_entries(config: BertConfig) -> list[Entry]:
    """Entries for every encoder variable (embeddings, L blocks, pooler)."""
    entries = [
        Entry("token_embedding/embeddings", "embeddings.word_embeddings.weight",
              "bert/embeddings/word_embeddings", PLAIN),
        Entry("position_embedding/embeddings", "embeddings.position_embeddings.weight",
              "bert/embeddings/position_embeddings", PLAIN),
        Entry("segment_embedding/embeddings", "embeddings.token_type_embeddings.weight",
              "bert/embeddings/token_type_embeddings", PLAIN),
        Entry("embeddings_layer_norm/gamma", "embeddings.LayerNorm.weight",
              "bert/embeddings/LayerNorm/gamma", PLAIN),
        Entry("embeddings_layer_norm/beta", "embeddings.LayerNorm.bias",
              "bert/embeddings/LayerNorm/beta", PLAIN),
    ]
    for i in range(config.num_layers):
        entries += _layer_entries(i)
    entries += [
        Entry("pooler/kernel", "pooler.dense.weight", "bert/pooler/dense/kernel", LINEAR),
        Entry("pooler/bias", "pooler.dense.bias", "bert/pooler/dense/bias", PLAIN),
    ]
    return entries


def head_entries() -> list[Entry]:
    """Entries for the masked-LM and next-sentence pre-training heads."""
    return [
        Entry("mlm_head/intermediate_dense/kernel", "cls.predictions.transform.dense.weight",
              "cls/predictions/transform/dense/kernel", LINEAR),
        Entry("mlm_head/intermediate_dense/bias", "cls.predictions.transform.dense.bias",
              "cls/predictions/transform/dense/bias", PLAIN),
        Entry("mlm_head/intermediate_layer_norm/gamma", "cls.predictions.transform.LayerNorm.weight",
              "cls/predictions/transform/LayerNorm/gamma", PLAIN),
        Entry("mlm_head/intermediate_layer_norm/beta", "cls.predictions.transform.LayerNorm.bias",
              "cls/predictions/transform/LayerNorm/beta", PLAIN),
        Entry("mlm_head/output_bias", "cls.predictions.bias", "cls/predictions/output_bias",
              PLAIN),
        Entry("nsp_head/kernel", "cls.seq_relationship.weight",
              "cls/seq_relationship/output_weights", OUT_IN),
        Entry("nsp_head/bias", "cls.seq_relationship.bias", "cls/seq_relationship/output_bias",
              PLAIN),
    ]


def to_kbert(array: np.ndarray, entry: Entry, config: BertConfig,
             out_in: bool) -> np.ndarray:
    """Converts a source array to kbert's layout.

    `out_in` is True when the source stores dense kernels as [out, in] (PyTorch / Hugging
    Face) and False when [in, out] (TF1).
    """
    n, d, h = config.num_heads, config.head_dim, config.hidden_dim
    kind = entry.kind
    if kind == PLAIN:
        return array
    if kind == OUT_IN:
        return array.T
    if kind == HEADS_BIAS:
        return array.reshape(n, d)
    kernel = array.T if out_in else array  # now [in, out]
    if kind == LINEAR:
        return kernel
    if kind == HEADS_IN:
        return kernel.reshape(h, n, d)
    if kind == HEADS_OUT:
        return kernel.reshape(n, d, h)
    raise ValueError(f"unknown tensor kind {kind!r}")


def from_kbert(array: np.ndarray, entry: Entry, out_in: bool) -> np.ndarray:
    """Inverse of `to_kbert`."""
    kind = entry.kind
    if kind == PLAIN:
        return array
    if kind == OUT_IN:
        return array.T
    if kind == HEADS_BIAS:
        return array.reshape(-1)
    if kind == HEADS_IN:
        kernel = array.reshape(array.shape[0], -1)
    elif kind == HEADS_OUT:
        kernel = array.reshape(-1, array.shape[-1])
    elif kind == LINEAR:
        kernel = array
    else:
        raise ValueError(f"unknown tensor kind {kind!r}")
    return kernel.T if out_in else kernel


def expected_source_shape(entry: Entry, config: BertConfig, out_in: bool) -> tuple[int, ...]:
    """The shape a source tensor must have for `config` (used to name shape mismatches)."""
    v, h, i = config.vocabulary_size, config.hidden_dim, config.intermediate_dim
    key = entry.kbert
    if key.startswith("token_embedding"):
        return (v, h)
    if key.startswith("position_embedding"):
        return (config.max_sequence_length, h)
    if key.startswith("segment_embedding"):
        return (config.num_segments, h)
    if key == "mlm_head/output_bias":
        return (v,)
    if key.startswith("nsp_head"):
        return (2, h) if entry.kind == OUT_IN else (2,)
    if entry.kind in (HEADS_IN, HEADS_OUT, LINEAR):
        if "feedforward_intermediate_dense" in key:
            in_out = (h, i)
        elif "feedforward_output_dense" in key:
            in_out = (i, h)
        else:
            in_out = (h, h)
        return in_out[::-1] if out_in else in_out
    if "feedforward_intermediate_dense" in key:
        return (i,)
    return (h,)  # other biases, LayerNorm gamma / beta
