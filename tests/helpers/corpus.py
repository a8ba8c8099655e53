"""Synthetic pre-training corpora whose tokens are numbers (document * 1000 + position), so
that NSP pairs and masking can be checked exactly."""

import numpy as np
import tensorflow as tf


def numeric_tokenize(lines):
    """A stand-in tokenizer: whitespace-separated integers are the ids, anything else dropped."""
    words = tf.strings.split(lines)
    words = tf.ragged.boolean_mask(words, tf.strings.regex_full_match(words, "[0-9]+"))
    return tf.strings.to_number(words, tf.int32)


def write_corpus(path, documents=300, seed=0, first_document=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for d in range(first_document, first_document + documents):
            position = 0
            for _ in range(rng.integers(1, 10)):
                n = int(rng.integers(1, 50))
                f.write(" ".join(str(d * 1000 + (position + i) % 1000) for i in range(n)) + "\n")
                position += n
            f.write("\n" * int(rng.integers(1, 3)))  # one or two blank lines
    return path
