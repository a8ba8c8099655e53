"""Keras pieces of the BERT encoder that keras-hub does not provide as they are.

The Transformer blocks, token and position embeddings come from keras-hub
(`TransformerEncoder`, `ReversibleEmbedding`, `PositionEmbedding`); this module holds what
BERT needs on top of them, registered as serializable so `.keras` files reload in the
default safe mode (no `Lambda` layers).
"""

import keras


@keras.saving.register_keras_serializable(package="kbert")
def gelu_approximate(x):
    """tanh-approximate GELU (the form keras-hub's BertBackbone and `gelu_new` use)."""
    return keras.activations.gelu(x, approximate=True)


def get_activation(name: str):
    """The Keras activation for a `BertConfig.activation` name.

    `gelu` is the exact erf form: original BERT and Hugging Face checkpoints were trained
    with it, and the tanh form moves the last hidden state by ~3e-3 (FIELD_NOTES.md).
    """
    if name == "gelu":
        return "gelu"  # keras.activations.gelu defaults to approximate=False.
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
        logits = self.token_embedding(x, reverse=True)
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
