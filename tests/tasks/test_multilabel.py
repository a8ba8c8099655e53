"""Multi-label classification (`kbert finetune classify --multi-label`): reading labels split
in one column or as 0/1 columns, the sigmoid / binary cross entropy loss against numpy,
micro / macro F1 and exact match against scikit-learn, thresholds chosen per label on the
eval file and saved, and the same answers from `predict`, a SavedModel in a fresh process
and `kbert serve`-style signatures."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics

from helpers.finetune import VOCAB, WORDS, tiny_model_dir
from helpers.paths import REPO
from helpers.tiny import tiny_config, tiny_encoder
from kbert import cli
from kbert.data.readers import read_text_examples
from kbert.tasks import build_task_model
from kbert.tasks.classification.multilabel import (CANDIDATES, multilabel_metrics,
                                                   tune_thresholds)
from kbert.tasks.registry import get_task
from kbert.tasks.spec import TaskSpec
from kbert.text import Tokenizer

KEYS = ("good", "bad")  # each present or not, independently: 4 label sets


def _rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randrange(3, 9))]
        present = [key for key in KEYS if rng.random() < 0.5]
        for key in present:
            words.insert(rng.randrange(len(words) + 1), key)
        rows.append((" ".join(words), present))
    return rows


def _write(path, rows, columns=False):
    with open(path, "w", encoding="utf-8") as f:
        if columns:
            f.write("text\tgood\tbad\n")
            for text, present in rows:
                f.write(f"{text}\t{int('good' in present)}\t{int('bad' in present)}\n")
        else:
            f.write("text\ttags\n")
            for text, present in rows:
                f.write(f"{text}\t{'|'.join(present)}\n")
    return str(path)


def test_metrics_are_scikit_learns():
    rng = np.random.default_rng(0)
    gold = rng.random((50, 4)) < 0.3
    predicted = rng.random((50, 4)) < 0.35
    predicted[:, 3] = False  # a label never predicted
    gold[:, 2] = False  # and one never gold
    got = multilabel_metrics(gold, predicted)
    assert got["micro_f1"] == pytest.approx(sklearn.metrics.f1_score(
        gold, predicted, average="micro", zero_division=0))
    assert got["macro_f1"] == pytest.approx(sklearn.metrics.f1_score(
        gold, predicted, average="macro", zero_division=0))
    assert got["exact_match"] == pytest.approx(sklearn.metrics.accuracy_score(gold, predicted))


def test_thresholds_maximise_each_labels_f1():
    rng = np.random.default_rng(1)
    gold = rng.random((80, 3)) < 0.4
    probabilities = np.clip(0.35 * gold + rng.random((80, 3)) * 0.6, 0, 1)
    probabilities[:, 2] = rng.random(80)
    gold[:, 2] = False  # never gold: every threshold scores 0, 0.5 is kept
    thresholds = tune_thresholds(probabilities, gold)
    for c in range(2):
        scores = [sklearn.metrics.f1_score(gold[:, c], probabilities[:, c] >= t,
                                           zero_division=0) for t in CANDIDATES]
        assert sklearn.metrics.f1_score(gold[:, c], probabilities[:, c] >= thresholds[c],
                                        zero_division=0) == pytest.approx(max(scores))
    assert thresholds[2] == 0.5


def test_reading_separated_labels_and_label_columns(tmp_path):
    rows = [("w1 good", ["good"]), ("w2", []), ("bad w3 good", ["good", "bad"])]
    separated = read_text_examples(_write(tmp_path / "a.tsv", rows), label_column="tags",
                                   label_separator="|")
    assert [e.labels for e in separated] == [("good",), (), ("good", "bad")]
    columns = read_text_examples(_write(tmp_path / "b.tsv", rows, columns=True),
                                 label_columns=["good", "bad"])
    assert [e.labels for e in columns] == [("good",), (), ("good", "bad")]
    (tmp_path / "c.tsv").write_text("text\tgood\tbad\nw1\t1\tyes\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"c.tsv: line 2: field 'bad' must be 0 or 1"):
        read_text_examples(str(tmp_path / "c.tsv"), label_columns=["good", "bad"])
    with pytest.raises(ValueError, match=r"no column 'ugly'"):
        read_text_examples(str(tmp_path / "c.tsv"), label_columns=["good", "ugly"])


def test_the_loss_is_the_mean_binary_cross_entropy(tmp_path):
    task = get_task("classify")
    examples = task.read(_write(tmp_path / "t.tsv", _rows(24, 2)), label_column="tags",
                         label_separator="|")
    spec = task.make_spec(examples, 24, label_column="tags", label_separator="|")
    assert spec.task == "multilabel" and spec.labels == ("bad", "good")
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB)), seed=0), spec)
    x, y, w = next(iter(task.dataset(examples, Tokenizer(VOCAB), spec, 24, training=False)))
    targets = y["logits"].numpy()
    np.testing.assert_array_equal(targets, [[float("bad" in e.labels), float("good" in
                                             e.labels)] for e in examples])
    logits = model(x, training=False)["logits"].numpy().astype(np.float64)
    loss = task.loss(spec)["logits"](y["logits"], logits, sample_weight=w["logits"])
    # numpy: -[y log s(z) + (1 - y) log(1 - s(z))], averaged over every (example, label)
    expected = np.mean(np.maximum(logits, 0) - logits * targets
                       + np.log1p(np.exp(-np.abs(logits))))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    model = str(tiny_model_dir(root / "pre"))
    train = _write(root / "train.tsv", _rows(160, 3), columns=True)
    dev = _write(root / "dev.tsv", _rows(40, 4), columns=True)
    out = root / "run"
    assert cli.main(["finetune", "classify", "--model", model, "--train", train, "--eval",
                     dev, "--out", str(out), "--label-columns", "good,bad", "--epochs", "4",
                     "--batch-size", "16", "--learning-rate", "1e-3", "--seq-len",
                     "16"]) == 0
    return root, out


def test_fine_tuning_learns_and_saves_the_thresholds_it_chose(run):
    root, out = run
    with open(out / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["primary_metric"] == "micro_f1"
    assert metrics["best"]["micro_f1"] > 0.8  # the keywords are learnable
    spec = TaskSpec.load(out / "model" / "task.json")
    assert spec.task == "multilabel" and spec.labels == ("good", "bad")
    assert len(spec.thresholds) == 2 and all(t in CANDIDATES for t in spec.thresholds)
    assert metrics["spec"]["thresholds"] == list(spec.thresholds)
    with open(out / "predictions.jsonl", encoding="utf-8") as f:
        predictions = [json.loads(line) for line in f]
    for p in predictions:  # the saved predictions are decided with the saved thresholds
        assert p["labels"] == [label for label, t in zip(spec.labels, spec.thresholds)
                               if p["probabilities"][label] >= t]
    # `kbert evaluate` reads dev with the saved columns and decides with the saved
    # thresholds: the best epoch's scores again.
    from kbert.finetuning import evaluate

    again = evaluate(str(out / "model"), str(root / "dev.tsv"))
    assert again == pytest.approx(metrics["best"])
    gold = np.array([[label in p["gold"] for label in spec.labels] for p in predictions])
    got = np.array([[label in p["labels"] for label in spec.labels] for p in predictions])
    assert metrics["best"]["micro_f1"] == pytest.approx(sklearn.metrics.f1_score(
        gold, got, average="micro", zero_division=0))


def test_export_in_a_fresh_process_answers_as_predict(run, capsys):
    root, out = run
    from kbert.finetuning import predict

    texts = ["w1 good w2 bad", "w3 w4", "bad w5", "good"]
    expected = predict(str(out / "model"), texts)
    assert cli.main(["predict", str(out / "model")] + texts) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].startswith("(none)\t") or "=" in printed[1]
    export = root / "serving" / "tags"
    assert cli.main(["export", str(out / "model"), "--out", str(root / "serving"),
                     "--name", "tags", "--tflite"]) == 0
    version = sorted(os.listdir(export))[-1]
    code = ("import json, kbert.export as e, tensorflow as tf\n"
            f"m = e.load({str(export / version)!r})\n"
            f"o = m.signatures['serving_default'](text=tf.constant({texts!r}))\n"
            "print(json.dumps({k: v.numpy().tolist() if v.dtype != tf.string else "
            "[s.decode() for s in v.numpy()] for k, v in o.items()}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(served) == {"probabilities", "label_mask", "labels"}
    spec = TaskSpec.load(out / "model" / "task.json")
    for i, p in enumerate(expected):
        np.testing.assert_allclose(served["probabilities"][i],
                                   [p["probabilities"][label] for label in spec.labels],
                                   atol=1e-5)
        assert [label for label, m in zip(spec.labels, served["label_mask"][i]) if m] == \
            p["labels"]
        assert served["labels"][i] == ",".join(p["labels"])  # label columns: ","
    # TFLite (static T, no string join): the same probabilities and mask.
    from kbert.serving.tflite_runtime import TFLiteModel

    lite = TFLiteModel(export / version / "model.tflite")(text=texts)
    assert set(lite) == {"probabilities", "label_mask"}
    np.testing.assert_allclose(lite["probabilities"], served["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(lite["label_mask"], served["label_mask"])
    # kbert serve over gRPC on loopback: the same labels and probabilities.
    from kbert.serving.client import PredictionClient
    from kbert.serving.server import ModelServer

    with ModelServer(root / "serving", port=0, rest_port=0, poll_seconds=0) as server, \
            PredictionClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        got = client.predict("tags", {"text": texts})
    assert [v.decode() if isinstance(v, bytes) else v for v in got["labels"].tolist()] == \
        served["labels"]
    np.testing.assert_array_equal(got["label_mask"], served["label_mask"])
    np.testing.assert_allclose(got["probabilities"], served["probabilities"], atol=1e-6)
    assert cli.main(["inspect", str(export / version)]) == 0
    shown = capsys.readouterr().out
    assert "custom ops: FastBertNormalize, FastWordpieceTokenizeWithOffsets" in shown


def test_bad_multilabel_settings_are_named(tmp_path, capsys):
    model = str(tiny_model_dir(tmp_path / "pre"))
    train = _write(tmp_path / "train.tsv", _rows(12, 5))
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\ttags\nw1 good\tgood|ugly\n", encoding="utf-8")
    argv = ["finetune", "classify", "--model", model, "--train", train, "--epochs", "1",
            "--seq-len", "16", "--label-column", "tags"]
    assert cli.main(argv + ["--out", str(tmp_path / "a"), "--multi-label"]) == 2
    assert "needs --label-separator" in capsys.readouterr().err
    assert cli.main(argv + ["--out", str(tmp_path / "b"), "--label-separator", "|",
                            "--eval", str(dev)]) == 2
    assert "dev.tsv:2: label 'ugly' was not in the training data" in capsys.readouterr().err
    assert cli.main(argv + ["--out", str(tmp_path / "c"), "--label-separator", "|",
                            "--class-weights", "balanced"]) == 2
    assert "not multi-label" in capsys.readouterr().err
