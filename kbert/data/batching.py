"""Per-batch trimming of padded features: a batch of short sentences is cut to its longest
row instead of running the encoder over T padding positions (fine-tuning data is mostly far
shorter than T; UD English-EWT sentences average ~25 word-pieces at T = 128)."""

from __future__ import annotations

import tensorflow as tf


def trim_to_longest(x: dict, y=None, sample_weight=None, multiple: int = 8):
    """Cuts every [B, T, ...] tensor of a batch to [B, L, ...].

    L = the longest row's `padding_mask` length rounded up to `multiple` (so the model
    sees only a few distinct shapes), at most T. Tensors in `x`, `y` and `sample_weight`
    (dicts, or single tensors) whose axis 1 has T's static size are cut; others (e.g. QA
    start / end positions [B], class labels [B]) pass unchanged. The padding cut away holds
    no real tokens, so the model's outputs on the kept positions are unchanged.

    Returns (x, y, sample_weight) with the same structure (None entries are dropped as
    tf.data requires: returns (x,), (x, y) or (x, y, sample_weight)).
    """
    mask = x["padding_mask"]
    length = tf.shape(mask)[1]
    static_length = mask.shape[1]
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1))
    cut = tf.minimum(length, (longest + multiple - 1) // multiple * multiple)
    cut = tf.maximum(cut, 1)

    def trim(t):
        if t is None or t.shape.rank is None or t.shape.rank < 2:
            return t
        if static_length is not None and t.shape[1] != static_length:
            return t
        return t[:, :cut]

    parts = [tf.nest.map_structure(trim, part) for part in (x, y, sample_weight)
             if part is not None]
    return tuple(parts)


def trim_features(features: dict, multiple: int) -> dict:
    """Packed inference features cut to the batch's longest row (`TaskSpec.length_multiple`).

    Args:
        features: name -> tensor; `padding_mask` int32 [N, T] and every other [N, T, ...]
            tensor (token ids, offsets, word indices) is cut along axis 1; others (e.g.
            [N] window indices, [B, W] word offsets) pass unchanged.
        multiple: 0 returns `features` as they are (every row T long); m > 0 cuts to
            L = the longest row's length rounded up to m, at most T (a dynamic size: one
            traced graph serves every L).

    Returns:
        the same names, [N, L, ...] where cut. Positions past L hold only padding, which
        the encoder's attention masks out, so outputs at kept positions are unchanged.
    """
    if not multiple:
        return features
    return trim_to_longest(dict(features), multiple=multiple)[0]
