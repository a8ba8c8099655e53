"""Hugging Face BERT directories (config.json, model.safetensors, vocab.txt) in and out.

Reads the `BertModel` layout (no prefix) and the `BertForPreTraining` / `BertForMaskedLM`
layout ("bert." prefix, `cls.*` heads), with numpy and safetensors only (no torch).
"""

from __future__ import annotations

import json
import os

import numpy as np
import safetensors
import safetensors.numpy

from kbert.io.atomic import atomic_directory
from kbert.config import BertConfig
from kbert.convert import names  # the module, not the package API
from kbert.convert.mapping import CheckpointMismatchError, gather
from kbert.io.model_dir import Checkpoint, read_vocab

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"

# hidden_act values of Hugging Face configs and the kbert activation they mean.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
}
_TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_approximate": "gelu_new", "relu": "relu"}


def is_hf_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and (
        os.path.isfile(os.path.join(path, SAFETENSORS_FILE))
        or os.path.isfile(os.path.join(path, SAFETENSORS_INDEX))
        or os.path.isfile(os.path.join(path, "pytorch_model.bin")))


def config_from_hf(values: dict, source: str) -> BertConfig:
    """BertConfig from a Hugging Face (or original TF1 bert_config.json) config dict."""
    model_type = values.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"{source}: model_type {model_type!r} is not 'bert'")
    position_type = values.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"{source}: position_embedding_type {position_type!r} is not "
                         "supported (only 'absolute', as in BERT)")
    act = values.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"{source}: hidden_act {act!r} is not supported; "
                         f"known: {', '.join(_ACTIVATIONS)}")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
    return BertConfig(
        vocabulary_size=values["vocab_size"],
        num_layers=values["num_hidden_layers"],
        num_heads=values["num_attention_heads"],
        hidden_dim=values["hidden_size"],
        intermediate_dim=values["intermediate_size"],
        max_sequence_length=values.get("max_position_embeddings", 512),
        num_segments=values.get("type_vocab_size", 2),
        dropout=values.get("hidden_dropout_prob", 0.1),
        layer_norm_epsilon=values.get("layer_norm_eps", 1e-12),
        activation=_ACTIVATIONS[act],
        initializer_range=values.get("initializer_range", 0.02),
    )


def config_to_hf(config: BertConfig, with_heads: bool) -> dict:
    return {
        "architectures": ["BertForPreTraining" if with_heads else "BertModel"],
        "model_type": "bert",
        "vocab_size": config.vocabulary_size,
        "hidden_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_dim,
        "hidden_act": _TO_HF_ACTIVATION[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "max_position_embeddings": config.max_sequence_length,
        "type_vocab_size": config.num_segments,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_epsilon,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(os.path.join(path, SAFETENSORS_FILE)):
        return [os.path.join(path, SAFETENSORS_FILE)]
    if os.path.isfile(index):
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        files = [os.path.join(path, shard) for shard in shards]
        for f in files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{index} names {os.path.basename(f)}, which is missing")
        return files
    raise FileNotFoundError(
        f"{path}: no {SAFETENSORS_FILE} (only pytorch_model.bin, which needs torch to read). "
        "Re-save it with transformers: model.save_pretrained(dir, safe_serialization=True)")


def _normalise(name: str) -> str:
    """Old Hugging Face checkpoints name LayerNorm parameters gamma / beta."""
    if name.endswith("LayerNorm.gamma"):
        return name[: -len("gamma")] + "weight"
    if name.endswith("LayerNorm.beta"):
        return name[: -len("beta")] + "bias"
    return name


def _is_ignorable(name: str) -> bool:
    # Buffers and tied copies that carry no information of their own.
    return (name.endswith("embeddings.position_ids")
            or name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))


def _lowercase_from(path: str) -> bool:
    tokenizer_config = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        return bool(_read_json(tokenizer_config).get("do_lower_case", True))
    return True  # BertTokenizer's default


def read_hf(path: str) -> Checkpoint:
    """Reads a Hugging Face BERT directory into a kbert `Checkpoint`."""
    config_path = os.path.join(path, "config.json")
    vocab_path = os.path.join(path, "vocab.txt")
    for required in (config_path, vocab_path):
        if not os.path.isfile(required):
            raise FileNotFoundError(f"{path}: {os.path.basename(required)} is missing")
    config = config_from_hf(_read_json(config_path), source=config_path)

    arrays: dict[str, np.ndarray] = {}
    for file in _safetensors_files(path):
        with safetensors.safe_open(file, framework="np") as f:
            for key in f.keys():
                arrays[_normalise(key)] = f.get_tensor(key)
    # "bert." prefix (BertForPreTraining and friends) or none (BertModel).
    prefix = "bert." if any(k.startswith("bert.") for k in arrays) else ""
    encoder = {e.hf for e in names.encoder_entries(config)}

    def source_name(entry: names.Entry) -> str:
        return prefix + entry.hf if entry.hf in encoder else entry.hf

    weights = gather({k: v.shape for k, v in arrays.items()}, arrays.__getitem__, config,
                     source_name, out_in=True, source=path, ignore=_is_ignorable)
    decoder = arrays.get("cls.predictions.decoder.weight")
    if decoder is not None and not np.array_equal(
            decoder, arrays[source_name(names.encoder_entries(config)[0])]):
        raise CheckpointMismatchError(
            f"{path}: cls.predictions.decoder.weight differs from the word embeddings; kbert "
            "ties the masked-LM output projection to the token embedding")
    vocab = read_vocab(vocab_path)
    if len(vocab) != config.vocabulary_size:
        raise ValueError(f"{vocab_path} has {len(vocab)} tokens but config.json says "
                         f"vocab_size {config.vocabulary_size}")
    return Checkpoint(config=config, weights=weights, vocab=vocab,
                      lowercase=_lowercase_from(path))


def write_hf(checkpoint: Checkpoint, out: str, overwrite: bool = False) -> str:
    """Writes a Hugging Face directory that transformers' `from_pretrained` loads.

    Without heads: the `BertModel` layout (no prefix). With heads: `BertForPreTraining`
    ("bert." prefix, `cls.*`; the decoder weight is tied to the word embeddings, as
    transformers saves it).
    """
    config = checkpoint.config
    with_heads = checkpoint.has_pretraining_heads
    prefix = "bert." if with_heads else ""
    tensors = {}
    for entry in names.encoder_entries(config):
        tensors[prefix + entry.hf] = names.from_kbert(checkpoint.weights[entry.kbert], entry,
                                                      out_in=True)
    if with_heads:
        for entry in names.head_entries():
            tensors[entry.hf] = names.from_kbert(checkpoint.weights[entry.kbert], entry,
                                                 out_in=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(config, with_heads), f, indent=2)
            f.write("\n")
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"do_lower_case": checkpoint.lowercase,
                       "tokenizer_class": "BertTokenizer"}, f, indent=2)
            f.write("\n")
        with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(token + "\n" for token in checkpoint.vocab))
        # transformers refuses safetensors files without a "format" in their metadata.
        safetensors.numpy.save_file(tensors, os.path.join(tmp, SAFETENSORS_FILE),
                                    metadata={"format": "pt"})
    return out
