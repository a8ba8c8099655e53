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
    """Consecutive windows of `max_tokens` tokens with the line starts inside each.

    Built for the whole document at once (one ragged tensor, then unbatched): a Dataset
    per window costs more than the window itself.
    """
    tokens, line_starts = document["tokens"], document["line_starts"]
    n = tf.size(tokens)
    num_chunks = (n + max_tokens - 1) // max_tokens
    lengths = tf.minimum(max_tokens, n - tf.range(num_chunks) * max_tokens)
    chunk_tokens = tf.RaggedTensor.from_row_lengths(tokens, lengths)
    # Line starts inside a chunk (not at its first token), relative to the chunk.
    line_chunk = line_starts // max_tokens
    inside = line_starts % max_tokens > 0
    splits = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(line_starts % max_tokens, inside),
        tf.cast(tf.boolean_mask(line_chunk, inside), tf.int64), nrows=tf.cast(num_chunks, tf.int64))
    ids = tf.fill([num_chunks], document["document_id"])
    return tf.data.Dataset.from_tensor_slices(
        {"tokens": chunk_tokens, "splits": splits, "document_id": ids})


def _line_windows(document, max_tokens: int) -> tf.data.Dataset:
    """For every line of a document: the text from that line on, up to `max_tokens` tokens."""
    tokens, starts = document["tokens"], document["line_starts"]
    ends = tf.minimum(starts + max_tokens, tf.size(tokens))
    positions = tf.ragged.range(starts, ends)
    windows = tf.gather(tokens, positions)
    ids = tf.fill(tf.shape(starts), document["document_id"])
    return tf.data.Dataset.from_tensor_slices({"tokens": windows, "document_id": ids})


def _take(values: tf.Tensor, starts: tf.Tensor, lengths: tf.Tensor) -> tf.RaggedTensor:
    """Ragged [N, (lengths)] of `values[starts[i] : starts[i] + lengths[i]]`."""
    return tf.gather(values, tf.ragged.range(starts, starts + lengths))


def _make_pairs(chunks, randoms, seed, candidates: int, max_tokens: int,
                short_seq_prob: float):
    """A batch of NSP examples from N chunks, N * K random windows and a seed (vectorised:
    one set of ops per batch rather than per example)."""
    seeds = tf.random.experimental.stateless_split(
        tf.stack([seed, tf.constant(0x5EED, tf.int64)]), 4)
    tokens, doc_ids = chunks["tokens"], chunks["document_id"]
    batch = tokens.nrows(out_type=tf.int32)
    m = tf.cast(tokens.row_lengths(), tf.int32)
    # Short sequence with probability short_seq_prob: target uniform in [2, max_tokens].
    short = tf.random.stateless_uniform([batch], seeds[0]) < short_seq_prob
    target = tf.random.stateless_uniform([batch], seeds[1], 2, max_tokens + 1, tf.int32)
    n = tf.where(short, tf.minimum(m, target), m)
    # Cut at a line boundary when the (shortened) chunk has one, else at a random token.
    splits = tf.ragged.boolean_mask(chunks["splits"], chunks["splits"] < n[:, None])
    n_splits = tf.cast(splits.row_lengths(), tf.int32)
    u = tf.random.stateless_uniform([batch], seeds[2])
    pick = tf.minimum(tf.cast(u * tf.cast(n_splits, tf.float32), tf.int32),
                      tf.maximum(n_splits - 1, 0))
    dense_splits = tf.concat([splits.to_tensor(default_value=1),
                              tf.ones([batch, 1], splits.dtype)], axis=1)
    line_cut = tf.gather(dense_splits, pick, batch_dims=1)
    token_cut = 1 + tf.minimum(tf.cast(u * tf.cast(n - 1, tf.float32), tf.int32), n - 2)
    cut = tf.where(n_splits > 0, line_cut, token_cut)

    # NotNext text: the first of the K candidates that comes from another document.
    random_ids = tf.reshape(randoms["document_id"], [batch, candidates])
    other = tf.not_equal(random_ids, doc_ids[:, None])
    first_other = tf.argmax(tf.cast(other, tf.int32), axis=1, output_type=tf.int32)
    want_random = tf.random.stateless_uniform([batch], seeds[3]) < 0.5
    is_random = want_random & tf.reduce_any(other, axis=1)
    window = tf.range(batch) * candidates + first_other
    window_start = tf.gather(tf.cast(randoms["tokens"].row_starts(), tf.int32), window)
    window_length = tf.gather(tf.cast(randoms["tokens"].row_lengths(), tf.int32), window)

    chunk_start = tf.cast(tokens.row_starts(), tf.int32)
    segment_a = _take(tokens.values, chunk_start, cut)
    # B is either the chunk's continuation or the random window; the other part is empty.
    next_part = _take(tokens.values, chunk_start + cut, tf.where(is_random, 0, n - cut))
    random_part = _take(randoms["tokens"].values, window_start,
                        tf.where(is_random, tf.minimum(window_length, n - cut), 0))
    segment_b = tf.concat([next_part, random_part], axis=1)
    return {"segment_a": segment_a, "segment_b": segment_b,
            "next_sentence_labels": tf.where(is_random, NOT_NEXT, IS_NEXT),
            "document_id": doc_ids}


def nsp_pair_batches(documents: tf.data.Dataset, random_documents: tf.data.Dataset,
                     batch_size: int, max_tokens: int, short_seq_prob: float = 0.1,
                     candidates: int = 8, seed: int | None = None,
                     shuffle_buffer: int = 10_000, interleave: int = 16) -> tf.data.Dataset:
    """Documents -> batches of NSP examples.

    Args:
        documents: document dicts (see kbert.data.documents); one pass over them gives one
            pass of chunks (repeat it for several epochs).
        random_documents: an endless, differently shuffled stream of the same documents to
            draw NotNext text from.
        batch_size: N, examples per batch (the last, smaller batch is dropped).
        max_tokens: tokens available to A + B (sequence length - 3 for [CLS] A [SEP] B [SEP]).
        short_seq_prob: probability of a shortened example.
        candidates: random windows considered per example (see module docstring).
        seed: makes the examples reproducible; None draws fresh seeds.
        shuffle_buffer: chunks (and random windows) shuffled together.
        interleave: documents read side by side before shuffling.

    Returns:
        Dataset of dicts, N rows each: `segment_a` int32 ragged [N, (na)], `segment_b`
        int32 ragged [N, (nb)] (na >= 1, nb >= 1, na + nb <= max_tokens),
        `next_sentence_labels` int32 [N] (0 IsNext, 1 NotNext), `document_id` int64 [N].
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
    # Interleave documents so that the shuffle buffers hold text of many documents even
    # when a few documents are long (a corpus of whole books), instead of one at a time.
    chunks = (documents.interleave(lambda d: _chunks(d, max_tokens), cycle_length=interleave,
                                   block_length=1)
              .filter(lambda c: tf.size(c["tokens"]) >= 2)
              .shuffle(shuffle_buffer, seed=seed)
              .ragged_batch(batch_size, drop_remainder=True))
    randoms = (random_documents.interleave(lambda d: _line_windows(d, max_tokens),
                                           cycle_length=interleave, block_length=1)
               .shuffle(shuffle_buffer, seed=None if seed is None else seed + 1)
               .ragged_batch(batch_size * candidates, drop_remainder=True))
    seeds = tf.data.Dataset.random(seed=seed)
    return tf.data.Dataset.zip(chunks, randoms, seeds).map(
        lambda c, r, s: _make_pairs(c, r, s, candidates, max_tokens, short_seq_prob),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
