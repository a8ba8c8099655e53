"""`TFLiteModel`: runs a kbert .tflite model (strings in, named numpy arrays out) with
`ai_edge_litert`'s interpreter and tf-text's kernels for the tokenizer ops.

What the TFLite graph cannot hold is finished here: a QA model stops at the answer span
(`start_byte`, `end_byte`; TFLite has no Substr / StringLength builtins), so the answer text
and its character offsets are cut out of the context here; a tagger's character offsets are
computed from its byte offsets. Both run the same TF functions the SavedModel's graph holds
(`kbert.tasks.qa.decode.answer_text`, `kbert.text.offsets.char_offsets`), eagerly on the
interpreter's outputs: one implementation, no Python copy to keep in step.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text
from ai_edge_litert.interpreter import InterpreterWithCustomOps

from kbert.export.tflite import CHAR_OFFSET_OUTPUTS, SIGNATURE
from kbert.tasks.qa.decode import answer_text
from kbert.text.offsets import char_offsets


class TFLiteModel:
    """Runs a kbert .tflite model: strings in, named numpy arrays out.

    Uses `ai_edge_litert`'s interpreter with tf-text's kernels for the tokenizer ops. Any
    batch size (inputs are resized per call). One call at a time per instance (a lock;
    TFLite interpreters are not thread-safe): use one instance per thread for parallelism.

    Args:
        path: the .tflite file.
        num_threads: interpreter threads (None: the runtime's default).

    Attributes:
        input_names: tuple of the string inputs, e.g. ("text",) or ("text", "text_pair").
        output_names: tuple of the output names: those of the SavedModel's
            serving_default (a QA model adds `start_byte` / `end_byte`, see above).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such TFLite model file")
        tf_text = tensorflow_text
        try:
            self._interpreter = InterpreterWithCustomOps(
                model_path=path, num_threads=num_threads,
                custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS)
        except ValueError as error:
            raise ValueError(f"{path}: not a TFLite model ({error})") from None
        signatures = self._interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ValueError(f"{path}: no {SIGNATURE!r} signature (has "
                             f"{sorted(signatures)}); export it with kbert")
        self.path = path
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        self.input_names = tuple(signatures[SIGNATURE]["inputs"])
        self._model_outputs = tuple(signatures[SIGNATURE]["outputs"])
        # A QA span model: the answer text is cut out here (see the module docstring).
        self._spans = ({"start_byte", "end_byte"} <= set(self._model_outputs)
                       and "context" in self.input_names)
        # A tagger: character offsets computed here from the byte offsets.
        self._char_offsets = ("word_starts" in self._model_outputs
                              and "text" in self.input_names)
        self.output_names = self._model_outputs + (
            ("answer", "start_char", "end_char") if self._spans else ()) + (
            tuple(CHAR_OFFSET_OUTPUTS) if self._char_offsets else ())
        self._lock = threading.Lock()

    def __call__(self, **inputs: Sequence[str] | Sequence[bytes]) -> dict[str, np.ndarray]:
        """Runs the model on a batch.

        Args:
            **inputs: one list of strings (str or UTF-8 bytes) per input name, all of the
                same length B (B = 0 gives empty outputs).

        Returns:
            {output name: array [B, ...]}; string outputs (e.g. `labels`) are numpy object
            arrays of bytes, as a SavedModel returns them.

        Raises:
            ValueError: a missing or unknown input name, an input that is not a list of
                strings, or inputs of different lengths.
        """
        batch = self._inputs(inputs)
        if not len(next(iter(batch.values()), ())):
            return self._empty_outputs()
        with self._lock:
            outputs = self._runner(**batch)
        outputs = {name: outputs[name] for name in self._model_outputs}
        if self._spans:
            outputs.update(_answer_text(batch["context"], outputs["start_byte"],
                                        outputs["end_byte"]))
        self._add_char_offsets(batch.get("text"), outputs)
        return outputs

    def _add_char_offsets(self, text, outputs: dict) -> None:
        if self._char_offsets:
            for name, byte_name in CHAR_OFFSET_OUTPUTS.items():
                outputs[name] = char_offsets(tf.constant(text, tf.string),
                                             tf.constant(outputs[byte_name])).numpy()

    def _empty_outputs(self) -> dict[str, np.ndarray]:
        """The outputs of an empty batch, without running the interpreter (which fails on
        reading some zero-sized outputs: "Invalid tensor size"): every dimension that is
        not fixed in the model is 0."""
        details = self._runner.get_output_details()
        outputs = {}
        for name in self._model_outputs:
            shape = [max(int(d), 0) for d in details[name]["shape_signature"]]
            dtype = details[name]["dtype"]
            outputs[name] = np.zeros(shape, object if dtype == np.bytes_ else dtype)
        if self._spans:
            outputs.update(_answer_text(np.zeros([0], object), outputs["start_byte"],
                                        outputs["end_byte"]))
        self._add_char_offsets(np.zeros([0], object), outputs)
        return outputs

    def _inputs(self, inputs: Mapping[str, Iterable]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        unknown = sorted(set(inputs) - set(self.input_names))
        if missing or unknown:
            raise ValueError(f"{self.path}: inputs must be {list(self.input_names)}; "
                             f"missing {missing}, unknown {unknown}")
        arrays = {}
        for name in self.input_names:
            values = inputs[name]
            if isinstance(values, (str, bytes)):
                raise ValueError(f"input {name!r} must be a list of strings (a batch), got "
                                 "a single string")
            values = list(values)
            for i, value in enumerate(values):
                if not isinstance(value, (str, bytes)):
                    raise ValueError(f"input {name!r}[{i}] must be a string, got "
                                     f"{type(value).__name__}")
            arrays[name] = np.array(
                [v.encode("utf-8") if isinstance(v, str) else v for v in values],
                dtype=object).reshape([len(values)])
        sizes = {name: len(a) for name, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs must have the same batch size, got {sizes}")
        return arrays


def _answer_text(context: np.ndarray, start_byte: np.ndarray,
                 end_byte: np.ndarray) -> dict[str, np.ndarray]:
    """`answer_text` (the SavedModel graph's own function) on numpy arrays: `answer`
    object [B] of bytes, `start_char` / `end_char` int32 [B]."""
    text = answer_text(tf.constant(context, tf.string, shape=[len(context)]),
                       tf.constant(start_byte, tf.int32), tf.constant(end_byte, tf.int32))
    return {name: value.numpy() for name, value in text.items()}
