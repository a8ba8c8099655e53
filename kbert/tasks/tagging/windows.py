"""Token tagging features as TF ops: words -> word-pieces -> windows of T tokens, and back.

One code path for training (`tf.data`), `TaggingTask.predict` and the exported serving
graph. Everything here, after the tokenizer, is core TF integer ops (Gather, ScatterNd,
Cumsum, Where/SelectV2, Range, Minimum/Maximum, ConcatV2, shape ops) on flat arrays plus
row splits: no ragged kernels (RaggedGather, RaggedTensorToTensor), no string ops except
the final label lookup (a Gather on a string constant), so the serving graph converts to
TFLite builtins plus the tokenizer's two tf-text ops.

Windows. A sentence of P word-pieces fits in one window when P <= L = T - 2 ([CLS] and
[SEP] take two). A longer one is split into windows starting at 0, stride, 2 * stride, ...
(stride = `TaskSpec.doc_stride`, at most L, so every piece is in some window) until a
window reaches the end; nothing is cut. A piece seen in several windows is scored in each
as BERT's `_check_is_max_context` does: min(pieces to its left, pieces to its right in the
window) + 0.01 * window length; the best window (the first on a tie) is the one where the
piece's word is labelled in training and predicted at inference. So every word has exactly
one labelled / predicted position: its first word-piece, in its max-context window.
"""

from __future__ import annotations

import tensorflow as tf

# Window features besides the model inputs (token_ids, segment_ids, padding_mask):
EXAMPLE_INDEX = "example_index"  # int32 [N]: the sentence (batch row) of each window
WORD_INDEX = "word_index"  # int32 [N, T]: the word labelled / predicted here, else -1


def row_ids(row_splits: tf.Tensor, size) -> tf.Tensor:
    """The row of every element of a flat array split by `row_splits`.

    Args:
        row_splits: int32 [R + 1], non-decreasing, from 0 to `size`.
        size: int32 scalar, the number of elements.

    Returns:
        int32 [size]: r for the elements in [row_splits[r], row_splits[r + 1]).
    """
    # +1 at every row start after the first (several for empty rows: ScatterNd sums),
    # then a running sum. O(size + R) and core ops only (RaggedTensor.value_rowids is not).
    steps = tf.scatter_nd(row_splits[1:-1, tf.newaxis], tf.ones_like(row_splits[1:-1]),
                          shape=tf.reshape(size + 1, [1]))
    return tf.cumsum(steps)[:size]


def pieces_of_words(tokenizer, words: tf.RaggedTensor):
    """Word-pieces of given words (training and `predict`: the words come from the file).

    Args:
        tokenizer: a `kbert.text.Tokenizer`.
        words: string ragged [B, (W)].

    Returns:
        (piece_ids, piece_words, row_splits, word_splits):
        piece_ids int32 [Np], all sentences' pieces in order;
        piece_words int32 [Np]: the word's index within its sentence at a word's first
            piece, -1 at the others;
        row_splits int32 [B + 1]: the pieces of sentence b are [row_splits[b], row_splits[b+1]);
        word_splits int32 [B + 1]: the words of sentence b, the same way.
        A word the tokenizer turns into no piece at all (only control or zero-width
        characters) becomes one [UNK], so that it still has a position for its label.
    """
    flat_words = words.flat_values
    pieces = tokenizer.tokenize(flat_words)  # int32 ragged [Nw, (pieces)]
    empty = tf.equal(pieces.row_lengths(), 0)
    unknown = tf.RaggedTensor.from_row_lengths(
        tf.fill(tf.reshape(tf.reduce_sum(tf.where(empty, 1, 0)), [1]), tokenizer.unk_id),
        tf.where(empty, tf.constant(1, tf.int64), 0))
    pieces = tf.concat([pieces, unknown], axis=1)
    piece_splits = tf.cast(pieces.row_splits, tf.int32)  # [Nw + 1]
    word_splits = tf.cast(words.row_splits, tf.int32)  # [B + 1]
    n_pieces = piece_splits[-1]
    word = row_ids(piece_splits, n_pieces)  # global word of every piece
    is_first = tf.equal(tf.range(n_pieces), tf.gather(piece_splits, word))
    sentence_of_word = row_ids(word_splits, tf.shape(flat_words)[0])
    word_in_sentence = word - tf.gather(word_splits, tf.gather(sentence_of_word, word))
    piece_words = tf.where(is_first, word_in_sentence, -1)
    row_splits = tf.gather(piece_splits, word_splits)
    return pieces.flat_values, piece_words, row_splits, word_splits


def pieces_of_text(tokenizer, text: tf.Tensor, is_suffix: tf.Tensor):
    """Word-pieces of raw text (serving): a word is a piece plus the "##" pieces after it.

    So the words are BERT's basic-tokenizer words: the text split at whitespace and at
    every punctuation character ("don't" is three words: don ' t; "U.S." four).

    Args:
        tokenizer: a `kbert.text.Tokenizer`.
        text: string [B].
        is_suffix: bool [V], True for the vocabulary's "##" continuation pieces.

    Returns:
        (piece_ids, piece_words, row_splits, word_splits) as `pieces_of_words`, and
        word_starts, word_ends int32 [Nw]: the BYTE offsets in `text` of every word
        (from its first piece's start to its last piece's end).
    """
    ids, starts, ends = tokenizer.tokenize_with_offsets(text)
    piece_ids = ids.flat_values
    row_splits = tf.cast(ids.row_splits, tf.int32)
    n_pieces = tf.shape(piece_ids)[0]
    # A row never starts with a "##" piece (the WordPiece op starts every word with a
    # non-suffix piece), so words never cross rows.
    is_first = tf.logical_not(tf.gather(is_suffix, piece_ids))
    words_through = tf.cumsum(tf.where(is_first, 1, 0))  # words up to and including each
    words_before = tf.concat([tf.zeros([1], tf.int32), words_through], axis=0)
    word_splits = tf.gather(words_before, row_splits)
    row = row_ids(row_splits, n_pieces)
    piece_words = tf.where(is_first, words_through - 1 - tf.gather(word_splits, row), -1)
    # The last piece of a word: the next piece starts a word, or there is none.
    is_last = tf.concat([is_first, tf.ones([1], tf.bool)], axis=0)[1:]
    word_starts = tf.boolean_mask(starts.flat_values, is_first)
    word_ends = tf.boolean_mask(ends.flat_values, is_last)
    return piece_ids, piece_words, row_splits, word_splits, word_starts, word_ends


def make_windows(piece_ids: tf.Tensor, piece_words: tf.Tensor, row_splits: tf.Tensor, *,
                 seq_len: int, stride: int, cls_id: int, sep_id: int,
                 pad_id: int) -> dict[str, tf.Tensor]:
    """Lays sentences' pieces out in windows of `seq_len` tokens (module docstring).

    Args:
        piece_ids, piece_words, row_splits: as `pieces_of_words` returns them.
        seq_len: T (Python int); stride: Python int in [1, T - 2].
        cls_id, sep_id, pad_id: the vocabulary's special token ids.

    Returns:
        dict with, for N >= B windows (at least one per sentence, in sentence order):
        `token_ids` int32 [N, T]: [CLS] pieces [SEP] [PAD]...;
        `segment_ids` int32 [N, T]: zeros;
        `padding_mask` int32 [N, T]: 1 on [CLS], pieces, [SEP];
        `example_index` int32 [N]: the sentence of each window;
        `word_index` int32 [N, T]: w where the first piece of word w (of that sentence)
            has its max context in this window, -1 elsewhere.
    """
    budget = seq_len - 2
    if not 1 <= stride <= budget:
        raise ValueError(f"doc_stride must be between 1 and seq_len - 2 = {budget} (every "
                         f"piece must be in some window), got {stride}")
    lengths = row_splits[1:] - row_splits[:-1]  # [B] pieces per sentence
    n_windows = 1 + tf.maximum(0, (lengths - budget + stride - 1) // stride)
    window_splits = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(n_windows)], axis=0)
    n = window_splits[-1]
    example = row_ids(window_splits, n)  # [N]
    k = tf.range(n) - tf.gather(window_splits, example)  # window number in its sentence
    start = (k * stride)[:, tf.newaxis]  # [N, 1] first piece of the window
    length = tf.gather(lengths, example)[:, tf.newaxis]  # [N, 1] pieces of the sentence
    count = tf.gather(n_windows, example)[:, tf.newaxis]
    window_len = tf.minimum(budget, length - start)  # [N, 1] pieces in the window

    pos = tf.range(seq_len)[tf.newaxis, :]  # [1, T]
    piece = start + pos - 1  # [N, T] piece index within the sentence (where is_piece)
    is_piece = (pos >= 1) & (pos <= window_len)
    n_pieces = tf.shape(piece_ids)[0]
    cls_at, sep_at, pad_at = n_pieces, n_pieces + 1, n_pieces + 2
    index = tf.where(is_piece, tf.gather(row_splits, example)[:, tf.newaxis] + piece, pad_at)
    index = tf.where(pos == window_len + 1, sep_at, index)
    index = tf.where(pos == 0, cls_at, index)
    token_ids = tf.gather(tf.concat([piece_ids, tf.constant([cls_id, sep_id, pad_id])], 0),
                          index)
    word = tf.gather(tf.concat([piece_words, tf.constant([-1, -1, -1])], 0), index)

    # The max-context window of every piece: try each window that can hold it (at most
    # ceil(budget / stride) of them, from the first one that reaches it). Scores are BERT's
    # times 100, in integers: 100 * min(left, right) + window length.
    first = tf.maximum(0, (piece - budget + stride) // stride)
    best_window = tf.fill(tf.shape(piece), -1)
    best_score = tf.fill(tf.shape(piece), -1)
    for j in range(-(-budget // stride)):
        kk = first + j
        s = kk * stride
        holds = (kk < count) & (s <= piece)
        span = tf.minimum(budget, length - s)
        score = 100 * tf.minimum(piece - s, s + span - 1 - piece) + span
        better = holds & (score > best_score)
        best_window = tf.where(better, kk, best_window)
        best_score = tf.where(better, score, best_score)
    is_max = is_piece & tf.equal(best_window, k[:, tf.newaxis])
    word_index = tf.where(is_max & (word >= 0), word, -1)
    return {
        "token_ids": token_ids,
        "segment_ids": tf.zeros_like(token_ids),
        "padding_mask": tf.where(pos <= window_len + 1, 1, 0),
        EXAMPLE_INDEX: example,
        WORD_INDEX: word_index,
    }


def window_labels(word_index: tf.Tensor, example_index: tf.Tensor, word_labels: tf.Tensor,
                  word_splits: tf.Tensor):
    """Training targets for windows: each word's label on its one labelled position.

    Args:
        word_index, example_index: from `make_windows`.
        word_labels: int32 [Nw], the label id of every word, sentences in order.
        word_splits: int32 [B + 1], the words of each sentence in `word_labels`.

    Returns:
        (labels int32 [N, T], weights float32 [N, T]): the word's label and weight 1 where
        `word_index >= 0`; 0 and weight 0 elsewhere (other pieces, specials, padding).
    """
    labelled = word_index >= 0
    flat = tf.gather(word_splits, example_index)[:, tf.newaxis] + tf.maximum(word_index, 0)
    labels = tf.where(labelled, tf.gather(word_labels, tf.where(labelled, flat, 0)), 0)
    return labels, tf.where(labelled, 1.0, 0.0)


def merge_windows(values: tf.Tensor, word_index: tf.Tensor, example_index: tf.Tensor,
                  num_words: tf.Tensor) -> tf.Tensor:
    """Per-word results from per-window ones: the inverse of `make_windows`' layout.

    Args:
        values: int32 [N, T], e.g. the argmax tag id at every window position.
        word_index, example_index: from `make_windows`.
        num_words: int32 [B], words per sentence.

    Returns:
        int32 [B, W] (W = max num_words): the value at each word's one predicted position;
        -1 after a sentence's last word.
    """
    batch = tf.shape(num_words)[0]
    width = tf.reduce_max(tf.concat([num_words, tf.zeros([1], tf.int32)], 0))
    # Each word's position is scattered to its [B, W] slot; every other position goes to
    # one extra slot past the end, dropped afterwards (ScatterNd sums clashes there).
    trash = batch * width
    target = tf.where(word_index >= 0,
                      example_index[:, tf.newaxis] * width + word_index, trash)
    flat = tf.scatter_nd(target[..., tf.newaxis], values + 1,
                         shape=tf.reshape(trash + 1, [1]))
    return tf.reshape(flat[:trash], tf.stack([batch, width])) - 1


def dense_words(flat: tf.Tensor, word_splits: tf.Tensor, fill) -> tf.Tensor:
    """[B, W] from per-word values of all sentences in order (W = most words), `fill` after
    each sentence's last word."""
    counts = word_splits[1:] - word_splits[:-1]
    width = tf.reduce_max(tf.concat([counts, tf.zeros([1], tf.int32)], 0))
    j = tf.range(width)[tf.newaxis, :]
    n = tf.shape(flat)[0]
    index = tf.where(j < counts[:, tf.newaxis], word_splits[:-1, tf.newaxis] + j, n)
    return tf.gather(tf.concat([flat, tf.reshape(tf.cast(fill, flat.dtype), [1])], 0), index)

