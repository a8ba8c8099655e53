"""ClassificationTask: windows over long texts, window-averaged logits, labels, errors."""

import numpy as np
import pytest
import tensorflow as tf

from helpers.finetune import VOCAB, tiny_model_dir
from kbert.data.readers import TextExample
from kbert.tasks.classification.task import ClassificationTask, average_windows, windows
from kbert.tasks.spec import TaskSpec
from kbert.tasks.task_dir import load_task_model
from kbert.text import Tokenizer


def test_windows_cover_long_rows():
    ids = tf.ragged.constant([list(range(1, 11)), [11, 12], [], list(range(21, 26))],
                             dtype=tf.int32)
    parts, example = windows(ids, 4, 3)
    # 10 tokens, W=4, stride 3: starts 0, 3 and the last at 10 - 4 = 6.
    assert parts.to_list() == [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10], [11, 12], [],
                               [21, 22, 23, 24], [22, 23, 24, 25]]
    assert example.numpy().tolist() == [0, 0, 0, 1, 2, 3, 3]
    parts, example = windows(ids, 4, 4)  # side by side, the last one ends at the end
    assert parts.to_list()[:3] == [[1, 2, 3, 4], [5, 6, 7, 8], [7, 8, 9, 10]]
    with pytest.raises(ValueError, match="stride"):
        windows(ids, 4, 5)


def test_windows_match_python_rule():
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(5, 50, rng.integers(0, 40))) for _ in range(30)]
    for length, stride in [(6, 6), (6, 2), (8, 5), (1, 1)]:
        parts, example = windows(tf.ragged.constant(rows, dtype=tf.int32), length, stride)
        expected, expected_example = [], []
        for i, row in enumerate(rows):
            n = len(row)
            starts = [0] if n <= length else (
                list(range(0, n - length, stride)) + [n - length])
            expected += [row[s:s + length] for s in starts]
            expected_example += [i] * len(starts)
        assert parts.to_list() == expected
        assert example.numpy().tolist() == expected_example


def test_average_windows():
    values = tf.constant([[1.0, 2.0], [3.0, 6.0], [5.0, 5.0], [0.0, 1.0]])
    got = average_windows(values, tf.constant([0, 0, 1, 2]), 3)
    np.testing.assert_allclose(got.numpy(), [[2.0, 4.0], [5.0, 5.0], [0.0, 1.0]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("cls") / "pre")


def test_long_text_logits_are_the_mean_of_window_logits(model_dir):
    task = ClassificationTask()
    spec = TaskSpec("classification", labels=("bad", "good"), seq_len=8, doc_stride=3)
    model, spec, checkpoint = load_task_model(model_dir, spec=spec)
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    long_text = " ".join(f"w{i}" for i in range(14))  # 14 tokens, windows of 6
    texts = tf.constant(["w1 good", long_text])
    out = task.serving_outputs(model, tokenizer, spec, {"text": texts})
    # The windows by hand: starts 0, 3, 6 and 14 - 6 = 8, each "[CLS] 6 tokens [SEP]".
    cls, sep = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")
    ids = [VOCAB.index(f"w{i}") for i in range(14)]
    rows = [[cls] + ids[s:s + 6] + [sep] for s in (0, 3, 6, 8)]
    rows.insert(0, [cls, VOCAB.index("w1"), VOCAB.index("good"), sep] + [0] * 4)
    mask = (np.array(rows) > 0).astype(np.int32)
    logits = model({"token_ids": np.array(rows, np.int32), "padding_mask": mask,
                    "segment_ids": np.zeros_like(mask)})["logits"].numpy()
    expected = np.stack([logits[0], logits[1:].mean(axis=0)])
    probabilities = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-6)
    assert out["label_ids"].dtype == tf.int32
    assert out["label_ids"].numpy().tolist() == probabilities.argmax(axis=1).tolist()
    assert out["labels"].numpy().tolist() == [spec.labels[i].encode()
                                              for i in probabilities.argmax(axis=1)]
    # predict() runs the same graph.
    predictions = task.predict(model, [TextExample("w1 good"), TextExample(long_text)],
                               tokenizer, spec, batch_size=1)
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in predictions],
                               probabilities, atol=1e-6)


def test_training_dataset_has_one_row_per_window(model_dir):
    task = ClassificationTask()
    spec = TaskSpec("classification", labels=("bad", "good"), seq_len=8, doc_stride=6)
    tokenizer = Tokenizer(VOCAB)
    examples = [TextExample(" ".join(["w1"] * 13), label="good"),
                TextExample("w2", label="bad")]
    batches = list(task.dataset(examples, tokenizer, spec, batch_size=10, training=False))
    assert len(batches) == 1
    x, y, weight = batches[0]
    assert x["token_ids"].shape == (4, 8)  # 13 tokens: 3 windows, plus the short text
    assert y["logits"].numpy().tolist() == [1, 1, 1, 0]
    assert weight["logits"].numpy().tolist() == [1.0] * 4


def test_training_batches_are_cut_to_the_longest_row():
    task = ClassificationTask()
    spec = TaskSpec("classification", labels=("bad", "good"), seq_len=32)
    examples = [TextExample("w1 w2 w3 w4 w5 w6 w7", label="good"),
                TextExample("w2", label="bad")]
    tokenizer = Tokenizer(VOCAB)
    (x, _, _), = task.dataset(examples, tokenizer, spec, 2, training=True, seed=0)
    (full, _, _), = task.dataset(examples, tokenizer, spec, 2, training=False)
    assert x["token_ids"].shape == (2, 9)  # the longest row: 9 tokens
    assert sorted(x["token_ids"].numpy().tolist()) == sorted(
        full["token_ids"].numpy()[:, :9].tolist())
    assert full["token_ids"].numpy()[:, 9:].max() == 0
    task.trim_multiple = 8  # as the runner sets it for XLA: rounded up to 16
    (x, _, _), = task.dataset(examples, tokenizer, spec, 2, training=True, seed=0)
    assert x["token_ids"].shape == (2, 16)


def test_pairs_are_packed_not_windowed():
    task = ClassificationTask()
    spec = TaskSpec("classification", labels=("0", "1"), seq_len=8, pair=True)
    features = task.serving_features(Tokenizer(VOCAB), spec, {
        "text": tf.constant(["w1 w2 w3 w4 w5"]), "text_pair": tf.constant(["w6 w7 w8"])})
    ids = [VOCAB[i] for i in features["token_ids"].numpy()[0]]
    assert ids == ["[CLS]", "w1", "w2", "w3", "[SEP]", "w6", "w7", "[SEP]"]
    assert features["segment_ids"].numpy()[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert features["example_index"].numpy().tolist() == [0]


def _examples(labels, pair=False):
    return [TextExample("w1", "w2" if pair else None, label, f"f.tsv:{i + 2}")
            for i, label in enumerate(labels)]


def test_doc_stride_checked_not_defaulted():
    task = ClassificationTask()
    for stride in (0, -5, 15):
        with pytest.raises(ValueError, match=f"doc_stride {stride} must be between 1 and "
                                             "seq_len - 2 = 14"):
            task.make_spec(_examples(["a", "b"]), 16, doc_stride=stride)
    assert task.make_spec(_examples(["a", "b"]), 16).doc_stride == 14


def test_spec_labels_sorted_numerically_or_as_strings():
    task = ClassificationTask()
    assert task.make_spec(_examples(["10", "2", "1", "2"]), 16).labels == ("1", "2", "10")
    spec = task.make_spec(_examples(["pos", "neg", "neutral"], pair=True), 16)
    assert spec.labels == ("neg", "neutral", "pos") and spec.pair
    assert spec.doc_stride == 14 and task.primary_metric(spec) == "accuracy"
    spec = task.make_spec(_examples(["0.5", "3"]), 16, regression=True)
    assert spec.task == "regression" and task.primary_metric(spec) == "pearson"
    f1_task = ClassificationTask()
    assert f1_task.primary_metric(f1_task.make_spec(_examples(["a", "b"]), 16,
                                                    metric="f1")) == "f1"


@pytest.mark.parametrize("call, message", [
    (lambda t: t.make_spec(_examples(["1", "x"]), 16, regression=True),
     r"f.tsv:3: field label: 'x' is not a number"),
    (lambda t: t.make_spec(_examples(["a", "a"]), 16), r"single label \['a'\]"),
    (lambda t: t.make_spec(_examples(["a", "b"]), 16, colour="red"), r"unknown classify option"),
    (lambda t: t.make_spec(_examples(["a", "b"]), 16, metric="auc"), r"unknown metric"),
    (lambda t: t.check_examples(_examples(["a", "c"]), TaskSpec(
        "classification", labels=("a", "b")), "f.tsv"),
     r"f.tsv:3: label 'c' \(label\) was not in the training data; the model knows "
     r"\['a', 'b'\]"),
    (lambda t: t.check_examples(_examples(["a"]), TaskSpec(
        "classification", labels=("a", "b"), pair=True), "f.tsv"),
     r"f.tsv:2: the model takes text pairs"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(ClassificationTask())
