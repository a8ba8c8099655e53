"""TF-graph forms of plain operations that TF's CPU kernels run faster.

Private to `kbert.layers`: each helper computes exactly what its plain form computes
(tests compare them); docs/PERF_LAYERS.md has the measurements behind each one.
"""

import tensorflow as tf

def static_size(x, axis: int):
    """x's size along `axis`: a Python int when the graph knows it statically (T and H in
    an export), else a scalar int32 tensor. Static sizes spare the shape ops that
    `tf.shape` adds at every call, which at batch 1 are not free."""
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


# Integer types of the same width as each float type, for `transpose_bits`.
_SAME_WIDTH_INT = {tf.float32: tf.int32, tf.bfloat16: tf.int16, tf.float16: tf.int16}


def transpose_bits(x, perm):
    """`tf.transpose(x, perm)` moving x's bits as integers (differentiable: the gradient is
    the inverse transpose).

    TF's oneDNN graph rewrite turns a float `Transpose` into `_MklTranspose`, several
    times slower at batch 1; integer transposes are not rewritten. Same result bit for
    bit.
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


def key_without_bias(key, bias):
    """Inference: the keys without their bias, which changes no attention output.

    The bias adds q . b_k to every score of a query: a per-row shift that softmax ignores,
    so its true gradient is 0. Leaving it out saves a bias pass over the [B*T, H] keys
    (the fused MatMul + BiasAdd is slower than the MatMul alone at batch 1). The
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
