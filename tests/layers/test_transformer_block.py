"""kbert's TransformerBlock against the reference it replaces: keras-hub's
TransformerEncoder(normalize_first=False), the same weights copied by variable path."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kbert.layers import TransformerBlock, gelu_exact
from helpers.checks import (check_eager_equals_graph, check_mixed_bfloat16,
                            check_serialization_round_trip, dtype_policy)

HIDDEN, HEADS, INTERMEDIATE = 64, 4, 256


def _pair(activation=gelu_exact, dropout=0.0, seed=0):
    ours = TransformerBlock(INTERMEDIATE, HEADS, dropout=dropout, activation=activation,
                            layer_norm_epsilon=1e-12, name="transformer_layer_0")
    reference = keras_hub.layers.TransformerEncoder(
        intermediate_dim=INTERMEDIATE, num_heads=HEADS, dropout=dropout,
        activation=activation, layer_norm_epsilon=1e-12, normalize_first=False,
        name="transformer_layer_0")
    ours.build((None, None, HIDDEN))
    reference.build((None, None, HIDDEN))
    rng = np.random.default_rng(seed)
    for variable in reference.weights:  # non-zero biases, gammas away from 1
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    by_path = {v.path: v for v in reference.weights}
    for variable in ours.weights:
        variable.assign(by_path[variable.path])
    return ours, reference


def _inputs(batch=3, length=11, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (batch, length, HIDDEN)).astype("float32")
    lengths = np.array([length, 6, 1][:batch])
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
    return tf.constant(x), tf.constant(mask)


def test_same_variables_as_keras_hub():
    ours, reference = _pair()
    assert ([(v.path, tuple(v.shape)) for v in ours.weights]
            == [(v.path, tuple(v.shape)) for v in reference.weights])


@pytest.mark.parametrize("activation", [gelu_exact, "relu"])
def test_forward_matches_keras_hub(activation):
    ours, reference = _pair(activation)
    x, mask = _inputs()
    # Eager, and inside a graph (where the oneDNN fusions happen).
    check_eager_equals_graph(lambda a, m: ours(a, padding_mask=m), x, mask,
                             want=reference(x, padding_mask=mask), atol=2e-5)
    # Without a mask every position attends everywhere, in both.
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), atol=2e-5)


@pytest.mark.parametrize("training", [False, True])  # True: LayerNorm's own gradient
def test_gradients_match_keras_hub(training):
    ours, reference = _pair()  # dropout 0: training changes only how gradients are made
    x, mask = _inputs()
    target = tf.constant(np.random.default_rng(2).normal(size=x.shape).astype("float32"))

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum((layer(x, padding_mask=mask, training=training)
                                  - target) ** 2)
        return tape.gradient(loss, [x] + layer.trainable_weights)

    paths = ["inputs"] + [v.path for v in ours.trainable_weights]
    expected = dict(zip(["inputs"] + [v.path for v in reference.trainable_weights],
                        grads(reference)))
    for path, got in zip(paths, grads(ours)):
        want = expected[path].numpy()
        # key biases get a zero gradient (softmax ignores a constant per row): compare those
        # absolutely, the rest relative to their scale.
        scale = max(float(np.abs(want).max()), 1.0)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-4 * scale, err_msg=path)


def test_key_bias_changes_no_output_and_inference_gives_it_a_zero_gradient():
    # Inference leaves the key bias out (softmax ignores the per-query shift q . b_k);
    # training uses it. Both facts that make that exact are checked here.
    ours, _ = _pair()
    x, mask = _inputs()
    key_bias = ours._self_attention_layer.key.bias
    with tf.GradientTape() as tape:
        inference = ours(x, padding_mask=mask, training=False)
        loss = tf.reduce_sum(inference ** 2)
    gradient = tape.gradient(loss, key_bias)
    assert gradient is not None and not np.any(gradient.numpy())
    trained = ours(x, padding_mask=mask, training=True).numpy()  # dropout 0: same function
    np.testing.assert_allclose(trained, inference.numpy(), atol=2e-5)
    key_bias.assign(np.zeros(key_bias.shape, "float32"))
    np.testing.assert_allclose(ours(x, padding_mask=mask, training=True).numpy(), trained,
                               atol=2e-5)


def test_mixed_bfloat16_close_to_keras_hub():
    with dtype_policy("mixed_bfloat16"):
        ours, reference = _pair()  # keras-hub's block under the same policy
    x, mask = _inputs()
    check_mixed_bfloat16(ours, ours(x, padding_mask=mask),
                         tf.cast(reference(x, padding_mask=mask), tf.float32),
                         mean_abs=0.02, max_abs=0.25)


def test_dropout_only_in_training():
    ours, _ = _pair(dropout=0.3)
    x, mask = _inputs()
    inference = ours(x, padding_mask=mask).numpy()
    np.testing.assert_array_equal(ours(x, padding_mask=mask, training=False).numpy(),
                                  inference)
    train_a = ours(x, padding_mask=mask, training=True).numpy()
    train_b = ours(x, padding_mask=mask, training=True).numpy()
    assert np.abs(train_a - inference).mean() > 1e-2
    assert np.abs(train_a - train_b).mean() > 1e-2


def test_padded_keys_are_ignored():
    ours, _ = _pair()
    x, mask = _inputs(batch=2, length=9)
    changed = x.numpy().copy()
    changed[1, 6:] = 100.0  # row 1 has 6 real tokens
    a = ours(x, padding_mask=mask).numpy()
    b = ours(tf.constant(changed), padding_mask=mask).numpy()
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-5)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("rows", [1, 3, 11, 20])
def test_query_positions_k_gives_the_first_rows_of_the_full_output(rows):
    # The rows attend to every key as before (padded ones masked), so each equals the
    # full block's row; k >= T gives all T rows.
    ours, _ = _pair()
    x, mask = _inputs()
    full = ours(x, padding_mask=mask).numpy()
    assert full[:, :rows].shape == (3, min(rows, 11), HIDDEN)
    # Eager, traced, and traced with batch and length unknown.
    spec = [tf.TensorSpec([None, None, HIDDEN]), tf.TensorSpec([None, None], tf.int32)]
    check_eager_equals_graph(lambda a, m: ours(a, padding_mask=m, query_positions=rows),
                             x, mask, want=full[:, :rows], atol=2e-5, input_signature=spec)
    # A key the rows attend to does change them (the keys are not cut to the rows).
    changed = x.numpy().copy()
    changed[0, 10] += 3.0
    moved = ours(tf.constant(changed), padding_mask=mask, query_positions=rows).numpy()
    assert np.abs(moved[0, 0] - full[0, 0]).max() > 1e-3


def test_query_positions_tensor_gives_those_rows_and_their_gradients():
    # Pre-training's use: [CLS] plus the masked positions (with repeats: padding slots
    # point at 0). Rows and the gradients of a loss on them equal the full block's.
    ours, _ = _pair()
    x, mask = _inputs()
    positions = tf.constant([[0, 3, 7, 10], [0, 2, 5, 0], [0, 0, 0, 0]])
    weights = tf.constant(np.random.default_rng(4).normal(0, 1, (3, 4, HIDDEN)), tf.float32)

    def loss_full(a):
        return tf.reduce_sum(tf.gather(ours(a, padding_mask=mask), positions, batch_dims=1)
                             * weights)

    def loss_rows(a):
        rows = ours(a, padding_mask=mask, query_positions=positions)
        assert tuple(rows.shape) == (3, 4, HIDDEN)
        return tf.reduce_sum(rows * weights)

    for run in (lambda f: f(), lambda f: tf.function(f)()):
        grads = []
        for loss in (loss_full, loss_rows):
            def step(loss=loss):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = loss(x)
                return value, tape.gradient(value, [x, *ours.trainable_weights])
            grads.append(run(step))
        (full, g_full), (rows, g_rows) = grads
        np.testing.assert_allclose(rows.numpy(), full.numpy(), rtol=1e-5, atol=1e-3)
        for a, b in zip(g_rows, g_full):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int32"])
def test_transpose_bits_equals_transpose_with_its_gradient(dtype):
    from kbert.layers._cpu_ops import transpose_bits as _transpose_bits

    x = tf.cast(tf.constant(np.random.default_rng(0).normal(0, 3, (2, 5, 3, 4))), dtype)
    for perm in ([0, 2, 1, 3], [3, 0, 2, 1]):
        want = tf.transpose(x, perm)
        got = tf.function(_transpose_bits)(x, perm)
        assert got.dtype == x.dtype and got.shape == want.shape
        np.testing.assert_array_equal(tf.bitcast(got, tf.uint8).numpy(),  # bit for bit
                                      tf.bitcast(want, tf.uint8).numpy())
        if dtype != "int32":
            weights = tf.cast(tf.range(tf.size(want)), dtype)
            weights = tf.reshape(weights, want.shape)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                a = tf.reduce_sum(_transpose_bits(x, perm) * weights)
                b = tf.reduce_sum(tf.transpose(x, perm) * weights)
            np.testing.assert_array_equal(tape.gradient(a, x).numpy(),
                                          tape.gradient(b, x).numpy())


def test_config_round_trip():
    ours, _ = _pair()
    x, mask = _inputs()
    check_serialization_round_trip(ours, lambda layer: layer(x, padding_mask=mask))


def test_hidden_not_divisible_by_heads_is_an_error():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TransformerBlock(32, 5).build((None, None, 64))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_statistics(rate):
    from kbert.layers import Dropout

    layer = Dropout(rate, seed=7)
    x = tf.ones([64, 129, 33])  # odd size: the 16-bit draws come two per 32-bit word
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())  # inference: identity
    y = layer(x, training=True).numpy()
    dropped = (y == 0).mean()
    assert abs(dropped - rate) < 0.01
    assert abs(y.mean() - 1.0) < 0.02  # kept values scaled so the mean is preserved
    assert np.unique(y).size == 2
    y2 = layer(x, training=True).numpy()
    assert abs((y2 != y).mean() - 2 * rate * (1 - rate)) < 0.01  # a new, independent mask
    # no pattern between the two halves of a 32-bit word
    flat = (y.reshape(-1)[: (y.size // 2) * 2] == 0).reshape(-1, 2)
    both = (flat[:, 0] & flat[:, 1]).mean()
    assert abs(both - rate * rate) < 0.01
    # gradient: the same mask, the same scale
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True)
    grad = tape.gradient(out, x).numpy()
    np.testing.assert_allclose(grad, out.numpy())  # d(x * m)/dx = m = out for x = 1


def test_dropout_in_bfloat16():
    from kbert.layers import Dropout

    y = Dropout(0.2, dtype="mixed_bfloat16")(tf.ones([4096]), training=True)
    assert y.dtype == tf.bfloat16
    assert abs(float(tf.reduce_mean(tf.cast(y == 0, tf.float32))) - 0.2) < 0.03


@pytest.mark.parametrize("training", [False, True])
def test_layer_norm_matches_keras(training):
    from kbert.layers import LayerNorm

    rng = np.random.default_rng(4)
    ours, reference = LayerNorm(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
    for layer in (ours, reference):
        layer.build((None, None, 48))
    reference.gamma.assign(rng.normal(1, 0.5, 48).astype("float32"))
    reference.beta.assign(rng.normal(0, 0.5, 48).astype("float32"))
    ours.gamma.assign(reference.gamma)
    ours.beta.assign(reference.beta)
    x = tf.constant(rng.normal(3, 2, (5, 7, 48)).astype("float32"))
    upstream = tf.constant(rng.normal(0, 1, (5, 7, 48)).astype("float32"))

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])

    for got, want, what in zip(run(ours), run(reference), ("y", "dx", "dgamma", "dbeta")):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5, rtol=1e-5,
                                   err_msg=what)


def test_layer_norm_bfloat16_input_computes_in_float32():
    from kbert.layers import layer_norm

    x = tf.constant(np.random.default_rng(5).normal(0, 1, (4, 64)).astype("float32"))
    gamma, beta = tf.ones([64]), tf.zeros([64])
    want = layer_norm(x, gamma, beta, 1e-12).numpy()
    for training in (False, True):
        got = layer_norm(tf.cast(x, tf.bfloat16), gamma, beta, 1e-12, training=training)
        assert got.dtype == tf.bfloat16
        # only the bf16 rounding of the input and the output (~0.4% each)
        assert np.abs(tf.cast(got, tf.float32).numpy() - want).max() < 0.05
