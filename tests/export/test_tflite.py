"""TFLite export (kbert.export.tflite): string-in models with the tokenizer inside, run by
ai-edge-litert's interpreter with tf-text's kernels, against the SavedModel they come from.

The model here is a tiny pair classifier that also returns a sentence vector, traced and
saved exactly as `kbert.export.saved_model` saves its graphs (ServingModule over the raw
variables). Large initial weights spread the texts over the classes, so argmax means
something.
"""

import os

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from kbert.export.graph import as_float32
from kbert.export.graph import ServingGraph, ServingModule, raw_variables
from kbert.export.tflite import TOKENIZER_OPS, convert_function, export_tflite, model_ops
from kbert.serving.tflite_runtime import TFLiteModel
from kbert.tasks import TaskSpec, build_task_model
from kbert.text import Tokenizer
from kbert.text.packer import pack
from helpers.checks import check_tflite_parity
from helpers.paths import FIXTURES
from helpers.tiny import save_tiny_model, save_tiny_task_model, tiny_config, tiny_encoder

VOCAB = os.path.join(FIXTURES, "tokenizer", "vocab.txt")
SEQ_LEN = 24
LABELS = ("no", "yes", "maybe")
TEXTS = ["Héllo naïve café!", "東京 is big", "", "   ",
         "the cat sat on the mat and then some more words to force truncation " * 3,
         "A B C", "x" * 300, "Well, well... 42?"]
PAIRS = ["ok", "the dog", "something", "", "no", "the cat sat on the mat", "y", "z z z"]


def _config():
    # Initial weights of std 0.3, not 0.02: the outputs differ from text to text, so the
    # classes compared below are not all the same one.
    return tiny_config(Tokenizer(VOCAB).vocabulary_size, initializer_range=0.3)


def _pair_classifier_graph(seed: int = 0) -> ServingGraph:
    tokenizer = Tokenizer(VOCAB)
    spec = TaskSpec("classification", labels=LABELS, seq_len=SEQ_LEN, pair=True)
    model = build_task_model(tiny_encoder(_config(), seed), spec)
    model.head.kernel.assign(np.random.default_rng(seed).normal(0, 1, model.head.kernel.shape))

    def serve(x):
        features = pack(tokenizer.tokenize(x["text"]), tokenizer.tokenize(x["text_pair"]),
                        sequence_length=SEQ_LEN, cls_id=tokenizer.cls_id,
                        sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
        logits = model(features, training=False)["logits"]
        label_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        encoder = model.encoder(features, training=False)
        mask = tf.cast(features["padding_mask"], tf.float32)[:, :, tf.newaxis]
        mean = (tf.reduce_sum(encoder["sequence_output"] * mask, axis=1)
                / tf.reduce_sum(mask, axis=1))
        return as_float32({"probabilities": tf.nn.softmax(logits), "label_ids": label_ids,
                           "labels": tf.gather(tf.constant(list(LABELS)), label_ids),
                           "embeddings": mean})

    return ServingGraph(kind="classification", input_names=("text", "text_pair"),
                        functions={"serving_default": serve}, variables=raw_variables(model),
                        seq_len=SEQ_LEN, examples={})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(SavedModel dir, float .tflite, dynamic-int8 .tflite, float16 .tflite)."""
    root = tmp_path_factory.mktemp("tflite")
    module = ServingModule(_pair_classifier_graph())
    saved = str(root / "1")
    tf.saved_model.save(module, saved, signatures=module.concrete_functions(),
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    paths = [export_tflite(saved, root / f"{q or 'float'}.tflite", quantize=q)
             for q in (None, "dynamic", "float16")]
    return (saved, *paths)


@pytest.fixture(scope="module")
def reference(exported):
    from kbert.export import load
    serve = load(exported[0]).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(text=tf.constant(TEXTS),
                                           text_pair=tf.constant(PAIRS)).items()}


def test_float_matches_the_saved_model(exported, reference):
    model = TFLiteModel(exported[1])
    assert model.input_names == ("text", "text_pair")
    assert set(model.output_names) == set(reference)
    check_tflite_parity(model, reference, {"text": TEXTS, "text_pair": PAIRS}, atol=1e-4)
    assert len(set(reference["label_ids"].tolist())) > 1  # the check above means something


def test_only_builtins_and_the_tokenizer_ops(exported):
    from ai_edge_litert import schema_py_generated as schema

    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    for path in exported[1:]:
        with open(path, "rb") as f:
            ops = set(model_ops(f.read()))
        assert ops - builtins == set(TOKENIZER_OPS), path
        assert "GELU" in ops and "FULLY_CONNECTED" in ops  # exact GELU fused, no Erf


def test_any_batch_size_on_one_interpreter(exported, reference):
    model = TFLiteModel(exported[1])
    for n in (1, 5, 0, len(TEXTS), 2):
        got = model(text=TEXTS[:n], text_pair=PAIRS[:n])
        assert got["probabilities"].shape == (n, len(LABELS))
        assert got["labels"].shape == (n,) and got["embeddings"].shape == (n, 128)
        assert got["labels"].dtype == object and got["label_ids"].dtype == np.int32
        np.testing.assert_allclose(got["probabilities"], reference["probabilities"][:n],
                                   atol=1e-4)


def test_quantized_models(exported, reference):
    sizes = [os.path.getsize(p) for p in exported[1:]]
    float_size, int8_size, float16_size = sizes
    assert int8_size < 0.6 * float_size and float16_size < 0.8 * float_size
    int8 = TFLiteModel(exported[2])(text=TEXTS, text_pair=PAIRS)
    # int8 moves this model's (large-weight) probabilities by up to ~0.1; the classes stay.
    np.testing.assert_array_equal(int8["label_ids"], reference["label_ids"])
    float16 = TFLiteModel(exported[3])(text=TEXTS, text_pair=PAIRS)
    np.testing.assert_array_equal(float16["label_ids"], reference["label_ids"])
    assert np.abs(float16["probabilities"] - reference["probabilities"]).max() < 1e-2


def test_str_and_bytes_inputs_agree(exported):
    model = TFLiteModel(exported[1])
    a = model(text=TEXTS[:2], text_pair=PAIRS[:2])
    b = model(text=[t.encode() for t in TEXTS[:2]], text_pair=tuple(PAIRS[:2]))
    np.testing.assert_array_equal(a["probabilities"], b["probabilities"])


@pytest.mark.parametrize("inputs, message", [
    (dict(text=["a"]), r"missing \['text_pair'\]"),
    (dict(text=["a"], text_pair=["b"], extra=["c"]), r"unknown \['extra'\]"),
    (dict(text="a", text_pair=["b"]), "a list of strings"),
    (dict(text=["a", 3], text_pair=["b", "c"]), r"'text'\[1\] must be a string, got int"),
    (dict(text=["a", "b"], text_pair=["c"]), "same batch size"),
])
def test_bad_inputs_are_named(exported, inputs, message):
    model = TFLiteModel(exported[1])
    with pytest.raises(ValueError, match=message):
        model(**inputs)
    assert model(text=["a"], text_pair=["b"])["labels"].shape == (1,)  # still usable


def test_an_op_without_a_builtin_is_refused(tmp_path):
    class Split(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            return {"words": tf.strings.split(text).to_tensor()}

    module = Split()
    with pytest.raises(ValueError, match=r"StringSplitV2.*only \['FastBertNormalize'"):
        convert_function(module.serve.get_concrete_function(), module)


def test_export_arguments_are_checked(exported, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_tflite(exported[0], tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match="sequence length and graph are fixed"):
        export_tflite(exported[0], tmp_path / "m.tflite", seq_len=16)
    with pytest.raises(ValueError, match="neither an exported SavedModel"):
        export_tflite(tmp_path, tmp_path / "m.tflite")
    assert not os.path.exists(tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError):
        TFLiteModel(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="not a TFLite model"):
        TFLiteModel(tmp_path / "junk.tflite")


def test_exact_gelu_value_and_gradient():
    from kbert.layers import gelu_exact

    x = tf.constant(np.linspace(-8, 8, 161), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gelu_exact(x)
    xs = x.numpy().astype(np.float64)
    cdf = 0.5 * (1 + scipy.special.erf(xs / np.sqrt(2)))
    np.testing.assert_allclose(y.numpy(), xs * cdf, atol=2e-6)
    pdf = np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), cdf + xs * pdf, atol=2e-6)


# -- through kbert's exporter: every kind it builds a graph for ------------------------------

def _model_dir(root, kind: str) -> str:
    """A tiny model directory of `kind` (large initial weights: the outputs differ)."""
    if kind == "embedding":
        return save_tiny_model(root / kind, VOCAB, config=_config(), seed=1)
    spec = {"classification": TaskSpec("classification", labels=LABELS, seq_len=16,
                                       doc_stride=4),
            "pair-classification": TaskSpec("classification", labels=LABELS, seq_len=16,
                                            pair=True),
            "regression": TaskSpec("regression", seq_len=16),
            "tagging": TaskSpec("tagging", labels=("O", "B-X", "I-X"), seq_len=16,
                                doc_stride=4, tag_scheme="IOB2"),
            "qa": TaskSpec("qa", seq_len=24, doc_stride=8, max_query_length=8,
                           max_answer_length=5, n_best=4)}[kind]
    return save_tiny_task_model(root / kind, spec, VOCAB, config=_config(), seed=1)[0]


@pytest.mark.parametrize("kind", ["classification", "embedding",
                                  pytest.param("pair-classification", marks=pytest.mark.slow),
                                  pytest.param("regression", marks=pytest.mark.slow),
                                  pytest.param("tagging", marks=pytest.mark.slow), "qa"])
def test_exported_kinds_match_their_saved_model(tmp_path, kind):
    from kbert.cli import main
    from kbert.export import load
    from kbert.export.saved_model import export_saved_model

    model_dir = _model_dir(tmp_path, kind)
    if kind == "embedding":  # through the CLI: model.tflite inside the version directory
        assert main(["export", model_dir, "--out", str(tmp_path / "sm"), "--name", "m",
                     "--tflite"]) == 0
        saved = str(tmp_path / "sm" / "m" / "1")
        out = os.path.join(saved, "model.tflite")
        assert sorted(os.listdir(saved)) == ["assets", "assets.extra", "fingerprint.pb",
                                             "model.tflite", "saved_model.pb", "variables"]
        # The user's umask, like the SavedModel's files (tempfile alone would give 0600).
        umask = os.umask(0o022)
        os.umask(umask)
        assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~umask)
        assert oct(os.stat(os.path.join(saved, "saved_model.pb")).st_mode & 0o777) == \
            oct(0o666 & ~umask)
    else:
        saved = export_saved_model(model_dir, tmp_path / "sm", name="m", warmup=False)
        out = export_tflite(model_dir, tmp_path / "m.tflite")
    if kind == "qa":  # its SavedModel cuts answers with string ops: the model dir converts
        with pytest.raises(ValueError, match="QA export.*convert the model directory"):
            export_tflite(saved, tmp_path / "qa.tflite")
    model = TFLiteModel(out)
    inputs = {"text": TEXTS, "text_pair": PAIRS, "question": PAIRS, "context": TEXTS}
    inputs = {name: inputs[name] for name in model.input_names}
    _, expected = check_tflite_parity(
        model, load(saved).signatures["serving_default"], inputs, atol=1e-4,
        extra_outputs={"start_byte", "end_byte"} if kind == "qa" else ())
    if kind == "qa":
        assert (expected["start_char"] >= 0).sum() >= 3  # answers, not all empty


@pytest.mark.parametrize("flags, message", [
    (["--quantize", "dynamic"], "add --tflite"),
    (["--tflite", "--precision", "bfloat16"], "float32 graph, not bfloat16"),
])
def test_cli_refuses_tflite_options_before_any_work(tmp_path, capsys, flags, message):
    from kbert.cli import main

    model_dir = _model_dir(tmp_path, "embedding")
    assert main(["export", model_dir, "--out", str(tmp_path / "sm")] + flags) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "sm")
