"""Keras pieces of the BERT encoder that keras-hub does not provide as they are.

The token and position embeddings come from keras-hub (`ReversibleEmbedding`,
`PositionEmbedding`); this package holds the rest, one module each: GELU
(`activations`), `Dropout`, `LayerNorm`, the `TransformerBlock` (keras-hub's
`TransformerEncoder` function and variables, in a form TF's CPU fusions apply to) and the
`MaskedLMHead`. All are registered serializable, so `.keras` files reload in Keras' default
safe mode (no `Lambda` layers).
"""

from kbert.layers._cpu_ops import static_size
from kbert.layers.activations import gelu_approximate, gelu_exact, get_activation
from kbert.layers.dropout import Dropout
from kbert.layers.layer_norm import LayerNorm, layer_norm
from kbert.layers.masked_lm_head import MaskedLMHead
from kbert.layers.transformer_block import TransformerBlock

__all__ = ["Dropout", "LayerNorm", "MaskedLMHead", "TransformerBlock", "gelu_approximate",
           "gelu_exact", "get_activation", "layer_norm", "static_size"]
