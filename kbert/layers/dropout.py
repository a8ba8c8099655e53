"""`Dropout`: Keras' layer with half the random numbers (two 16-bit draws per 32-bit word)."""

import keras
import tensorflow as tf

@keras.saving.register_keras_serializable(package="kbert")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with half the random numbers, for CPU training speed.

    Keras draws one float32 uniform per element; here each 32-bit random word gives two
    16-bit draws, kept where `draw >= round(rate * 65536)`, and the kept values are scaled
    by 65536 / (65536 - threshold) so the expectation stays exact (the rate itself moves by
    at most 8e-6). Kept values are selected (`where`) rather than multiplied by a float
    mask (no bfloat16 mask tensor to build). Same config, seed generator and name as
    Keras' layer; no noise_shape. Call: `dropout(x, training)` -> x's dtype and shape.
    Measurements: docs/PERF_LAYERS.md.
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if noise_shape is not None:
            raise ValueError("kbert.layers.Dropout has no noise_shape")
        super().__init__(rate, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        inputs = tf.convert_to_tensor(inputs)
        threshold = min(int(round(self.rate * 65536)), 65535)
        size = tf.size(inputs)
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        words = tf.random.stateless_uniform([(size + 1) // 2], seed=seed, minval=None,
                                            maxval=None, dtype=tf.uint32)
        draws = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
        keep = tf.reshape(draws >= tf.constant(threshold, tf.uint16), tf.shape(inputs))
        scale = 65536.0 / (65536.0 - threshold)
        return tf.where(keep, inputs * tf.cast(scale, inputs.dtype), tf.zeros_like(inputs))
