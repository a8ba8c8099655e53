import keras
import numpy as np
import pytest
import tensorflow as tf

from kbert.training import WarmupLinearDecay, create_optimizer, set_precision


def test_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    restored = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(restored(37)) == pytest.approx(float(schedule(37)))
    with pytest.raises(ValueError):
        WarmupLinearDecay(1e-3, warmup_steps=20, total_steps=10)


def _dense_with_norm():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="dense"),
                              keras.layers.LayerNormalization(name="layer_norm")])
    for v in model.weights:
        v.assign(np.full(v.shape, 2.0, np.float32))
    return model


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_no_weight_decay_on_layer_norm_and_bias(name):
    model = _dense_with_norm()
    optimizer = create_optimizer(0.1, total_steps=10, warmup_steps=0, optimizer=name,
                                 weight_decay=0.5)
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables))
    after = {"/".join(v.path.split("/")[-2:]): v.numpy() for v in model.weights}
    assert np.all(after["dense/kernel"] < 2.0)  # decayed
    for path in ("dense/bias", "layer_norm/gamma", "layer_norm/beta"):
        np.testing.assert_array_equal(after[path], 2.0)


def test_bert_adam_settings_and_clipping():
    optimizer = create_optimizer(1e-4, total_steps=100)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-6)
    assert optimizer.global_clipnorm == 1.0 and optimizer.weight_decay == 0.01
    assert float(optimizer.learning_rate) == 0.0  # step 0 of a 10-step warm-up
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer(1e-4, total_steps=100, optimizer="sgd")


def test_gradient_accumulation_applies_every_n_batches():
    model = _dense_with_norm()
    optimizer = create_optimizer(0.1, total_steps=10, warmup_steps=0, weight_decay=0.0,
                                 gradient_accumulation_steps=2)
    ones = [tf.ones_like(v) for v in model.trainable_variables]
    kernel = model.get_layer("dense").kernel
    optimizer.apply_gradients(zip(ones, model.trainable_variables))
    np.testing.assert_array_equal(kernel.numpy(), 2.0)  # only accumulated
    optimizer.apply_gradients(zip(ones, model.trainable_variables))
    assert np.all(kernel.numpy() < 2.0)


def test_precision_policy():
    try:
        assert set_precision("auto") == "float32"  # no GPU / TPU here
        assert set_precision("mixed_bfloat16") == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        with pytest.raises(ValueError):
            set_precision("fp8")
    finally:
        keras.config.set_dtype_policy("float32")


def _small_mlp(seed):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="dense"),
                              keras.layers.LayerNormalization(name="layer_norm"),
                              keras.layers.Dense(3, name="out")])
    for v in model.weights:
        v.assign(rng.normal(0, 1, v.shape).astype(np.float32))
    return model


@pytest.mark.parametrize("clip_norm", [1.0, None])
def test_fused_adamw_matches_keras_adamw(clip_norm):
    """kbert's AdamW (fused ResourceApplyAdam, L2Loss global norm) against Keras' AdamW with
    the same settings, over steps where clipping engages and weight decay matters."""
    settings = dict(beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.1,
                    global_clipnorm=clip_norm)
    ours = create_optimizer(0.05, total_steps=20, warmup_steps=2, weight_decay=0.1,
                            clip_norm=clip_norm)
    schedule = WarmupLinearDecay(0.05, warmup_steps=2, total_steps=20)
    reference = keras.optimizers.AdamW(learning_rate=schedule, **settings)
    reference.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    rng = np.random.default_rng(3)
    models = {}
    for name, optimizer in (("ours", ours), ("reference", reference)):
        model = _small_mlp(0)
        model.compile(optimizer=optimizer, loss="mse")
        models[name] = model
    for _ in range(6):
        x = rng.normal(0, 3, (16, 6)).astype(np.float32)
        y = rng.normal(0, 3, (16, 3)).astype(np.float32)
        for model in models.values():
            model.train_on_batch(x, y)
    assert int(ours.iterations) == 6
    for a, b in zip(models["ours"].weights, models["reference"].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    # the weights did move
    start = _small_mlp(0)
    moved = [np.abs(a.numpy() - s.numpy()).max() for a, s in zip(models["ours"].weights,
                                                                  start.weights)]
    assert min(moved) > 1e-3


def test_fused_adamw_nan_gradient_poisons_weights_as_keras_does():
    model = _dense_with_norm()
    optimizer = create_optimizer(0.1, total_steps=10, warmup_steps=0)
    grads = [tf.fill(v.shape, np.nan) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert np.isnan(model.get_layer("dense").kernel.numpy()).all()


def test_fused_adamw_uses_one_kernel_per_variable():
    model = _dense_with_norm()
    optimizer = create_optimizer(0.1, total_steps=10, warmup_steps=0)
    optimizer.build(model.trainable_variables)
    step = tf.function(lambda grads: optimizer.apply_gradients(
        zip(grads, model.trainable_variables)))
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    graph = step.get_concrete_function(grads).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == len(model.trainable_variables)
    assert ops.count("L2Loss") == len(model.trainable_variables)
