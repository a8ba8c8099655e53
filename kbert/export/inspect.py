"""Reading exported SavedModels: `load` (with a clear message when tf-text ops are
missing), `inspect_saved_model` (signatures and the op audit) and `custom_ops`.

Nothing here imports tensorflow-text or the rest of kbert at module level, so a process
that only loads and inspects exports stays light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re

from kbert.export.layout import INFO_FILE, version_dir

# Set to "1" to load without importing tensorflow_text first: shows the message a process
# without tf-text gets (used by the tests; not for users).
SKIP_TF_TEXT_ENV = "KBERT_EXPORT_SKIP_TF_TEXT"

# The tf-text ops a kbert export may contain: the tokenizer's two (tf-text >= 2.12, which
# TF Serving >= 2.12 bundles, and both have TFLite kernels).
EXPECTED_CUSTOM_OPS = frozenset({"FastBertNormalize", "FastWordpieceTokenizeWithOffsets"})


class MissingOpError(RuntimeError):
    """A SavedModel uses an op this process has not registered (usually a tf-text op
    because tensorflow_text was not imported or does not match TensorFlow)."""


def load(path: str | os.PathLike):
    """Loads a kbert export (a version directory, or NAME directory -> latest version)
    with `tf.saved_model.load`, after importing tensorflow_text to register its ops.

    Returns the loaded object; call `obj.signatures["serving_default"](text=...)`. (TF's
    warnings about unsaved custom gradients are not shown: exports serve inference.)

    Raises:
        MissingOpError: an op in the graph is not registered; the message names the op and
            the tensorflow-text release that matches this TensorFlow.
    """
    import tensorflow as tf

    path = version_dir(path)
    if os.environ.get(SKIP_TF_TEXT_ENV) != "1":
        import tensorflow_text  # noqa: F401  registers FastBertNormalize & co.
    try:
        with _without_gradient_notices():
            return tf.saved_model.load(path)
    except Exception as error:  # TF raises different types for this across versions
        match = re.search(r"Op type not registered '([^']+)'", str(error))
        if not match:
            raise
        raise MissingOpError(_missing_op_message(path, match.group(1))) from None


class _GradientNoticeFilter(logging.Filter):
    """Drops TF's "Importing a function ... with ops with unsaved custom gradients" notice.

    A kbert export serves inference; its graphs hold custom-gradient ops (integer
    transposes, the key-bias identity) whose gradients are not saved, and TF logs one
    warning per function that has them (a dozen per load).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "with ops with unsaved custom gradients" not in record.getMessage()


@contextlib.contextmanager
def _without_gradient_notices():
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    notice_filter = _GradientNoticeFilter()
    for logger in loggers:
        logger.addFilter(notice_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice_filter)


def _missing_op_message(path: str, op: str) -> str:
    import tensorflow as tf

    major_minor = ".".join(tf.__version__.split(".")[:2])
    where = ("a tensorflow-text op (the tokenizer)" if op in EXPECTED_CUSTOM_OPS
             else "not a core TensorFlow op")
    return (f"{path} uses op {op!r}, {where}, which this process has not registered. "
            "Import tensorflow_text before loading (kbert.export.load does), with a "
            f"tensorflow-text release matching TensorFlow {tf.__version__}: "
            f"pip install 'tensorflow-text=={major_minor}.*'. TF Serving bundles "
            "tf-text; use TF Serving >= 2.12.")


def _saved_model_proto(path: str):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def op_types(path: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs: the graph_def's nodes and the nodes of
    every function in its library (function calls themselves left out)."""
    proto = _saved_model_proto(version_dir(path))
    ops = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
        ops.update(n.op for n in nodes if n.op not in functions)
    return ops


def custom_ops(path: str | os.PathLike) -> set[str]:
    """The op types of a SavedModel that are not core TensorFlow ops (core = those with a
    `tf.raw_ops` wrapper, which is generated for every op TensorFlow itself registers;
    library ops such as tf-text's get their wrappers elsewhere)."""
    import tensorflow as tf

    return {op for op in op_types(path) if not hasattr(tf.raw_ops, op)}


def inspect_saved_model(path: str | os.PathLike) -> dict:
    """What `kbert inspect` shows.

    Returns:
        {"path": the version directory,
         "signatures": {name: {"inputs": {key: (dtype, shape)}, "outputs": {...}}},
         "custom_ops": sorted op types outside core TF,
         "variables_bytes": size of variables/ on disk,
         "export": kbert's assets.extra/kbert_export.json (kind, seq_len, precision,
             versions) or None}
        dtype as a name ("string", "int32", ...), shape a list with None for unknown
        dimensions, or None for unknown rank.
    """
    import tensorflow as tf

    path = version_dir(path)
    proto = _saved_model_proto(path)

    def describe(infos):
        out = {}
        for key, info in sorted(infos.items()):
            shape = (None if info.tensor_shape.unknown_rank else
                     [None if d.size < 0 else d.size for d in info.tensor_shape.dim])
            out[key] = (tf.as_dtype(info.dtype).name, shape)
        return out

    signatures = {}
    for meta_graph in proto.meta_graphs:
        for name, signature in sorted(meta_graph.signature_def.items()):
            if name.startswith("__"):  # __saved_model_init_op
                continue
            signatures[name] = {"inputs": describe(signature.inputs),
                                "outputs": describe(signature.outputs)}
    variables = os.path.join(path, "variables")
    size = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables)
               ) if os.path.isdir(variables) else 0
    info_file = os.path.join(path, INFO_FILE)
    export = None
    if os.path.isfile(info_file):
        with open(info_file, encoding="utf-8") as f:
            export = json.load(f)
    return {"path": path, "signatures": signatures, "custom_ops": sorted(custom_ops(path)),
            "variables_bytes": size, "export": export}


def format_inspection(info: dict) -> str:
    """`inspect_saved_model`'s result as the text `kbert inspect` prints."""
    def shape(s):
        return "unknown rank" if s is None else "[" + ", ".join(
            "?" if d is None else str(d) for d in s) + "]"

    lines = [info["path"]]
    if info.get("export"):
        e = info["export"]
        lines.append(f"kbert export: {e['kind']}, T={e['seq_len']}, {e['precision']} "
                     f"(kbert {e['kbert']}, TensorFlow {e['tensorflow']}, "
                     f"tensorflow-text {e['tensorflow_text']})")
    for name, sig in info["signatures"].items():
        lines.append(f"signature {name}:")
        for kind in ("inputs", "outputs"):
            for key, (dtype, s) in sig[kind].items():
                lines.append(f"  {kind[:-1]:6} {key}: {dtype} {shape(s)}")
    lines.append("custom ops: " + (", ".join(info["custom_ops"]) or "none"))
    lines.append(f"variables: {info['variables_bytes']:,} bytes")
    return "\n".join(lines)
