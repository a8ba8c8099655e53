"""Tokenized documents on disk, for corpora larger than memory.

`write_document_shards` tokenizes text files once and writes the documents round-robin to
`num_shards` TFRecord files of `tf.train.Example`s (`tokens`, `line_starts` int64 lists,
`document_id` int64); `read_document_shards` reads them back as the same document dicts
that `kbert.data.documents.read_documents` makes, one record at a time.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import tensorflow as tf

from kbert.data import documents as documents_lib

SUFFIX = ".tfrecord"
SHARD_PREFIX = "documents"
_FEATURES = {
    "tokens": tf.io.RaggedFeature(tf.int64),
    "line_starts": tf.io.RaggedFeature(tf.int64),
    "document_id": tf.io.FixedLenFeature([], tf.int64),
}


def write_document_shards(files: str | Iterable[str], tokenizer, out_dir: str,
                          num_shards: int = 8,
                          max_line_bytes: int = documents_lib.DEFAULT_MAX_LINE_BYTES) -> list[str]:
    """Tokenizes `files` and writes `out_dir/documents-XXXXX-of-YYYYY.tfrecord`.

    Returns the shard paths. Shards are written under temporary names and renamed when
    complete, so a crash never leaves a truncated shard behind.
    """
    paths = documents_lib.expand_files(files)
    os.makedirs(out_dir, exist_ok=True)
    shards = [shard_name(out_dir, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(s + ".partial") for s in shards]
    file_ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))
    for i, doc in enumerate(documents_lib.read_documents(file_ds, tokenizer, max_line_bytes)):
        writers[i % num_shards].write(document_example(doc))
    for writer, shard in zip(writers, shards):
        writer.close()
        os.replace(shard + ".partial", shard)
    return shards


def document_example(document) -> bytes:
    """A document dict (tensors or arrays) -> a serialized tf.train.Example of the shards."""
    return tf.train.Example(features=tf.train.Features(feature={
        "tokens": tf.train.Feature(int64_list=tf.train.Int64List(
            value=np.asarray(document["tokens"]))),
        "line_starts": tf.train.Feature(int64_list=tf.train.Int64List(
            value=np.asarray(document["line_starts"]))),
        "document_id": tf.train.Feature(int64_list=tf.train.Int64List(
            value=[int(document["document_id"])])),
    })).SerializeToString()


def shard_name(out_dir: str, index: int, num_shards: int) -> str:
    return os.path.join(out_dir, f"{SHARD_PREFIX}-{index:05d}-of-{num_shards:05d}{SUFFIX}")


def read_document_shards(files: tf.data.Dataset) -> tf.data.Dataset:
    """Dataset of (file index, path) of shards -> document dicts (int32 tokens)."""

    def parse(record):
        example = tf.io.parse_single_example(record, _FEATURES)
        return {"tokens": tf.cast(example["tokens"], tf.int32),
                "line_starts": tf.cast(example["line_starts"], tf.int32),
                "document_id": example["document_id"]}

    return files.flat_map(lambda index, path: tf.data.TFRecordDataset(path)).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE)
