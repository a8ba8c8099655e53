"""Traced graphs in tests: their op listing (for the op-set checks of exports and text ops)
and a TFLite signature runner of one (builtins plus the tokenizer's custom ops)."""

import tensorflow as tf
import tensorflow_text as tf_text


def op_types(concrete_function) -> set[str]:
    graph_def = concrete_function.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:  # cond branches and other nested graphs
        ops |= {node.op for node in function.node_def}
    return ops


def tflite_runner(concrete_function, trackable):
    """Converts `concrete_function` (variables held by `trackable`) with TFLite builtins
    plus custom ops, and returns the interpreter's signature runner with tf-text's kernels
    registered."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True
    # ai_edge_litert's interpreter, as kbert's runtime uses (tf.lite's is deprecated).
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    interpreter = InterpreterWithCustomOps(
        model_content=converter.convert(),
        custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
    return interpreter.get_signature_runner()
