"""The kbert model directory: what `kbert convert` and pre-training write, and what
fine-tuning, export and `kbert.load_model` read.

Layout::

    MODEL_DIR/
      config.json            BertConfig (see kbert.config)
      vocab.txt              WordPiece vocabulary, one token per line, line number = id
      tokenizer_config.json  {"lowercase": true|false}
      weights.safetensors    float32 arrays keyed by Keras variable path
                             (e.g. "transformer_layer_0/self_attention_layer/query/kernel"),
                             plus optional pre-training heads under "mlm_head/", "nsp_head/"

Keys are the encoder's own variable paths, so saving and loading need no name table; the
converters (kbert.convert) own the translation from other layouts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import numpy as np
import safetensors.numpy

from kbert.io.atomic import atomic_directory
from kbert.config import BertConfig

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer_config.json"
WEIGHTS_FILE = "weights.safetensors"

# Pre-training head weights (the variable paths of kbert.models.encoder.build_pretrainer's heads;
# the encoder ignores them). Shapes: intermediate_dense/kernel [H, H], /bias [H],
# intermediate_layer_norm/{gamma,beta} [H], output_bias [V]; nsp_head/kernel [H, 2],
# nsp_head/bias [2].
MLM_HEAD_KEYS = ("mlm_head/intermediate_dense/kernel", "mlm_head/intermediate_dense/bias",
                 "mlm_head/intermediate_layer_norm/gamma", "mlm_head/intermediate_layer_norm/beta",
                 "mlm_head/output_bias")
NSP_HEAD_KEYS = ("nsp_head/kernel", "nsp_head/bias")
# Fine-tuning heads (each task's `head_name`) are stored beside them: kbert's own under
# these prefixes; a task registered elsewhere adds its own (`register_head_prefix`).
HEAD_PREFIXES = ("mlm_head/", "nsp_head/", "classifier/", "tagger/", "qa_outputs/")
_EXTRA_HEAD_PREFIXES: list[str] = []


def register_head_prefix(prefix: str) -> None:
    """Makes tensors under `prefix` ("name/") head weights, which encoders skip when loading
    (called by `kbert.tasks.registry.register_task` with the task's `head_name`)."""
    if not prefix.endswith("/"):
        raise ValueError(f"a head prefix ends with '/', got {prefix!r}")
    if prefix not in HEAD_PREFIXES and prefix not in _EXTRA_HEAD_PREFIXES:
        _EXTRA_HEAD_PREFIXES.append(prefix)


def head_prefixes() -> tuple[str, ...]:
    """Every prefix of head tensors: kbert's own and the registered ones."""
    return HEAD_PREFIXES + tuple(_EXTRA_HEAD_PREFIXES)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything in a model directory, in memory.

    Attributes:
        config: the architecture.
        weights: name -> float32 numpy array (encoder variable paths and head keys).
        vocab: the WordPiece tokens, index = id.
        lowercase: whether the tokenizer lower-cases and strips accents (uncased model).
    """

    config: BertConfig
    weights: Mapping[str, np.ndarray]
    vocab: tuple[str, ...]
    lowercase: bool = True

    @property
    def has_pretraining_heads(self) -> bool:
        return all(k in self.weights for k in MLM_HEAD_KEYS + NSP_HEAD_KEYS)


def is_model_dir(path: str | os.PathLike) -> bool:
    return (os.path.isfile(os.path.join(path, CONFIG_FILE))
            and os.path.isfile(os.path.join(path, WEIGHTS_FILE)))


def read_vocab(path: str | os.PathLike) -> tuple[str, ...]:
    """Reads vocab.txt (one token per line; the line number is the id)."""
    with open(path, encoding="utf-8") as f:
        tokens = tuple(line.rstrip("\r\n") for line in f)
    while tokens and tokens[-1] == "":  # a trailing newline at the end of file
        tokens = tokens[:-1]
    if not tokens:
        raise ValueError(f"{path}: the vocabulary is empty")
    return tokens


def read_lowercase(path: str | os.PathLike) -> bool:
    """tokenizer_config.json's "lowercase" in a model directory; uncased when absent."""
    tokenizer_file = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(tokenizer_file):
        return True
    with open(tokenizer_file, encoding="utf-8") as f:
        return bool(json.load(f).get("lowercase", True))


def encoder_weights(model) -> dict[str, np.ndarray]:
    """The encoder's variables as {variable path: float32 array}."""
    return {v.path: np.asarray(v.numpy(), dtype=np.float32) for v in model.weights}


def assign_encoder_weights(model, weights: Mapping[str, np.ndarray], source: str) -> None:
    """Loads `weights` into `model`, all or nothing.

    Every encoder variable must be present with its exact shape, and every non-head key
    must belong to a variable; otherwise `ValueError` names the tensor (and both shapes)
    and `source`, before any variable is changed.
    """
    variables = {v.path: v for v in model.weights}
    problems = []
    for path, variable in variables.items():
        if path not in weights:
            problems.append(f"missing tensor {path!r} (expected shape {tuple(variable.shape)})")
        elif tuple(weights[path].shape) != tuple(variable.shape):
            problems.append(f"tensor {path!r} has shape {tuple(weights[path].shape)}, "
                            f"the model expects {tuple(variable.shape)}")
    for key in weights:
        if key not in variables and not key.startswith(head_prefixes()):
            problems.append(f"unexpected tensor {key!r} with shape {tuple(weights[key].shape)}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    for path, variable in variables.items():
        variable.assign(np.asarray(weights[path], dtype=np.float32))


def write_model_dir(out: str | os.PathLike, checkpoint: Checkpoint,
                    overwrite: bool = False, extra_json: Mapping[str, dict] | None = None) -> str:
    """Writes `checkpoint` as a model directory at `out`, atomically. Returns `out`.

    `extra_json` adds JSON files (file name -> content), e.g. a task model's task.json.
    """
    weights = {k: np.ascontiguousarray(v, dtype=np.float32)
               for k, v in checkpoint.weights.items()}
    if len(checkpoint.vocab) != checkpoint.config.vocabulary_size:
        raise ValueError(
            f"vocabulary has {len(checkpoint.vocab)} tokens but config.vocabulary_size is "
            f"{checkpoint.config.vocabulary_size}")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        checkpoint.config.save(os.path.join(tmp, CONFIG_FILE))
        with open(os.path.join(tmp, VOCAB_FILE), "w", encoding="utf-8") as f:
            f.write("".join(token + "\n" for token in checkpoint.vocab))
        with open(os.path.join(tmp, TOKENIZER_FILE), "w", encoding="utf-8") as f:
            json.dump({"lowercase": bool(checkpoint.lowercase)}, f)
            f.write("\n")
        safetensors.numpy.save_file(weights, os.path.join(tmp, WEIGHTS_FILE),
                                    metadata={"format": "kbert"})
        for name, content in (extra_json or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)
                f.write("\n")
    return os.fspath(out)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Reads a model directory written by `write_model_dir` / `save_model`."""
    path = os.fspath(path)
    for name in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(f"{path} is not a kbert model directory: {name} is missing")
    config = BertConfig.load(os.path.join(path, CONFIG_FILE))
    lowercase = read_lowercase(path)
    weights = safetensors.numpy.load_file(os.path.join(path, WEIGHTS_FILE))
    return Checkpoint(config=config, weights=weights,
                      vocab=read_vocab(os.path.join(path, VOCAB_FILE)), lowercase=lowercase)


def save_model(model, config: BertConfig, out: str | os.PathLike, vocab,
               lowercase: bool = True, heads: Mapping[str, np.ndarray] | None = None,
               overwrite: bool = False) -> str:
    """Saves an encoder (and optional head weights) as a model directory.

    `vocab` is a vocab.txt path or a sequence of tokens.
    """
    if isinstance(vocab, (str, os.PathLike)):
        vocab = read_vocab(vocab)
    weights = encoder_weights(model)
    weights.update(heads or {})
    return write_model_dir(out, Checkpoint(config, weights, tuple(vocab), lowercase),
                           overwrite=overwrite)

