"""TFLite export of a string-in serving model, and `TFLiteModel`, a small runner for it.

`export_tflite` converts the same function as the SavedModel's `serving_default` (strings
in, named tensors out; the tokenizer inside) with TFLite builtins only, plus the two
tf-text ops of kbert's tokenizer as custom ops:

    FastBertNormalize, FastWordpieceTokenizeWithOffsets

tf-text ships TFLite kernels for both (`tensorflow_text.tflite_registrar`). No Flex
delegate: no Python interpreter has one (FIELD_NOTES "TFLite"), so a model that needed
SELECT_TF_OPS could not run. Any other op that has no builtin would be left in the model
as an unresolvable custom op; `export_tflite` reads the converted model's op list and
refuses such a model, naming the ops.

Where the file goes: `kbert export ... --tflite` writes `model.tflite` inside the version
directory, next to saved_model.pb. That is TF Serving's own place for it (its
`--prefer_tflite_model` flag looks for `model.tflite` in the SavedModel directory); by
default TF Serving reads only saved_model.pb, variables/, assets/ and assets.extra/ and
ignores the file.

QA: the SavedModel cuts the answer out of the context with Substr / StringLength, which
have no TFLite builtins. The TFLite model of a QA export stops at the span: `start_byte`,
`end_byte` int32 [B] (UTF-8 byte offsets into `context`, -1 for no answer) and `score`;
`TFLiteModel` then adds `answer`, `start_char` and `end_char` in Python, as the
SavedModel's graph computes them, so both return the same outputs.

Quantization (`quantize`):
    None        float32 weights and compute.
    "dynamic"   dynamic-range int8: weights stored as int8 (about 4x smaller), matrix
                products quantise activations on the fly.
    "float16"   weights stored as float16 (about 2x smaller), computed in float32.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# The only custom ops a kbert TFLite model may hold: the tokenizer's tf-text ops.
TOKENIZER_OPS = ("FastBertNormalize", "FastWordpieceTokenizeWithOffsets")
QUANTIZATIONS = (None, "dynamic", "float16")
TFLITE_FILE = "model.tflite"
SIGNATURE = "serving_default"


def export_tflite(source: str | os.PathLike, out_path: str | os.PathLike,
                  quantize: str | None = None, seq_len: int | None = None,
                  **graph_options) -> str:
    """Writes a string-in TFLite model of `source`'s serving function. Returns `out_path`.

    Args:
        source: an exported SavedModel directory (holds saved_model.pb; its
            `serving_default` is converted) or a kbert model directory (its export graph
            is built as `kbert export` builds it, with `seq_len` and `graph_options`).
        out_path: the .tflite file to write (written beside, then renamed into place).
        quantize: None, "dynamic" or "float16" (see the module docstring).
        seq_len: T for a model directory (default: the task's seq_len, else 128); not
            allowed with a SavedModel, whose T is fixed.
        **graph_options: for a model directory, `kind`, `top_k`, `pooling`, `normalize`
            of `kbert.export.saved_model.build_serving_graph`.

    Raises:
        ValueError: unknown `quantize`, options given with a SavedModel, `source` neither
            a SavedModel nor a model directory, or an op in the converted model other than
            TFLite builtins and TOKENIZER_OPS (named).
    """
    check_tflite_options(True, quantize, graph_options.pop("precision", "float32"))
    source = os.fspath(source)
    if _is_saved_model(source):
        if seq_len is not None or graph_options:
            raise ValueError(f"{source} is an exported SavedModel, its sequence length and "
                             "graph are fixed; seq_len and graph options apply only to a "
                             "model directory")
        if _export_kind(source) == "qa":
            raise ValueError(f"{source} is a QA export: its answer text needs string ops "
                             "TFLite has no builtins for; convert the model directory "
                             "instead (`kbert export MODEL_DIR --tflite` or "
                             "export_tflite(MODEL_DIR, ...)), which stops the graph at the "
                             "answer span")
        content = convert_saved_model(source, quantize)
        _write_atomically(out_path, content)
    else:
        from kbert.model_dir import is_model_dir
        if not is_model_dir(source):
            raise ValueError(f"{source} is neither an exported SavedModel (saved_model.pb) "
                             "nor a kbert model directory (config.json, weights.safetensors)")
        from kbert.export.saved_model import ServingModule, build_serving_graph

        graph = build_serving_graph(source, seq_len=seq_len, **graph_options)
        write_module_tflite(ServingModule(graph), out_path, quantize, source, graph.seq_len)
    return os.fspath(out_path)


def check_tflite_options(tflite: bool, quantize: str | None, precision: str = "float32"):
    """Raises ValueError for options a TFLite export cannot take (checked before any
    work is done)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize is not None and not tflite:
        raise ValueError("quantize applies to the TFLite model only: add --tflite")
    if tflite and precision != "float32":
        raise ValueError(f"the TFLite model is exported from the float32 graph, not "
                         f"{precision}; use --quantize dynamic|float16 for a smaller model")


def write_module_tflite(module, out_path: str | os.PathLike, quantize: str | None = None,
                        source: str = "model", seq_len: int | None = None) -> str:
    """Converts a `kbert.export.saved_model.ServingModule`'s serving_default (traced with
    rank-1 string inputs) and writes it to `out_path` atomically. Returns `out_path`.

    For a QA module, the span graph of `_qa_span_module` is converted instead (see the
    module docstring); it is rebuilt from `source`, the model directory, with `seq_len`.
    """
    if module.kind == "qa":
        module = _qa_span_module(source, seq_len)
    if module.kind == "tagging":
        # Without the empty-batch tf.cond (TFLiteModel answers B = 0 itself), so that the
        # converter can prune the character-offset ops that no kept output needs.
        function = module.concrete_functions(input_shape=[None], guard_empty=False)[SIGNATURE]
        function = _without_outputs(function, module, CHAR_OFFSET_OUTPUTS)
    else:
        function = module.concrete_functions(input_shape=[None])[SIGNATURE]
    content = convert_function(function, module, quantize, source=source)
    _write_atomically(out_path, content)
    logger.info("wrote %s (%.1f MB, quantize=%s)", out_path, len(content) / 2**20, quantize)
    return os.fspath(out_path)


def convert_saved_model(saved_model_dir: str | os.PathLike, quantize: str | None = None,
                        signature: str = SIGNATURE) -> bytes:
    """Converts one signature of an exported SavedModel to a TFLite flatbuffer (builtins
    + the tokenizer's custom ops) and checks its op list; returns the model's bytes."""
    import tensorflow as tf

    _import_tf_text()  # the tf-text ops must be registered to load the SavedModel
    source = os.fspath(saved_model_dir)
    converter = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=[signature])
    return _convert(converter, quantize, source)


def convert_function(function, trackable, quantize: str | None = None,
                     source: str = "model") -> bytes:
    """Converts a traced string-in function (a concrete function with rank-1 string
    inputs, e.g. `ServingModule.concrete_functions(input_shape=[None])["serving_default"]`)
    whose variables `trackable` holds; returns the checked TFLite model's bytes."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable)
    return _convert(converter, quantize, source)


def _convert(converter, quantize: str | None, source: str) -> bytes:
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # The tf-text ops become custom ops; every other op must have a builtin, which
    # check_ops verifies on the result (the converter itself lets any op through).
    converter.allow_custom_ops = True
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    content = converter.convert()
    check_ops(content, source=source)
    return content


def model_ops(content: bytes) -> list[str]:
    """The operators a TFLite flatbuffer uses: builtin names ("FULLY_CONNECTED") and
    custom-op names ("FastBertNormalize"), in the model's operator-code order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    builtin_names = {code: name for name, code in vars(schema.BuiltinOperator).items()
                     if not name.startswith("_")}
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in BuiltinCode; older ones in DeprecatedBuiltinCode.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.append(code.CustomCode().decode())
        else:
            ops.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    return ops


def check_ops(content: bytes, source: str = "model") -> None:
    """Raises ValueError when the model holds a custom op other than TOKENIZER_OPS (an
    op TFLite has no builtin for, or a Flex op that no Python interpreter can run)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin_names = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    unexpected = sorted({op for op in model_ops(content)
                         if op not in builtin_names and op not in TOKENIZER_OPS})
    if unexpected:
        raise ValueError(
            f"{source}: the TFLite model needs ops without a TFLite builtin kernel: "
            f"{unexpected}; only {list(TOKENIZER_OPS)} may be custom ops (rewrite the graph "
            "with core ops that have builtins, see FIELD_NOTES 'TFLite')")


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
        from ai_edge_litert.interpreter import InterpreterWithCustomOps

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such TFLite model file")
        tf_text = _import_tf_text()
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
            from kbert.text.offsets import char_offsets_numpy
            for name, byte_name in CHAR_OFFSET_OUTPUTS.items():
                outputs[name] = char_offsets_numpy(text, outputs[byte_name])

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


# The tagger's character offsets come from Substr / StringLength (no TFLite builtins): the
# TFLite model leaves them out (the converter prunes what no output needs) and
# `TFLiteModel` computes them from the byte offsets, as for QA's answers.
CHAR_OFFSET_OUTPUTS = {"word_start_chars": "word_starts", "word_end_chars": "word_ends"}


def _without_outputs(function, module, names):
    """A concrete function returning `function`'s outputs minus `names`, same inputs."""
    import tensorflow as tf

    specs = [tf.TensorSpec([None], tf.string, name=name) for name in module.input_names]

    def kept(*tensors):
        outputs = function(**dict(zip(module.input_names, tensors)))
        return {k: v for k, v in outputs.items() if k not in names}

    return tf.function(kept, autograph=False).get_concrete_function(*specs)


def _qa_span_module(model_dir: str, seq_len: int | None):
    """A ServingModule whose serving_default is QA's serving graph up to the best span:
    `start_byte`, `end_byte` int32 [B] and `score` float32 [B] (QATask.serving_outputs
    without `answer_text`, whose string ops TFLite lacks)."""
    import dataclasses

    import tensorflow as tf

    from kbert.export.saved_model import ServingGraph, ServingModule, _raw_variables
    from kbert.tasks.qa import MODEL_INPUTS
    from kbert.tasks.qa_decode import decode_spans
    from kbert.tasks.qa_windows import qa_windows
    from kbert.tasks.task_dir import load_task_model
    from kbert.text import Tokenizer

    model, spec, checkpoint = load_task_model(model_dir)
    if seq_len is not None:
        spec = dataclasses.replace(spec, seq_len=seq_len)
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)

    def spans(x):
        windows = qa_windows(tokenizer, spec, x["question"], x["context"])
        outputs = model({name: windows[name] for name in MODEL_INPUTS}, training=False)
        best = decode_spans(spec, outputs["start_logits"], outputs["end_logits"], windows,
                            tf.shape(x["question"])[0])
        return {"start_byte": best["start_byte"], "end_byte": best["end_byte"],
                "score": tf.cast(best["score"], tf.float32)}

    return ServingModule(ServingGraph(
        kind="qa", input_names=("question", "context"), functions={SIGNATURE: spans},
        variables=_raw_variables(model), seq_len=spec.seq_len, examples={}))


def _answer_text(context: np.ndarray, start_byte: np.ndarray,
                 end_byte: np.ndarray) -> dict[str, np.ndarray]:
    """`kbert.tasks.qa_decode.answer_text` in Python: the answers cut from the UTF-8
    contexts (bytes, "" for no answer) and their character offsets (-1 for none)."""
    answers, starts, ends = [], [], []
    for text, start, end in zip(context, start_byte.tolist(), end_byte.tolist()):
        if start < 0:
            answers.append(b"")
            starts.append(-1)
            ends.append(-1)
            continue
        answer = _strip_dropped(text[start:max(end, start)])
        first = len(text[:start].decode("utf-8", errors="replace"))
        answers.append(answer)
        starts.append(first)
        ends.append(first + len(answer.decode("utf-8", errors="replace")))
    return {"answer": np.array(answers, dtype=object).reshape([len(answers)]),
            "start_char": np.array(starts, np.int32), "end_char": np.array(ends, np.int32)}


def _strip_dropped(answer: bytes) -> bytes:
    """`answer` without the trailing characters the normaliser drops, as
    `kbert.tasks.qa_decode.TRAILING_DROPPED` (RE2's \\p{..} classes, which `re` lacks)."""
    import unicodedata

    text = answer.decode("utf-8", errors="surrogateescape")
    end = len(text)
    while end and (text[end - 1] == "\ufffd" or unicodedata.category(text[end - 1]) in
                   ("Cc", "Cf", "Co")):
        end -= 1
    return text[:end].encode("utf-8", errors="surrogateescape")


def _export_kind(saved_model_dir: str) -> str | None:
    """The kind recorded in a kbert export's assets.extra/kbert_export.json (None when
    there is no such file)."""
    import json

    from kbert.export.saved_model import INFO_FILE

    path = os.path.join(saved_model_dir, INFO_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("kind")


def _is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _write_atomically(path: str | os.PathLike, content: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _import_tf_text():
    import tensorflow_text

    return tensorflow_text
