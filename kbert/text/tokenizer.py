"""`Tokenizer`: BERT's WordPiece tokenizer as TF ops (tf.data, SavedModel, TFLite).

Pipeline, for a string batch [B]:

1. `FastBertNormalize` with kbert's own table (`kbert.text.normalizer`): BERT's "clean
   text" (control and zero-width characters dropped, whitespace -> ' ') and, uncased,
   NFD + accent stripping + lower-casing, as Hugging Face's `BertNormalizer` does them
   (none of the NFKC folding of tf-text's stock table).
2. `FastWordpieceTokenizeWithOffsets`: BERT's basic tokenization (split on whitespace and
   punctuation, every CJK ideograph a word) and greedy longest-match WordPiece.
3. Core integer ops: a word longer than `max_chars_per_word` characters becomes one
   [UNK] (BERT counts characters; the WordPiece op can only count bytes), and offsets
   are mapped back through the normaliser to the input string.

The ops of steps 1 and 2 are the only tf-text ops in the graph (both in tf-text >= 2.12,
both with TFLite kernels). The core ops of step 3 are integer and boolean ops (GatherV2,
Cumsum, SegmentSum, ScatterNd, Where, SelectV2, ConcatV2, Cast, logical and comparison
ops, shape ops) and two `tf.cond`s (StatelessIf); no string ops, so the traced graph
converts to TFLite builtins plus the two custom ops. `detokenize` is separate and uses
core string ops (string joins, StringStrip): for showing results, not for TFLite.

Offsets are BYTE offsets into the UTF-8 input: `text[start:end]` on the bytes
(`tf.strings.substr(text, start, end - start)`) is the original span of the token,
accents and capitals included. Hugging Face reports character offsets; convert with
`len(text.encode()[:start].decode())` where needed. An end offset also takes in
characters the normaliser dropped (control or zero-width characters, invalid bytes)
that directly follow the token.

Differences from Hugging Face's tokenizer, all on rare input:
- a literal "[MASK]" (or another special token) in the text is ordinary text here, split
  into '[', 'mask', ']' as the original BERT does; HF matches it as the special token;
- punctuation and marks are taken from newer Unicode tables (ICU in tf-text, Python's
  `unicodedata` in the normaliser) than HF's: about 100 punctuation characters added
  since Unicode 9 split words here and not in HF, CJK Extension E/F ideographs
  (U+2B820-U+2CEAF) are single-character words here and not in HF, and about 400
  recent combining marks are dropped here in uncased mode;
- invalid UTF-8 (HF cannot take it) does not fail: malformed bytes are dropped, as if the
  text had been decoded with `errors="replace"` (HF drops U+FFFD too).
"""

from __future__ import annotations

import os
from typing import Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from kbert.convert.references import resolve_model
from kbert.io.model_dir import VOCAB_FILE, read_lowercase, read_vocab
from kbert.text.normalizer import normalizer_model

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
SUFFIX = "##"
# UTF-8 needs at most 4 bytes a character: with this many bytes allowed per word, the
# WordPiece op never gives up on a word that BERT's character limit would keep.
_MAX_UTF8_BYTES = 4


class Tokenizer(tf.Module):
    """BERT WordPiece tokenizer, cased or uncased, built from a vocab.txt.

    Args:
        vocab: a vocab.txt path (one token per line, line number = id) or the tokens.
        lowercase: True for uncased models (lower-case, strip accents), False for cased.
        max_chars_per_word: longer words become one [UNK] (100, as in BERT).

    Attributes:
        vocab: tuple of str, the tokens (index = id).
        lowercase: bool.
        vocabulary_size: int, V.
        pad_id, unk_id, cls_id, sep_id, mask_id: int, ids of the special tokens, all of
            which must be in the vocabulary.
    """

    def __init__(self, vocab: str | os.PathLike | Sequence[str], lowercase: bool = True,
                 max_chars_per_word: int = 100, name: str | None = None):
        super().__init__(name=name)
        tokens = read_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else tuple(vocab)
        missing = [t for t in SPECIAL_TOKENS if t not in tokens]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        self.vocab = tokens
        self.lowercase = bool(lowercase)
        self.max_chars_per_word = int(max_chars_per_word)
        self.vocabulary_size = len(tokens)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            tokens.index(t) for t in SPECIAL_TOKENS)

        self._normalizer = tf_text.FastBertNormalizer(
            model_buffer=normalizer_model(self.lowercase))
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=list(tokens), suffix_indicator=SUFFIX,
            max_bytes_per_word=_MAX_UTF8_BYTES * self.max_chars_per_word,
            token_out_type=tf.int32, unknown_token=UNK, no_pretokenization=False,
            support_detokenization=False)
        is_suffix = [t.startswith(SUFFIX) and t != SUFFIX for t in tokens]
        # bool [V]: the token continues a word.
        self._is_suffix = tf.constant(is_suffix)
        # int32 [V]: characters the token covers in the word ([UNK] stands for a whole
        # word that is already unknown: 0 keeps it out of the length rule).
        self._char_lengths = tf.constant(
            [0 if t == UNK else len(t) - (len(SUFFIX) if s else 0)
             for t, s in zip(tokens, is_suffix)], dtype=tf.int32)
        # string [V]: how detokenize shows each token.
        self._display = tf.constant(
            ["" if t == PAD else t[len(SUFFIX):] if s else " " + t
             for t, s in zip(tokens, is_suffix)])

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike, **kwargs) -> "Tokenizer":
        """The tokenizer of a model reference (a kbert model directory: vocab.txt +
        tokenizer_config.json; or what kbert.convert.references resolves).

        A missing tokenizer_config.json means uncased, as in `kbert.io.model_dir`.
        """
        path = resolve_model(path)
        return cls(os.path.join(path, VOCAB_FILE), lowercase=read_lowercase(path), **kwargs)

    def __call__(self, text) -> tf.RaggedTensor | tf.Tensor:
        return self.tokenize(text)

    def tokenize(self, text) -> tf.RaggedTensor | tf.Tensor:
        """Token ids of a string batch.

        Args:
            text: string [B] (or a scalar string).

        Returns:
            int32 ragged [B, (tokens)] (int32 [tokens] for a scalar), without [CLS]/[SEP].
        """
        return self._tokenize(text, with_offsets=False)[0]

    def tokenize_with_offsets(self, text):
        """Token ids and where each token is in the input.

        Args:
            text: string [B] (or a scalar string).

        Returns:
            (token_ids, starts, ends), each int32 ragged [B, (tokens)] (int32 [tokens] for
            a scalar): token `j` of row `i` came from bytes [starts[i, j], ends[i, j]) of
            `text[i]` (byte offsets, see the module docstring).
        """
        return self._tokenize(text, with_offsets=True)

    def detokenize(self, token_ids) -> tf.Tensor:
        """Readable text for token ids, to show predictions.

        Pieces are joined into words ("##" continuations glued on), words are separated
        by one space, [PAD] is left out (padded [B, T] ids can be passed as they are) and
        the other special tokens are shown as written. The text is the normalised form
        (lower-cased and without accents for uncased models, punctuation spaced out).

        Args:
            token_ids: int ragged or dense [B, (T)], or [T].

        Returns:
            string [B] (a scalar string for [T]).
        """
        ids = token_ids if isinstance(token_ids, tf.RaggedTensor) else tf.convert_to_tensor(
            token_ids)
        if ids.shape.rank == 1:
            return self.detokenize(ids[tf.newaxis])[0]
        if ids.shape.rank != 2:
            raise ValueError(f"token_ids must be [B, T] or [T], got shape {ids.shape}")
        pieces = tf.gather(self._display, ids)
        return tf.strings.strip(tf.strings.reduce_join(pieces, axis=-1))

    def _tokenize(self, text, with_offsets: bool):
        text = tf.convert_to_tensor(text, dtype=tf.string)
        if text.shape.rank == 0:
            outputs = self._tokenize(text[tf.newaxis], with_offsets)
            return tuple(t.flat_values for t in outputs)
        if text.shape.rank != 1:
            raise ValueError(f"text must be a string batch [B] or a scalar, got shape "
                             f"{text.shape}")
        if with_offsets:
            normalized, offset_map = self._normalizer.normalize_with_offsets(text)
        else:
            normalized = self._normalizer.normalize(text)
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(normalized)
        if not with_offsets:
            return (self._unknown_long_words(ids)[0],)
        ids, starts, ends = self._unknown_long_words(ids, starts, ends)
        starts, ends = self._input_offsets(offset_map, ids.row_splits,
                                           starts.flat_values, ends.flat_values)
        return (ids, ids.with_flat_values(tf.cast(starts, tf.int32)),
                ids.with_flat_values(tf.cast(ends, tf.int32)))

    @staticmethod
    def _input_offsets(offset_map, row_splits, starts, ends):
        """Offsets in the normalised strings -> byte offsets in the input strings.

        Args:
            offset_map: int64 ragged [B, (bytes + 1)], the normaliser's map: for every
                normalised byte, where its character starts in the input; the last entry
                is the input's length. Non-decreasing within a row.
            row_splits: int64 [B + 1], the tokens' row splits.
            starts, ends: int64 [N], token offsets in the normalised strings.

        Returns:
            int64 [N] starts and ends in the inputs. A token's end is where the input
            character holding its last byte ends: the map entry of the next normalised
            byte, unless that byte comes from the same character (one character expanded
            into several pieces, as a Hangul syllable into jamo under NFD), then the next
            distinct entry; each such piece spans the whole character, as in HF.
        """
        flat_map = offset_map.flat_values
        # Where each token's row starts in flat_map: add up, from each row's first token
        # on, how far that row's map is from the previous one's (scatter_nd sums the
        # additions of empty rows that share a position). O(N + B), unlike value_rowids,
        # which builds a [B, longest row] mask.
        map_splits = offset_map.row_splits
        steps = tf.scatter_nd(row_splits[1:-1, tf.newaxis],
                              map_splits[1:-1] - map_splits[:-2],
                              shape=tf.shape(starts, out_type=tf.int64) + 1)
        first = tf.cumsum(steps[:-1])
        starts = tf.gather(flat_map, first + starts)
        last_byte = tf.gather(flat_map, first + ends - 1)
        next_byte = tf.gather(flat_map, first + ends)

        def next_distinct():
            # Runs of equal entries; the entry after a row's last byte (the input length)
            # always starts a new run, so "the next run" never leaves the row.
            is_new = tf.concat([tf.ones([1], tf.bool),
                                tf.not_equal(flat_map[1:], flat_map[:-1])], axis=0)
            run = tf.cumsum(tf.cast(is_new, tf.int64)) - 1
            run_values = tf.boolean_mask(flat_map, is_new)
            return tf.gather(run_values, tf.gather(run, first + ends - 1) + 1)

        # Expansions are rare (uncased Hangul): pay for the O(bytes) runs only then.
        ends = tf.cond(tf.reduce_any(tf.equal(last_byte, next_byte)), next_distinct,
                       lambda: next_byte)
        return starts, ends

    def _unknown_long_words(self, ids, starts=None, ends=None):
        """BERT's rule: a word of more than `max_chars_per_word` characters is one [UNK].

        Args:
            ids: int32 ragged [B, (tokens)], WordPiece ids.
            starts, ends: int64 ragged [B, (tokens)], offsets in the normalised text,
                or both None.

        Returns:
            (ids, starts, ends) with every long word replaced by one [UNK] token from the
            start of its first piece to the end of its last (starts, ends None if given
            None).
        """
        values = ids.flat_values
        # Words never cross rows (each row starts with a word), so the batch is handled
        # as one flat sequence.
        is_start = tf.logical_not(tf.gather(self._is_suffix, values))
        word = tf.cumsum(tf.cast(is_start, tf.int32)) - 1  # word index of every token
        word_chars = tf.math.segment_sum(tf.gather(self._char_lengths, values), word)
        is_long = word_chars > self.max_chars_per_word

        def replace():
            too_long = tf.gather(is_long, word)
            keep = tf.logical_or(is_start, tf.logical_not(too_long))
            # Row splits after dropping tokens: the kept tokens before each split.
            kept_before = tf.concat([tf.zeros([1], tf.int64),
                                     tf.cumsum(tf.cast(keep, tf.int64))], axis=0)
            row_splits = tf.gather(kept_before, ids.row_splits)
            new_ids = tf.where(too_long, tf.constant(self.unk_id, tf.int32), values)
            outputs = [tf.boolean_mask(new_ids, keep), row_splits]
            if ends is not None:
                # A word ends with the token before the next word's first
                # (segment_max would say the same, but it has no TFLite builtin).
                is_last = tf.concat([is_start[1:], tf.ones([1], tf.bool)], axis=0)
                word_ends = tf.gather(tf.boolean_mask(ends.flat_values, is_last), word)
                outputs += [tf.boolean_mask(starts.flat_values, keep), tf.boolean_mask(
                    tf.where(too_long, word_ends, ends.flat_values), keep)]
            return outputs

        def unchanged():
            outputs = [values, ids.row_splits]
            return outputs if ends is None else outputs + [starts.flat_values,
                                                           ends.flat_values]

        # Long words are rare: the masking runs only for a batch that has one.
        outputs = tf.cond(tf.reduce_any(is_long), replace, unchanged)
        ids = tf.RaggedTensor.from_row_splits(outputs[0], outputs[1], validate=False)
        if ends is None:
            return ids, None, None
        return ids, ids.with_flat_values(outputs[2]), ids.with_flat_values(outputs[3])
