"""Tests for kbert.text.packer: layout, truncation parity with Hugging Face, op audit."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kbert.text import packer
from helpers.graphs import op_types as _op_types
from helpers.paths import FIXTURES

CLS, SEP, PAD = 101, 102, 0
IDS = dict(cls_id=CLS, sep_id=SEP, pad_id=PAD)
FIXTURE = os.path.join(FIXTURES, "truncation_reference.npz")
RAGGED = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)


def ragged(rows, dtype=tf.int32):
    return tf.ragged.constant(rows, dtype=dtype, ragged_rank=1)


def reference_layout(first, second, seq_len, keep_first, keep_second):
    """The expected [CLS] a [SEP] (b [SEP]) [PAD]... rows, written out in Python."""
    a = list(first[:keep_first])
    tokens, segments = [CLS] + a + [SEP], [0] * (len(a) + 2)
    if second is not None:
        b = list(second[:keep_second])
        tokens += b + [SEP]
        segments += [1] * (len(b) + 1)
    n = len(tokens)
    return (tokens + [PAD] * (seq_len - n), segments + [0] * (seq_len - n),
            [1] * n + [0] * (seq_len - n))


def hf_longest_first(a, b, budget):
    """Kept lengths under Hugging Face tokenizers' longest_first, stated case by case."""
    if a + b <= budget:
        return a, b
    short = min(a, b)
    if short <= budget - short:  # the short one fits whole in half the budget
        kept_short, kept_long = short, budget - short
    else:  # both cut to half; the longer (the second on a tie) keeps the odd token
        kept_short, kept_long = budget // 2, budget - budget // 2
    return (kept_long, kept_short) if a > b else (kept_short, kept_long)


def test_layout_and_dtypes():
    a = ragged([[1, 2, 3, 4, 5], [6], []])
    b = ragged([[11, 12], [13, 14, 15, 16, 17, 18], [19]])
    out = packer.pack(a, b, sequence_length=8, **IDS)
    assert set(out) == {"token_ids", "segment_ids", "padding_mask"}
    for v in out.values():
        assert v.dtype == tf.int32 and v.shape == (3, 8)
    np.testing.assert_array_equal(out["token_ids"], [
        [CLS, 1, 2, 3, SEP, 11, 12, SEP],
        [CLS, 6, SEP, 13, 14, 15, 16, SEP],
        [CLS, SEP, 19, SEP, PAD, PAD, PAD, PAD]])
    np.testing.assert_array_equal(out["segment_ids"], [
        [0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out["padding_mask"], [
        [1] * 8, [1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]])

    single = packer.pack(a, sequence_length=5, **IDS)
    np.testing.assert_array_equal(single["token_ids"], [
        [CLS, 1, 2, 3, SEP], [CLS, 6, SEP, PAD, PAD], [CLS, SEP, PAD, PAD, PAD]])
    np.testing.assert_array_equal(single["segment_ids"], np.zeros((3, 5)))

    # An empty second segment keeps its [SEP]; int64 ids and dense input are accepted.
    out = packer.pack(tf.constant([[7, 8]], tf.int64), ragged([[]], tf.int64),
                      sequence_length=6, **IDS)
    np.testing.assert_array_equal(out["token_ids"], [[CLS, 7, 8, SEP, SEP, PAD]])
    np.testing.assert_array_equal(out["segment_ids"], [[0, 0, 0, 0, 1, 0]])


def test_empty_batch_and_minimum_length():
    empty = tf.RaggedTensor.from_row_splits(tf.zeros([0], tf.int32), [0])
    out = packer.pack(empty, empty, sequence_length=4, **IDS)
    assert out["token_ids"].shape == (0, 4)
    out = packer.pack(ragged([[5, 6]]), ragged([[7]]), sequence_length=3, **IDS)
    np.testing.assert_array_equal(out["token_ids"], [[CLS, SEP, SEP]])
    with pytest.raises(ValueError, match="sequence_length"):
        packer.pack(ragged([[5]]), ragged([[7]]), sequence_length=2, **IDS)
    with pytest.raises(ValueError, match="truncation"):
        packer.pack(ragged([[5]]), sequence_length=4, truncation="only_first", **IDS)


def test_longest_first_parity_with_hugging_face_fixture():
    """Exact token_ids/segment_ids/padding_mask of transformers' BertTokenizer on 3,500
    cases (scripts/make_truncation_fixture.py)."""
    ref = np.load(FIXTURE)
    first = tf.RaggedTensor.from_row_lengths(ref["first_ids"], ref["first_lengths"])
    pair = ref["second_lengths"] >= 0
    second_lengths = np.where(pair, ref["second_lengths"], 0)
    second = tf.RaggedTensor.from_row_lengths(ref["second_ids"], second_lengths)
    checked = 0
    for seq_len in np.unique(ref["seq_len"]):
        for is_pair in (True, False):
            rows = np.flatnonzero((ref["seq_len"] == seq_len) & (pair == is_pair))
            if not len(rows):
                continue
            out = packer.pack(tf.gather(first, rows),
                              tf.gather(second, rows) if is_pair else None,
                              sequence_length=int(seq_len), truncation="longest_first",
                              cls_id=7, sep_id=8, pad_id=0)  # the fixture vocab's ids
            for key in ("token_ids", "segment_ids", "padding_mask"):
                np.testing.assert_array_equal(out[key], ref[key][rows, :seq_len],
                                              err_msg=f"{key}, T={seq_len}")
            checked += len(rows)
    assert checked == len(ref["seq_len"]) == 3500


def test_kept_lengths_on_every_small_case():
    grid = np.array([(a, b, m) for m in range(0, 30) for a in range(0, 35)
                     for b in range(0, 35)], np.int32)
    for budget in np.unique(grid[:, 2]):
        cases = grid[grid[:, 2] == budget]
        got = packer.kept_lengths(tf.constant(cases[:, 0]), tf.constant(cases[:, 1]),
                                  int(budget), "longest_first")
        expected = np.array([hf_longest_first(a, b, budget) for a, b, _ in cases])
        np.testing.assert_array_equal(np.stack(got, axis=1), expected)
        got = packer.kept_lengths(tf.constant(cases[:, 0]), tf.constant(cases[:, 1]),
                                  int(budget), "waterfall")
        keep_a = np.minimum(cases[:, 0], budget)
        keep_b = np.minimum(cases[:, 1], budget - keep_a)
        np.testing.assert_array_equal(np.stack(got, axis=1), np.stack([keep_a, keep_b], 1))


@pytest.mark.parametrize("truncation", packer.TRUNCATIONS)
def test_random_rows_against_python_layout(truncation):
    rng = np.random.default_rng(0)
    seq_len, n = 24, 300
    firsts = [rng.integers(1000, 2000, rng.integers(0, 40)).tolist() for _ in range(n)]
    seconds = [rng.integers(2000, 3000, rng.integers(0, 40)).tolist() for _ in range(n)]
    out = packer.pack(ragged(firsts), ragged(seconds), sequence_length=seq_len,
                      truncation=truncation, **IDS)
    for r, (a, b) in enumerate(zip(firsts, seconds)):
        if truncation == "waterfall":
            ka = min(len(a), seq_len - 3)
            kb = min(len(b), seq_len - 3 - ka)
        else:
            ka, kb = hf_longest_first(len(a), len(b), seq_len - 3)
        expected = reference_layout(a, b, seq_len, ka, kb)
        for key, exp in zip(("token_ids", "segment_ids", "padding_mask"), expected):
            assert out[key][r].numpy().tolist() == exp, (key, r)


def test_source_index_and_aligned_values():
    a = ragged([[1, 2, 3, 4, 5], [6], []])
    b = ragged([[11, 12], [13, 14, 15, 16, 17, 18], [19]])
    kw = dict(sequence_length=8, truncation="longest_first")
    ids = packer.pack(a, b, **kw, **IDS)
    source = packer.source_index(a, b, **kw)
    assert source.dtype == tf.int32 and source.shape == (3, 8)
    np.testing.assert_array_equal(source, [
        [-1, 0, 1, 2, -1, 0, 1, -1], [-1, 0, -1, 0, 1, 2, 3, -1],
        [-1, -1, 0, -1, -1, -1, -1, -1]])
    # Character offsets (int64, as tokenizers return them) follow their tokens.
    starts = tf.ragged.map_flat_values(lambda v: tf.cast(v, tf.int64) * 10, a)
    starts_b = tf.ragged.map_flat_values(lambda v: tf.cast(v, tf.int64) * 10, b)
    packed = packer.pack_values(starts, starts_b, fill_value=-1, **kw)
    assert packed.dtype == tf.int64
    np.testing.assert_array_equal(
        packed, tf.where(source >= 0, tf.cast(ids["token_ids"], tf.int64) * 10, -1))


def test_mismatched_batch_sizes_give_a_clear_error():
    a = ragged([[1, 2], [3], [4, 5, 6]])
    b = ragged([[7], [8]])
    # Eager (static sizes): raised before any op runs.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`first` has 3 rows, `second` has 2 rows"):
        packer.pack(a, b, sequence_length=8, **IDS)

    # Traced with an unknown batch size: the assert runs before any read.
    @tf.function(input_signature=[RAGGED, RAGGED], autograph=False)
    def packed(x, y):
        return packer.pack(x, y, sequence_length=8, **IDS)

    for other in (b, tf.concat([a, a], axis=0)):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            packed(a, other)
        message = info.value.message
        assert "`first` and `second` must have the same batch size" in message
        assert f"[3] [rows, `second` has] [{other.nrows()}]" in message
    assert packed(a, a)["token_ids"].shape == (3, 8)


def test_traced_graph_uses_only_core_tf_ops():
    @tf.function(input_signature=[RAGGED, RAGGED], autograph=False)
    def everything(x, y):
        out = packer.pack(x, y, sequence_length=16, **IDS)
        out["source"] = packer.source_index(x, y, sequence_length=16)
        out["offsets"] = packer.pack_values(x, y, sequence_length=16, fill_value=-1)
        return out

    concrete = everything.get_concrete_function()
    assert concrete.structured_outputs["token_ids"].shape.as_list() == [None, 16]
    ops = _op_types(concrete)
    # Core TF means: an op with a tf.raw_ops wrapper (tf-text ops have none). Ragged kernels
    # are core TF but not TFLite builtins, so they are excluded too.
    assert all(hasattr(tf.raw_ops, op) for op in ops), sorted(ops)
    assert not [op for op in ops if "TFText" in op or op.startswith("Ragged")], sorted(ops)
    assert "GatherV2" in ops and "SelectV2" in ops


@pytest.mark.filterwarnings("ignore::UserWarning")  # tf.lite.Interpreter's deprecation notice
def test_converts_to_tflite_builtins_and_matches():
    vec = tf.TensorSpec([None], tf.int32)

    @tf.function(input_signature=[vec, vec, vec, vec], autograph=False)
    def packed(first_values, first_splits, second_values, second_splits):
        first = tf.RaggedTensor.from_row_splits(first_values, first_splits, validate=False)
        second = tf.RaggedTensor.from_row_splits(second_values, second_splits,
                                                 validate=False)
        return packer.pack(first, second, sequence_length=12, **IDS)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [packed.get_concrete_function()], packed)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no custom ops
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    a = ragged([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [6], []])
    b = ragged([[11, 12], [13, 14, 15, 16, 17, 18], [19]])
    feeds = {"first_values": a.values, "first_splits": a.row_splits,
             "second_values": b.values, "second_splits": b.row_splits}
    inputs = interpreter.get_input_details()
    for detail in inputs:
        name = next(k for k in feeds if k in detail["name"])
        interpreter.resize_tensor_input(detail["index"], feeds[name].shape)
    interpreter.allocate_tensors()
    for detail in inputs:
        name = next(k for k in feeds if k in detail["name"])
        interpreter.set_tensor(detail["index"], feeds[name].numpy().astype(np.int32))
    interpreter.invoke()
    # The converted outputs lose their dict keys; compare them as an unordered set.
    got = sorted(interpreter.get_tensor(d["index"]).tolist()
                 for d in interpreter.get_output_details())
    expected = packer.pack(a, b, sequence_length=12, **IDS)
    assert got == sorted(v.numpy().tolist() for v in expected.values())
