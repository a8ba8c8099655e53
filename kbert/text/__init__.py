"""Text ops at the edges of the model: tokenizer, packer, masked-LM masking.

All of them are TF ops that run in `tf.data` and in exported serving graphs.
"""

from kbert.text.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
