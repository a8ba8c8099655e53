"""The one tiny model the tests build: its config, a vocabulary, random encoder inputs, and
factories for an encoder and for model directories (plain and fine-tuned).

    config = tiny_config()                         # preset "tiny", 1 block, T <= 64, V = 64
    encoder = tiny_encoder(config, seed=0)
    features = random_features(3, 16, lengths=[16, 9, 3])
    path = save_tiny_model(tmp_path / "pre")       # a kbert model directory
    path, model = save_tiny_task_model(tmp_path / "clf", TaskSpec("classification", ...))

`tiny_config()` is BertConfig preset "tiny" (H = 128, 2 heads, 4H feed-forward) with one
Transformer block and max_sequence_length 64: small enough that a test builds, saves and
exports it in a second or two, big enough that a 1-block model learns the synthetic tasks
in tests/helpers/finetune.py and tests/helpers/qa.py in a few epochs. A test changes a
field only where what it checks needs it, and says why at the call (for example two
blocks where every block's output is checked, larger initial weights where an argmax over
classes must mean something).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from kbert.config import BertConfig
from kbert.io.model_dir import read_vocab, save_model
from kbert.models.encoder import BertEncoder, build_encoder
from kbert.models.pretrainer import build_pretrainer, head_weights
from kbert.tasks import TaskSpec, build_task_model, save_task_model

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# 64 tokens: the five special tokens (ids 0-4, [PAD] = 0 as BERT's vocabularies have it)
# and words w0 ... w58. Tests whose texts need real words keep their own vocabulary.
VOCAB = SPECIAL_TOKENS + [f"w{i}" for i in range(59)]


def tiny_config(vocabulary_size: int = len(VOCAB), *, num_layers: int = 1,
                max_sequence_length: int = 64, activation: str = "gelu",
                **changes) -> BertConfig:
    """The tests' BertConfig: preset "tiny" with `num_layers` blocks (1 by default) and
    positions up to `max_sequence_length` (64), for a vocabulary of `vocabulary_size`
    tokens (`VOCAB`'s 64 by default). Other `BertConfig` fields in `changes` (e.g.
    `dropout`, `initializer_range`), each with its reason at the call."""
    return BertConfig.from_preset("tiny", vocabulary_size=vocabulary_size,
                                  num_layers=num_layers,
                                  max_sequence_length=max_sequence_length,
                                  activation=activation, **changes)


def tiny_encoder(config: BertConfig | None = None, seed: int | None = None) -> BertEncoder:
    """`build_encoder(config or tiny_config())`; with `seed`, Keras' random state is
    seeded first, so the same seed gives the same weights."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_encoder(config or tiny_config())


def random_features(batch: int, length: int, lengths=None, seed: int = 0,
                    vocabulary_size: int = len(VOCAB)) -> dict[str, np.ndarray]:
    """Encoder inputs (numpy int32 [batch, length] each): row i has `lengths[i]` real
    tokens (all `length` by default), random ids in [1, vocabulary_size) and 0 at padding;
    the second half of a row's real tokens is segment 1."""
    rng = np.random.default_rng(seed)
    lengths = np.array([length] * batch if lengths is None else lengths)
    position = np.arange(length)[None, :]
    padding_mask = (position < lengths[:, None]).astype("int32")
    token_ids = rng.integers(1, vocabulary_size, (batch, length)).astype("int32")
    segment_ids = (position >= lengths[:, None] // 2).astype("int32")
    return {"token_ids": token_ids * padding_mask, "segment_ids": segment_ids * padding_mask,
            "padding_mask": padding_mask}


def save_tiny_model(path: str | os.PathLike, vocab=VOCAB, *, config: BertConfig | None = None,
                    seed: int | None = None, pretraining_heads: bool = False) -> str:
    """A freshly initialised tiny encoder saved as a kbert model directory at `path`
    (returned as a string). `vocab` is a list of tokens or a vocab.txt path; `config`
    defaults to `tiny_config` for its size; `seed` as in `tiny_encoder`;
    `pretraining_heads` adds masked-LM and NSP heads (what fill-mask exports need)."""
    vocab = _tokens(vocab)
    config = config or tiny_config(len(vocab))
    encoder = tiny_encoder(config, seed)
    heads = head_weights(build_pretrainer(encoder, config)) if pretraining_heads else None
    return save_model(encoder, config, path, vocab, heads=heads)


def save_tiny_task_model(path: str | os.PathLike, spec: TaskSpec, vocab=VOCAB, *,
                         config: BertConfig | None = None, seed: int | None = None):
    """A tiny task model for `spec` (encoder and head freshly initialised), saved as a
    fine-tuned model directory at `path`. Returns (directory, the Keras model), the model
    being the reference its exports are checked against. `vocab`, `config` and `seed` as
    in `save_tiny_model`."""
    vocab = _tokens(vocab)
    config = config or tiny_config(len(vocab))
    model = build_task_model(tiny_encoder(config, seed), spec)
    return save_task_model(path, model, spec, config, vocab), model


def _tokens(vocab) -> tuple[str, ...]:
    return read_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else tuple(vocab)


EXPORT_KINDS = ("classification", "pair", "regression", "tagging", "qa", "embedding",
                "fill-mask")


def kind_model_dir(root, kind: str, vocab, config: BertConfig, seq_len: int,
                   seed: int = 3) -> str:
    """A tiny model directory at ROOT/KIND for one of EXPORT_KINDS (classification with
    windows, a pair classifier, regression, an IOB2 tagger with windows, QA with windows,
    a pre-trained encoder for embedding / fill-mask), built from `config`."""
    if kind in ("embedding", "fill-mask"):
        return save_tiny_model(root / kind, vocab, config=config, seed=seed,
                               pretraining_heads=kind == "fill-mask")
    spec = {"classification": TaskSpec("classification", labels=("a", "b", "c"),
                                       seq_len=seq_len, doc_stride=12),
            "pair": TaskSpec("classification", labels=("a", "b"), seq_len=seq_len, pair=True),
            "regression": TaskSpec("regression", seq_len=seq_len),
            "tagging": TaskSpec("tagging", labels=("O", "B-X", "I-X"), seq_len=seq_len,
                                doc_stride=10, tag_scheme="IOB2"),
            "qa": TaskSpec("qa", seq_len=seq_len, doc_stride=8, max_query_length=8,
                           max_answer_length=6, n_best=20)}[kind]
    return save_tiny_task_model(root / kind, spec, vocab, config=config, seed=seed)[0]
