"""Keras pieces of the BERT encoder that keras-hub does not provide as they are.

The token and position embeddings come from keras-hub (`ReversibleEmbedding`,
`PositionEmbedding`); this module holds the rest: the Transformer block (keras-hub's
`TransformerEncoder` function and variables, in a form TF's CPU fusions apply to), its
LayerNorm and Dropout, GELU and the masked-LM head, registered as serializable so `.keras`
files reload in the default safe mode (no `Lambda` layers).
"""

import keras
import numpy as np
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


@keras.saving.register_keras_serializable(package="kbert")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with half the random numbers, for CPU training speed.

    Keras draws one float32 uniform per element; here each 32-bit random word gives two
    16-bit draws, kept where `draw >= round(rate * 65536)`, and the kept values are scaled
    by 65536 / (65536 - threshold) so the expectation stays exact (the rate itself moves by
    at most 8e-6). Kept values are selected (`where`) rather than multiplied by a float
    mask: equal in float32, ~4% of a mini bfloat16 step faster (no bf16 mask tensor to
    build). A [32, 4, 128, 128] attention-probability tensor on 2 cores: 6.4 ms forward
    with Keras' layer, 3.8-4.7 ms here; dropout was ~11% of a mini pre-training step.
    Same config, seed generator and name as Keras' layer; no noise_shape.
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


def static_size(x, axis: int):
    """x's size along `axis`: a Python int when the graph knows it statically (T and H in
    an export), else a scalar int32 tensor. Static sizes spare the shape ops that
    `tf.shape` adds at every call, which at batch 1 are not free (base encoder: ~2 ms)."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


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
        # last axis takes ~3x an elementwise Mul of equal shapes; Tile + Mul is cheaper at
        # batch 1 (25 LayerNorms over [128, 768]: ~1.2 ms less; within 2% at batch 32).
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


# Integer types of the same width as each float type, for `_transpose_bits`.
_SAME_WIDTH_INT = {tf.float32: tf.int32, tf.bfloat16: tf.int16, tf.float16: tf.int16}


def _transpose_bits(x, perm):
    """`tf.transpose(x, perm)` moving x's bits as integers (differentiable: the gradient is
    the inverse transpose).

    TF's oneDNN graph rewrite turns a float `Transpose` into `_MklTranspose`: 48 head
    splits / merges of [1, 128, 12, 64] took 4.8 ms that way against 1.2 ms with TF's own
    kernel; integer transposes are not rewritten. Base encoder at batch 1: 88.0 -> 86.2 ms
    (other work overlaps part of the saving). Same result bit for bit; at batch 32 both
    kernels take the same time.
    """
    as_int = _SAME_WIDTH_INT.get(x.dtype)
    if as_int is None:
        return tf.transpose(x, perm)
    inverse = [perm.index(i) for i in range(len(perm))]

    @tf.custom_gradient
    def transpose(x):
        def grad(upstream):  # Bitcast has no gradient of its own
            return tf.transpose(upstream, inverse)
        return tf.bitcast(tf.transpose(tf.bitcast(x, as_int), perm), x.dtype), grad
    return transpose(x)


def _key_without_bias(key, bias):
    """Inference: the keys without their bias, which changes no attention output.

    The bias adds q . b_k to every score of a query: a per-row shift that softmax ignores,
    so its true gradient is 0. Leaving it out saves a bias pass over the [B*T, H] keys
    (the fused MatMul + BiasAdd is ~10% slower than the MatMul alone at batch 1). The
    identity keeps `bias` in the graph with that zero gradient, so a tape over an
    inference call gets zeros for it, not None.

    key: [B*T, H] = x @ W_k; bias: the key bias variable. Returns `key` unchanged.
    """
    @tf.custom_gradient
    def identity(key, bias):
        def grad(upstream):
            return upstream, tf.zeros_like(bias)
        return tf.identity(key), grad
    return identity(key, bias)


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
    CPU graph it gives is faster (base, T=128, 2 cores: 120 -> ~100 ms at batch 1):
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
    output (and so are the gradients). Base at T=128, [CLS] only: ~7% of the encoder's
    work saved.
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
            # the float32 accumulator. Base encoder in bfloat16, batch 32: 28.1 -> 38.2
            # seq/s; batch 1: 99 -> 94 ms.
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

        transpose = tf.transpose if training else _transpose_bits

        def split_heads(y, rows):  # [B*rows, H] -> [B, N, rows, H/N]
            return transpose(tf.reshape(y, [-1, rows, heads, head_dim]), [0, 2, 1, 3])

        query = split_heads(self._dense(queries, attention.query, hidden, hidden), rows)
        query = query * tf.cast(1.0 / head_dim ** 0.5, dtype)
        key = self._dense(x, attention.key, hidden, hidden, bias=training)
        if not training:
            key = _key_without_bias(key, attention.key.bias)
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
