"""pretraining_dataset end to end, on synthetic corpora whose token ids say where they came
from (see test_nsp.py); the real WordPiece tokenizer has its own tests."""

import numpy as np
import pytest
import tensorflow as tf

from kbert.data import tfrecords
from kbert.data.pretraining import pretraining_dataset, random_token_range
from helpers.corpus import numeric_tokenize, write_corpus

OFFSET = 10  # numeric token n gets id n + OFFSET, after the special tokens


class NumericTokenizer:
    """The tokenizer interface pretraining_dataset uses, over integer "words"."""
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]",
             "[unused2]", "[unused3]", "[unused4]"] + [str(i) for i in range(400_000)]
    pad_id, unk_id, cls_id, sep_id, mask_id = 0, 2, 3, 4, 5

    def __call__(self, lines):
        return numeric_tokenize(lines) + OFFSET


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    return [str(write_corpus(root / f"part-{i}.txt", documents=150, seed=i,
                             first_document=150 * i)) for i in range(2)]


def test_batches_are_static_and_well_formed(corpus):
    ds = pretraining_dataset(corpus, NumericTokenizer(), sequence_length=64, max_predictions=10,
                             batch_size=16, seed=1, shuffle_buffer=500)
    x_spec, y_spec, w_spec = ds.element_spec
    assert x_spec["token_ids"].shape == (16, 64) and x_spec["mask_positions"].shape == (16, 10)
    assert y_spec["nsp_logits"].shape == (16,) and w_spec["mlm_logits"].shape == (16, 10)
    assert all(s.dtype == tf.int32 for s in x_spec.values())
    masked = chosen = labels = 0
    for x, y, w in ds.take(20).as_numpy_iterator():
        ids, seg, pad = x["token_ids"], x["segment_ids"], x["padding_mask"]
        assert np.all(ids[:, 0] == 3)
        assert np.all((ids == 4).sum(1) == 2)                       # two [SEP]
        assert np.all(ids[pad == 0] == 0) and np.all(seg[pad == 0] == 0)
        real = w["mlm_logits"] == 1.0
        rows = np.arange(16)[:, None].repeat(10, 1)
        at = ids[rows[real], x["mask_positions"][real]]
        masked += (at == 5).sum()
        chosen += real.sum()
        assert np.all(y["mlm_logits"][real] >= OFFSET)             # never a special token
        labels += y["nsp_logits"].sum()
        assert np.all(w["nsp_logits"] == 1.0)
    assert 0.75 < masked / chosen < 0.85
    assert abs(labels / (20 * 16) - 0.5) < 0.1


def test_reproducible_with_seed(corpus):
    def first(seed):
        ds = pretraining_dataset(corpus, NumericTokenizer(), sequence_length=32,
                                 max_predictions=5, batch_size=8, seed=seed, shuffle_buffer=100)
        return [b[0]["token_ids"] for b in ds.take(2).as_numpy_iterator()]
    a, b, c = first(3), first(3), first(4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_input_context_shards_files(corpus):
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        ds = pretraining_dataset(corpus, NumericTokenizer(), sequence_length=32, max_predictions=5,
                                 batch_size=16, seed=1, input_context=context, repeat=False,
                                 shuffle_buffer=100)
        assert ds.element_spec[0]["token_ids"].shape == (8, 32)   # per-replica share
        # Masked-LM labels are original tokens (never random replacements).
        seen.append({int(i) for _, y, w in ds.as_numpy_iterator()
                     for i in y["mlm_logits"][w["mlm_logits"] == 1.0]})
    for i, path in enumerate(corpus):
        with open(path) as f:
            file_ids = {int(word) + OFFSET for word in f.read().split()}
        assert seen[i] and seen[i] <= file_ids, f"pipeline {i} read another worker's file"


def test_too_few_files_for_the_workers(corpus):
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0)
    with pytest.raises(ValueError, match="2 file\\(s\\) for 3 input pipelines"):
        pretraining_dataset(corpus, NumericTokenizer(), input_context=context)


def test_missing_corpus_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        pretraining_dataset(str(tmp_path / "*.txt"), NumericTokenizer())


def test_tfrecord_shards_round_trip(corpus, tmp_path):
    shards = tfrecords.write_document_shards(corpus, NumericTokenizer(), str(tmp_path), 3)
    assert len(shards) == 3 and not list(tmp_path.glob("*.partial"))
    files = tf.data.Dataset.from_tensor_slices((tf.range(3, dtype=tf.int64), shards))
    from_shards = sorted((int(d["document_id"]), d["tokens"].tolist())
                         for d in tfrecords.read_document_shards(files).as_numpy_iterator())
    from kbert.data.documents import read_documents
    texts = tf.data.Dataset.from_tensor_slices((tf.range(2, dtype=tf.int64), corpus))
    direct = sorted((int(d["document_id"]), d["tokens"].tolist())
                    for d in read_documents(texts, NumericTokenizer()).as_numpy_iterator())
    assert from_shards == direct and len(direct) == 300
    ds = pretraining_dataset(shards, NumericTokenizer(), sequence_length=32, max_predictions=5,
                             batch_size=8, seed=1, shuffle_buffer=100)
    x, y, w = next(iter(ds))
    assert x["token_ids"].shape == (8, 32)


def test_random_token_range_skips_leading_specials():
    assert random_token_range(NumericTokenizer.vocab) == (10, len(NumericTokenizer.vocab))
    with pytest.raises(ValueError):
        random_token_range(["[PAD]", "[CLS]"])
