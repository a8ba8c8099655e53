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
