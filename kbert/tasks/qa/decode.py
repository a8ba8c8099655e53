"""Extractive-QA decoding as TF ops: start / end logits of windows -> one answer per example.

Per window (run_squad.py's rule): the `n_best` highest start positions and the `n_best`
highest end positions give n_best x n_best candidate spans; a span is kept when both ends
are context tokens, the start is in its maximum-context window, end >= start and it is at
most `max_answer_length` tokens long; its score is start_logit + end_logit. The example's
answer is the best kept span over all its windows. Unlike run_squad.py, positions outside
the context are masked before the top-n selection, so n_best candidates are always
context tokens (the original can run out of candidates when the model puts high logits
on the question or padding).

SQuAD 2.0: the null score is start_logit[0] + end_logit[0] ([CLS]) of the window where it
is lowest; the answer is "" when null score - best span score > `null_score_threshold`
(None: always answer, SQuAD 1.1). An example without any valid span answers "".

The answer is the exact substring of the original context: the span's byte offsets come
from the tokenizer, the text is cut from the input string and the offsets are converted
to characters (Python str indices). `decode_spans` uses only numeric core ops
(TopKV2, GatherV2, SelectV2, ArgMax, ScatterNd, ...); `answer_text` needs the core string
ops Substr and StringLength, which TF Serving runs but TFLite builtins do not.
"""

from __future__ import annotations

import tensorflow as tf

from kbert.tasks.spec import TaskSpec


def decode_spans(spec: TaskSpec, start_logits: tf.Tensor, end_logits: tf.Tensor,
                 windows: dict[str, tf.Tensor], num_examples: tf.Tensor
                 ) -> dict[str, tf.Tensor]:
    """The best answer span of each example.

    Args:
        spec: a qa TaskSpec (n_best, max_answer_length, null_score_threshold).
        start_logits, end_logits: float [N, L], the model's outputs on the windows
            (L <= T; the windows' [N, L] tensors below have the same L).
        windows: from `kbert.tasks.qa.windows.qa_windows` (window_example,
            context_index, start_byte, end_byte, max_context).
        num_examples: int32 scalar, B.

    Returns:
        dict of [B] tensors: `has_answer` bool; `start_byte`, `end_byte` int32 (the
        answer's byte span in the UTF-8 context, end exclusive; -1 without an answer);
        `score` float32 (the answer's start + end logit; the null score when the answer
        is ""); `null_score` float32.
    """
    start_logits = tf.cast(start_logits, tf.float32)
    end_logits = tf.cast(end_logits, tf.float32)
    context_index = windows["context_index"]
    # At most n_best candidates, and no more than the L positions there are (L is
    # dynamic when inference cuts windows to the longest one). The candidates cut away
    # beside n_best are padding, which the -inf mask below excludes anyway.
    length = start_logits.shape[-1]
    k = (min(spec.n_best, length) if length is not None
         else tf.minimum(spec.n_best, tf.shape(start_logits)[-1]))
    neg_inf = tf.constant(float("-inf"), tf.float32)

    in_context = context_index >= 0
    can_start = in_context & (windows["max_context"] > 0)
    start_values, start_pos = tf.math.top_k(tf.where(can_start, start_logits, neg_inf), k)
    end_values, end_pos = tf.math.top_k(tf.where(in_context, end_logits, neg_inf), k)

    def at(x, positions):  # x [N, T] read at positions [N, K]
        return tf.gather(x, positions, batch_dims=1)

    start_ok = at(tf.where(can_start, 1, 0), start_pos) > 0  # [N, K]
    end_ok = at(tf.where(in_context, 1, 0), end_pos) > 0
    start_index = at(context_index, start_pos)[:, :, tf.newaxis]  # [N, K, 1]
    end_index = at(context_index, end_pos)[:, tf.newaxis, :]  # [N, 1, K]
    valid = (start_ok[:, :, tf.newaxis] & end_ok[:, tf.newaxis, :]
             & (end_index >= start_index)
             & (end_index - start_index + 1 <= spec.max_answer_length))  # [N, K, K]
    pair = tf.where(valid, start_values[:, :, tf.newaxis] + end_values[:, tf.newaxis, :],
                    neg_inf)
    flat = tf.reshape(pair, [-1, k * k])
    best_pair = tf.argmax(flat, axis=1, output_type=tf.int32)  # [N]
    window_score = tf.reduce_max(flat, axis=1)
    window_valid = tf.reduce_max(tf.where(tf.reshape(valid, [-1, k * k]), 1, 0), 1) > 0
    best_start = tf.gather(start_pos, best_pair // k, batch_dims=1)
    best_end = tf.gather(end_pos, best_pair % k, batch_dims=1)
    span_start = tf.gather(windows["start_byte"], best_start, batch_dims=1)  # [N]
    span_end = tf.gather(windows["end_byte"], best_end, batch_dims=1)

    # Every example's windows as a [B, W] grid of window indices (examples' windows are
    # consecutive), W = the most windows of any example.
    example = windows["window_example"]
    count = tf.scatter_nd(example[:, tf.newaxis], tf.ones_like(example),
                          tf.reshape(num_examples, [1]))
    first = tf.cumsum(count, exclusive=True)
    column = tf.range(tf.reduce_max(tf.concat([count, [0]], 0)))[tf.newaxis, :]
    grid = first[:, tf.newaxis] + tf.minimum(column, count[:, tf.newaxis] - 1)
    real = column < count[:, tf.newaxis]  # [B, W]

    scores = tf.where(real & tf.gather(window_valid, grid), tf.gather(window_score, grid),
                      neg_inf)
    best_window = tf.gather(grid, tf.argmax(scores, axis=1, output_type=tf.int32),
                            batch_dims=1)  # [B]
    best_score = tf.reduce_max(scores, axis=1)
    has_answer = tf.reduce_max(tf.where(scores > neg_inf, 1, 0), axis=1) > 0

    null = start_logits[:, 0] + end_logits[:, 0]  # [N]
    null_score = tf.reduce_min(tf.where(real, tf.gather(null, grid),
                                        tf.constant(float("inf"))), axis=1)
    if spec.null_score_threshold is not None:
        has_answer = has_answer & (null_score - best_score <= spec.null_score_threshold)
    return {
        "has_answer": has_answer,
        "start_byte": tf.where(has_answer, tf.gather(span_start, best_window), -1),
        "end_byte": tf.where(has_answer, tf.gather(span_end, best_window), -1),
        "score": tf.where(has_answer, best_score, null_score),
        "null_score": null_score,
    }


# What the normaliser drops (kbert.text.normalizer: categories Cc, Cf, Co and U+FFFD; Cs
# cannot occur in UTF-8), as an RE2 pattern anchored at the end of the answer.
TRAILING_DROPPED = r"[\p{Cc}\p{Cf}\p{Co}\x{FFFD}]+$"


def answer_text(context: tf.Tensor, start_byte: tf.Tensor, end_byte: tf.Tensor
                ) -> dict[str, tf.Tensor]:
    """The answers as substrings of the contexts, with character offsets.

    Args:
        context: string [B], the original contexts.
        start_byte, end_byte: int32 [B] from `decode_spans` (-1: no answer).

    Returns:
        `answer` string [B] ("" for no answer); `start_char`, `end_char` int32 [B]:
        `context[start_char:end_char] == answer` on the Python str (-1 for no answer).
        The answer ends at its last visible character: a token's end offset also takes
        in the characters the normaliser drops after it (soft hyphens, zero-width
        spaces, other control / format / private-use characters, U+FFFD), which no
        reader would select and which would fail exact match (they survive answer
        normalisation).
    """
    has = start_byte >= 0
    start = tf.maximum(start_byte, 0)
    answer = tf.strings.substr(context, start, tf.maximum(end_byte - start, 0), unit="BYTE")
    answer = tf.strings.regex_replace(answer, TRAILING_DROPPED, "")
    answer = tf.where(has, answer, "")
    before = tf.strings.substr(context, tf.zeros_like(start), start, unit="BYTE")
    start_char = tf.strings.length(before, unit="UTF8_CHAR")
    end_char = start_char + tf.strings.length(answer, unit="UTF8_CHAR")
    return {"answer": answer, "start_char": tf.where(has, start_char, -1),
            "end_char": tf.where(has, end_char, -1)}
