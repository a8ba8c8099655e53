"""UTF-8 byte offsets -> character offsets (what a Python user indexes a str with).

The tokenizer reports byte offsets (tf-text works on UTF-8 bytes); served outputs give
character offsets too, so `text[start:end]` works on the caller's str in any language.
Substr / StringLength are core TF ops that TF Serving runs but TFLite has no builtins
for: the TFLite runner (kbert.serving.tflite_runtime) runs this function eagerly on the
interpreter's outputs.
"""

from __future__ import annotations

import tensorflow as tf


def char_offsets(text: tf.Tensor, byte_offsets: tf.Tensor) -> tf.Tensor:
    """Character offsets of byte positions.

    Args:
        text: string [B], UTF-8.
        byte_offsets: int32 [B, W] byte positions in each text (a position inside a
            character counts that character as before it); negative = padding.

    Returns:
        int32 [B, W]: the number of characters before each byte position (-1 kept for
        padding).
    """
    valid = byte_offsets >= 0
    positions = tf.maximum(byte_offsets, 0)
    texts = tf.broadcast_to(text[:, tf.newaxis], tf.shape(positions))
    prefix = tf.strings.substr(texts, tf.zeros_like(positions), positions, unit="BYTE")
    chars = tf.strings.length(prefix, unit="UTF8_CHAR")
    return tf.where(valid, chars, -1)
