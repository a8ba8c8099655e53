"""`TransformerBlock`: one post-LayerNorm BERT block (keras-hub's `TransformerEncoder`
function and variables), and the weight holders that keep keras-hub's variable paths.
"""

import keras
import tensorflow as tf

from kbert.layers._cpu_ops import key_without_bias, static_size, transpose_bits
from kbert.layers.activations import gelu_exact
from kbert.layers.dropout import Dropout
from kbert.layers.layer_norm import LayerNorm

def _fresh_initializer(initializer):
    """A new initializer object with `initializer`'s config (each weight its own, as
    keras-hub's `clone_initializer`)."""
    return keras.initializers.get(keras.initializers.serialize(
        keras.initializers.get(initializer)))


@keras.saving.register_keras_serializable(package="kbert")
class _Projection(keras.layers.Layer):
    """A kernel and a bias of given shapes and nothing else: `TransformerBlock` multiplies
    them itself. Exists so the variables keep keras-hub's paths and shapes
    (`.../self_attention_layer/query/kernel` [H, N, H/N]), which model directories and the
    checkpoint converters address."""

    def __init__(self, kernel_shape, bias_shape, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_shape = tuple(kernel_shape)
        self.bias_shape = tuple(bias_shape)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape=None):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_shape,
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=self.bias_shape, initializer="zeros")

    def call(self, inputs):  # never called; Keras requires the method
        raise NotImplementedError("_Projection only holds weights")


@keras.saving.register_keras_serializable(package="kbert")
class _SelfAttentionWeights(keras.layers.Layer):
    """The q/k/v/output projections of one block, under keras-hub's `self_attention_layer`
    path, and the dropout on attention probabilities."""

    def __init__(self, hidden_dim, num_heads, dropout, kernel_initializer, **kwargs):
        super().__init__(**kwargs)
        head_dim = hidden_dim // num_heads
        init = lambda: _fresh_initializer(kernel_initializer)
        self.query, self.key, self.value = (
            _Projection((hidden_dim, num_heads, head_dim), (num_heads, head_dim), init(),
                        dtype=self.dtype_policy, name=name)
            for name in ("query", "key", "value"))
        self.attention_output = _Projection((num_heads, head_dim, hidden_dim), (hidden_dim,),
                                            init(), dtype=self.dtype_policy,
                                            name="attention_output")
        self.probs_dropout = Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape=None):
        for projection in (self.query, self.key, self.value, self.attention_output):
            projection.build()

    def call(self, inputs):  # never called; Keras requires the method
        raise NotImplementedError("_SelfAttentionWeights only holds weights")


def _attention_bias(padding_mask, dtype):
    """[B, T] padding mask (1 = token) -> additive [B, 1, 1, T] bias: 0 or a large negative
    (Keras' masked-softmax values: -3e4 in float16, which cannot hold -1e9)."""
    large_negative = -3e4 if dtype == tf.float16 else -1e9
    # expand_dims rather than [:, None, None, :]: TFLite's StridedSlice has no new axes.
    keep = tf.expand_dims(tf.expand_dims(tf.cast(padding_mask, dtype), 1), 1)
    return (1.0 - keep) * tf.constant(large_negative, dtype)


@keras.saving.register_keras_serializable(package="kbert")
class TransformerBlock(keras.layers.Layer):
    """One post-LayerNorm BERT block: self-attention, add & norm, feed-forward, add & norm.

    Same function, variable names and shapes as keras-hub's `TransformerEncoder(
    normalize_first=False)` (tests compare the two), written with plain TF ops because the
    CPU graph it gives is faster (docs/PERF_LAYERS.md):
    - every dense product is a 2-D `MatMul` followed by `BiasAdd`, which TF's oneDNN
      rewrite fuses into one kernel (with the exact-GELU in inference); keras-hub's
      einsum projections became `BatchMatMulV2` + `Add`, which are not fused;
    - the padding mask becomes one additive bias per block instead of a [B, T, T] boolean
      mask and a `SelectV2` per head.

    Call: `block(x [B, T, H], padding_mask=int/bool [B, T] or None, training=bool,
    query_positions=None)` -> [B, T, H] in the compute dtype.

    `query_positions` computes some positions only, for a last block whose other rows
    nobody reads: a Python int k (the first k positions, e.g. 1 for a classifier's [CLS])
    or an int32 [B, P] tensor (those positions of each sequence, repeats allowed, e.g.
    [CLS] and the masked positions in pre-training). They attend to all T positions as
    usual; the query, attention-output and feed-forward products run on k or P rows
    instead of T, and the result is [B, k or P, H], equal to those rows of the full
    output (and so are the gradients).
    """

    def __init__(self, intermediate_dim, num_heads, dropout=0.0, activation="gelu",
                 layer_norm_epsilon=1e-12, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, inputs_shape, padding_mask_shape=None):
        hidden = inputs_shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of num_heads "
                             f"{self.num_heads}")
        init = lambda: _fresh_initializer(self.kernel_initializer)
        policy = self.dtype_policy
        # Built in keras-hub's order, so the variables list in the same order.
        self._self_attention_layer = _SelfAttentionWeights(
            hidden, self.num_heads, self.dropout, init(), dtype=policy,
            name="self_attention_layer")
        self._self_attention_layer.build()
        self._self_attention_layer_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="self_attention_layer_norm")
        self._self_attention_layer_norm.build((None, hidden))
        self._self_attention_dropout = Dropout(
            self.dropout, dtype=policy, name="self_attention_dropout")
        self._feedforward_layer_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="feedforward_layer_norm")
        self._feedforward_layer_norm.build((None, hidden))
        self._feedforward_intermediate_dense = _Projection(
            (hidden, self.intermediate_dim), (self.intermediate_dim,), init(), dtype=policy,
            name="feedforward_intermediate_dense")
        self._feedforward_intermediate_dense.build()
        self._feedforward_output_dense = _Projection(
            (self.intermediate_dim, hidden), (hidden,), init(), dtype=policy,
            name="feedforward_output_dense")
        self._feedforward_output_dense.build()
        self._feedforward_dropout = Dropout(
            self.dropout, dtype=policy, name="feedforward_dropout")

    def _dense(self, x, projection, in_dim, out_dim, bias=True):
        """x [M, in_dim] -> [M, out_dim]: MatMul + BiasAdd (the pair oneDNN fuses), or the
        MatMul alone with `bias=False`."""
        kernel = tf.reshape(tf.cast(projection.kernel, x.dtype), [in_dim, out_dim])
        if not bias:
            return tf.matmul(x, kernel)
        bias = tf.reshape(tf.cast(projection.bias, x.dtype), [out_dim])
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)

    def _activate(self, h, training):
        if self.activation is gelu_exact and not training and h.dtype in (tf.float32,
                                                                          tf.bfloat16):
            # The forward of gelu_exact without its custom gradient wrapper (and, in
            # bfloat16, without its float32 casts), which would hide the pattern from
            # oneDNN's MatMul + BiasAdd + GELU fusion; the fused kernel evaluates GELU on
            # the float32 accumulator (docs/PERF_LAYERS.md).
            return 0.5 * h * (1.0 + tf.math.erf(h * 0.7071067811865476))
        return self.activation(h)

    def call(self, inputs, padding_mask=None, training=None, query_positions=None):
        training = bool(training)
        x = tf.convert_to_tensor(inputs)
        dtype = x.dtype
        length = static_size(x, 1)  # static in an export; reshapes use -1 for the batch
        hidden = x.shape[-1]
        heads = self.num_heads
        head_dim = hidden // heads
        attention = self._self_attention_layer
        if query_positions is None:
            rows, queries = length, None
            shape = [-1, length, hidden]
        else:  # only these rows come out: [B, rows, H]
            if isinstance(query_positions, int):  # a slice: no gather (and TFLite-simple)
                rows = (min(length, query_positions) if isinstance(length, int)
                        else tf.minimum(length, query_positions))
                picked = x[:, :query_positions]
            else:
                positions = tf.cast(query_positions, tf.int32)
                rows = tf.shape(positions)[1]
                picked = tf.gather(x, positions, batch_dims=1)
            shape = [-1, rows, hidden]
            queries = tf.reshape(picked, [-1, hidden])  # [B*rows, H]
        x = tf.reshape(x, [-1, hidden])  # [B*T, H]: every dense product is 2-D
        queries = x if queries is None else queries

        transpose = tf.transpose if training else transpose_bits

        def split_heads(y, rows):  # [B*rows, H] -> [B, N, rows, H/N]
            return transpose(tf.reshape(y, [-1, rows, heads, head_dim]), [0, 2, 1, 3])

        query = split_heads(self._dense(queries, attention.query, hidden, hidden), rows)
        query = query * tf.cast(1.0 / head_dim ** 0.5, dtype)
        key = self._dense(x, attention.key, hidden, hidden, bias=training)
        if not training:
            key = key_without_bias(key, attention.key.bias)
        key = split_heads(key, length)
        value = split_heads(self._dense(x, attention.value, hidden, hidden), length)
        x = queries  # the residual stream from here on: [B*rows, H]
        scores = tf.matmul(query, key, transpose_b=True)  # [B, N, rows, T]
        if padding_mask is not None:
            scores += _attention_bias(padding_mask, dtype)
        probs = attention.probs_dropout(tf.nn.softmax(scores), training=training)
        context = transpose(tf.matmul(probs, value), [0, 2, 1, 3])  # [B, rows, N, H/N]
        context = tf.reshape(context, [-1, hidden])
        y = self._dense(context, attention.attention_output, hidden, hidden)
        y = self._self_attention_dropout(y, training=training)
        x = self._self_attention_layer_norm(y + x, training=training)

        y = self._dense(x, self._feedforward_intermediate_dense, hidden, self.intermediate_dim)
        y = self._activate(y, training)
        y = self._dense(y, self._feedforward_output_dense, self.intermediate_dim, hidden)
        y = self._feedforward_dropout(y, training=training)
        x = self._feedforward_layer_norm(y + x, training=training)
        return tf.reshape(x, shape)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
