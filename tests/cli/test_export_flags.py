"""`kbert export --kind --pooling --normalize --top-k` run through the command line, each
export loaded with `tf.saved_model.load` and its answers checked against the encoder run by
Keras' Functional model on ids packed by hand (and, for fill-mask, the masked-LM head in
numpy): see tests/helpers/mlm.py. The library-level exports (default flags) are checked in
tests/export/test_export.py."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the exports use)

from helpers.finetune import VOCAB
from helpers.mlm import encoder_outputs, mlm_logits, pack_words, pretrained_model_dir, softmax
from helpers.tiny import save_tiny_model, save_tiny_task_model
from kbert import cli
from kbert.export.layout import INFO_FILE
from kbert.tasks import TaskSpec

SEQ_LEN = 16
TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "good", "w9 bad w9 w30"]
MASKED = ["w1 w2 [MASK] w3", "[MASK] good w7 [MASK] bad", "w5 w6 w7"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A model directory with masked-LM heads: it exports as fill-mask unless told."""
    return pretrained_model_dir(tmp_path_factory.mktemp("export_flags") / "pre", VOCAB)


def _export(model_dir, root, *flags):
    """Runs `kbert export MODEL_DIR --out ROOT --seq-len 16 FLAGS...`; returns the version
    directory and its kbert_export.json."""
    assert cli.main(["export", str(model_dir), "--out", str(root), "--seq-len", str(SEQ_LEN),
                     *flags]) == 0
    name = os.path.basename(str(model_dir))
    path = os.path.join(str(root), name, "1")
    with open(os.path.join(path, INFO_FILE)) as f:
        return path, json.load(f)


def _mean(hidden, mask):
    mask = mask[:, :, None].astype(np.float64)
    return (hidden * mask).sum(axis=1) / mask.sum(axis=1)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("flags, expected", [
    # The mean over real tokens only ([CLS] and [SEP] in, padding out).
    ((), lambda r, mask: _mean(r["sequence_output"], mask)),
    (("--pooling", "cls", "--normalize"), lambda r, mask: _unit(r["sequence_output"][:, 0])),
    (("--pooling", "pooled"), lambda r, mask: r["pooled_output"]),
])
def test_kind_embedding_pooling(pretrained, tmp_path, flags, expected):
    # --kind embedding overrides what the directory's masked-LM heads would pick.
    path, info = _export(pretrained, tmp_path, "--kind", "embedding", *flags)
    assert info["kind"] == "embedding"
    loaded = tf.saved_model.load(path)
    vectors = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["embeddings"]
    features = pack_words(VOCAB, TEXTS, SEQ_LEN)
    want = expected(encoder_outputs(pretrained, features), features["padding_mask"])
    assert vectors.dtype == tf.float32 and tuple(vectors.shape) == (3, 128)
    np.testing.assert_allclose(vectors.numpy(), want, atol=2e-5)
    # Texts differ by far more than the tolerance, so a vector of the wrong row or text
    # would not pass.
    assert np.abs(want[0] - want[1]).max() > 50 * 2e-5


def test_top_k_and_kind_fill_mask(pretrained, tmp_path):
    path, info = _export(pretrained, tmp_path, "--kind", "fill-mask", "--top-k", "3")
    assert info["kind"] == "fill-mask"
    out = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(MASKED))
    out = {k: v.numpy() for k, v in out.items()}
    # Three candidates for each of the (at most) two [MASK]s of a text.
    assert out["top_ids"].shape == (3, 2, 3) and out["top_tokens"].shape == (3, 2, 3)
    np.testing.assert_array_equal(out["mask_count"], [1, 2, 0])

    features = pack_words(VOCAB, MASKED, SEQ_LEN)
    hidden = encoder_outputs(pretrained, features)["sequence_output"]
    for row in range(len(MASKED)):
        positions = np.flatnonzero(features["token_ids"][row] == VOCAB.index("[MASK]"))
        assert len(positions) == out["mask_count"][row]
        probabilities = softmax(mlm_logits(pretrained, hidden[row, positions]))  # [M, V]
        for j, p in enumerate(probabilities):
            best = np.argsort(-p)[:3]
            # The candidates are far enough apart for float32 not to reorder them.
            assert np.all(-np.diff(p[best]) > 1e-4)
            assert out["top_ids"][row, j].tolist() == best.tolist()
            assert [t.decode() for t in out["top_tokens"][row, j]] == [VOCAB[k] for k in best]
            np.testing.assert_allclose(out["top_probabilities"][row, j], p[best], atol=1e-5)
        # Slots past the text's [MASK]s are empty.
        for j in range(len(positions), 2):
            assert out["top_ids"][row, j].tolist() == [-1] * 3
            assert out["top_tokens"][row, j].tolist() == [b""] * 3
    # Predictions depend on the context: the [MASK]s of the second text disagree.
    assert out["top_ids"][1, 0].tolist() != out["top_ids"][1, 1].tolist()


def test_flag_errors(pretrained, tmp_path, capsys):
    """Flags the model directory cannot honour fail with one line, before anything is
    written."""
    encoder_only = save_tiny_model(tmp_path / "enc", VOCAB)
    classifier, _ = save_tiny_task_model(
        tmp_path / "clf", TaskSpec("classification", labels=("no", "yes"), seq_len=SEQ_LEN),
        VOCAB)
    root = tmp_path / "root"
    for argv, message in [
        ([encoder_only, "--kind", "fill-mask"], "has no masked-LM head"),
        ([classifier, "--kind", "fill-mask"],
         "is a fine-tuned classification model (task.json); it exports as classification "
         "(or embedding), not fill-mask"),
        ([pretrained, "--top-k", "0"], "top_k must be at least 1, got 0"),
    ]:
        assert cli.main(["export", str(argv[0]), "--out", str(root), *argv[1:]]) == 2
        assert message in capsys.readouterr().err
    for bad in (["--kind", "classification"], ["--pooling", "max"]):
        with pytest.raises(SystemExit) as stop:  # argparse: not one of the choices
            cli.main(["export", str(pretrained), "--out", str(root), *bad])
        assert stop.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
    assert not os.path.exists(root)
