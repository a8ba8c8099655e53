"""Documents and next-sentence pairs, on a synthetic corpus whose token ids encode where
they come from: id = 1000 * document + position in document (mod 1000)."""

import numpy as np
import pytest
import tensorflow as tf

from kbert.data.documents import (clean_lines, count_invalid_utf8, has_two_documents,
                                  read_documents, split_documents)
from kbert.data.nsp import nsp_pair_batches

from helpers.corpus import numeric_tokenize, write_corpus





def document_dataset(path):
    files = tf.data.Dataset.from_tensor_slices((tf.constant([0], tf.int64), [str(path)]))
    return read_documents(files, numeric_tokenize)


def nsp_pairs(documents, random_documents, **kwargs):
    return nsp_pair_batches(documents, random_documents, batch_size=512, **kwargs)


def collect(pairs, limit):
    out = []
    for batch in pairs.take(-(-limit // 512)):
        a, b = batch["segment_a"].to_list(), batch["segment_b"].to_list()
        for i, label in enumerate(batch["next_sentence_labels"].numpy()):
            out.append((np.array(a[i]), np.array(b[i]), int(label),
                        int(batch["document_id"][i])))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("nsp") / "corpus.txt")


def test_documents_are_read_whole(corpus):
    docs = list(document_dataset(corpus).as_numpy_iterator())
    assert len(docs) == 300
    for d in docs:
        ids = d["tokens"]
        assert np.all(ids // 1000 == ids[0] // 1000)
        assert np.array_equal(ids % 1000, np.arange(len(ids)) % 1000)
        assert d["line_starts"][0] == 0 and np.all(np.diff(d["line_starts"]) > 0)


def test_nsp_statistics(corpus):
    docs = document_dataset(corpus)
    pairs = nsp_pairs(docs.repeat().shuffle(500, seed=1), docs.repeat().shuffle(500, seed=2),
                      max_tokens=61, seed=3)
    examples = collect(pairs, 12_000)
    assert len(examples) >= 12_000
    labels = np.array([e[2] for e in examples])
    assert abs(labels.mean() - 0.5) < 0.01
    short = 0
    for a, b, label, doc in examples:
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 61
        assert np.all(a // 1000 == doc)
        if label == 1:
            assert not np.any(b // 1000 == doc), "NotNext text from the same document"
            assert np.array_equal(np.diff(b) % 1000, np.ones(len(b) - 1))  # contiguous text
        else:
            both = np.concatenate([a, b])
            assert np.all(both // 1000 == doc)
            assert np.array_equal(np.diff(both) % 1000, np.ones(len(both) - 1))
        short += len(a) + len(b) < 20
    assert short > 0.02 * len(examples)  # short_seq_prob produces short examples


def test_nsp_is_reproducible_with_a_seed(corpus):
    def first(seed):
        docs = document_dataset(corpus)
        pairs = nsp_pairs(docs.shuffle(500, seed=seed), docs.repeat().shuffle(500, seed=seed + 1),
                          max_tokens=61, seed=seed)
        return [(a.tolist(), b.tolist(), l) for a, b, l, _ in collect(pairs, 200)[:200]]
    assert first(5) == first(5)
    assert first(5) != first(6)


def test_few_documents_never_mix(tmp_path):
    """With two documents most random candidates share the document: still never mixed."""
    path = write_corpus(tmp_path / "two.txt", documents=2, seed=4)
    docs = document_dataset(path)
    pairs = nsp_pairs(docs.repeat(), docs.repeat().shuffle(50, seed=1), max_tokens=30,
                      candidates=2, seed=1)
    for a, b, label, doc in collect(pairs, 2000):
        if label == 1:
            assert not np.any(b // 1000 == doc)


def test_real_world_text(tmp_path):
    path = tmp_path / "messy.txt"
    with open(path, "wb") as f:
        f.write(b"\n\n\n1 2 3\r\n4 5\n\n\n\n")                  # leading blanks, CRLF
        f.write(b"   \n")                                       # whitespace-only line = boundary
        f.write(b"7 8 \xff\xfe 9\n\n")                          # invalid UTF-8 bytes
        f.write(b"10\n\n")                                      # one-line, one-token document
        f.write(b" ".join(b"11" for _ in range(50_000)) + b"\n")  # enormous line
    docs = list(document_dataset(path).as_numpy_iterator())
    assert [d["tokens"][:5].tolist() for d in docs[:3]] == [[1, 2, 3, 4, 5], [7, 8, 9], [10]]
    assert docs[0]["line_starts"].tolist() == [0, 3]
    # 100,000 bytes kept of the enormous line: 33,333 full "11 " tokens and one more.
    assert len(docs) == 4 and len(docs[3]["tokens"]) == 33_334
    assert count_invalid_utf8([path]) == 1 and has_two_documents([path])


def test_one_document_is_detected(tmp_path):
    (tmp_path / "one.txt").write_text("\n\na b\nc d\n\n\n")
    (tmp_path / "two.txt").write_text("e f\n")
    assert not has_two_documents([tmp_path / "one.txt"])
    assert has_two_documents([tmp_path / "one.txt", tmp_path / "two.txt"])  # files split too


def test_clean_lines_and_split():
    # A cut inside the two-byte "\xc3\xa9" and a stray byte both become U+FFFD.
    cleaned = clean_lines(tf.constant([b"ok", b"ba\xc3\xa9d", b"\xffxxxxxx"]), max_line_bytes=3)
    assert [s.decode() for s in cleaned.numpy()] == ["ok", "ba\ufffd", "\ufffdxx"]
    lines, index = split_documents(tf.constant(["a", "", "", "b", " ", "c", ""]))
    assert lines.numpy().tolist() == [b"a", b"b", b"c"] and index.numpy().tolist() == [0, 1, 2]
