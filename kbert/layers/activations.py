"""GELU activations (exact erf and tanh-approximate) and the `BertConfig.activation` names."""

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

    x: float tensor of any shape. Returns x's dtype and shape; the same function as
    `keras.activations.gelu(x, approximate=False)`. The gradient reuses the forward's CDF
    (autodiff of erf recomputes it), and float32 is both faster and more accurate than
    TF's CPU bfloat16 kernels (docs/PERF_LAYERS.md).
    """
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.float32:
        return _gelu_exact_float32(x)
    return tf.cast(_gelu_exact_float32(tf.cast(x, tf.float32)), x.dtype)


def get_activation(name: str):
    """The Keras activation for a `BertConfig.activation` name.

    `gelu` is the exact erf form: original BERT and Hugging Face checkpoints were trained
    with it, and the tanh form moves the last hidden state by ~3e-3 (docs/FIELD_NOTES.md "Encoder").
    """
    if name == "gelu":
        return gelu_exact
    if name == "gelu_approximate":
        return gelu_approximate
    if name == "relu":
        return "relu"
    raise ValueError(f"unknown activation {name!r}")
