import keras
import numpy as np
import pytest
import tensorflow as tf

from kbert.training.optimizers import WarmupLinearDecay, create_optimizer, set_precision


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


def test_gradient_accumulation_schedule_counts_optimizer_steps():
    """Keras evaluates the schedule at its batch counter; with accumulation N the warm-up
    and decay must still count optimizer steps (else the learning rate reaches 0 after
    total_steps batches, 1/N of the run)."""
    model = _dense_with_norm()
    optimizer = create_optimizer(1.0, total_steps=4, warmup_steps=2, weight_decay=0.0,
                                 clip_norm=None, gradient_accumulation_steps=3)
    ones = [tf.ones_like(v) for v in model.trainable_variables]
    rates = []
    for _ in range(12):
        optimizer.apply_gradients(zip(ones, model.trainable_variables))
        rates.append(round(float(optimizer.learning_rate), 6))
    assert int(optimizer.iterations.numpy()) == 4
    # Warm-up over 2 updates (0.5, 1.0 at updates 1, 2), then linear decay to 0 at 4.
    assert rates == [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0]


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_gradient_accumulation_step_equals_one_step_on_the_mean_gradient(name):
    # Two accumulated batches move the weights exactly as one step on their mean gradient
    # (a huge total_steps keeps the learning rate constant across the two counters).
    rng = np.random.default_rng(0)
    accumulated, direct = _dense_with_norm(), _dense_with_norm()
    first = [tf.constant(rng.normal(size=v.shape), tf.float32)
             for v in accumulated.trainable_variables]
    second = [tf.constant(rng.normal(size=v.shape), tf.float32)
              for v in accumulated.trainable_variables]
    settings = dict(total_steps=10**9, warmup_steps=0, weight_decay=0.01, optimizer=name)
    optimizer = create_optimizer(0.1, gradient_accumulation_steps=2, **settings)
    optimizer.apply_gradients(zip(first, accumulated.trainable_variables))
    optimizer.apply_gradients(zip(second, accumulated.trainable_variables))
    create_optimizer(0.1, **settings).apply_gradients(
        zip([(a + b) / 2 for a, b in zip(first, second)], direct.trainable_variables))
    for a, b in zip(accumulated.trainable_variables, direct.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(direct.get_layer("dense").kernel.numpy(), 2.0)


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


def _adamw_reference(init, grads, lrs, weight_decay, clip_norm, decayed, eps=1e-6,
                     beta_1=0.9, beta_2=0.999):
    """AdamW in numpy (float64) as Kingma & Ba's Algorithm 1 and torch.optim.AdamW:
    global-norm clipping, decoupled decay w -= lr * wd * w, then
    w -= lr * m_hat / (sqrt(v_hat) + eps)."""
    w = {k: v.astype(np.float64) for k, v in init.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v2 = {k: np.zeros_like(v) for k, v in w.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        norm = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g.values()))
        scale = min(1.0, clip_norm / norm) if clip_norm else 1.0
        for k in w:
            grad = g[k] * scale
            if k in decayed:
                w[k] -= lr * weight_decay * w[k]
            m[k] = beta_1 * m[k] + (1 - beta_1) * grad
            v2[k] = beta_2 * v2[k] + (1 - beta_2) * grad ** 2
            m_hat, v_hat = m[k] / (1 - beta_1 ** t), v2[k] / (1 - beta_2 ** t)
            w[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("path", ["fused", "keras_ops"])
@pytest.mark.parametrize("clip_norm", [1.0, None])
def test_adamw_is_algorithm_1_with_decoupled_decay(path, clip_norm, monkeypatch):
    """Both update paths (fused ResourceApplyAdam; Keras ops, as under tf.distribute)
    against a float64 reference, with gradients of ~1e-6..1e-4, where Keras' epsilon-hat
    would differ from Algorithm 1's epsilon (by 32x at step 1), and a step where clipping
    engages."""
    if path == "keras_ops":
        monkeypatch.setattr(tf.distribute, "has_strategy", lambda: True)
    rng = np.random.default_rng(0)
    init = {"kernel": rng.normal(0, 1, (5, 4)).astype(np.float32),
            "bias": rng.normal(0, 1, (4,)).astype(np.float32)}
    scales = [1e-6, 3e-5, 1e-4, 10.0, 1e-5, 2e-6]
    grads = [{k: (rng.normal(0, s, v.shape)).astype(np.float32) for k, v in init.items()}
             for s in scales]
    variables = {k: keras.Variable(v, name=k) for k, v in init.items()}
    optimizer = create_optimizer(0.01, total_steps=10, warmup_steps=2, weight_decay=0.1,
                                 clip_norm=clip_norm)
    names = list(variables)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g[k]), variables[k]) for k in names])
    schedule = WarmupLinearDecay(0.01, warmup_steps=2, total_steps=10)
    lrs = [float(schedule(step)) for step in range(len(grads))]
    want = _adamw_reference(init, grads, lrs, 0.1, clip_norm, decayed={"kernel"})
    for k in names:
        moved = np.abs(want[k] - init[k]).max()
        assert moved > 1e-3
        np.testing.assert_allclose(variables[k].numpy(), want[k], rtol=0,
                                   atol=2e-4 * moved, err_msg=k)


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
