"""kbert.Tokenizer against ids and offsets of Hugging Face's BERT tokenizer (committed in
tests/fixtures/tokenizer/, made by scripts/make_tokenizer_fixtures.py), its op set, and
its behaviour on odd input."""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text

import kbert
from kbert.text import Tokenizer, darts
from kbert.text.normalizer import normalize_char, normalizer_model

from helpers.graphs import op_types as _op_types
from helpers.paths import FIXTURES

VOCAB = os.path.join(FIXTURES, "tokenizer", "vocab.txt")
with open(os.path.join(FIXTURES, "tokenizer", "cases.json"), encoding="utf-8") as f:
    CASES = json.load(f)["cases"]
INPUTS = [bytes.fromhex(case["input_hex"]) for case in CASES]
MODES = ("uncased", "cased")


@pytest.fixture(scope="module", params=MODES)
def mode_and_tokenizer(request):
    return request.param, Tokenizer(VOCAB, lowercase=request.param == "uncased")


@pytest.fixture(scope="module")
def uncased():
    return Tokenizer(VOCAB)


def test_hard_cases_give_the_reference_ids(mode_and_tokenizer):
    mode, tokenizer = mode_and_tokenizer
    ids = tokenizer(tf.constant(INPUTS))
    assert ids.dtype == tf.int32 and ids.shape.rank == 2
    for case, got in zip(CASES, ids.to_list()):
        assert got == case[mode]["ids"], (case["name"], case[mode]["tokens"],
                                          [tokenizer.vocab[i] for i in got])


def test_hard_cases_give_the_reference_offsets(mode_and_tokenizer):
    """Byte offsets equal HF's (converted to bytes), except the documented difference:
    an end offset also takes in characters the normaliser drops right after the token."""
    mode, tokenizer = mode_and_tokenizer
    ids, starts, ends = tokenizer.tokenize_with_offsets(tf.constant(INPUTS))
    assert starts.dtype == ends.dtype == tf.int32
    extended = 0
    for case, data, row_ids, row_starts, row_ends in zip(
            CASES, INPUTS, ids.to_list(), starts.to_list(), ends.to_list()):
        assert row_ids == case[mode]["ids"]
        if case[mode]["offsets"] is None:  # invalid UTF-8: HF saw other characters
            continue
        for (start, end), got_start, got_end in zip(case[mode]["offsets"], row_starts,
                                                    row_ends):
            assert got_start == start, case["name"]
            if got_end != end:
                dropped = data[end:got_end].decode("utf-8")
                assert got_end > end and all(
                    normalize_char(c, mode == "uncased") == "" for c in dropped), case["name"]
                extended += 1
    assert extended <= 12  # zero-width, control and (uncased) stripped accents cases


def test_hangul_pieces_span_their_syllable(uncased):
    # NFD splits a syllable into jamo pieces; each piece maps to the whole syllable.
    ids, starts, ends = uncased.tokenize_with_offsets("한국")
    assert [uncased.vocab[i] for i in ids] == ["ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ"]
    assert starts.numpy().tolist() == [0, 0, 0, 3, 3, 3]
    assert ends.numpy().tolist() == [3, 3, 3, 6, 6, 6]


def test_graph_and_row_by_row_agree_with_eager(uncased):
    eager = [r.to_list() for r in uncased.tokenize_with_offsets(tf.constant(INPUTS))]
    # tf.data traces the function: both branches of the long-word and expansion conds.
    dataset = tf.data.Dataset.from_tensor_slices(INPUTS).batch(7).map(
        uncased.tokenize_with_offsets)
    batched = [[], [], []]
    for outputs in dataset:
        for collected, output in zip(batched, outputs):
            collected += output.to_list()
    assert batched == eager
    single = tf.function(uncased.tokenize_with_offsets)
    for i, data in enumerate(INPUTS):
        ids, starts, ends = single(tf.constant(data))
        assert ids.shape.rank == 1
        assert [ids.numpy().tolist(), starts.numpy().tolist(), ends.numpy().tolist()] == [
            eager[0][i], eager[1][i], eager[2][i]]


def test_special_token_ids():
    tokenizer = Tokenizer(os.path.join(FIXTURES, "hf_tiny_base", "vocab.txt"))
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id) == (0, 6, 7, 8, 9)
    assert tokenizer.vocabulary_size == 114
    assert kbert.Tokenizer is Tokenizer


def test_vocabulary_must_have_the_special_tokens():
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "a"])


def test_from_model_dir_reads_the_casing(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "Hello"]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    assert Tokenizer.from_model_dir(tmp_path)("Hello").numpy().tolist() == [5]
    (tmp_path / "tokenizer_config.json").write_text('{"lowercase": false}')
    cased = Tokenizer.from_model_dir(tmp_path)
    assert not cased.lowercase and cased("Hello").numpy().tolist() == [6]


def test_scalar_and_rank_checks(uncased):
    ids = uncased("hello world")
    assert isinstance(ids, tf.Tensor) and ids.shape.rank == 1
    assert ids.numpy().tolist() == uncased(["hello world"]).to_list()[0]
    with pytest.raises(ValueError, match="string batch"):
        uncased(tf.constant([["a", "b"]]))


def test_empty_batch(uncased):
    ids, starts, ends = uncased.tokenize_with_offsets(tf.constant([], tf.string))
    assert ids.shape.as_list() == [0, None] and ends.flat_values.shape == [0]
    assert uncased(tf.constant([], tf.string)).to_list() == []


def test_invalid_utf8_is_dropped_like_a_replacement_character(uncased):
    bad = [b"caf\xc3 ok", b"wo\xf0\x9frd", b"\xff\xfe", b"end \xf0\x9f\x98"]
    clean = ["caf ok", "word", "", "end "]
    assert uncased(bad).to_list() == uncased(clean).to_list()


def test_literal_special_tokens_are_plain_text(uncased):
    # As in the original BERT (and unlike HF, which matches them): input text cannot
    # inject [SEP] or [MASK].
    tokens = [uncased.vocab[i] for i in uncased("[MASK]").numpy()]
    assert tokens == ["[", "m", "##a", "##sk", "]"]


def test_words_longer_than_100_characters_are_unknown(uncased):
    text = ["ж" * 100, "ж" * 101 + " ok", "ab" * 50 + " " + "ab" * 51]
    ids, starts, ends = uncased.tokenize_with_offsets(text)
    ids = ids.to_list()
    assert uncased.unk_id not in ids[0] and len(ids[0]) == 100  # 200 bytes, 100 chars
    assert ids[1][0] == uncased.unk_id and len(ids[1]) == 2
    assert (starts.to_list()[1][0], ends.to_list()[1][0]) == (0, 202)
    assert ids[2].count(uncased.unk_id) == 1 and ids[2][-1] == uncased.unk_id
    assert (starts.to_list()[2][-1], ends.to_list()[2][-1]) == (101, 203)


def test_detokenize(uncased):
    ids = uncased(["Hello, World! Ærøskøbing", "", "cat"])
    assert uncased.detokenize(ids).numpy().tolist() == [
        "hello , world ! ærøskøbing".encode(), b"", b"cat"]
    # Padded [B, T] ids: [PAD] is left out, other special tokens are shown.
    dense = tf.constant([[uncased.cls_id, *ids.to_list()[2], uncased.sep_id, 0, 0]])
    assert uncased.detokenize(dense).numpy().tolist() == [b"[CLS] cat [SEP]"]
    assert uncased.detokenize([uncased.mask_id]).numpy() == b"[MASK]"


def test_normaliser_keeps_what_bert_keeps():
    # tf-text's stock table folds these (NFKC case folding); BERT and HF do not.
    normalizer = tf_text.FastBertNormalizer(model_buffer=normalizer_model(True))
    text = "Straße µm ，（…） Héllo\u200b\u00adX ΣΑΣ ﬁ \ue000\x07\u3000end"
    expected = "straße µm ，（…） hellox σασ ﬁ  end"
    assert normalizer.normalize([text]).numpy()[0].decode() == expected
    cased = tf_text.FastBertNormalizer(model_buffer=normalizer_model(False))
    assert cased.normalize(["Héllo\u200b\tX\u2028"]).numpy()[0].decode() == "Héllo X "


def test_darts_trie_round_trip():
    rng = random.Random(0)
    keys = {bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 5))): rng.randrange(
        1 << 31) for _ in range(3000)}
    keys.update({b"\xf3" + bytes([a, b]): 7 for a in range(0x80, 0xC0)
                 for b in range(0x80, 0xC0)})  # equal subtries share their nodes
    trie = darts.build_trie(keys)
    assert trie.dtype == np.uint32 and len(trie) % 256 == 0
    assert all(darts.lookup(trie, key) == value for key, value in keys.items())
    misses = [bytes(rng.randrange(1, 256) for _ in range(3)) for _ in range(3000)]
    assert all(darts.lookup(trie, key) is None for key in misses if key not in keys)


def test_traced_graph_uses_only_the_two_tf_text_ops(uncased):
    text = tf.TensorSpec([None], tf.string)
    graphs = {
        "tokenize": tf.function(uncased.tokenize).get_concrete_function(text),
        "tokenize_with_offsets":
            tf.function(uncased.tokenize_with_offsets).get_concrete_function(text),
    }
    for name, function in graphs.items():
        ops = _op_types(function)
        custom = {op for op in ops if not hasattr(tf.raw_ops, op)}
        assert custom == {"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"}, name
        # No string op of core TF either: the graph converts to TFLite builtins.
        assert not [op for op in ops - custom
                    if any(s in op for s in ("String", "Regex", "Unicode", "Substr"))], name
        assert "StatelessIf" in ops or "If" in ops  # the nested functions were inspected


def test_converts_to_tflite_with_the_tf_text_kernels(uncased):
    interpreter_module = pytest.importorskip("tensorflow.lite.python.interpreter")

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(self, text):
            ids, starts, ends = uncased.tokenize_with_offsets(text)
            return {"ids": ids.flat_values, "row_splits": ids.row_splits,
                    "starts": starts.flat_values, "ends": ends.flat_values}

    module = Module()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.tokenize.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # exactly the two tf-text ops
    interpreter = interpreter_module.InterpreterWithCustomOps(
        model_content=converter.convert(),
        custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
    runner = interpreter.get_signature_runner()
    # Hangul (expansion branch) but no long word, then long words but no expansion.
    for rows in (INPUTS[:15], INPUTS[15:]):
        got = runner(text=np.array(rows, dtype=object))
        want = module.tokenize(tf.constant(rows))
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)
