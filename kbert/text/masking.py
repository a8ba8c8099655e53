"""Masked-LM inputs as the original BERT `create_pretraining_data.py` makes them.

Runs on packed batches (`token_ids`, `padding_mask` from `kbert.text.packer.pack`) inside
`tf.data.Dataset.map` or a `tf.function`, with core TF ops only, so a new mask is drawn each
time a sequence passes through the pipeline (dynamic masking, as in RoBERTa) instead of
being frozen into the data files as the original did.

Per sequence, as in the original:
  * candidates are the real (non-padding) tokens whose id is not in `special_ids`;
  * the number to predict is `min(max_predictions, max(1, round(rate * n)))` where n is the
    number of real tokens *including* [CLS] and [SEP] (the original's `len(tokens)`), and
    `round` is Python 3's (half to even, as `tf.round`); fewer are chosen only when there
    are fewer candidates (or, with whole words, when no remaining word fits; see below);
  * candidates are visited in random order; each chosen token independently becomes
    [MASK] with probability `mask_token_rate` (0.8), a random token with probability
    `random_token_rate` (0.1), or stays as it is (0.1). The random token is drawn
    uniformly from `random_token_range`; the original drew from the whole vocabulary,
    special and [unused] entries included.
  * Whole-word masking: a word is a candidate that is not a continuation piece plus the
    continuation pieces right after it. Words are visited in random order and a word is
    taken whole or skipped when it would exceed the number to predict (the original's
    rule), so a sequence may get fewer predictions than the formula. Unlike the original,
    a continuation piece right after a special token starts a word of its own instead of
    joining the word before the special token.

Seeds: every draw is a stateless random op keyed by `seed`. Without a seed each call draws
one from TF's global generator, so masks change every epoch but are not reproducible. For a
reproducible and still dynamic pipeline, give every element its own seed by zipping an
endless `tf.data.Dataset.random` stream *after* `repeat()`, so that the second epoch gets
new seeds::

    seeds = tf.data.Dataset.random(seed=1234)              # scalar int64 per element
    batches = tf.data.Dataset.zip(packed.repeat(), seeds).map(
        lambda x, seed: {**x, **mask_tokens(x["token_ids"], x["padding_mask"], seed=seed,
                                            max_predictions=20, mask_id=103,
                                            special_ids=(0, 101, 102),
                                            random_token_range=(999, 30522))})

(Zipping before `repeat()` replays the same seeds, hence the same masks, every epoch
unless `Dataset.random(..., rerandomize_each_iteration=True)` is used.)
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def continuation_table(vocab: Sequence[str], prefix: str = "##") -> tf.Tensor:
    """bool [V]: True for WordPiece continuation pieces ("##ing"), False otherwise.

    Look ids up with `tf.gather(table, token_ids)` to get `is_continuation` for
    `mask_tokens`. `vocab` is the token list in id order (the lines of vocab.txt).
    """
    return tf.constant([token.startswith(prefix) for token in vocab], dtype=tf.bool)


def mask_tokens(token_ids, padding_mask, *, max_predictions: int, mask_id: int,
                special_ids: Sequence[int], random_token_range: tuple[int, int],
                seed=None, is_continuation=None, rate: float = 0.15,
                mask_token_rate: float = 0.8,
                random_token_rate: float = 0.1) -> dict[str, tf.Tensor]:
    """Chooses and replaces tokens for the masked-LM objective (see the module docstring).

    Args:
        token_ids: int32/int64 [B, T], packed ids.
        padding_mask: int or bool [B, T], nonzero on real tokens.
        max_predictions: P, a Python int, the static width of the outputs and the
            per-sequence cap (`max_predictions_per_seq` in the original).
        mask_id: the [MASK] id (103 in the original uncased vocab).
        special_ids: ids never chosen, e.g. ([PAD], [CLS], [SEP]) = (0, 101, 102).
        random_token_range: (low, high), random replacements are drawn uniformly from the
            ids low <= id < high, e.g. (999, 30522) for the original uncased vocab (its
            first ids are [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK]).
        seed: None (a fresh random mask on every call), or an int32/int64 scalar or [2]
            tensor keying all random draws: the same seed gives the same mask.
        is_continuation: optional bool/int [B, T], nonzero where a token is a WordPiece
            continuation piece; switches on whole-word masking (see `continuation_table`).
        rate: the fraction of tokens to predict (`masked_lm_prob`, 0.15).
        mask_token_rate, random_token_rate: the probabilities with which a chosen token
            becomes [MASK] or a random token; it is left as it is otherwise.

    Returns:
        dict:
        `token_ids`: int32 [B, T], the input with the chosen tokens replaced;
        `mask_positions`: int32 [B, P], chosen positions in ascending order, then 0;
        `mask_ids`: int32 [B, P], the original ids at those positions, then 0;
        `mask_weights`: float32 [B, P], 1.0 for each chosen position, then 0.0.
    """
    _check_arguments(max_predictions, random_token_range, rate, mask_token_rate,
                     random_token_rate)
    token_ids = tf.cast(tf.convert_to_tensor(token_ids), tf.int32)
    if token_ids.shape.rank != 2:
        raise ValueError(f"token_ids must be [B, T], got shape {token_ids.shape}")
    real = _as_bool(padding_mask)
    special = tf.reduce_any(
        tf.equal(token_ids[:, :, tf.newaxis], tf.constant(list(special_ids), tf.int32)),
        axis=-1)
    candidate = real & ~special

    # round() half to even, in float64 like Python's round(len(tokens) * masked_lm_prob).
    n_real = tf.reduce_sum(tf.where(real, 1, 0), axis=1)
    num_to_predict = tf.cast(tf.round(tf.cast(n_real, tf.float64) * rate), tf.int32)
    num_to_predict = tf.clip_by_value(num_to_predict, 1, max_predictions)

    order_seed, replace_seed, token_seed = tf.unstack(_split_seed(seed, 3))
    whole_words = is_continuation is not None
    continuation = _as_bool(is_continuation) if whole_words else None
    chosen = _choose(candidate, continuation, num_to_predict, order_seed)

    shape = tf.shape(token_ids)
    draw = tf.random.stateless_uniform(shape, seed=replace_seed)
    random_tokens = tf.random.stateless_uniform(
        shape, seed=token_seed, minval=random_token_range[0], maxval=random_token_range[1],
        dtype=tf.int32)
    masked = tf.where(chosen & (draw < mask_token_rate), mask_id,
                      tf.where(chosen & (draw < mask_token_rate + random_token_rate),
                               random_tokens, token_ids))

    positions, valid = _chosen_positions(chosen, max_predictions)
    return {
        "token_ids": masked,
        "mask_positions": positions,
        "mask_ids": tf.where(valid, tf.gather(token_ids, positions, batch_dims=1), 0),
        "mask_weights": tf.where(valid, 1.0, 0.0),
    }


def _check_arguments(max_predictions, random_token_range, rate, mask_token_rate,
                     random_token_rate) -> None:
    if not isinstance(max_predictions, int) or max_predictions < 1:
        raise ValueError(f"max_predictions must be an int >= 1, got {max_predictions!r}")
    low, high = random_token_range
    if not low < high:
        raise ValueError(f"random_token_range must be (low, high) with low < high, got "
                         f"{random_token_range!r}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    if mask_token_rate < 0 or random_token_rate < 0 or mask_token_rate + random_token_rate > 1:
        raise ValueError("mask_token_rate and random_token_rate must be >= 0 with a sum "
                         f"<= 1, got {mask_token_rate!r} and {random_token_rate!r}")


def _as_bool(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.bool else tf.not_equal(x, tf.zeros([], x.dtype))


def _split_seed(seed, n: int) -> tf.Tensor:
    """int64 [n, 2] independent stateless seeds from `seed` (scalar or [2]) or at random."""
    if seed is None:
        # A stateful draw per call: dynamic masking without any seed plumbing.
        seed = tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.random.experimental.stateless_split(seed, num=n)


def _choose(candidate: tf.Tensor, continuation: tf.Tensor | None, num_to_predict: tf.Tensor,
            seed: tf.Tensor) -> tf.Tensor:
    """bool [B, T]: the positions to predict.

    Candidates are grouped into words (single pieces unless `continuation` is given), the
    words are put in a random order, and words are taken in that order while they fit in
    `num_to_predict` [B]; a word that does not fit is skipped, as in the original.
    """
    batch, length = tf.shape(candidate)[0], tf.shape(candidate)[1]
    if continuation is None:
        starts = candidate
    else:
        previous = tf.pad(candidate[:, :-1], [[0, 0], [1, 0]])
        starts = candidate & ~(continuation & previous)
    # word_of[b, t]: the index of the word position t belongs to (meaningful on candidates).
    word_of = tf.maximum(tf.cumsum(tf.where(starts, 1, 0), axis=1) - 1, 0)
    n_words = tf.reduce_sum(tf.where(starts, 1, 0), axis=1)
    row_offset = tf.range(batch)[:, tf.newaxis] * length
    word_size = tf.reshape(tf.math.unsorted_segment_sum(
        tf.reshape(tf.where(candidate, 1, 0), [-1]), tf.reshape(word_of + row_offset, [-1]),
        batch * length), [batch, length])  # [B, W=T], 0 past the last word

    # Random order of the words (a random key per word; non-words sort last).
    word_index = tf.range(length)[tf.newaxis, :]
    key = tf.random.stateless_uniform([batch, length], seed=seed)
    key = tf.where(word_index < n_words[:, tf.newaxis], key, -1.0)
    order = tf.argsort(key, axis=1, direction="DESCENDING", stable=True)
    sizes = tf.gather(word_size, order, batch_dims=1)

    if continuation is None:
        # Every word is one token: the greedy pass takes exactly the first num_to_predict.
        taken_in_order = (sizes > 0) & (tf.cumsum(sizes, axis=1)
                                       <= num_to_predict[:, tf.newaxis])
    else:
        taken_in_order = _greedy_fill(sizes, num_to_predict)
    rank = tf.argsort(order, axis=1, stable=True)  # inverse permutation
    word_taken = tf.gather(taken_in_order, rank, batch_dims=1)
    return candidate & tf.gather(word_taken, word_of, batch_dims=1)


def _greedy_fill(sizes: tf.Tensor, capacity: tf.Tensor) -> tf.Tensor:
    """bool [B, W]: visiting sizes [B, W] left to right, take each nonzero one that still
    fits in capacity [B] and skip it otherwise (a scan over W, all rows at once)."""

    def step(total, size):
        fits = (size > 0) & (total + size <= capacity)
        return total + tf.where(fits, size, 0)

    totals = tf.scan(step, tf.transpose(sizes), initializer=tf.zeros_like(capacity))
    totals = tf.transpose(totals)  # [B, W], running total after each word
    before = tf.pad(totals[:, :-1], [[0, 0], [1, 0]])
    return totals > before


def _chosen_positions(chosen: tf.Tensor, max_predictions: int) -> tuple[tf.Tensor, tf.Tensor]:
    """int32 [B, P] chosen positions in ascending order padded with 0, and bool [B, P]."""
    length = tf.shape(chosen)[1]
    position = tf.range(length)[tf.newaxis, :]
    # Unchosen positions sort after every chosen one; pad so that P > T works too.
    ordered = tf.sort(tf.where(chosen, position, length), axis=1)
    ordered = tf.pad(ordered, [[0, 0], [0, max_predictions]], constant_values=length)
    ordered = ordered[:, :max_predictions]
    ordered.set_shape([chosen.shape[0], max_predictions])
    valid = ordered < length
    return tf.where(valid, ordered, 0), valid
