"""The classification and embedding serving graphs (strings -> probabilities / labels /
embeddings): only core TF ops plus the tokenizer's two tf-text ops, and they convert to
TFLite builtins + those two custom ops with the same results."""

import numpy as np
import pytest
import tensorflow as tf

from helpers.finetune import tiny_model_dir
from kbert.tasks.classification.task import ClassificationTask
from kbert.tasks.embeddings import embedding_serving_outputs
from kbert.tasks.spec import TaskSpec
from kbert.tasks.task_dir import load_task_model
from kbert.models.encoder import load_model
from kbert.text import Tokenizer
from helpers.graphs import op_types as _op_types, tflite_runner

TEXTS = ["w1 good w2", " ".join(f"w{i % 40}" for i in range(30)), "bad"]


class Graph(tf.Module):
    """Tracks only the raw variables and calls the model through a closure (docs/FIELD_NOTES.md:
    how a Keras model converts to TFLite with its weights)."""

    def __init__(self, model, fn):
        super().__init__()
        self.weights = [v.value for v in model.weights]
        self.serve = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string,
                                                                    name="text")])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # The tanh GELU keeps these tests about the text, window and pooling ops around the
    # encoder (the exact GELU's TFLite builtin is checked in tests/test_tflite.py).
    return tiny_model_dir(tmp_path_factory.mktemp("graph") / "pre",
                          activation="gelu_approximate")


def _tflite(module):
    return tflite_runner(module.serve.get_concrete_function(), module)


def test_classification_graph_ops_and_tflite(model_dir):
    task = ClassificationTask()
    # T = 12: the 30-word text becomes 3 windows of 10 tokens.
    spec = TaskSpec("classification", labels=("bad", "good", "meh"), seq_len=12)
    model, spec, checkpoint = load_task_model(model_dir, spec=spec)
    tokenizer = Tokenizer(checkpoint.vocab)
    module = Graph(model, lambda text: task.serving_outputs(model, tokenizer, spec,
                                                            {"text": text}))
    ops = _op_types(module.serve.get_concrete_function())
    assert {op for op in ops if not hasattr(tf.raw_ops, op)} == {
        "FastBertNormalize", "FastWordpieceTokenizeWithOffsets"}
    assert not {"RaggedGather", "RaggedRange", "UnsortedSegmentSum"} & ops
    want = {k: v.numpy() for k, v in module.serve(tf.constant(TEXTS)).items()}
    got = _tflite(module)(text=np.array(TEXTS, dtype=object))
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(got["label_ids"], want["label_ids"])
    assert [bytes(x) for x in got["labels"]] == list(want["labels"])


def test_embedding_graph_tflite(model_dir):
    model = load_model(model_dir)
    tokenizer = Tokenizer(model_dir + "/vocab.txt")
    module = Graph(model, lambda text: embedding_serving_outputs(
        model, tokenizer, {"text": text}, seq_len=16, pooling="mean", normalize=True,
        length_multiple=0))  # TFLite: a static T (a dynamic cut becomes a custom op)
    want = module.serve(tf.constant(TEXTS))["embeddings"].numpy()
    got = _tflite(module)(text=np.array(TEXTS, dtype=object))["embeddings"]
    np.testing.assert_allclose(got, want, atol=1e-5)
