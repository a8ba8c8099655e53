"""TFLite export of a string-in serving model (the runner, `TFLiteModel`, lives in
`kbert.serving.tflite_runtime`).

`export_tflite` converts the same function as the SavedModel's `serving_default` (strings
in, named tensors out; the tokenizer inside) with TFLite builtins only, plus the two
tf-text ops of kbert's tokenizer as custom ops:

    FastBertNormalize, FastWordpieceTokenizeWithOffsets

tf-text ships TFLite kernels for both (`tensorflow_text.tflite_registrar`). No Flex
delegate: no Python interpreter has one (docs/FIELD_NOTES.md "TFLite"), so a model that needed
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
`end_byte` int32 [B] (UTF-8 byte offsets into `context`, -1 for no answer) and `score`
(`QATask.tflite_outputs`); `TFLiteModel` then adds `answer`, `start_char` and `end_char` in Python, as the
SavedModel's graph computes them, so both return the same outputs.

Quantization (`quantize`):
    None        float32 weights and compute.
    "dynamic"   dynamic-range int8: weights stored as int8 (about 4x smaller), matrix
                products quantise activations on the fly.
    "float16"   weights stored as float16 (about 2x smaller), computed in float32.
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops a SavedModel loads with
from ai_edge_litert import schema_py_generated as schema

from kbert.export.graph import ServingModule, build_serving_graph
from kbert.export.layout import INFO_FILE
from kbert.export.settings import QUANTIZATIONS
from kbert.io.atomic import atomic_file
from kbert.io.model_dir import is_model_dir

logger = logging.getLogger(__name__)

# The only custom ops a kbert TFLite model may hold: the tokenizer's tf-text ops.
TOKENIZER_OPS = ("FastBertNormalize", "FastWordpieceTokenizeWithOffsets")

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
        info = _export_info(source)
        if info.get("kind") == "qa":
            raise ValueError(f"{source} is a QA export: its answer text needs string ops "
                             "TFLite has no builtins for; convert the model directory "
                             "instead (`kbert export MODEL_DIR --tflite` or "
                             "export_tflite(MODEL_DIR, ...)), which stops the graph at the "
                             "answer span")
        if info.get("length_multiple"):
            raise ValueError(f"{source} is a length-adaptive export (each batch computed on "
                             "its longest row); a TFLite model needs a static T: convert the "
                             "model directory instead (`kbert export MODEL_DIR --tflite` or "
                             "export_tflite(MODEL_DIR, ...)), or export with "
                             "--length-multiple 0")
        content = convert_saved_model(source, quantize)
        atomic_file(out_path, content)
    else:
        if not is_model_dir(source):
            raise ValueError(f"{source} is neither an exported SavedModel (saved_model.pb) "
                             "nor a kbert model directory (config.json, weights.safetensors)")
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
    """Converts a `kbert.export.graph.ServingModule`'s TFLite function (its task's
    `tflite_outputs`: serving_default, or for QA the graph up to the answer span; traced
    with rank-1 string inputs) and writes it to `out_path` atomically. Returns `out_path`.
    `source` names the model in error messages; `seq_len` is unused (the module's T).
    """
    if module.kind == "tagging":
        # Without the empty-batch tf.cond (TFLiteModel answers B = 0 itself), so that the
        # converter can prune the character-offset ops that no kept output needs.
        function = module.tflite_concrete_function(guard_empty=False)
        function = _without_outputs(function, module, CHAR_OFFSET_OUTPUTS)
    else:
        function = module.tflite_concrete_function()
    content = convert_function(function, module, quantize, source=source)
    atomic_file(out_path, content)
    logger.info("wrote %s (%.1f MB, quantize=%s)", out_path, len(content) / 2**20, quantize)
    return os.fspath(out_path)


def convert_saved_model(saved_model_dir: str | os.PathLike, quantize: str | None = None,
                        signature: str = SIGNATURE) -> bytes:
    """Converts one signature of an exported SavedModel to a TFLite flatbuffer (builtins
    + the tokenizer's custom ops) and checks its op list; returns the model's bytes."""
    source = os.fspath(saved_model_dir)
    converter = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=[signature])
    return _convert(converter, quantize, source)


def convert_function(function, trackable, quantize: str | None = None,
                     source: str = "model") -> bytes:
    """Converts a traced string-in function (a concrete function with rank-1 string
    inputs, e.g. `ServingModule.concrete_functions(input_shape=[None])["serving_default"]`)
    whose variables `trackable` holds; returns the checked TFLite model's bytes."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trackable)
    return _convert(converter, quantize, source)


def _convert(converter, quantize: str | None, source: str) -> bytes:
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
    builtin_names = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    unexpected = sorted({op for op in model_ops(content)
                         if op not in builtin_names and op not in TOKENIZER_OPS})
    if unexpected:
        raise ValueError(
            f"{source}: the TFLite model needs ops without a TFLite builtin kernel: "
            f"{unexpected}; only {list(TOKENIZER_OPS)} may be custom ops (rewrite the graph "
            "with core ops that have builtins, see docs/FIELD_NOTES.md, TFLite)")


# The tagger's character offsets come from Substr / StringLength (no TFLite builtins): the
# TFLite model leaves them out (the converter prunes what no output needs) and
# `TFLiteModel` computes them from the byte offsets, as for QA's answers.
CHAR_OFFSET_OUTPUTS = {"word_start_chars": "word_starts", "word_end_chars": "word_ends"}


def _without_outputs(function, module, names):
    """A concrete function returning `function`'s outputs minus `names`, same inputs."""
    specs = [tf.TensorSpec([None], tf.string, name=name) for name in module.input_names]

    def kept(*tensors):
        outputs = function(**dict(zip(module.input_names, tensors)))
        return {k: v for k, v in outputs.items() if k not in names}

    return tf.function(kept, autograph=False).get_concrete_function(*specs)


def _export_info(saved_model_dir: str) -> dict:
    """A kbert export's assets.extra/kbert_export.json ({} when there is no such file)."""
    path = os.path.join(saved_model_dir, INFO_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def __getattr__(name):
    # `kbert.export.tflite.TFLiteModel` was the runner's name before it moved to serving;
    # kept for code written against it (the one import here that goes up a layer).
    if name == "TFLiteModel":
        import warnings

        from kbert.serving.tflite_runtime import TFLiteModel  # lazy: compat alias, upward

        warnings.warn("kbert.export.tflite.TFLiteModel moved to "
                      "kbert.serving.tflite_runtime.TFLiteModel", DeprecationWarning,
                      stacklevel=2)
        return TFLiteModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
