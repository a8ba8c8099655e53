"""`pretraining_dataset`: text files -> batches for masked-LM + next-sentence pre-training.

    files -> documents (tokenized, kbert.data.documents) -> NSP pairs (kbert.data.nsp)
          -> [CLS] A [SEP] B [SEP] (kbert.text.packer) -> 15% masking (kbert.text.masking)
          -> (x, y, sample_weight) for `model.fit`

Everything runs in `tf.data` on the host (a TPU cannot take strings); batches have static
shapes (`drop_remainder=True`) and int32 ids, as TPUs and XLA want.
"""

from __future__ import annotations

from typing import Iterable

import tensorflow as tf

from kbert.data import documents as documents_lib
from kbert.data import tfrecords
from kbert.data.nsp import nsp_pair_batches
from kbert.text.masking import continuation_table, mask_tokens
from kbert.text.packer import pack



def random_token_range(vocab) -> tuple[int, int]:
    """[low, V): the ids after the leading block of special and [unusedN] tokens.

    Random MLM replacements come from here, so they are never [CLS], [MASK] or unused.
    """
    low = 0
    while low < len(vocab) and vocab[low].startswith("[") and vocab[low].endswith("]"):
        low += 1
    if low >= len(vocab):
        raise ValueError("the vocabulary has no ordinary tokens")
    return low, len(vocab)


def pretraining_dataset(
        files: str | Iterable[str], tokenizer, *, sequence_length: int = 128,
        max_predictions: int = 20, batch_size: int = 32, masked_lm_prob: float = 0.15,
        short_seq_prob: float = 0.1, whole_word_masking: bool = False,
        seed: int | None = None, input_context: tf.distribute.InputContext | None = None,
        repeat: bool = True, shuffle_buffer: int = 10_000, document_shuffle_buffer: int = 1000,
        max_line_bytes: int = documents_lib.DEFAULT_MAX_LINE_BYTES,
        shard_hint: bool = False) -> tf.data.Dataset:
    """Builds the pre-training input pipeline.

    Args:
        files: a path, glob or list of them; text in the original format (one sentence or
            paragraph per line, blank line between documents), or `.tfrecord` shards of
            tokenized documents from `kbert.data.tfrecords.write_document_shards`.
        tokenizer: a `kbert.Tokenizer` (its vocabulary gives the special ids).
        sequence_length: T. max_predictions: P (BERT: 20 for T=128, 80 for T=512).
        batch_size: the global batch; with `input_context` each pipeline makes its
            per-replica share.
        seed: makes shuffles, pairs and masks reproducible (each epoch still differs).
        input_context: from `strategy.distribute_datasets_from_function`; files are
            sharded between input pipelines before shuffling, so workers see disjoint text.
        repeat: loop over the corpus forever (use `steps_per_epoch` in fit).
        shuffle_buffer: NSP chunks shuffled together; document_shuffle_buffer: tokenized
            documents shuffled together when reading TFRecord shards.
        shard_hint: mark the file list with `tf.data.experimental.SHARD_HINT`, for
            tf.data service's static sharding (`kbert.data.service`): each service worker
            then reads its share of the files. Only for a dataset handed to the service.

    Returns:
        Dataset of `(x, y, sample_weight)`, all with static batch dimension:
          x: `token_ids`, `segment_ids`, `padding_mask` int32 [B, T],
             `mask_positions` int32 [B, P];
          y: `mlm_logits` <- mask ids int32 [B, P], `nsp_logits` <- next_sentence_labels
             int32 [B] (0 IsNext, 1 NotNext);
          sample_weight: `mlm_logits` <- mask_weights float32 [B, P], `nsp_logits` <- ones
             float32 [B].
    """
    paths = documents_lib.expand_files(files)
    # Shards written by kbert.data.tfrecords hold documents already tokenized.
    from_shards = all(p.endswith(tfrecords.SUFFIX) for p in paths)
    if not from_shards and not documents_lib.has_two_documents(paths):
        raise ValueError(
            f"{', '.join(paths)}: one document only; next sentence prediction needs at "
            "least two (documents are separated by a blank line)")
    vocab = tokenizer.vocab
    cls_id, sep_id, pad_id, mask_id = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id,
                                      tokenizer.mask_id)
    low_high = random_token_range(vocab)
    continuation = continuation_table(vocab) if whole_word_masking else None
    per_replica_batch = batch_size
    file_ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))
    if input_context is not None:
        if len(paths) < input_context.num_input_pipelines:
            raise ValueError(
                f"{len(paths)} file(s) for {input_context.num_input_pipelines} input "
                "pipelines: split the corpus into at least one shard per worker")
        file_ds = file_ds.shard(input_context.num_input_pipelines,
                                input_context.input_pipeline_id)
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size)
    if shard_hint:
        if input_context is not None:
            raise ValueError("shard_hint (tf.data service) and input_context both shard "
                             "the files; give one")
        # Replaced by (number of workers, worker index) when the service runs it.
        file_ds = file_ds.shard(tf.data.experimental.SHARD_HINT,
                                tf.data.experimental.SHARD_HINT)

    def shuffled_documents(offset: int, endless: bool):
        s = None if seed is None else seed + offset
        ds = file_ds.shuffle(len(paths), seed=s, reshuffle_each_iteration=True)
        ds = ds.repeat() if endless else ds
        if from_shards:
            return tfrecords.read_document_shards(ds).shuffle(
                document_shuffle_buffer, seed=s, reshuffle_each_iteration=True)
        # Text files: documents are shuffled within each file as it is read (a buffer
        # across passes would re-read the corpus until it fills).
        return documents_lib.read_documents(ds, tokenizer, max_line_bytes=max_line_bytes,
                                            shuffle=True, seed=s)

    batches = nsp_pair_batches(
        shuffled_documents(0, repeat), shuffled_documents(100, True),
        batch_size=per_replica_batch, max_tokens=sequence_length - 3,
        short_seq_prob=short_seq_prob, seed=seed, shuffle_buffer=shuffle_buffer)
    seeds = tf.data.Dataset.random(seed=None if seed is None else seed + 300)

    def to_model_inputs(batch, mask_seed):
        packed = pack(batch["segment_a"], batch["segment_b"], sequence_length=sequence_length,
                      cls_id=cls_id, sep_id=sep_id, pad_id=pad_id)
        masked = mask_tokens(
            packed["token_ids"], packed["padding_mask"], max_predictions=max_predictions,
            mask_id=mask_id, special_ids=(pad_id, cls_id, sep_id), random_token_range=low_high,
            seed=mask_seed, rate=masked_lm_prob,
            is_continuation=None if continuation is None else tf.gather(
                continuation, packed["token_ids"]))
        x = {"token_ids": masked["token_ids"], "segment_ids": packed["segment_ids"],
             "padding_mask": packed["padding_mask"], "mask_positions": masked["mask_positions"]}
        labels = tf.cast(batch["next_sentence_labels"], tf.int32)
        y = {"mlm_logits": masked["mask_ids"], "nsp_logits": labels}
        weights = {"mlm_logits": masked["mask_weights"],
                   "nsp_logits": tf.ones_like(labels, tf.float32)}
        return x, y, weights

    return (tf.data.Dataset.zip(batches, seeds)
            .map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=seed is not None)
            .prefetch(tf.data.AUTOTUNE))
