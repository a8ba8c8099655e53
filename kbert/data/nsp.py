"""Next-sentence-prediction pairs from tokenized documents, in `tf.data`.

As in BERT: a chunk of up to `max_tokens` consecutive tokens of one document is cut in two
at a line boundary (a random token when the chunk holds a single line); segment A is the
first part. With probability 1/2 segment B is the actual continuation (IsNext, label 0);
otherwise B is text of the same length starting at a random line of a *different*
document (NotNext, label 1). With `short_seq_prob` (0.1) the chunk is first cut to a
random length in [2, max_tokens], so the model also sees short sequences.

The random text comes from a second, differently seeded stream of line-start windows; each
pair looks at `candidates` of them and takes the first from another document. When all
candidates come from the pair's own document (only likely with a handful of documents), the
pair becomes IsNext instead, so a NotNext pair never holds text of one document.
"""

from __future__ import annotations

import tensorflow as tf

IS_NEXT, NOT_NEXT = 0, 1


def _chunks(document, max_tokens: int) -> tf.data.Dataset:
    """Consecutive windows of `max_tokens` tokens with the line starts inside each."""
    tokens, line_starts = document["tokens"], document["line_starts"]
    n = tf.size(tokens)
    starts = tf.range(0, n, max_tokens)
    ends = tf.minimum(starts + max_tokens, n)

    def window(start, end):
        inside = tf.boolean_mask(line_starts, (line_starts > start) & (line_starts < end))
        return {"tokens": tokens[start:end], "splits": inside - start,
                "document_id": document["document_id"]}

    return tf.data.Dataset.from_tensor_slices((starts, ends)).map(window)


def _line_windows(document, max_tokens: int) -> tf.data.Dataset:
    """For every line of a document: the text from that line on, up to `max_tokens` tokens."""
    tokens = document["tokens"]

    def window(start):
        return {"tokens": tokens[start:start + max_tokens],
                "document_id": document["document_id"]}

    return tf.data.Dataset.from_tensor_slices(document["line_starts"]).map(window)


def _make_pair(chunk, randoms, seed, max_tokens: int, short_seq_prob: float):
    """One NSP example from a chunk, `randoms` (ragged [K, (tokens)] + ids) and a seed."""
    seeds = tf.random.experimental.stateless_split(
        tf.stack([seed, tf.constant(0x5EED, tf.int64)]), 4)
    tokens = chunk["tokens"]
    n = tf.size(tokens)
    # Short sequence with probability short_seq_prob: target uniform in [2, max_tokens].
    short = tf.random.stateless_uniform([], seeds[0]) < short_seq_prob
    short_target = tf.random.stateless_uniform([], seeds[1], 2, max_tokens + 1, tf.int32)
    n = tf.where(short, tf.minimum(n, short_target), n)
    tokens = tokens[:n]
    splits = tf.boolean_mask(chunk["splits"], chunk["splits"] < n)
    # Cut at a line boundary when the chunk has one, else at a random token.
    u = tf.random.stateless_uniform([], seeds[2])
    n_splits = tf.size(splits)
    # (gather from a padded copy: tf.where below evaluates both branches.)
    line_cut = tf.gather(tf.concat([splits, [1]], 0), tf.minimum(
        tf.cast(u * tf.cast(n_splits, tf.float32), tf.int32), tf.maximum(n_splits - 1, 0)))
    token_cut = 1 + tf.minimum(tf.cast(u * tf.cast(n - 1, tf.float32), tf.int32), n - 2)
    cut = tf.where(n_splits > 0, line_cut, token_cut)
    segment_a = tokens[:cut]

    other = tf.not_equal(randoms["document_id"], chunk["document_id"])
    has_other = tf.reduce_any(other)
    first_other = tf.argmax(tf.cast(other, tf.int32), output_type=tf.int32)
    want_random = tf.random.stateless_uniform([], seeds[3]) < 0.5
    is_random = want_random & has_other
    random_text = randoms["tokens"][first_other][: n - cut]
    segment_b = tf.cond(is_random, lambda: random_text, lambda: tokens[cut:])
    return {"segment_a": segment_a, "segment_b": segment_b,
            "next_sentence_labels": tf.where(is_random, NOT_NEXT, IS_NEXT),
            "document_id": chunk["document_id"]}


def nsp_pairs(documents: tf.data.Dataset, random_documents: tf.data.Dataset,
              max_tokens: int, short_seq_prob: float = 0.1, candidates: int = 8,
              seed: int | None = None, shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """Documents -> NSP examples.

    Args:
        documents: document dicts (see kbert.data.documents); one pass over them gives one
            pass of chunks (repeat it for several epochs).
        random_documents: an endless, differently shuffled stream of the same documents to
            draw NotNext text from.
        max_tokens: tokens available to A + B (sequence length - 3 for [CLS] A [SEP] B [SEP]).
        short_seq_prob: probability of a shortened example.
        candidates: random windows considered per pair (see module docstring).
        seed: makes the examples reproducible; None draws a fresh seed.

    Returns:
        Dataset of dicts: `segment_a` int32 [na], `segment_b` int32 [nb] (na >= 1, nb >= 1,
        na + nb <= max_tokens), `next_sentence_labels` int32 scalar (0 IsNext, 1 NotNext),
        `document_id` int64 scalar.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
    chunks = documents.flat_map(lambda d: _chunks(d, max_tokens)).filter(
        lambda c: tf.size(c["tokens"]) >= 2)
    randoms = (random_documents.flat_map(lambda d: _line_windows(d, max_tokens))
               .shuffle(shuffle_buffer, seed=None if seed is None else seed + 1)
               .ragged_batch(candidates))
    seeds = tf.data.Dataset.random(seed=seed)
    return tf.data.Dataset.zip(chunks, randoms, seeds).map(
        lambda c, r, s: _make_pair(c, r, s, max_tokens, short_seq_prob),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
