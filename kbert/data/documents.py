"""Pre-training corpora in the original BERT format, read into tokenized documents.

Format (as google-research/bert's `create_pretraining_data.py` reads it): one sentence or
paragraph per line, a blank line between documents, UTF-8. Real-world text is accepted as
it is: invalid UTF-8 bytes become U+FFFD, enormous lines are cut at `max_line_bytes`,
empty documents (several blank lines) are skipped.

A *document* element is a dict:
    `tokens`: int32 [n], the WordPiece ids of all its lines, concatenated;
    `line_starts`: int32 [lines], offset in `tokens` where each non-empty line starts;
    `document_id`: int64 scalar, unique across files (file index * 2**32 + document index).
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import tensorflow as tf

# Lines longer than this are cut (bytes, before tokenizing); a paragraph of BERT's
# 512-token context is ~3 kB, so this only bites on corrupt or unsplit input.
DEFAULT_MAX_LINE_BYTES = 100_000


def expand_files(patterns: str | Iterable[str]) -> list[str]:
    """Expands globs (in order, sorted within a glob); a pattern matching nothing is an error."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        matched = sorted(tf.io.gfile.glob(pattern)) if any(
            c in pattern for c in "*?[") else ([pattern] if tf.io.gfile.exists(pattern) else [])
        if not matched:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        files.extend(matched)
    return files


def clean_lines(lines: tf.Tensor, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tf.Tensor:
    """string [N] -> string [N]: cut to `max_line_bytes`, invalid UTF-8 replaced by U+FFFD.

    Cutting first and transcoding after also repairs a character split by the cut.
    """
    lines = tf.strings.substr(lines, 0, max_line_bytes, unit="BYTE")
    return tf.strings.unicode_transcode(lines, input_encoding="UTF-8", output_encoding="UTF-8",
                                        errors="replace", replacement_char=0xFFFD)


def split_documents(lines: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """string [N] -> (non-empty lines [M], their document index int64 [M]).

    A line that is empty after stripping whitespace ends a document; several in a row
    count as one boundary, so empty documents never appear.
    """
    blank = tf.equal(tf.strings.length(tf.strings.strip(lines)), 0)
    document_index = tf.cumsum(tf.where(blank, 1, 0), exclusive=False)
    keep = tf.logical_not(blank)
    kept_index = tf.boolean_mask(document_index, keep)
    # Renumber 0..D-1 so runs of blank lines do not leave gaps.
    _, dense_index = tf.unique(kept_index)
    return tf.boolean_mask(lines, keep), tf.cast(dense_index, tf.int64)


def read_documents(files: tf.data.Dataset, tokenize: Callable[[tf.Tensor], tf.RaggedTensor],
                   max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                   shuffle: bool = False, seed: int | None = None) -> tf.data.Dataset:
    """Dataset of (file index int64, path string) -> dataset of document dicts.

    `tokenize` maps string [N] to ragged int32 [N, (tokens)]. Each file is read whole (a
    shard is expected to fit in memory, as in the original implementation; split larger
    corpora into shards or use `kbert.data.tfrecords`). With `shuffle`, a file's documents
    come in a random order (a new one each pass), which needs no shuffle buffer.
    """

    def file_documents(file_index, path):
        text = tf.io.read_file(path)
        lines = tf.strings.split(tf.strings.regex_replace(text, "\r\n?", "\n"), "\n")
        lines, document_index = split_documents(clean_lines(lines, max_line_bytes))
        token_lines = tokenize(lines)  # [M, (tokens)]
        lengths = token_lines.row_lengths()
        # Lines that tokenize to nothing (e.g. only control characters) are dropped.
        nonempty = lengths > 0
        token_lines = tf.ragged.boolean_mask(token_lines, nonempty)
        document_index = tf.boolean_mask(document_index, nonempty)
        lengths = tf.boolean_mask(lengths, nonempty)
        # Group lines by document: [D, (lines), (tokens)].
        documents = tf.RaggedTensor.from_value_rowids(token_lines, document_index)
        flat_tokens = documents.merge_dims(1, 2)                       # [D, (tokens)]
        line_lengths = tf.RaggedTensor.from_value_rowids(lengths, document_index)
        line_starts = tf.cast(tf.math.cumsum(line_lengths, axis=1, exclusive=True), tf.int32)
        keep = documents.row_lengths() > 0
        document_ids = file_index * (2 ** 32) + tf.range(
            tf.shape(documents.row_lengths(), out_type=tf.int64)[0], dtype=tf.int64)
        order = tf.range(tf.size(document_ids))
        if shuffle:
            order = tf.random.shuffle(order, seed=seed)
        order = tf.boolean_mask(order, tf.gather(keep, order))
        return tf.data.Dataset.from_tensor_slices({
            "tokens": tf.gather(flat_tokens, order),
            "line_starts": tf.gather(line_starts, order),
            "document_id": tf.gather(document_ids, order),
        })

    return files.flat_map(file_documents)


def has_two_documents(files: Iterable[str]) -> bool:
    """Whether the text files hold at least two documents (NotNext pairs need another
    document). Reads only until the second document starts."""
    documents, in_document = 0, False
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as f:  # gs:// too (TPU workers read GCS)
            for raw in f:
                if raw.strip():
                    if not in_document:
                        documents += 1
                        if documents >= 2:
                            return True
                    in_document = True
                else:
                    in_document = False
        in_document = False  # a new file starts a new document
    return False


def count_invalid_utf8(files: Iterable[str]) -> int:
    """Number of lines with invalid UTF-8 in `files` (they are repaired, not dropped)."""
    invalid = 0
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as f:
            for raw in f:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    invalid += 1
    return invalid
