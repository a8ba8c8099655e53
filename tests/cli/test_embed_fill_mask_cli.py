"""`kbert embed --layer / --concat-last-four` and `kbert fill-mask`, run through the command
line and checked against the encoder run by Keras' Functional model on ids packed by hand
and the masked-LM head in numpy (tests/helpers/mlm.py). `kbert.tasks.embeddings.embed`
itself (every pooling, layer choice and bad choice) is checked in
tests/tasks/test_embeddings.py."""

import re

import numpy as np
import pytest

from helpers.finetune import VOCAB, tiny_model_dir
from helpers.mlm import encoder_outputs, mlm_logits, pack_words, pretrained_model_dir, softmax
from kbert import cli

SEQ_LEN = 12
TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "good", "w9 bad w9 w30"]
MASKED = ["w1 w2 [MASK] w3", "[MASK] good w7 [MASK] bad"]


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    """A 4-layer tiny encoder directory and its every-layer outputs on TEXTS (T=12)."""
    model_dir = tiny_model_dir(tmp_path_factory.mktemp("embed_cli") / "pre", num_layers=4)
    features = pack_words(VOCAB, TEXTS, SEQ_LEN)
    return model_dir, encoder_outputs(model_dir, features)["layers"], features["padding_mask"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return pretrained_model_dir(tmp_path_factory.mktemp("fill_mask_cli") / "pre", VOCAB)


def _embed(model_dir, tmp_path, *flags):
    out = str(tmp_path / "e.npy")
    assert cli.main(["embed", model_dir, "--input", *TEXTS, "--seq-len", str(SEQ_LEN),
                     "--out", out, *flags]) == 0
    return np.load(out)


def _mean(hidden, mask):
    mask = mask[:, :, None].astype(np.float64)
    return (hidden * mask).sum(axis=1) / mask.sum(axis=1)


@pytest.mark.parametrize("flags, expected", [
    # --pooling cls is the default: [CLS] of block 1 (0 = the first block).
    (("--layer", "1"), lambda layers, mask: layers[1][:, 0]),
    # Negative from the end: -3 of 4 blocks is block 1; the mean skips padding.
    (("--layer", "-3", "--pooling", "mean"), lambda layers, mask: _mean(layers[1], mask)),
    (("--concat-last-four", "--pooling", "mean"),
     lambda layers, mask: _mean(np.concatenate(layers, axis=-1), mask)),
])
def test_embed_layer_choice(four_layers, tmp_path, flags, expected):
    model_dir, layers, mask = four_layers
    got = _embed(model_dir, tmp_path, *flags)
    want = expected(layers, mask)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    # Blocks differ by far more than the tolerance: the wrong block would not pass.
    assert np.abs(layers[1] - layers[2]).max() > 1e-2


def test_embed_concat_last_four_prints_4h_wide_vectors(four_layers, capsys):
    model_dir, layers, _ = four_layers
    assert cli.main(["embed", model_dir, "--input", *TEXTS, "--seq-len", str(SEQ_LEN),
                     "--concat-last-four"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(TEXTS)
    want = np.concatenate([h[:, 0] for h in layers], axis=-1)  # [CLS] of blocks 0..3
    assert want.shape == (3, 4 * 128)
    for line, text, vector in zip(lines, TEXTS, want):
        # "[x0 x1 x2 x3 ...] (D)\tTEXT": the first four numbers, the width, the text.
        head, width, shown = re.fullmatch(r"\[(.*) \.\.\.\] \((\d+)\)\t(.*)", line).groups()
        assert (int(width), shown) == (512, text)
        np.testing.assert_allclose([float(x) for x in head.split()], vector[:4], atol=1e-4)
    assert cli.main(["embed", model_dir, "--input", "good", "--concat-last-four",
                     "--layer", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def _fill_mask_output(stdout):
    """The printed guesses: text -> one list of (token, probability) per [MASK]."""
    shown, text = {}, None
    for line in stdout.splitlines():
        match = re.fullmatch(r"  \[MASK\] (\d+): (.*)", line)
        if match is None:
            text = line
            shown[text] = []
            continue
        assert int(match.group(1)) == len(shown[text]) + 1
        pairs = match.group(2).split("  ")
        shown[text].append([(t, float(p)) for t, p in (pair.split(" ") for pair in pairs)])
    return shown


def _reference_guesses(model_dir, text, k):
    """The top-k (token, probability) per [MASK] of `text`, packed alone (no padding)."""
    features = pack_words(VOCAB, [text], len(text.split()) + 2)
    hidden = encoder_outputs(model_dir, features)["sequence_output"][0]
    positions = np.flatnonzero(features["token_ids"][0] == VOCAB.index("[MASK]"))
    guesses = []
    for p in softmax(mlm_logits(model_dir, hidden[positions])):
        best = np.argsort(-p)[:k]
        # The candidates are far enough apart for float32 not to reorder them.
        assert np.all(-np.diff(p[best]) > 1e-4)
        guesses.append([(VOCAB[i], p[i]) for i in best])
    return guesses


@pytest.mark.parametrize("flags, k", [(("--top-k", "3"), 3), ((), 5)])
def test_fill_mask_prints_the_top_guesses(pretrained, capsys, flags, k):
    assert cli.main(["fill-mask", pretrained, *MASKED, *flags]) == 0
    shown = _fill_mask_output(capsys.readouterr().out)
    assert list(shown) == MASKED
    for text in MASKED:
        want = _reference_guesses(pretrained, text, k)
        assert len(shown[text]) == text.count("[MASK]") == len(want)
        for got_mask, want_mask in zip(shown[text], want):
            assert [t for t, _ in got_mask] == [t for t, _ in want_mask]
            # Printed with three decimals.
            np.testing.assert_allclose([p for _, p in got_mask], [p for _, p in want_mask],
                                       atol=5e-4 + 1e-6)
    # The guesses depend on the context: the two [MASK]s of a text disagree.
    assert shown[MASKED[1]][0] != shown[MASKED[1]][1]


def test_fill_mask_errors(pretrained, four_layers, capsys):
    assert cli.main(["fill-mask", pretrained, "w1 [MASK]", "no mask here"]) == 2
    assert "no [MASK] in 'no mask here'" in capsys.readouterr().err
    assert cli.main(["fill-mask", four_layers[0], "w1 [MASK]"]) == 2
    assert "has no masked-LM head" in capsys.readouterr().err
    for bad in ("0", "-1"):  # refused before the model is read, not empty / reversed lists
        assert cli.main(["fill-mask", pretrained, "w1 [MASK]", "--top-k", bad]) == 2
        assert f"top_k must be an int >= 1, got {bad}" in capsys.readouterr().err
