"""`kbert pretraining-data` on Beam's DirectRunner: the shards hold the documents that
the one-machine writer makes, with counts as Beam metrics, and `pretraining_dataset`
reads them."""

import glob

import numpy as np
import tensorflow as tf

from kbert import cli
from kbert.beam.pretraining_data import byte_counts
from kbert.data.pretraining import pretraining_dataset
from kbert.data.tfrecords import read_document_shards, write_document_shards
from kbert.text import Tokenizer
from helpers.tiny import VOCAB

WORDS = [w for w in VOCAB if not w.startswith(("[", "#"))]


def _write_corpus(root, files=3, documents=6):
    rng = np.random.default_rng(0)
    for f in range(files):
        with open(root / f"part{f}.txt", "wb") as out:
            for d in range(documents):
                for line in range(int(rng.integers(1, 5))):
                    text = " ".join(rng.choice(WORDS, int(rng.integers(3, 12)))).encode()
                    if line == 1 and d % 2 == 0:
                        text += b" \xff\xfe broken"  # 2 invalid bytes
                    out.write(text + b"\n")
                out.write(b"\n" * int(rng.integers(1, 3)))


def _documents(paths):
    files = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))
    return {int(d["document_id"]): (d["tokens"].numpy().tolist(),
                                    d["line_starts"].numpy().tolist())
            for d in read_document_shards(files)}


def test_beam_shards_equal_the_local_writer(tmp_path, capsys):
    _write_corpus(tmp_path)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    assert cli.main(["pretraining-data", str(tmp_path / "part*.txt"), "--vocab",
                     str(tmp_path / "vocab.txt"), "--out", str(tmp_path / "beam"),
                     "--num-shards", "3", "--direct_num_workers=1"]) == 0
    summary = capsys.readouterr().out
    shards = sorted(glob.glob(str(tmp_path / "beam" / "*")))
    assert [s.rsplit("/", 1)[1] for s in shards] == [
        f"documents-0000{i}-of-00003.tfrecord" for i in range(3)]
    tokenizer = Tokenizer(VOCAB, lowercase=True)
    local = write_document_shards(str(tmp_path / "part*.txt"), tokenizer,
                                  str(tmp_path / "local"), num_shards=2)
    beam_documents, local_documents = _documents(shards), _documents(local)
    assert beam_documents == local_documents
    assert len(beam_documents) == 18
    tokens = sum(len(t) for t, _ in beam_documents.values())
    lines = sum(len(s) for _, s in beam_documents.values())
    # Two bad bytes were written into some lines.
    invalid = 2 * sum(open(p, "rb").read().count(b"\xff\xfe")
                      for p in glob.glob(str(tmp_path / "part*.txt")))
    assert invalid > 0
    assert (f"wrote 3 shard(s) to {tmp_path / 'beam'}: 3 file(s), 18 documents, {lines} "
            f"lines, {tokens} tokens; {invalid} invalid UTF-8 byte(s) read as U+FFFD, "
            "0 over-long line(s) cut") in summary
    # pretraining_dataset reads them: masked batches of the documents' tokens.
    batches = pretraining_dataset(shards, tokenizer, sequence_length=32, max_predictions=4,
                                  batch_size=4, seed=0, repeat=False)
    count = 0
    corpus_ids = {i for t, _ in beam_documents.values() for i in t}
    for x, y, _ in batches:
        count += 1
        real = x["token_ids"].numpy()[x["padding_mask"].numpy() == 1]
        specials = {tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id}
        assert set(real.tolist()) - specials <= set(range(len(VOCAB)))
        assert set(y["mlm_logits"].numpy()[y["mlm_logits"].numpy() > 0].tolist()) <= corpus_ids
    assert count > 0


def test_byte_counts_follow_the_reader():
    """Bad bytes are counted where the reader keeps them; a line past max_line_bytes is
    cut first (a character split by the cut reads as U+FFFD, and counts)."""
    lines = [b"fine\n", b"a\xffb\xfe\n", "é".encode() * 6 + b"\n", b"x" * 20 + b"\xff\n"]
    assert byte_counts(lines, 100) == (3, 0)
    # Line 3: 12 bytes cut to 11 splits the last "é" (1 byte kept); line 4: the bad byte
    # is past the cut.
    assert byte_counts(lines, 11) == (3, 2)
