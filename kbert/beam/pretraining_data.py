"""A corpus -> tokenized TFRecord shards on Apache Beam, for `pretraining_dataset`.

The shards are the ones `kbert.data.tfrecords.write_document_shards` writes on one machine
(`OUT/documents-SSSSS-of-NNNNN.tfrecord`, one tf.train.Example per document: `tokens`,
`line_starts`, `document_id`), made by Beam workers file by file with the same reader
(`kbert.data.documents.read_documents`: the original format, invalid UTF-8 read as U+FFFD,
lines cut at `max_line_bytes`, blank-line document breaks). A document's id is its file's
index in the sorted corpus list times 2**32 plus its index in the file, as in-process.

Counts are Beam metrics in the "kbert" namespace: files, documents, lines, tokens,
replaced_bytes (invalid UTF-8 bytes read as U+FFFD) and cut_lines (lines longer than
`max_line_bytes`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics import Metrics

from kbert.beam.pipeline import NAMESPACE, counts_by_name, pipeline_options
from kbert.data import documents as documents_lib
from kbert.data import tfrecords
from kbert.text import Tokenizer

COUNTERS = ("files", "documents", "lines", "tokens", "replaced_bytes", "cut_lines")


def byte_counts(lines, max_line_bytes: int) -> tuple[int, int]:
    """(invalid UTF-8 bytes, lines longer than max_line_bytes) of raw lines, counted on
    what the reader keeps: it cuts a line first, then reads bad bytes (a character split
    by the cut included) as U+FFFD."""
    replaced = cut = 0
    for raw in lines:
        raw = raw.rstrip(b"\r\n")
        if len(raw) > max_line_bytes:
            cut += 1
            raw = raw[:max_line_bytes]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            replaced += len(raw) - len(raw.decode("utf-8", "ignore").encode("utf-8"))
    return replaced, cut


class _TokenizeFile(beam.DoFn):
    """(file index, path) -> serialized document Examples, counting as it goes."""

    def __init__(self, vocab: Sequence[str], lowercase: bool, max_line_bytes: int):
        self._vocab = tuple(vocab)
        self._lowercase = lowercase
        self._max_line_bytes = max_line_bytes
        self._counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}

    def setup(self):  # on the worker: the tokenizer's tables are not pickled
        self._tokenizer = Tokenizer(self._vocab, lowercase=self._lowercase)

    def process(self, item):
        index, path = item
        with tf.io.gfile.GFile(path, "rb") as f:
            replaced, cut = byte_counts(f, self._max_line_bytes)
        files = tf.data.Dataset.from_tensors((tf.constant(index, tf.int64), tf.constant(path)))
        c = self._counters
        c["files"].inc()
        c["replaced_bytes"].inc(replaced)
        c["cut_lines"].inc(cut)
        for document in documents_lib.read_documents(files, self._tokenizer,
                                                     self._max_line_bytes):
            c["documents"].inc()
            c["lines"].inc(int(document["line_starts"].shape[0]))
            c["tokens"].inc(int(document["tokens"].shape[0]))
            yield tfrecords.document_example(document)


@dataclasses.dataclass(frozen=True)
class PretrainingDataSettings:
    """Attributes:
        corpus: text files or globs in the original format (any TF / Beam path).
        out: the directory of the shards.
        vocab: the vocabulary tokens; lowercase: as the model's tokenizer.
        num_shards: shards to write (several per trainer worker: files are what the
            pre-training input shards between workers).
        max_line_bytes: lines are cut here, as in-process.
        runner, pipeline_args: as in `kbert.beam.pipeline.BatchInferenceSettings`.
    """

    corpus: tuple[str, ...]
    out: str
    vocab: tuple[str, ...]
    lowercase: bool = True
    num_shards: int = 8
    max_line_bytes: int = documents_lib.DEFAULT_MAX_LINE_BYTES
    runner: str = "direct"
    pipeline_args: tuple[str, ...] = ()


def build(pipeline, settings: PretrainingDataSettings):
    """Adds the job to `pipeline`; the corpus list is expanded here so that file indices
    (and so document ids) do not depend on which worker reads which file."""
    if settings.num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {settings.num_shards}")
    paths = documents_lib.expand_files(list(settings.corpus))
    if any(p.endswith(tfrecords.SUFFIX) for p in paths):
        raise ValueError("the corpus lists .tfrecord shards; give the text files")
    return (pipeline
            | "Files" >> beam.Create(list(enumerate(paths)))
            | "Spread" >> beam.Reshuffle()
            | "Tokenize" >> beam.ParDo(_TokenizeFile(settings.vocab, settings.lowercase,
                                                      settings.max_line_bytes))
            | "Write" >> beam.io.WriteToTFRecord(
                os.path.join(settings.out, tfrecords.SHARD_PREFIX),
                file_name_suffix=tfrecords.SUFFIX, num_shards=settings.num_shards))


def make_pretraining_shards(settings: PretrainingDataSettings) -> dict[str, int]:
    """Runs the job; returns its counts (see the module docstring). Each shard appears
    under its final name only when complete (Beam writes to a temporary directory and
    renames)."""
    pipeline = beam.Pipeline(options=pipeline_options(settings.runner,
                                                      settings.pipeline_args))
    build(pipeline, settings)
    result = pipeline.run()
    result.wait_until_finish()
    return counts_by_name(result, COUNTERS)
