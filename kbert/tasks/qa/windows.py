"""Question + context windows for extractive QA, as TF ops (tf.data, predict and serving).

Each example becomes one or more windows of T = `seq_len` tokens:

    [CLS] question [SEP] context[start : start + length] [SEP] [PAD]...

The question keeps its first `max_query_length` word-pieces. A window holds at most
`room = T - 3 - question_length` context tokens; window k starts at context token
`k * step` with `step = min(room, doc_stride)` and the last window ends at the context's
end (the original run_squad.py rule: `doc_stride` is the distance between window starts,
not the overlap). A context that fits needs one window; an empty context gets one window
with no context tokens.

A token seen in several windows is scored ("maximum context") only in the window where it
has the most context: score = min(tokens left of it, tokens right of it) + 0.01 * window
length, the first window winning a tie (run_squad.py's `_check_is_max_context`). Scores
are compared as integers (100 * min + length) so no float rounding decides a tie.

Only core integer ops (GatherV2, SelectV2, ScatterNd, Cumsum, Range, comparisons,
ConcatV2) plus the tokenizer: the same function builds the training features in tf.data
and the serving graph's windows (contexts longer than T are windowed inside the graph).
"""

from __future__ import annotations

import math

import tensorflow as tf

from kbert.tasks.spec import TaskSpec


def check_qa_spec(spec: TaskSpec) -> None:
    """Raises ValueError when `spec` leaves no room for context tokens."""
    if spec.task != "qa":
        raise ValueError(f"not a qa task spec: task={spec.task!r}")
    if spec.doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {spec.doc_stride}")
    if spec.max_query_length < 1:
        raise ValueError(f"max_query_length must be >= 1, got {spec.max_query_length}")
    if spec.seq_len < spec.max_query_length + 4:
        raise ValueError(
            f"seq_len {spec.seq_len} leaves no room for context after a question of "
            f"max_query_length {spec.max_query_length} and [CLS] [SEP] [SEP]; use a "
            f"max_query_length of at most {spec.seq_len - 4}")
    if spec.max_answer_length < 1 or spec.n_best < 1:
        raise ValueError(f"max_answer_length and n_best must be >= 1, got "
                         f"{spec.max_answer_length} and {spec.n_best}")


def qa_windows(tokenizer, spec: TaskSpec, question: tf.Tensor, context: tf.Tensor
               ) -> dict[str, tf.Tensor]:
    """The windows of a batch of (question, context) pairs.

    Args:
        tokenizer: a kbert.text.Tokenizer.
        spec: a qa TaskSpec (seq_len, doc_stride, max_query_length).
        question, context: string [B].

    Returns:
        dict, N = total windows (>= B), T = spec.seq_len:
        `token_ids`, `segment_ids`, `padding_mask`: int32 [N, T], the model inputs
            (segment 1 = the context tokens and the last [SEP]);
        `window_example`: int32 [N], the example each window belongs to (non-decreasing;
            an example's windows are consecutive, in context order);
        `context_index`: int32 [N, T], a position's token index in its context, -1 at
            [CLS], question, [SEP] and padding;
        `start_byte`, `end_byte`: int32 [N, T], the token's byte span in the UTF-8
            context, -1 outside the context;
        `max_context`: int32 [N, T], 1 where this window is the token's maximum-context
            window (0 outside the context).
    """
    features, _ = _windows(tokenizer, spec, question, context)
    return features


def answer_labels(tokenizer, spec: TaskSpec, question: tf.Tensor, context: tf.Tensor,
                  answer_start: tf.Tensor, answer_end: tf.Tensor
                  ) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """Windows plus the training targets (tf.data only; uses ragged ops).

    Args:
        question, context: string [B].
        answer_start, answer_end: int32 [B], the answer's BYTE span in the UTF-8 context
            (end exclusive); -1 for no answer (SQuAD 2.0 impossible questions).

    Returns:
        (windows as `qa_windows` returns them, start_positions int32 [N],
        end_positions int32 [N]): the positions of the answer's first and last tokens in
        windows that hold the whole answer, else 0 ([CLS]) as in run_squad.py.
        The answer's tokens are those whose byte spans overlap it.
    """
    features, (ends_ragged, starts_ragged) = _windows(tokenizer, spec, question, context)
    answer_start = tf.convert_to_tensor(answer_start, tf.int32)
    answer_end = tf.convert_to_tensor(answer_end, tf.int32)
    # First token ending after the answer's start; last token starting before its end.
    first = tf.reduce_sum(tf.cast(ends_ragged <= answer_start[:, tf.newaxis], tf.int32), 1)
    last = tf.reduce_sum(tf.cast(starts_ragged < answer_end[:, tf.newaxis], tf.int32), 1) - 1
    example = features["window_example"]
    first, last = tf.gather(first, example), tf.gather(last, example)
    has_answer = tf.gather(answer_start >= 0, example) & (first <= last)
    # Context index of each window's first and last context token.
    in_context = features["context_index"] >= 0
    big = tf.int32.max
    window_first = tf.reduce_min(tf.where(in_context, features["context_index"], big), 1)
    window_last = tf.reduce_max(features["context_index"], 1)
    inside = has_answer & (first >= window_first) & (last <= window_last)
    # Position of context index i in its window: the window's offset plus i.
    offset = tf.argmax(tf.where(in_context, 1, 0), axis=1, output_type=tf.int32)
    start_positions = tf.where(inside, offset + first - window_first, 0)
    end_positions = tf.where(inside, offset + last - window_first, 0)
    return features, start_positions, end_positions


def _windows(tokenizer, spec: TaskSpec, question, context):
    check_qa_spec(spec)
    question = tf.convert_to_tensor(question, tf.string)
    context = tf.convert_to_tensor(context, tf.string)
    seq_len = spec.seq_len

    q_ids = tokenizer.tokenize(question)
    c_ids, c_starts, c_ends = tokenizer.tokenize_with_offsets(context)
    q_splits = tf.cast(q_ids.row_splits, tf.int32)
    c_splits = tf.cast(c_ids.row_splits, tf.int32)
    q_len = tf.minimum(q_splits[1:] - q_splits[:-1], spec.max_query_length)  # [B]
    n = c_splits[1:] - c_splits[:-1]  # [B] context tokens
    room = seq_len - 3 - q_len  # >= 1 (check_qa_spec)
    step = tf.minimum(room, spec.doc_stride)
    count = tf.where(n <= room, 1, (n - room + step - 1) // step + 1)  # windows [B]
    first_window = tf.cumsum(count, exclusive=True)
    total = tf.reduce_sum(count)
    # Example of each window: a 1 where each example's windows begin (after the first
    # example), summed up. Every example has >= 1 window, so the positions are distinct.
    example = tf.cumsum(tf.scatter_nd(first_window[1:, tf.newaxis],
                                      tf.ones_like(first_window[1:]),
                                      tf.reshape(total, [1])))
    k = tf.range(total) - tf.gather(first_window, example)  # window index in its example

    def per_window(x):
        return tf.gather(x, example)[:, tf.newaxis]  # [N, 1]

    ql, ne, roome, stepe = per_window(q_len), per_window(n), per_window(room), per_window(step)
    start = k[:, tf.newaxis] * stepe
    length = tf.minimum(roome, ne - start)  # context tokens in the window
    pos = tf.range(seq_len, dtype=tf.int32)[tf.newaxis, :]  # [1, T]
    in_question = (pos >= 1) & (pos <= ql)
    j = pos - ql - 2  # position within the window's context part
    in_context = (j >= 0) & (j < length)
    last_sep = ql + 2 + length
    is_sep = (pos == ql + 1) | (pos == last_sep)
    context_index = tf.where(in_context, start + j, -1)

    # One gather from [question values, context values, cls, sep, pad] (as the packer).
    n_q, n_c = q_splits[-1], c_splits[-1]
    cls_at = n_q + n_c
    index = tf.where(in_question, per_window(q_splits[:-1]) + pos - 1, cls_at + 2)
    flat_context = per_window(c_splits[:-1]) + context_index
    index = tf.where(in_context, n_q + flat_context, index)
    index = tf.where(is_sep, cls_at + 1, index)
    index = tf.where(pos == 0, cls_at, index)
    values = tf.concat([tf.cast(q_ids.flat_values, tf.int32), tf.cast(c_ids.flat_values, tf.int32),
                        tf.constant([tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id],
                                    tf.int32)], axis=0)
    token_ids = tf.gather(values, index)

    # Offsets: read at flat_context, or at the appended -1 outside the context (also
    # when there are no context tokens at all: never gather from an empty tensor).
    offset_index = tf.where(in_context, flat_context, n_c)
    minus_one = tf.constant([-1], tf.int32)
    start_byte = tf.gather(tf.concat([c_starts.flat_values, minus_one], 0), offset_index)
    end_byte = tf.gather(tf.concat([c_ends.flat_values, minus_one], 0), offset_index)

    features = {
        "token_ids": token_ids,
        # tf.where(cond, 1, 0), not a bool cast (docs/FIELD_NOTES.md "TFLite").
        "segment_ids": tf.where(in_context | (pos == last_sep), 1, 0),
        "padding_mask": tf.where(pos <= last_sep, 1, 0),
        "window_example": example,
        "context_index": context_index,
        "start_byte": start_byte,
        "end_byte": end_byte,
        "max_context": _max_context(spec, k, context_index, in_context, start, length,
                                    per_window(count), roome, stepe, ne),
    }
    return features, (c_ends, c_starts)


def _max_context(spec, k, p, in_context, start, length, count, room, step, n):
    """int32 [N, T]: 1 where window k is the maximum-context window of context token p.

    Two windows d apart share a token only when d * step < room <= T - 3, and
    step == doc_stride whenever windows overlap, so windows that can share a token with
    window k are fewer than `ceil((T - 3) / doc_stride)` away: a fixed number of
    neighbours is compared, with elementwise ops only (no segment ops).
    """
    def score(s, l):  # 100 * (min(left, right) + 0.01 * length), an integer
        return 100 * tf.minimum(p - s, s + l - 1 - p) + l

    mine = score(start, length)
    best = in_context
    reach = math.ceil((spec.seq_len - 3) / spec.doc_stride)
    k = k[:, tf.newaxis]
    for d in [d for d in range(-reach, reach + 1) if d != 0]:
        other = k + d
        other_start = other * step
        other_length = tf.minimum(room, n - other_start)
        holds = ((other >= 0) & (other < count) & (p >= other_start)
                 & (p < other_start + other_length))
        theirs = score(other_start, other_length)
        # An earlier window wins ties (run_squad.py keeps the first maximum).
        beaten = holds & ((theirs >= mine) if d < 0 else (theirs > mine))
        best = best & tf.logical_not(beaten)
    return tf.where(best, 1, 0)
