"""`MaskedLMHead`: BERT's masked-LM output layer on the tied token embedding matrix."""

import keras
import tensorflow as tf

from kbert.layers.layer_norm import LayerNorm

@keras.saving.register_keras_serializable(package="kbert")
class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM head: gather at `mask_positions`, dense H->H + activation,
    LayerNorm, then logits against the (tied) token embedding matrix plus a bias.

    keras-hub's MaskedLMHead has the same structure and variable names, but under a
    mixed-precision policy it adds its float32 bias to half-precision logits and fails;
    this one casts the bias, so the large [B*P, H] x [H, V] product runs in the compute
    dtype.

    Call: `head(sequence_output [B, T, H], mask_positions=int32 [B, P])` -> [B, P, V];
    with `mask_positions=None` the inputs are already the [B, P, H] rows to predict.
    """

    def __init__(self, token_embedding, activation="gelu", layer_norm_epsilon=1e-12,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = token_embedding
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, mask_positions_shape=None):
        hidden = self.token_embedding.output_dim
        self._intermediate_dense = keras.layers.Dense(
            hidden, activation=self.activation, kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy, name="intermediate_dense")
        self._intermediate_dense.build((None, None, inputs_shape[-1]))
        self._intermediate_layer_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
            name="intermediate_layer_norm")
        self._intermediate_layer_norm.build((None, None, hidden))
        self._output_bias = self.add_weight(
            name="output_bias", shape=(self.token_embedding.input_dim,), initializer="zeros")

    def call(self, inputs, mask_positions=None):
        x = inputs
        if mask_positions is not None:
            x = keras.ops.take_along_axis(x, keras.ops.expand_dims(mask_positions, -1), axis=1)
        x = self._intermediate_layer_norm(self._intermediate_dense(x))
        # x @ E^T as one MatMul with transpose_b: ReversibleEmbedding(reverse=True) writes
        # matmul(x, transpose(E)), which materialises the [V, H] transpose in the forward
        # pass and again in the backward pass (docs/PERF_LAYERS.md)
        # and gets its [V, H] gradient through another transpose. Same product, same values.
        embeddings = keras.ops.cast(self.token_embedding.embeddings, x.dtype)
        batch, predictions = tf.shape(x)[0], tf.shape(x)[1]
        logits = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), embeddings, transpose_b=True)
        logits = tf.reshape(logits, [batch, predictions, self.token_embedding.input_dim])
        return logits + keras.ops.cast(self._output_bias, logits.dtype)

    def compute_output_shape(self, inputs_shape, mask_positions_shape=None):
        return (*tuple(mask_positions_shape or (inputs_shape[0], None)),
                self.token_embedding.input_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "token_embedding": keras.layers.serialize(self.token_embedding),
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config["token_embedding"] = keras.layers.deserialize(config["token_embedding"])
        return cls(**config)
