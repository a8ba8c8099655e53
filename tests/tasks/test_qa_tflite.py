"""The QA windows and decoding convert to TFLite builtins (+ the tokenizer's two tf-text
custom ops) and give the same windows and answer spans as TensorFlow."""

import numpy as np
import tensorflow as tf
import tensorflow_text

from helpers.qa import VOCAB

from kbert.tasks import TaskSpec
from kbert.tasks.qa.decode import decode_spans
from kbert.tasks.qa.windows import qa_windows
from kbert.text.tokenizer import Tokenizer


def test_windows_and_decoding_run_in_tflite(tmp_path):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    tokenizer = Tokenizer(VOCAB)
    spec = TaskSpec("qa", seq_len=12, doc_stride=3, max_query_length=3, max_answer_length=4,
                    n_best=5, null_score_threshold=1.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
    def serve(question, context):
        windows = qa_windows(tokenizer, spec, question, context)
        # Deterministic stand-ins for a model's logits, from the token ids and positions.
        position = tf.cast(tf.range(spec.seq_len), tf.float32)
        start = tf.cast(windows["token_ids"] % 7, tf.float32) + 0.1 * position
        end = tf.cast(windows["token_ids"] % 5, tf.float32) - 0.1 * position
        spans = decode_spans(spec, start, end, windows, tf.shape(question)[0])
        return {"token_ids": windows["token_ids"], "max_context": windows["max_context"],
                "window_example": windows["window_example"],
                "start_byte": spans["start_byte"], "end_byte": spans["end_byte"],
                "score": spans["score"]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], tokenizer)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # FastBertNormalize, FastWordpieceTokenizeWithOffsets
    path = tmp_path / "qa.tflite"
    path.write_bytes(converter.convert())
    interpreter = InterpreterWithCustomOps(
        model_path=str(path),
        custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
    run = interpreter.get_signature_runner()

    questions = ["a b c d", "j", "él?"]
    contexts = ["a b c d e f g h i j a b c d e f", "", "Él vio 東京 😀 y café!"]
    got = run(question=np.array(questions), context=np.array(contexts))
    want = serve(tf.constant(questions), tf.constant(contexts))
    assert want["token_ids"].shape[0] > 3  # the long context has several windows
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value.numpy(), err_msg=name)
