"""`fill_mask`: a pre-trained model's top guesses for each [MASK] in a text (what
`kbert fill-mask` shows), to see what pre-training learned."""

from __future__ import annotations

import os

import numpy as np

MASK_TEXT = "[MASK]"


def fill_mask(model_dir: str | os.PathLike, texts: list[str], top_k: int = 5
              ) -> list[list[list[tuple[str, float]]]]:
    """For each text, for each "[MASK]" in it, the `top_k` (token, probability) pairs.

    "[MASK]" is recognised in the raw text (the tokenizer itself treats it as ordinary
    characters, as the original BERT does); the pieces around it are tokenized normally.
    """
    import tensorflow as tf

    from kbert.model_dir import read_checkpoint
    from kbert.pretrainer import load_pretrainer
    from kbert.text import Tokenizer
    from kbert.text.packer import pack

    checkpoint = read_checkpoint(model_dir)
    if not checkpoint.has_pretraining_heads:
        raise ValueError(f"{model_dir} has no masked-LM head: fill-mask needs a model from "
                         "`kbert pretrain` or a converted checkpoint with cls.* heads")
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    rows = []
    for text in texts:
        pieces = text.split(MASK_TEXT)
        if len(pieces) < 2:
            raise ValueError(f"no {MASK_TEXT} in {text!r}")
        ids = tokenizer(tf.constant(pieces)).to_list()
        row = []
        for i, piece_ids in enumerate(ids):
            row += piece_ids + ([tokenizer.mask_id] if i < len(ids) - 1 else [])
        rows.append(row)
    length = min(checkpoint.config.max_sequence_length, max(len(r) for r in rows) + 2)
    packed = pack(tf.ragged.constant(rows, dtype=tf.int32), sequence_length=length,
                  cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    token_ids = packed["token_ids"].numpy()
    positions = [np.flatnonzero(r == tokenizer.mask_id) for r in token_ids]
    width = max(1, max(len(p) for p in positions))
    mask_positions = np.zeros((len(rows), width), np.int32)
    for i, p in enumerate(positions):
        mask_positions[i, :len(p)] = p

    model = load_pretrainer(checkpoint)
    inputs = {name: tensor.numpy() for name, tensor in packed.items()}
    logits = model({**inputs, "mask_positions": mask_positions})["mlm_logits"].numpy()
    probabilities = tf.nn.softmax(logits, axis=-1).numpy()
    results = []
    for i, p in enumerate(positions):
        per_mask = []
        for j in range(len(p)):
            best = np.argsort(-probabilities[i, j])[:top_k]
            per_mask.append([(checkpoint.vocab[k], float(probabilities[i, j, k])) for k in best])
        results.append(per_mask)
    return results
