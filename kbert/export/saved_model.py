"""`export_saved_model`: a kbert model directory -> a string-in SavedModel for TF Serving.

Layout written (what TF Serving polls)::

    ROOT/
      models.config                 model_config_list naming every NAME under ROOT
      NAME/
        VERSION/                    1, 2, ... (the next free number by default)
          saved_model.pb            signatures serving_default, tokenize, encode
          variables/                each weight once
          assets.extra/tf_serving_warmup_requests

A version directory is written into a hidden sibling (`.VERSION.tmp-*`, which TF Serving
ignores: not a number) and renamed into place, so a polling server never sees half of it.

Weights are stored once: the saved `tf.Module` tracks only the models' raw variables and
calls the Keras models through closures. (Keras' own `model.export` tracks the model and
writes every weight twice, FIELD_NOTES.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Callable

import tensorflow as tf

from kbert.atomic import atomic_directory
from kbert.export.graphs import (ServingFn, as_float32, check_inputs, encode_outputs,
                                 fill_mask_features, fill_mask_outputs)

logger = logging.getLogger(__name__)

KINDS = ("fill-mask", "embedding", "classification", "regression", "tagging", "qa")
PRECISIONS = ("float32", "bfloat16")
SIGNATURES = ("serving_default", "tokenize", "encode")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# What was exported and with what (kind, T, precision, versions); `kbert inspect` shows it.
INFO_FILE = os.path.join("assets.extra", "kbert_export.json")
MODELS_CONFIG = "models.config"
DEFAULT_SEQ_LEN = 128

# Inputs of the warm-up requests (a batch of 1 and a batch of 2), per input name.
_EXAMPLES = {
    "text": ["kbert makes BERT ready for production.", "The weather is nice today!"],
    "text_pair": ["BERT is ready for production.", "It rains."],
    "question": ["What does kbert make ready?", "How is the weather?"],
    "context": ["kbert makes BERT ready for production in TensorFlow.",
                "The weather is nice today, with sun all afternoon."],
}
_FILL_MASK_EXAMPLES = ["The capital of France is [MASK].", "I [MASK] this [MASK] a lot."]


@dataclasses.dataclass
class ServingGraph:
    """What an export is made of, before it is traced.

    Attributes:
        kind: one of KINDS.
        input_names: the string [B] inputs, e.g. ("text",) or ("question", "context").
        functions: signature name -> function of the checked inputs (name -> string [B])
            returning named tensors; "serving_default", "tokenize" and "encode".
        variables: the raw `tf.Variable`s the functions read (each once).
        seq_len: T.
        examples: input name -> example strings for the warm-up requests.
    """

    kind: str
    input_names: tuple[str, ...]
    functions: dict[str, ServingFn]
    variables: list[tf.Variable]
    seq_len: int
    examples: dict[str, list[str]]


class ServingModule(tf.Module):
    """The saved object: raw variables plus one `tf.function` per signature.

    Each function takes the inputs as string tensors of unknown rank (see
    `kbert.export.graphs.check_inputs` for why) and checks them in the graph.
    `concrete_functions()` gives the traced signatures; a converter that needs a known
    rank (TFLite) asks for `input_shape=[None]` (the rank check is then folded away).
    """

    def __init__(self, graph: ServingGraph):
        super().__init__(name="kbert_serving")
        self.kind = graph.kind
        self.input_names = graph.input_names
        # Tracking the raw variables (and not the Keras models) is what stores each once.
        self.model_variables = list(graph.variables)
        self._functions = graph.functions

    def concrete_functions(self, input_shape=None, guard_empty: bool = True
                           ) -> dict[str, Callable]:
        """Signature name -> concrete function taking the named string inputs.

        Args:
            input_shape: None (unknown rank, checked in the graph) or e.g. [None] for a
                converter that needs a known rank (TFLite).
            guard_empty: answer an empty batch with empty outputs without running the
                model on it (Keras' gather in the masked-LM head fails on B = 0); adds
                a `tf.cond`.
        """
        specs = [tf.TensorSpec(input_shape, tf.string, name=name) for name in self.input_names]
        return {name: self._wrap(fn, guard_empty).get_concrete_function(*specs)
                for name, fn in self._functions.items()}

    def _wrap(self, fn: ServingFn, guard_empty: bool):
        names = self.input_names

        def serve(*tensors):
            inputs = check_inputs(dict(zip(names, tensors)), names)
            if not guard_empty:
                return fn(inputs)

            def empty():
                # The outputs of a one-word text, cut to zero rows: the right dtypes and
                # inner shapes for any kind (tokenize's windows included).
                outputs = fn({name: tf.constant(["x"]) for name in names})
                return {k: v[:0] if v.shape.rank else v for k, v in outputs.items()}

            batch = tf.shape(inputs[names[0]])[0]
            return tf.cond(batch > 0, lambda: fn(inputs), empty)

        # Keyword names of the signature come from the TensorSpec names.
        return tf.function(serve, autograph=False)


# -- building the graph for a model directory ------------------------------------------------

def model_kind(model_dir: str | os.PathLike) -> str:
    """The export kind of a model directory: its task.json's task, else "fill-mask" when it
    has masked-LM heads, else "embedding"."""
    from kbert.model_dir import MLM_HEAD_KEYS, WEIGHTS_FILE, read_checkpoint
    from kbert.tasks.task_dir import read_task_spec

    spec = read_task_spec(model_dir)
    if spec is not None:
        return spec.task
    read_checkpoint(model_dir)  # a clear error for something that is not a model dir
    from safetensors import safe_open

    with safe_open(os.path.join(model_dir, WEIGHTS_FILE), framework="numpy") as f:
        keys = set(f.keys())
    return "fill-mask" if all(k in keys for k in MLM_HEAD_KEYS) else "embedding"


def build_serving_graph(model_dir: str | os.PathLike, kind: str | None = None,
                        seq_len: int | None = None, precision: str = "float32",
                        top_k: int = 5, pooling: str = "mean",
                        normalize: bool = False) -> ServingGraph:
    """Loads `model_dir` and builds the functions of its export.

    Args:
        model_dir: a kbert model directory (pre-trained or fine-tuned).
        kind: None (from the directory, see `model_kind`), or "fill-mask" / "embedding"
            for a plain model directory.
        seq_len: T; default: task.json's seq_len, else 128 (at most the model's
            max_sequence_length).
        precision: "float32", or "bfloat16": the encoder's weights are stored and used in
            bfloat16 (Keras policy "bfloat16"; LayerNorm parameters and a task head
            declared float32 stay float32), outputs stay float32. A "mixed_bfloat16"
            model rounds its float32 weights to bfloat16 at every call; storing them
            rounded once halves the export and saves those casts (base, batch 1: ~92 ->
            ~61 ms) for the same products.
        top_k: fill-mask: guesses per [MASK].
        pooling, normalize: embedding: "mean", "cls" or "pooled", and whether to
            L2-normalise (see kbert.tasks.embeddings; MiniLM-style sentence embeddings:
            mean + normalize).
    """
    import keras

    from kbert.model_dir import read_checkpoint
    from kbert.tasks.task_dir import read_task_spec
    from kbert.text import Tokenizer

    model_dir = os.fspath(model_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    found = model_kind(model_dir)
    spec = read_task_spec(model_dir)
    if kind is None:
        kind = found
    elif kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    elif spec is not None and kind != spec.task:
        raise ValueError(f"{model_dir} is a fine-tuned {spec.task} model (task.json); it "
                         f"exports as {spec.task}, not {kind}")
    elif kind == "fill-mask" and found != "fill-mask":
        raise ValueError(f"{model_dir} has no masked-LM head: fill-mask needs a model from "
                         "`kbert pretrain` or a converted checkpoint with cls.* heads; "
                         "export it with --kind embedding")
    checkpoint = read_checkpoint(model_dir)
    max_len = checkpoint.config.max_sequence_length
    if seq_len is None:
        seq_len = spec.seq_len if spec is not None else min(DEFAULT_SEQ_LEN, max_len)
    if not isinstance(seq_len, int) or seq_len < 8 or seq_len > max_len:
        raise ValueError(f"seq_len must be an int between 8 and the model's "
                         f"max_sequence_length {max_len}, got {seq_len!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16" if precision == "bfloat16" else "float32")
    try:
        if kind == "fill-mask":
            graph = _fill_mask_graph(checkpoint, tokenizer, seq_len, top_k, model_dir)
        elif kind == "embedding":
            graph = _embedding_graph(checkpoint, tokenizer, seq_len, pooling, normalize,
                                     model_dir)
        else:
            graph = _task_graph(model_dir, dataclasses.replace(spec, seq_len=seq_len),
                                tokenizer)
    finally:
        keras.config.set_dtype_policy(previous)
    return graph


def _raw_variables(*models) -> list[tf.Variable]:
    seen, variables = set(), []
    for model in models:
        for v in model.variables:
            raw = v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v
            if id(raw) not in seen:
                seen.add(id(raw))
                variables.append(raw)
    return variables


def _fill_mask_graph(checkpoint, tokenizer, seq_len, top_k, source) -> ServingGraph:
    from kbert.models import build_encoder
    from kbert.pretrainer import assign_weights, build_pretrainer

    encoder = build_encoder(checkpoint.config)
    model = build_pretrainer(encoder, checkpoint.config)  # shares the encoder's variables
    assign_weights(encoder, model, checkpoint.weights, source)
    return ServingGraph(
        kind="fill-mask", input_names=("text",), seq_len=seq_len,
        functions={
            "serving_default": lambda x: fill_mask_outputs(model, tokenizer, seq_len, top_k,
                                                           x["text"]),
            "tokenize": lambda x: fill_mask_features(tokenizer, seq_len, x["text"]),
            "encode": lambda x: encode_outputs(
                encoder, fill_mask_features(tokenizer, seq_len, x["text"])),
        },
        variables=_raw_variables(model), examples={"text": _FILL_MASK_EXAMPLES})


def _embedding_graph(checkpoint, tokenizer, seq_len, pooling, normalize,
                     source) -> ServingGraph:
    from kbert.model_dir import assign_encoder_weights
    from kbert.models import build_encoder
    from kbert.tasks.embeddings import (check_pooling, embedding_features,
                                        embedding_serving_outputs)

    check_pooling(pooling, None, False, checkpoint.config.num_layers)
    encoder = build_encoder(checkpoint.config)
    assign_encoder_weights(encoder, checkpoint.weights, source=source)
    return ServingGraph(
        kind="embedding", input_names=("text",), seq_len=seq_len,
        functions={
            "serving_default": lambda x: as_float32(embedding_serving_outputs(
                encoder, tokenizer, x, seq_len, pooling, normalize)),
            "tokenize": lambda x: embedding_features(tokenizer, x, seq_len),
            "encode": lambda x: encode_outputs(encoder, embedding_features(tokenizer, x,
                                                                           seq_len)),
        },
        variables=_raw_variables(encoder), examples={"text": _EXAMPLES["text"]})


def _task_graph(model_dir, spec, tokenizer) -> ServingGraph:
    from kbert.models import ENCODER_NAME
    from kbert.tasks.registry import get_task
    from kbert.tasks.task_dir import load_task_model

    try:
        task = get_task(spec.task)
    except ValueError as error:  # its task module is not in this kbert
        raise NotImplementedError(f"kbert cannot export {spec.task} models: {error}") from None
    try:
        names = tuple(task.serving_inputs(spec))
    except NotImplementedError:
        raise NotImplementedError(
            f"kbert cannot export {spec.task} models yet: its task module has no serving "
            "graph (Task.serving_inputs / serving_features / serving_outputs)") from None
    model, _, _ = load_task_model(model_dir)
    model_spec = spec  # with the seq_len asked for
    encoder = model.get_layer(ENCODER_NAME)
    return ServingGraph(
        kind=spec.task, input_names=names, seq_len=spec.seq_len,
        functions={
            "serving_default": lambda x: as_float32(
                task.serving_outputs(model, tokenizer, model_spec, x)),
            "tokenize": lambda x: task.serving_features(tokenizer, model_spec, x),
            "encode": lambda x: encode_outputs(
                encoder, task.serving_features(tokenizer, model_spec, x)),
        },
        variables=_raw_variables(model), examples={n: _EXAMPLES[n] for n in names})


# -- writing -------------------------------------------------------------------------------

def versions(name_dir: str | os.PathLike) -> list[int]:
    """The version numbers under ROOT/NAME (directories named by a positive integer)."""
    if not os.path.isdir(name_dir):
        return []
    return sorted(int(entry) for entry in os.listdir(name_dir)
                  if re.fullmatch(r"[0-9]+", entry) and int(entry) > 0
                  and os.path.isdir(os.path.join(name_dir, entry)))


def export_saved_model(model_dir: str | os.PathLike, out_root: str | os.PathLike = "saved_models",
                       name: str | None = None, version: int | None = None,
                       seq_len: int | None = None, kind: str | None = None,
                       precision: str = "float32", top_k: int = 5, pooling: str = "mean",
                       normalize: bool = False, warmup: bool = True,
                       models_config: bool = True, base_path: str = "/models",
                       tflite: bool = False, quantize: str | None = None) -> str:
    """Exports a kbert model directory as OUT_ROOT/NAME/VERSION; returns that path.

    Args:
        model_dir: a kbert model directory; its kind (see `model_kind`) picks the graph.
        out_root: the directory TF Serving's model base paths live in.
        name: the model name (default: the base name of `model_dir`).
        version: a positive int; default one more than the largest existing version. An
            existing version is a FileExistsError and nothing is changed.
        seq_len, kind, precision, top_k, pooling, normalize: see `build_serving_graph`.
        warmup: write assets.extra/tf_serving_warmup_requests.
        models_config: write / update OUT_ROOT/models.config listing every model there,
            with base paths `base_path`/NAME (where the serving container sees OUT_ROOT).
        tflite: also write VERSION/model.tflite, the same serving_default for TFLite
            (`kbert.export.tflite`), quantized by `quantize` (None, "dynamic", "float16").

    Signatures (all take the input names as string [B] tensors):
        serving_default: the model's results (see the kind's graph);
        tokenize: the packed int32 model inputs;
        encode: `sequence_output` float32 [N, T, H], `pooled_output` float32 [N, H].
    """
    model_dir = os.fspath(model_dir)
    if tflite or quantize is not None:
        from kbert.export.tflite import check_tflite_options
        check_tflite_options(tflite, quantize, precision)
    name = name or os.path.basename(os.path.normpath(os.path.abspath(model_dir)))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"model name {name!r} must be letters, digits, '_', '.', '-' "
                         "(it is a directory and a TF Serving model name)")
    name_dir = os.path.join(os.fspath(out_root), name)
    if version is None:
        version = (versions(name_dir) or [0])[-1] + 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    out = os.path.join(name_dir, str(version))
    if os.path.exists(out):
        raise FileExistsError(f"{out} already exists: versions are never overwritten "
                              "(leave out --version for the next free one)")

    graph = build_serving_graph(model_dir, kind=kind, seq_len=seq_len, precision=precision,
                                top_k=top_k, pooling=pooling, normalize=normalize)
    module = ServingModule(graph)
    signatures = module.concrete_functions()
    info = export_info(graph, model_dir, precision)
    try:
        _write(module, signatures, out, name, graph.examples if warmup else None,
               tflite, quantize, model_dir, info)
    except OSError as error:
        if os.path.isdir(out) and not isinstance(error, FileExistsError):
            raise FileExistsError(f"{out} was written by another export meanwhile; "
                                  "nothing of this one was kept") from None
        raise
    logger.info("exported %s (%s, T=%d, %s) to %s", model_dir, graph.kind, graph.seq_len,
                precision, out)
    if models_config:
        write_models_config(out_root, base_path=base_path)
    return out


def export_info(graph: ServingGraph, model_dir: str, precision: str) -> dict:
    """The content of assets.extra/kbert_export.json."""
    import tensorflow_text

    import kbert

    return {"kind": graph.kind, "inputs": list(graph.input_names), "seq_len": graph.seq_len,
            "precision": precision, "model_dir": os.path.abspath(model_dir),
            "kbert": kbert.__version__, "tensorflow": tf.__version__,
            "tensorflow_text": tensorflow_text.__version__}


def _write(module, signatures, out, name, examples, tflite, quantize, model_dir,
           info) -> None:
    """Everything of a version goes into the hidden temporary directory first."""
    with atomic_directory(out) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures,
                            options=tf.saved_model.SaveOptions(
                                experimental_custom_gradients=False))
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        if examples is not None:
            write_warmup_requests(os.path.join(tmp, WARMUP_FILE), name, examples)
        if tflite:
            from kbert.export.tflite import TFLITE_FILE, write_module_tflite
            write_module_tflite(module, os.path.join(tmp, TFLITE_FILE), quantize, model_dir,
                                info["seq_len"])
        # mkdtemp made it 0700: a serving container running as another user must read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)


def write_warmup_requests(path: str, name: str, examples: dict[str, list[str]]) -> None:
    """Writes TF Serving's warm-up file: a TFRecord of PredictionLogs, one PredictRequest
    on `serving_default` with a batch of 1 and one with a batch of 2."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in (1, 2):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = "serving_default"
            for input_name, strings in examples.items():
                request.inputs[input_name].CopyFrom(
                    tf.make_tensor_proto(strings[:batch], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_models_config(out_root: str | os.PathLike, base_path: str = "/models") -> str:
    """Writes OUT_ROOT/models.config (a ModelServerConfig text proto for
    `tensorflow_model_server --model_config_file`) naming every model under OUT_ROOT (a
    directory with at least one version), atomically. Returns its path."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    out_root = os.fspath(out_root)
    config = model_server_config_pb2.ModelServerConfig()
    for entry in sorted(os.listdir(out_root)):
        if not entry.startswith(".") and versions(os.path.join(out_root, entry)):
            model = config.model_config_list.config.add()
            model.name = entry
            model.base_path = f"{base_path.rstrip('/')}/{entry}"
            model.model_platform = "tensorflow"
    path = os.path.join(out_root, MODELS_CONFIG)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path
