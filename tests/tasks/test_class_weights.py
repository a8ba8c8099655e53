"""Class weights (`--class-weights balanced` or a file) for classification, pairs and token
tagging: the weights against scikit-learn, the loss fine-tuning minimises against a numpy
weighted cross entropy, what task.json keeps, and errors that name the file and label."""

import json
import os

import numpy as np
import pytest
import sklearn.utils.class_weight

from helpers.finetune import VOCAB, keyword_rows, tiny_model_dir, write_tsv
from kbert import cli
from kbert.data.conll import Sentence
from kbert.data.readers import TextExample
from kbert.tasks import build_task_model
from kbert.tasks.class_weights import balanced_weights, read_weights_file
from kbert.tasks.registry import get_task
from kbert.tasks.spec import TaskSpec
from kbert.text import Tokenizer
from helpers.tiny import tiny_config, tiny_encoder


def test_balanced_weights_are_scikit_learns():
    rng = np.random.default_rng(0)
    observed = list(rng.choice(["a", "b", "c", "d"], size=500, p=[0.6, 0.25, 0.1, 0.05]))
    labels = ["a", "b", "c", "d"]
    expected = sklearn.utils.class_weight.compute_class_weight(
        "balanced", classes=np.array(labels), y=np.array(observed))
    np.testing.assert_allclose(balanced_weights(labels, observed), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"label\(s\) \['d'\] never occur"):
        balanced_weights(labels, ["a", "b", "c"])


def test_weights_files(tmp_path):
    labels = ("B-PER", "I-PER", "O")
    tsv = tmp_path / "weights.tsv"
    tsv.write_text("# rare tags weigh more\nB-PER\t3.5\nI-PER\t2\n", encoding="utf-8")
    assert read_weights_file(str(tsv), labels) == (3.5, 2.0, 1.0)
    js = tmp_path / "weights.json"
    js.write_text(json.dumps({"O": 0.25, "B-PER": 4}), encoding="utf-8")
    assert read_weights_file(str(js), labels) == (4.0, 1.0, 0.25)
    tsv.write_text("B-PER\t3.5\nB-LOC\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"weights.tsv: line 2: label 'B-LOC' is not one of "
                                         r"the task's labels \['B-PER', 'I-PER', 'O'\]"):
        read_weights_file(str(tsv), labels)
    js.write_text(json.dumps({"O": -1}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"weights.json: key 'O': weight -1 is not a finite"):
        read_weights_file(str(js), labels)
    tsv.write_text("O\t1\nO\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: label 'O' is given twice"):
        read_weights_file(str(tsv), labels)
    with pytest.raises(FileNotFoundError, match="--class-weights .*nope.tsv: no such file"):
        read_weights_file(str(tmp_path / "nope.tsv"), labels)


def _weighted_ce(logits, labels, weights):
    """numpy: sum_i w_i * CE_i / sum_i w_i, CE from float64 log-softmax."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    ce = -np.take_along_axis(log_softmax, labels[..., None], axis=-1)[..., 0]
    return float((weights * ce).sum() / weights.sum())


def test_classification_loss_is_the_weighted_mean_cross_entropy():
    task = get_task("classify")
    rows = keyword_rows(40, seed=1, pair=True)
    examples = [TextExample(t, p, "bad" if i % 4 else "good", source=f"f:{i}")
                for i, (t, p, _) in enumerate(rows)]  # 30 bad, 10 good
    spec = task.make_spec(examples, 24, class_weights="balanced")
    assert spec.labels == ("bad", "good") and spec.pair
    np.testing.assert_allclose(spec.class_weights, (40 / (2 * 30), 40 / (2 * 10)))
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB)), seed=0), spec)
    tokenizer = Tokenizer(VOCAB)
    x, y, w = next(iter(task.dataset(examples, tokenizer, spec, batch_size=16,
                                     training=True)))
    labels = y["logits"].numpy()
    np.testing.assert_allclose(w["logits"].numpy(), np.array(spec.class_weights)[labels])
    logits = model(x, training=False)["logits"]
    loss = task.loss(spec)["logits"](y["logits"], logits, sample_weight=w["logits"])
    expected = _weighted_ce(logits.numpy(), labels, np.array(spec.class_weights)[labels])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain = _weighted_ce(logits.numpy(), labels, np.ones(len(labels)))
    assert abs(expected - plain) > 1e-4  # the weights change the loss


def test_tagging_loss_weighs_each_labelled_word_by_its_tag():
    task = get_task("tag")
    rng = np.random.default_rng(3)
    sentences = []
    for i in range(12):
        words = tuple(f"w{rng.integers(0, 40)}" for _ in range(rng.integers(3, 9)))
        labels = tuple("B-X" if rng.random() < 0.15 else "O" for _ in words)
        sentences.append(Sentence(words, labels, tuple(range(len(words))), "f.conll"))
    spec = task.make_spec(sentences, 16, class_weights="balanced", tag_scheme="IOB2")
    observed = [label for s in sentences for label in s.labels]
    np.testing.assert_allclose(spec.class_weights, sklearn.utils.class_weight.
                               compute_class_weight("balanced", classes=np.array(spec.labels),
                                                    y=np.array(observed)))
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB)), seed=0), spec)
    x, y, w = next(iter(task.dataset(sentences, Tokenizer(VOCAB), spec, batch_size=12,
                                     training=False)))
    labels, weights = y["logits"].numpy(), w["logits"].numpy()
    labelled = weights > 0
    assert labelled.sum() == len(observed)  # one labelled piece per word
    np.testing.assert_allclose(weights[labelled],
                               np.array(spec.class_weights)[labels[labelled]])
    logits = model(x, training=False)["logits"].numpy()
    loss = task.loss(spec)["logits"](y["logits"], logits, sample_weight=w["logits"])
    expected = _weighted_ce(logits[labelled], labels[labelled], weights[labelled])
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_weights_are_saved_with_the_model_and_kept_when_it_is_trained_again(tmp_path):
    model = str(tiny_model_dir(tmp_path / "pre"))
    rows = [(t, None, "good" if i % 5 == 0 else "bad")
            for i, (t, _, _) in enumerate(keyword_rows(30, seed=2))]
    train = write_tsv(tmp_path / "train.tsv", rows)
    weights = tmp_path / "weights.tsv"
    weights.write_text("good\t4\n", encoding="utf-8")
    first = tmp_path / "first"
    assert cli.main(["finetune", "classify", "--model", model, "--train", train,
                     "--out", str(first), "--epochs", "1", "--seq-len", "16",
                     "--class-weights", str(weights)]) == 0
    spec = TaskSpec.load(first / "model" / "task.json")
    assert spec.labels == ("bad", "good") and spec.class_weights == (1.0, 4.0)
    again = tmp_path / "again"
    assert cli.main(["finetune", "classify", "--model", str(first / "model"), "--train",
                     train, "--out", str(again), "--epochs", "1", "--seq-len", "16"]) == 0
    assert TaskSpec.load(again / "model" / "task.json").class_weights == (1.0, 4.0)
    balanced = tmp_path / "balanced"
    assert cli.main(["finetune", "classify", "--model", str(first / "model"), "--train",
                     train, "--out", str(balanced), "--epochs", "1", "--seq-len", "16",
                     "--class-weights", "balanced"]) == 0
    assert TaskSpec.load(balanced / "model" / "task.json").class_weights == (
        pytest.approx(30 / (2 * 24)), pytest.approx(30 / (2 * 6)))
    # An unweighted model's task.json has no class_weights key at all.
    assert "class_weights" not in TaskSpec("classification", labels=("a", "b")).to_dict()


def test_bad_class_weights_are_named(tmp_path, capsys):
    model = str(tiny_model_dir(tmp_path / "pre"))
    train = write_tsv(tmp_path / "train.tsv", keyword_rows(12, seed=4))
    weights = tmp_path / "w.tsv"
    weights.write_text("good\t2\nneutral\t3\n", encoding="utf-8")
    argv = ["finetune", "classify", "--model", model, "--train", train, "--epochs", "1",
            "--seq-len", "16"]
    assert cli.main(argv + ["--out", str(tmp_path / "a"), "--class-weights",
                            str(weights)]) == 2
    assert "w.tsv: line 2: label 'neutral' is not one of the task's labels ['bad', 'good']" \
        in capsys.readouterr().err
    assert cli.main(argv + ["--out", str(tmp_path / "b"), "--regression",
                            "--class-weights", "balanced"]) == 2
    assert "class weights need classes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one weight per label"):
        TaskSpec("classification", labels=("a", "b"), class_weights=(1.0,))
    assert not os.path.exists(tmp_path / "a")
