"""A task defined entirely here, registered with `register_task`, runs through kbert's
fine-tuning, `predict`, `evaluate`, the CLI's generated flags and `kbert export` with no
change to kbert: the proof that a task is one unit."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers.finetune import keyword_rows, tiny_model_dir
from kbert.cli import build_parser
from kbert.data.readers import read_text_examples
from kbert.export import export_saved_model, load
from kbert.io.model_dir import read_checkpoint
from kbert.tasks.base import Task
from kbert.tasks.card import option
from kbert.tasks.heads import dense_head
from kbert.tasks.registry import get_task, register_task, task_for_kind
from kbert.tasks.spec import TaskSpec
from kbert.text.packer import pack
from kbert.training.finetune import evaluate, finetune, predict
from kbert.training.settings import FinetuneSettings


@dataclasses.dataclass(frozen=True)
class KeywordOptions:
    text_column: str | None = option("column of the text", read=True)
    keyword: str = option("the word whose presence is class 1", default="good")


@register_task
class KeywordTask(Task):
    """Class 1 when the text holds `keyword`, else 0; the labels come from the text, so
    the training file needs no label column. Head: dense on the [CLS] vector."""

    command = "toy-keyword"
    kinds = ("toy_keyword",)
    head_name = "keyword_head"
    default_seq_len = 16
    help = "a test's toy task"
    Options = KeywordOptions

    def build_head(self, encoder_outputs, spec, initializer):
        head = dense_head(self.head_name, 2, initializer)
        return head, {"logits": head(encoder_outputs["sequence_output"][:, 0, :])}

    def read(self, path, **options):
        given = self.check_options(options)
        column = given.text_column or "text"
        return [e.text for e in read_text_examples(path, text_column=column,
                                                   label_column=None)]

    def examples_from_texts(self, texts, pairs=None):
        return list(texts)

    def make_spec(self, train_examples, seq_len, **options):
        keyword = self.check_options(options).keyword
        return TaskSpec("toy_keyword", labels=("absent", keyword), seq_len=seq_len)

    def _features(self, tokenizer, spec, text):
        return pack(tokenizer.tokenize(text), sequence_length=spec.seq_len,
                    cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)

    def dataset(self, examples, tokenizer, spec, batch_size, training, seed=0):
        labels = np.array([int(spec.labels[1] in text.split()) for text in examples], np.int32)
        ds = tf.data.Dataset.from_tensor_slices((list(examples), labels)).batch(batch_size)
        return ds.map(lambda text, y: (self._features(tokenizer, spec, text), {"logits": y}))

    def loss(self, spec):
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def predict(self, model, examples, tokenizer, spec, batch_size):
        out = self.serving_outputs(model, tokenizer, spec, {"text": tf.constant(examples)})
        return [{"label": spec.labels[i]} for i in out["label_ids"].numpy()]

    def evaluate(self, examples, predictions, spec):
        gold = [spec.labels[int(spec.labels[1] in text.split())] for text in examples]
        return {"accuracy": float(np.mean([p["label"] == g
                                           for p, g in zip(predictions, gold)]))}

    def primary_metric(self, spec):
        return "accuracy"

    def serving_inputs(self, spec):
        return ("text",)

    def serving_features(self, tokenizer, spec, inputs):
        return self._features(tokenizer, spec, inputs["text"])

    def serving_outputs(self, model, tokenizer, spec, inputs):
        logits = model(self.serving_features(tokenizer, spec, inputs), training=False)["logits"]
        return {"label_ids": tf.argmax(logits, axis=-1, output_type=tf.int32)}


def _write_texts(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\n" + "".join(f"{text}\n" for text, _, _ in rows))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    train = _write_texts(root / "train.tsv", keyword_rows(320, seed=1))
    dev = _write_texts(root / "dev.tsv", keyword_rows(60, seed=2))
    result = finetune(get_task("toy-keyword"), FinetuneSettings(
        model=tiny_model_dir(root / "pre"), train=train, eval=dev, out=str(root / "run"),
        seq_len=16, epochs=3, batch_size=16, learning_rate=1e-3,
        options={"text_column": "sentence"}), verbose=0)
    return root, result, dev


def test_registered_task_fine_tunes_and_learns(trained):
    root, result, dev = trained
    assert result.metrics["task"] == "toy_keyword"
    assert result.metrics["best"]["accuracy"] >= 0.9
    checkpoint = read_checkpoint(result.model_dir)
    assert {"keyword_head/kernel", "keyword_head/bias"} <= set(checkpoint.weights)
    with open(os.path.join(result.model_dir, "task.json")) as f:
        task_json = json.load(f)
    assert task_json["task"] == "toy_keyword"
    assert task_json["read_options"] == {"text_column": "sentence"}
    # evaluate reads the dev file with the saved reading options (no text_column given).
    assert evaluate(result.model_dir, dev)["accuracy"] == result.metrics["best"]["accuracy"]
    assert isinstance(task_for_kind("toy_keyword"), KeywordTask)


def test_registered_task_predicts_and_exports(trained):
    root, result, _ = trained
    texts = ["w1 good w2", "w3 bad", "good", "w4 w5 w6"]
    predicted = [p["label"] for p in predict(result.model_dir, texts)]
    assert predicted == ["good", "absent", "good", "absent"]
    path = export_saved_model(result.model_dir, out_root=root / "exports", name="toy")
    with open(os.path.join(path, "assets.extra", "kbert_export.json")) as f:
        assert json.load(f)["kind"] == "toy_keyword"
    served = load(path).signatures["serving_default"](text=tf.constant(texts))
    assert [("absent", "good")[i] for i in served["label_ids"].numpy()] == predicted
    tokens = load(path).signatures["tokenize"](text=tf.constant(texts))
    assert tokens["token_ids"].shape == (4, 16)


def test_cli_flags_come_from_the_options_dataclass():
    args = build_parser().parse_args(
        ["finetune", "toy-keyword", "--model", "m", "--train", "t", "--out", "o",
         "--keyword", "bad", "--text-column", "sentence"])
    assert (args.keyword, args.text_column, args.task) == ("bad", "sentence", "toy-keyword")
    assert args.seq_len is None  # the run uses the task's default_seq_len (16)
    with pytest.raises(ValueError, match="unknown toy-keyword option"):
        get_task("toy-keyword").check_options({"colour": "red"})
