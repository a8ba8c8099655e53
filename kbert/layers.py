"""Keras pieces of the BERT encoder that keras-hub does not provide as they are.

The Transformer blocks, token and position embeddings come from keras-hub
(`TransformerEncoder`, `ReversibleEmbedding`, `PositionEmbedding`); this module holds what
BERT needs on top of them, registered as serializable so `.keras` files reload in the
default safe mode (no `Lambda` layers).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kbert")
def gelu_approximate(x):
    """tanh-approximate GELU (the form keras-hub's BertBackbone and `gelu_new` use)."""
    return keras.activations.gelu(x, approximate=True)


@tf.custom_gradient
def _gelu_exact_float32(x):
    # Phi(x) = 0.5 * (1 + erf(x / sqrt(2))). Written exactly as 0.5 * x * (1 + erf(...)):
    # the TFLite converter fuses this form into its GELU builtin; erf or erfc in any other
    # arrangement stays a TF op, which TFLite has no kernel for (custom op `Erf`/`Erfc`).
    one_plus_erf = 1.0 + tf.math.erf(x * 0.7071067811865476)

    def grad(upstream):  # d/dx x*Phi(x) = Phi(x) + x * phi(x), reusing Phi from forward
        return upstream * (0.5 * one_plus_erf
                           + x * (0.3989422804014327 * tf.exp(-0.5 * tf.square(x))))
    return 0.5 * x * one_plus_erf, grad


@keras.saving.register_keras_serializable(package="kbert")
def gelu_exact(x):
    """Exact (erf) GELU, always evaluated in float32, with a hand-written gradient.

    Same function as `keras.activations.gelu(x, approximate=False)`. Measured on a
    [4096, 1024] activation (mini's feed-forward, 2 cores, forward + backward): float32
    18.0 -> 14.3 ms (the autodiff gradient of erf recomputes the CDF and builds ~8
    elementwise ops; this one reuses the forward's CDF), bfloat16 34.6 -> 23.0 ms (TF's
    CPU bfloat16 elementwise kernels are slower than float32 ones; float32 is also the
    more accurate evaluation). The result is cast back to the input dtype.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.float32:
        return _gelu_exact_float32(x)
    return tf.cast(_gelu_exact_float32(tf.cast(x, tf.float32)), x.dtype)


def get_activation(name: str):
    """The Keras activation for a `BertConfig.activation` name.

    `gelu` is the exact erf form: original BERT and Hugging Face checkpoints were trained
    with it, and the tanh form moves the last hidden state by ~3e-3 (FIELD_NOTES.md).
    """
    if name == "gelu":
        return gelu_exact
    if name == "gelu_approximate":
        return gelu_approximate
    if name == "relu":
        return "relu"
    raise ValueError(f"unknown activation {name!r}")


@keras.saving.register_keras_serializable(package="kbert")
class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM head: gather at `mask_positions`, dense H->H + activation,
    LayerNorm, then logits against the (tied) token embedding matrix plus a bias.

    keras-hub's MaskedLMHead has the same structure and variable names, but under a
    mixed-precision policy it adds its float32 bias to half-precision logits and fails;
    this one casts the bias, so the large [B*P, H] x [H, V] product runs in the compute
    dtype.

    Call: `head(sequence_output [B, T, H], mask_positions=int32 [B, P])` -> [B, P, V].
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
        self._intermediate_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
            name="intermediate_layer_norm")
        self._intermediate_layer_norm.build((None, None, hidden))
        self._output_bias = self.add_weight(
            name="output_bias", shape=(self.token_embedding.input_dim,), initializer="zeros")

    def call(self, inputs, mask_positions):
        x = keras.ops.take_along_axis(inputs, keras.ops.expand_dims(mask_positions, -1), axis=1)
        x = self._intermediate_layer_norm(self._intermediate_dense(x))
        # x @ E^T as one MatMul with transpose_b: ReversibleEmbedding(reverse=True) writes
        # matmul(x, transpose(E)), which materialises the [V, H] transpose in the forward
        # pass and again in the backward pass (~25 ms each on 2 cores for V=30522, H=256)
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
