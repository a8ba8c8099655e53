"""LayerNorm as a function (`layer_norm`, with a closed-form gradient) and as a Keras layer."""

import keras
import numpy as np
import tensorflow as tf

from kbert.layers._cpu_ops import static_size

def layer_norm(x, gamma, beta, epsilon, training=False):
    """LayerNorm over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta.

    Computed in float32 (as Keras' `LayerNormalization` does for half-precision inputs)
    and cast back to x's dtype. With `training`, the gradient is the closed form
    dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma with g = dy * gamma, reusing the
    forward's x_hat and 1/sigma: ~9 passes over x instead of the ~15 ops autodiff builds
    (there are 2L + 2 of these in a pre-training step). Same values as Keras' layer
    (tests compare both).

    x: float [..., H]; gamma, beta: float32 [H]. Returns x's dtype, x's shape.
    """
    dtype = x.dtype
    x = tf.cast(x, tf.float32) if dtype != tf.float32 else x
    gamma = tf.cast(gamma, tf.float32)
    beta = tf.cast(beta, tf.float32)
    if not training:
        centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
        inverse_std = tf.math.rsqrt(variance + epsilon)  # [..., 1]
        # Tiled to x's shape first: TF's CPU Mul broadcasting a [M, 1] column along the
        # last axis takes ~3x an elementwise Mul of equal shapes; Tile + Mul is cheaper
        # (docs/PERF_LAYERS.md).
        multiples = [1] * (x.shape.rank - 1) + [static_size(x, -1)]
        y = centered * tf.tile(inverse_std, multiples) * gamma + beta
    else:
        y = _layer_norm_with_gradient(x, gamma, beta, epsilon)
    return tf.cast(y, dtype) if dtype != tf.float32 else y


def _layer_norm_with_gradient(x, gamma, beta, epsilon):
    @tf.custom_gradient
    def forward(x, gamma, beta):
        centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        inverse_std = tf.math.rsqrt(
            tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
        normalized = centered * inverse_std

        def grad(upstream):
            rows = tf.range(tf.rank(upstream) - 1)  # every axis but the last
            d_gamma = tf.reduce_sum(upstream * normalized, axis=rows)
            d_beta = tf.reduce_sum(upstream, axis=rows)
            g = upstream * gamma
            d_x = inverse_std * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                                 - normalized * tf.reduce_mean(g * normalized, axis=-1,
                                                               keepdims=True))
            return d_x, d_gamma, d_beta
        return normalized * gamma + beta, grad
    return forward(x, gamma, beta)


@keras.saving.register_keras_serializable(package="kbert")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` (same variables and config) computed with
    `layer_norm`: cheaper gradient in training. Last axis only, no rms_scaling.

    Under a pure half-precision policy ("bfloat16", as a bfloat16 export builds the model)
    gamma and beta stay float32 (policy "mixed_bfloat16"): the normalisation is computed in
    float32 anyway, so rounding them would only lose precision (as many bytes as 2H
    values per LayerNorm are at stake).
    """

    def __init__(self, *args, dtype=None, **kwargs):
        policy = keras.dtype_policies.get(dtype) if dtype is not None else (
            keras.config.dtype_policy())
        if policy.variable_dtype in ("bfloat16", "float16"):
            dtype = keras.dtype_policies.DTypePolicy(f"mixed_{policy.compute_dtype}")
        super().__init__(*args, dtype=dtype, **kwargs)

    def call(self, inputs, training=None):
        if self.axis not in (-1, [-1]) and list(np.atleast_1d(self.axis)) != [
                len(inputs.shape) - 1]:
            return super().call(inputs)
        return layer_norm(tf.convert_to_tensor(inputs), self.gamma, self.beta, self.epsilon,
                          training=bool(training))
