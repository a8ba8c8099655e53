"""Tests for kbert.text.masking over ~150k tokens of packed pre-training-like batches."""

import numpy as np
import pytest
import tensorflow as tf

from kbert.text import masking, packer

PAD, CLS, SEP, MASK = 0, 101, 102, 103
SPECIAL = (PAD, CLS, SEP)
LOW, HIGH = 999, 30522  # the original uncased vocab's real tokens
SEQ_LEN, P = 128, 20
KW = dict(max_predictions=P, mask_id=MASK, special_ids=SPECIAL, random_token_range=(LOW, HIGH))
# A stand-in vocabulary: every fourth real token is a "##" continuation piece.
VOCAB = [f"##{i}" if i >= LOW and i % 4 == 0 else f"w{i}" for i in range(HIGH)]


def make_batch(rows=1200, seed=0):
    """Packed pairs like the original's: 90% fill T, 10% a shorter random target length."""
    rng = np.random.default_rng(seed)
    firsts, seconds = [], []
    for _ in range(rows):
        target = SEQ_LEN - 3 if rng.random() >= 0.1 else int(rng.integers(2, SEQ_LEN - 3))
        n_first = int(rng.integers(1, target)) if target > 1 else 1
        firsts.append(rng.integers(LOW, HIGH, n_first).tolist())
        seconds.append(rng.integers(LOW, HIGH, max(target - n_first, 1)).tolist())
    packed = packer.pack(tf.ragged.constant(firsts), tf.ragged.constant(seconds),
                         sequence_length=SEQ_LEN, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    return packed["token_ids"].numpy(), packed["padding_mask"].numpy()


TOKENS, PADDING = make_batch()
CANDIDATE = (PADDING == 1) & ~np.isin(TOKENS, SPECIAL)
CONTINUATION = tf.gather(masking.continuation_table(VOCAB), TOKENS).numpy()


def expected_count(n_real):
    return min(P, max(1, round(0.15 * n_real)))  # Python 3 round, as the original


def words_of(candidate, continuation):
    """Per row, lists of positions: a candidate non-continuation piece and the
    continuation candidates right after it."""
    rows = []
    for cand, cont in zip(candidate, continuation):
        words = []
        for t in np.flatnonzero(cand):
            if cont[t] and t > 0 and cand[t - 1] and words:
                words[-1].append(t)
            else:
                words.append([t])
        rows.append(words)
    return rows


def check_outputs(out, tokens, padding):
    """Invariants of every output; returns the chosen mask [B, T]."""
    positions, ids = out["mask_positions"].numpy(), out["mask_ids"].numpy()
    weights, masked = out["mask_weights"].numpy(), out["token_ids"].numpy()
    assert positions.dtype == ids.dtype == masked.dtype == np.int32
    assert weights.dtype == np.float32 and positions.shape == (len(tokens), P)
    count = weights.sum(axis=1).astype(int)
    valid = np.arange(P)[None, :] < count[:, None]
    assert set(np.unique(weights)) <= {0.0, 1.0}
    np.testing.assert_array_equal(weights, valid.astype(np.float32))
    assert (positions[~valid] == 0).all() and (ids[~valid] == 0).all()
    assert (np.diff(positions, axis=1)[valid[:, 1:]] > 0).all()  # ascending
    np.testing.assert_array_equal(np.take_along_axis(tokens, positions, 1)[valid], ids[valid])
    chosen = np.zeros_like(tokens, bool)
    np.put_along_axis(chosen, np.where(valid, positions, 0), valid, axis=1)
    # Only candidates are chosen: never padding, never a special id.
    assert (padding[chosen] == 1).all() and not np.isin(tokens[chosen], SPECIAL).any()
    # Nothing else changes; replacements are [MASK] or a non-special id in range.
    np.testing.assert_array_equal(masked[~chosen], tokens[~chosen])
    replaced = masked[chosen]
    assert ((replaced == MASK) | ((replaced >= LOW) & (replaced < HIGH))).all()
    return chosen


def replacement_split(out, tokens, chosen):
    new, old = out["token_ids"].numpy()[chosen], tokens[chosen]
    to_mask = (new == MASK).mean()
    unchanged = (new == old).mean()
    return to_mask, 1 - to_mask - unchanged, unchanged


def test_statistics_and_exact_counts():
    out = masking.mask_tokens(TOKENS, PADDING, seed=1234, **KW)
    chosen = check_outputs(out, TOKENS, PADDING)
    n_real = PADDING.sum(axis=1)
    assert n_real.sum() >= 100_000
    np.testing.assert_array_equal(chosen.sum(axis=1), [expected_count(n) for n in n_real])
    fraction = chosen.sum() / CANDIDATE.sum()
    assert abs(fraction - 0.15) <= 0.005, fraction
    to_mask, to_random, unchanged = replacement_split(out, TOKENS, chosen)
    assert abs(to_mask - 0.8) <= 0.01 and abs(to_random - 0.1) <= 0.01
    assert abs(unchanged - 0.1) <= 0.01, (to_mask, to_random, unchanged)


def test_whole_word_masking_never_splits_a_word():
    out = masking.mask_tokens(TOKENS, PADDING, seed=99, is_continuation=CONTINUATION, **KW)
    chosen = check_outputs(out, TOKENS, PADDING)
    count = chosen.sum(axis=1)
    multi_piece_words_chosen = 0
    for r, words in enumerate(words_of(CANDIDATE, CONTINUATION)):
        budget = expected_count(PADDING[r].sum())
        assert count[r] <= budget
        for word in words:
            taken = chosen[r, word]
            assert taken.all() or not taken.any(), (r, word)
            # The original's greedy rule: a word is left out only when it did not fit.
            if not taken.any():
                assert len(word) > budget - count[r], (r, word)
            multi_piece_words_chosen += taken.all() and len(word) > 1
    assert multi_piece_words_chosen > 1000
    fraction = chosen.sum() / CANDIDATE.sum()
    assert 0.14 <= fraction <= 0.155, fraction  # a few rows end below the formula
    to_mask, to_random, unchanged = replacement_split(out, TOKENS, chosen)
    assert abs(to_mask - 0.8) <= 0.01 and abs(to_random - 0.1) <= 0.01


def test_rounding_short_rows_and_empty_rows():
    # n real tokens (with [CLS]/[SEP]): 3 -> max(1, 0) = 1; 10 -> 1.5 -> 2; 30 -> 4.5 -> 4
    # (half to even); 50 -> 7.5 -> 8; 0 -> no candidate, nothing chosen.
    lengths = [3, 10, 30, 50, 0]
    tokens = np.zeros((5, 64), np.int32)
    padding = np.zeros((5, 64), np.int32)
    for r, n in enumerate(lengths):
        if n:
            tokens[r, :n] = [CLS] + list(range(LOW, LOW + n - 2)) + [SEP]
            padding[r, :n] = 1
    out = masking.mask_tokens(tokens, padding, seed=5, **KW)
    check_outputs(out, tokens, padding)
    assert out["mask_weights"].numpy().sum(axis=1).tolist() == [1, 2, 4, 8, 0]
    # P larger than T: outputs are still [B, P].
    out = masking.mask_tokens(tokens[:, :8], padding[:, :8], seed=5, **dict(KW, max_predictions=12))
    assert out["mask_positions"].shape == (5, 12)


def test_seeds_reproduce_and_default_is_dynamic():
    tokens, padding = TOKENS[:64], PADDING[:64]
    a = masking.mask_tokens(tokens, padding, seed=7, **KW)
    b = masking.mask_tokens(tokens, padding, seed=tf.constant(7, tf.int64), **KW)
    c = masking.mask_tokens(tokens, padding, seed=[0, 8], **KW)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["mask_positions"], c["mask_positions"])
    d = masking.mask_tokens(tokens, padding, **KW)
    e = masking.mask_tokens(tokens, padding, **KW)
    assert not np.array_equal(d["mask_positions"], e["mask_positions"])


def _epochs(dataset, epochs):
    """[epoch][batch] -> mask_positions, from a pipeline repeated `epochs` times."""
    batches = [b["mask_positions"].numpy() for b in dataset]
    per_epoch = len(batches) // epochs
    return [batches[i * per_epoch:(i + 1) * per_epoch] for i in range(epochs)]


def test_in_tf_data_new_mask_each_epoch_reproducible_with_seed():
    packed = tf.data.Dataset.from_tensor_slices(
        {"token_ids": TOKENS[:256], "padding_mask": PADDING[:256]}).batch(64)

    def pipeline(seed):
        seeds = tf.data.Dataset.random(seed=seed)
        return tf.data.Dataset.zip(packed.repeat(2), seeds).map(
            lambda x, s: masking.mask_tokens(
                x["token_ids"], x["padding_mask"], seed=s, is_continuation=tf.gather(
                    masking.continuation_table(VOCAB), x["token_ids"]), **KW),
            num_parallel_calls=2)

    first, second = _epochs(pipeline(42), 2)
    assert all(not np.array_equal(x, y) for x, y in zip(first, second))
    again = _epochs(pipeline(42), 2)
    np.testing.assert_array_equal(np.array([first, second]), np.array(again))

    # No seed: still a new mask every epoch.
    unseeded = packed.repeat(2).map(
        lambda x: masking.mask_tokens(x["token_ids"], x["padding_mask"], **KW))
    first, second = _epochs(unseeded, 2)
    assert all(not np.array_equal(x, y) for x, y in zip(first, second))


def test_in_tf_function_with_core_ops_only():
    spec = tf.TensorSpec([None, SEQ_LEN], tf.int32)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([2], tf.int64)],
                 autograph=False)
    def masked(tokens, padding, continuation, seed):
        return masking.mask_tokens(tokens, padding, seed=seed,
                                   is_continuation=continuation, **KW)

    concrete = masked.get_concrete_function()
    assert concrete.structured_outputs["mask_positions"].shape.as_list() == [None, P]
    assert concrete.structured_outputs["token_ids"].shape.as_list() == [None, SEQ_LEN]
    graph = concrete.graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                        for n in f.node_def}
    assert all(hasattr(tf.raw_ops, op) for op in ops), sorted(ops)
    out = masked(TOKENS[:32], PADDING[:32], CONTINUATION[:32].astype(np.int32),
                 tf.constant([3, 4], tf.int64))
    check_outputs(out, TOKENS[:32], PADDING[:32])


def test_continuation_table_and_argument_checks():
    table = masking.continuation_table(["[PAD]", "the", "##s", "un", "##able"])
    assert table.dtype == tf.bool and table.numpy().tolist() == [False, False, True, False, True]
    with pytest.raises(ValueError, match="random_token_range"):
        masking.mask_tokens(TOKENS[:1], PADDING[:1], **dict(KW, random_token_range=(5, 5)))
    with pytest.raises(ValueError, match="max_predictions"):
        masking.mask_tokens(TOKENS[:1], PADDING[:1], **dict(KW, max_predictions=0))
