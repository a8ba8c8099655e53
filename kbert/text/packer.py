"""Packs one or two token segments into BERT's fixed-length model inputs.

    [CLS] first [SEP]                 (one segment)
    [CLS] first [SEP] second [SEP]    (two segments), then [PAD] up to `sequence_length`

Segments are ragged `[B, (n)]` tensors as a WordPiece tokenizer returns them (ids, or any
values aligned with the ids, such as character offsets). Only core TensorFlow ops are used
(GatherV2, SelectV2, Range, Cast, ConcatV2, arithmetic, Assert): no tf.text op and no ragged
kernel, so the packer can sit in a serving graph next to the tokenizer and the
whole graph still converts to TFLite builtins. The segments are read through their flat
`values` and `row_splits` and every output position gathers its value from one
concatenated flat array, so nothing is padded to the longest row first.

Truncation (applied to the segment lengths only, always from the end of a segment):
    "longest_first"  Hugging Face's `truncation="longest_first"` as its tokenizers library
                     does it (transformers 5 `BertTokenizer`): if the shorter segment fits
                     in half the budget it is kept whole and the longer one gets the rest;
                     otherwise both get half, and on an odd budget the longer one (the
                     second on a tie) keeps the odd token.
                     Transformers' pure-Python backend (`PreTrainedTokenizer`) always gives
                     that odd token to the first segment, so it differs whenever the first
                     is not the longer one; kbert follows the library behind
                     `BertTokenizer`/`BertTokenizerFast`.
    "waterfall"      the first segment keeps as much as fits, the second gets what is left.
With one segment both strategies keep the first `sequence_length - 2` tokens.
"""

from __future__ import annotations

import tensorflow as tf

TRUNCATIONS = ("longest_first", "waterfall")


def kept_lengths(first_lengths: tf.Tensor, second_lengths: tf.Tensor, budget: int,
                 truncation: str = "longest_first") -> tuple[tf.Tensor, tf.Tensor]:
    """How many tokens of each segment survive truncation to `budget` tokens in total.

    Args:
        first_lengths, second_lengths: int32 [B], the segments' lengths.
        budget: Python int >= 0, the tokens left for both segments together (for BERT,
            `sequence_length - 3`).
        truncation: "longest_first" or "waterfall" (see the module docstring).

    Returns:
        (keep_first, keep_second): int32 [B] each, `keep_first + keep_second <= budget`.
    """
    _check_truncation(truncation)
    a, b = first_lengths, second_lengths
    if truncation == "waterfall":
        keep_a = tf.minimum(a, budget)
        return keep_a, tf.minimum(b, budget - keep_a)
    # Closed form of the tokenizers rule: a segment keeps all of itself if that leaves the
    # other at least as much, otherwise it keeps what the other leaves free (m - other)
    # or half the budget, whichever is more. On an odd budget the half with the extra token
    # goes to the longer segment, to the second one on a tie.
    floor_half, ceil_half = budget // 2, budget - budget // 2
    first_longer = a > b
    half_a = tf.where(first_longer, ceil_half, floor_half)
    half_b = tf.where(first_longer, floor_half, ceil_half)
    keep_a = tf.minimum(a, tf.maximum(budget - b, half_a))
    keep_b = tf.minimum(b, tf.maximum(budget - a, half_b))
    return keep_a, keep_b


def pack(first, second=None, *, sequence_length: int, cls_id: int, sep_id: int,
         pad_id: int, truncation: str = "longest_first") -> dict[str, tf.Tensor]:
    """Packs token ids into `[CLS] first [SEP] (second [SEP]) [PAD]...`.

    Args:
        first: int32/int64 ragged [B, (n)] token ids of the first segment (a dense [B, n]
            tensor is taken as rows of length n). Ragged rank 1: merge a tokenizer's
            [B, (words), (pieces)] output with `.merge_dims(-2, -1)` first.
        second: optional, the same for the second segment; must have the same B.
        sequence_length: T, a Python int (>= 2 with one segment, >= 3 with two).
        cls_id, sep_id, pad_id: the vocabulary's [CLS], [SEP], [PAD] ids (101, 102, 0 in
            the original uncased BERT vocab).
        truncation: "longest_first" (default) or "waterfall".

    Returns:
        dict of int32 [B, T] tensors (T static):
        `token_ids`: the packed ids;
        `segment_ids`: 0 for [CLS], the first segment and its [SEP]; 1 for the second
            segment and the last [SEP]; 0 on padding;
        `padding_mask`: 1 on real tokens, 0 on padding.
        An empty second segment still gets its [SEP]: `[CLS] first [SEP] [SEP]`.

    Raises:
        tf.errors.InvalidArgumentError: when the two segments have different batch sizes
            (checked before any value is read).
    """
    first, second = _segments(first, second, "pack")
    layout = _layout(first, second, sequence_length, truncation)
    values = [tf.cast(first.values, tf.int32)]
    if second is not None:
        values.append(tf.cast(second.values, tf.int32))
    token_ids = _gather(layout, values, [cls_id, sep_id, pad_id])
    # tf.where(cond, 1, 0) rather than tf.cast(bool, int32): the cast of a bool feeding the
    # segment embedding did not convert cleanly to TFLite (docs/FIELD_NOTES.md "TFLite").
    return {
        "token_ids": token_ids,
        "segment_ids": tf.where(layout["in_second"], 1, 0),
        "padding_mask": tf.where(layout["real"], 1, 0),
    }


def pack_values(first, second=None, *, sequence_length: int, fill_value,
                truncation: str = "longest_first") -> tf.Tensor:
    """Lays out values aligned with the segments' tokens exactly as `pack` lays out ids.

    Use it for anything a downstream task must map back to the source tokens, e.g. the
    character offsets a tokenizer returns (tagging, QA). The layout depends only on the row
    lengths, so values with the same row lengths as the ids land where their ids landed.

    Args:
        first, second: ragged [B, (n)] values of any dtype, with the same row lengths as
            the token segments given to `pack` (second optional, as there).
        sequence_length, truncation: as given to `pack`.
        fill_value: the value at [CLS], [SEP] and padding positions (a scalar of the
            values' dtype).

    Returns:
        [B, T] tensor of the values' dtype.
    """
    first, second = _segments(first, second, "pack_values")
    layout = _layout(first, second, sequence_length, truncation)
    values = [first.values] + ([second.values] if second is not None else [])
    fill = tf.cast(fill_value, first.values.dtype)
    return _gather(layout, values, [fill, fill, fill])


def source_index(first, second=None, *, sequence_length: int,
                 truncation: str = "longest_first") -> tf.Tensor:
    """For each packed position, the index of its token within its own segment.

    Args: as `pack` (the ids themselves are not read, only the row lengths).

    Returns:
        int32 [B, T]: i for the i-th token of either segment (`segment_ids` tells which
        segment), -1 at [CLS], [SEP] and padding.
    """
    first, second = _segments(first, second, "source_index")
    return _layout(first, second, sequence_length, truncation)["source"]


def _check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")


def _as_ragged(x, name: str) -> tf.RaggedTensor:
    if not isinstance(x, tf.RaggedTensor):
        x = tf.convert_to_tensor(x)
        if x.shape.rank != 2:
            raise ValueError(f"`{name}` must be ragged [B, (n)] or dense [B, n], got shape "
                             f"{x.shape}")
        x = tf.RaggedTensor.from_tensor(x)
    if x.ragged_rank != 1 or x.shape.rank != 2:
        raise ValueError(f"`{name}` must be ragged [B, (n)] (ragged rank 1), got shape "
                         f"{x.shape} with ragged rank {x.ragged_rank}; merge word and "
                         "piece dimensions with .merge_dims(-2, -1)")
    return x


def _segments(first, second, caller: str):
    """Converts the inputs and checks that both segments have the same batch size.

    The check is a graph assert that the reads below depend on: a mismatch stops with an
    InvalidArgumentError naming both inputs before any gather runs, instead of reading one
    segment's rows with the other's row count.
    """
    first = _as_ragged(first, "first")
    if second is None:
        return first, None
    second = _as_ragged(second, "second")
    message = f"{caller}: `first` and `second` must have the same batch size; `first` has"
    static_first, static_second = first.shape[0], second.shape[0]
    if static_first is not None and static_second is not None:
        # Known while tracing (and always in eager mode): shape inference would otherwise
        # fail first with a message that names neither input.
        if static_first != static_second:
            raise tf.errors.InvalidArgumentError(
                None, None, f"{message} {static_first} rows, `second` has {static_second} rows")
        return first, second
    n_first, n_second = first.nrows(out_type=tf.int32), second.nrows(out_type=tf.int32)
    check = tf.debugging.Assert(tf.equal(n_first, n_second),
                                [message, n_first, "rows, `second` has", n_second, "rows"])
    with tf.control_dependencies([check]):
        first, second = (
            tf.RaggedTensor.from_row_splits(s.values, tf.identity(s.row_splits),
                                            validate=False)
            for s in (first, second))
    return first, second


def _layout(first: tf.RaggedTensor, second: tf.RaggedTensor | None, sequence_length: int,
            truncation: str) -> dict[str, tf.Tensor]:
    """Where every output position reads from, as indices into one flat array.

    Returns int32 [B, T] `index` (flat index, below) and `source` (index within the
    segment, -1 at specials and padding), and bool [B, T] `real` and `in_second`.

    The flat array `_gather` builds is [first.values, second.values, cls, sep, pad]. Each
    [B, T] position gets the flat index of its value: a token of the first segment
    `first_start + i`, of the second `n_first_values + second_start + j`, or one of the
    three trailing specials.
    """
    _check_truncation(truncation)
    pair = second is not None
    n_specials = 3 if pair else 2
    if not isinstance(sequence_length, int) or sequence_length < n_specials:
        raise ValueError(f"sequence_length must be an int >= {n_specials} with "
                         f"{'two segments' if pair else 'one segment'}, got "
                         f"{sequence_length!r}")
    budget = sequence_length - n_specials

    splits_a = tf.cast(first.row_splits, tf.int32)
    len_a = splits_a[1:] - splits_a[:-1]
    if pair:
        splits_b = tf.cast(second.row_splits, tf.int32)
        len_b = splits_b[1:] - splits_b[:-1]
        keep_a, keep_b = kept_lengths(len_a, len_b, budget, truncation)
    else:
        keep_a = tf.minimum(len_a, budget)

    pos = tf.range(sequence_length, dtype=tf.int32)[tf.newaxis, :]  # [1, T]
    keep_a = keep_a[:, tf.newaxis]  # [B, 1]
    # Flat positions of the trailing specials, after both segments' values.
    n_values_a = splits_a[-1]
    n_values = n_values_a + (splits_b[-1] if pair else 0)
    cls_at, sep_at, pad_at = n_values, n_values + 1, n_values + 2

    in_first = (pos >= 1) & (pos <= keep_a)
    first_sep = keep_a + 1
    index = tf.where(in_first, splits_a[:-1, tf.newaxis] + pos - 1, pad_at)
    source = tf.where(in_first, pos - 1, -1)
    index = tf.where(pos == first_sep, sep_at, index)
    length = keep_a + 2
    in_second = None
    if pair:
        keep_b = keep_b[:, tf.newaxis]
        j = pos - first_sep - 1  # index within the second segment
        in_second_tokens = (j >= 0) & (j < keep_b)
        index = tf.where(in_second_tokens, n_values_a + splits_b[:-1, tf.newaxis] + j, index)
        source = tf.where(in_second_tokens, j, source)
        second_sep = first_sep + keep_b + 1
        index = tf.where(pos == second_sep, sep_at, index)
        length = second_sep + 1
        in_second = (pos > first_sep) & (pos < length)
    index = tf.where(pos == 0, cls_at, index)
    real = pos < length
    if in_second is None:
        in_second = tf.fill(tf.shape(real), False)
    return {"index": index, "source": source, "real": real, "in_second": in_second}


def _gather(layout: dict[str, tf.Tensor], values: list[tf.Tensor], specials: list) -> tf.Tensor:
    """Reads every position's value from [values..., cls, sep, pad] with one Gather."""
    dtype = values[0].dtype
    flat = tf.concat(values + [tf.cast(tf.stack(specials), dtype)], axis=0)
    return tf.gather(flat, layout["index"])
