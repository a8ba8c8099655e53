"""The whole text graph of a serving model, strings -> model inputs: tokenizer + packer.

Its only custom ops must be FastBertNormalize and FastWordpieceTokenizeWithOffsets (both in
tf-text >= 2.12, which TF Serving >= 2.12 bundles, and both with TFLite kernels).
"""

import os

import numpy as np
import tensorflow as tf

import kbert
from kbert.text.packer import pack
from helpers.graphs import op_types as _op_types, tflite_runner
from helpers.paths import FIXTURES

VOCAB = os.path.join(FIXTURES, "tokenizer", "vocab.txt")


class TextToInputs(tf.Module):
    def __init__(self):
        super().__init__()
        self.tokenizer = kbert.Tokenizer(VOCAB)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None], tf.string)])
    def inputs(self, text, text_pair):
        t = self.tokenizer
        return pack(t.tokenize(text), t.tokenize(text_pair), sequence_length=16,
                    cls_id=t.cls_id, sep_id=t.sep_id, pad_id=t.pad_id)


TEXTS = ["Héllo naïve café!", "東京 is big", ""]
PAIRS = ["the cat sat on the mat and then some more words to force truncation", "ok", "x"]


def test_only_the_two_tf_text_ops():
    module = TextToInputs()  # kept alive: a traced method holds only a weak reference
    ops = _op_types(module.inputs.get_concrete_function())
    custom = {op for op in ops if not hasattr(tf.raw_ops, op)}
    assert custom == {"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"}
    assert not {"RoundRobinTrim", "RaggedGather", "RegexSplitWithOffsets"} & ops


def test_text_graph_matches_piecewise_and_converts_to_tflite():
    module = TextToInputs()
    got = module.inputs(tf.constant(TEXTS), tf.constant(PAIRS))
    t = module.tokenizer
    token_ids, padding_mask = got["token_ids"].numpy(), got["padding_mask"].numpy()
    for i, (a, b) in enumerate(zip(TEXTS, PAIRS)):
        ids_a, ids_b = t.tokenize(a).numpy().tolist(), t.tokenize(b).numpy().tolist()
        real = token_ids[i][padding_mask[i] == 1].tolist()
        # [CLS] A' [SEP] B' [SEP] where A', B' are prefixes of the two token lists.
        assert real[0] == t.cls_id and real[-1] == t.sep_id
        first = real[1:real.index(t.sep_id)]
        second = real[len(first) + 2:-1]
        assert first == ids_a[:len(first)] and second == ids_b[:len(second)]
        assert len(first) + len(second) == min(13, len(ids_a) + len(ids_b))
    out = tflite_runner(module.inputs.get_concrete_function(), module)(text=np.array(TEXTS, dtype=object),
                                             text_pair=np.array(PAIRS, dtype=object))
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(out[key], got[key].numpy(), err_msg=key)
