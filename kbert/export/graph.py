"""What an export is made of, before it is written: `build_serving_graph(model_dir)` loads a
model directory and returns a `ServingGraph` (the signature functions and the raw variables
they read); `ServingModule` is the `tf.Module` that the SavedModel writer and the TFLite
converter both trace.

The functions come from the task (`kbert.tasks.base.Task.serving_*`), the fill-mask graph
(`kbert.tasks.fill_mask`) or the embedding graph (`kbert.tasks.embeddings`); this module adds
the input checks and the `encode` signature. Everything runs inside a `tf.function` whose
inputs are string tensors; only core TF ops are added (plus the tokenizer's two tf-text
ops; docs/FIELD_NOTES.md, "TFLite").
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import keras
import tensorflow as tf
from safetensors import safe_open

from kbert.convert.references import resolve_model
from kbert.export.settings import PRECISIONS
from kbert.io.model_dir import (MLM_HEAD_KEYS, WEIGHTS_FILE, assign_encoder_weights,
                                read_checkpoint)
from kbert.models.encoder import build_encoder
from kbert.models.pretrainer import assign_weights, build_pretrainer
from kbert.tasks.embeddings import check_pooling, embedding_features, embedding_serving_outputs
from kbert.tasks.fill_mask import fill_mask_features, fill_mask_outputs
from kbert.tasks.registry import kinds as task_kinds, task_for_kind
from kbert.tasks.spec import DEFAULT_LENGTH_MULTIPLE, check_length_multiple
from kbert.tasks.task_dir import load_task_model, read_task_spec
from kbert.text import Tokenizer

# The kinds of models that are not fine-tuned; fine-tuned ones export as their task kind.
BASE_KINDS = ("fill-mask", "embedding")
KINDS = BASE_KINDS + ("classification", "multilabel", "regression", "tagging", "qa")

DEFAULT_SEQ_LEN = 128


def check_inputs(inputs: Mapping[str, tf.Tensor], names: tuple[str, ...]) -> dict[str, tf.Tensor]:
    """Checks in the graph what a loaded signature does not: every input is a rank-1
    string batch [B], and all inputs have the same B.

    The signatures take inputs of unknown rank on purpose: with a declared shape [None],
    TF's graph optimiser folds `Rank` to the constant 1, so a rank-2 tensor would run
    silently (docs/FIELD_NOTES.md "SavedModel export"). A failed check raises InvalidArgumentError (TF Serving:
    INVALID_ARGUMENT) whose message names the input; nothing downstream runs first,
    because every later op depends on the checks.

    Args:
        inputs: name -> string tensor of any shape.
        names: the input names, first one the reference for the batch size.

    Returns:
        name -> string [B] tensors (static shape [None]).
    """
    checks = []
    for name in names:
        rank = tf.rank(inputs[name])
        checks.append(tf.debugging.Assert(
            tf.equal(rank, 1),
            [f"input `{name}` must be a rank-1 string batch [B]; got a tensor of rank", rank],
            name=f"check_rank_{name}"))
    with tf.control_dependencies(checks):
        flat = {name: tf.reshape(inputs[name], [-1]) for name in names}
    first = names[0]
    sizes = []
    for name in names[1:]:
        n_first, n_other = tf.shape(flat[first])[0], tf.shape(flat[name])[0]
        sizes.append(tf.debugging.Assert(
            tf.equal(n_first, n_other),
            [f"input `{name}` must have as many rows as `{first}`: `{first}` has", n_first,
             f"rows, `{name}` has", n_other], name=f"check_batch_{name}"))
    with tf.control_dependencies(sizes):
        return {name: tf.identity(flat[name]) for name in names}


def encode_outputs(encoder, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The encoder's `sequence_output` float32 [N, T, H] and `pooled_output` float32 [N, H]
    for packed features (token_ids / segment_ids / padding_mask int32 [N, T])."""
    outputs = encoder({k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")},
                      training=False)
    return {"sequence_output": tf.cast(outputs["sequence_output"], tf.float32),
            "pooled_output": tf.cast(outputs["pooled_output"], tf.float32)}


def as_float32(outputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Floating outputs as float32 (a bfloat16 export computes in bfloat16 inside)."""
    return {k: tf.cast(v, tf.float32) if v.dtype.is_floating else v for k, v in outputs.items()}


ServingFn = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]


# Inputs of the warm-up requests (a batch of 1, a batch of 2, and the first repeated to fill T),
# per input name.
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
        length_multiple: the signatures compute on the batch's longest row rounded up to
            this (0: on T positions); `tflite_function` always on T.
        examples: input name -> example strings for the warm-up requests.
        tflite_function: what a TFLite model holds instead of serving_default, when the
            task's outputs need ops TFLite lacks (`Task.tflite_outputs`); None: the same.
    """

    kind: str
    input_names: tuple[str, ...]
    functions: dict[str, ServingFn]
    variables: list[tf.Variable]
    seq_len: int
    examples: dict[str, list[str]]
    tflite_function: ServingFn | None = None
    length_multiple: int = 0


class ServingModule(tf.Module):
    """The saved object: raw variables plus one `tf.function` per signature.

    Each function takes the inputs as string tensors of unknown rank (see
    `kbert.export.graph.check_inputs` for why) and checks them in the graph.
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
        self._tflite_function = graph.tflite_function or graph.functions["serving_default"]

    def tflite_concrete_function(self, guard_empty: bool = True) -> Callable:
        """The function a TFLite model converts (rank-1 string inputs): the graph's
        `tflite_function`, else serving_default."""
        specs = [tf.TensorSpec([None], tf.string, name=name) for name in self.input_names]
        return self._wrap(self._tflite_function, guard_empty).get_concrete_function(*specs)

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
    spec = read_task_spec(model_dir)
    if spec is not None:
        return spec.task
    read_checkpoint(model_dir)  # a clear error for something that is not a model dir
    with safe_open(os.path.join(model_dir, WEIGHTS_FILE), framework="numpy") as f:
        keys = set(f.keys())
    return "fill-mask" if all(k in keys for k in MLM_HEAD_KEYS) else "embedding"


def build_serving_graph(model_dir: str | os.PathLike, kind: str | None = None,
                        seq_len: int | None = None, precision: str = "float32",
                        top_k: int = 5, pooling: str = "mean",
                        normalize: bool = False,
                        length_multiple: int = DEFAULT_LENGTH_MULTIPLE) -> ServingGraph:
    """Loads `model_dir` and builds the functions of its export.

    Args:
        model_dir: a kbert model directory (pre-trained or fine-tuned).
        kind: None (from the directory, see `model_kind`), "fill-mask" for a plain model
            directory with masked-LM heads, or "embedding" for any (a fine-tuned model's
            head is then left out).
        seq_len: T; default: task.json's seq_len, else 128 (at most the model's
            max_sequence_length).
        precision: "float32", or "bfloat16": the encoder's weights are stored and used in
            bfloat16 (Keras policy "bfloat16"; LayerNorm parameters and a task head
            declared float32 stay float32), outputs stay float32. A "mixed_bfloat16"
            model rounds its float32 weights to bfloat16 at every call; storing them
            rounded once halves the export and saves those casts (docs/PERF_LAYERS.md).
        top_k: fill-mask: guesses per [MASK].
        pooling, normalize: embedding: "mean", "cls" or "pooled", and whether to
            L2-normalise (see kbert.tasks.embeddings; MiniLM-style sentence embeddings:
            mean + normalize).
        length_multiple: the SavedModel signatures compute each batch on its longest
            packed row rounded up to this (at most T); 0: on all T positions
            (`kbert.tasks.spec.TaskSpec.length_multiple`). The TFLite function always pads
            to T: a static shape is what the converter and interpreter handle well.
    """
    model_dir = resolve_model(model_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    found = model_kind(model_dir)
    spec = read_task_spec(model_dir)
    if kind is None:
        kind = found
    elif kind not in BASE_KINDS + task_kinds():
        raise ValueError(f"unknown kind {kind!r}; choose one of "
                         f"{BASE_KINDS + task_kinds()}")
    elif spec is not None and kind not in (spec.task, "embedding"):
        # "embedding" stays open: a fine-tuned encoder's vectors, as `kbert embed` gives.
        raise ValueError(f"{model_dir} is a fine-tuned {spec.task} model (task.json); it "
                         f"exports as {spec.task} (or embedding), not {kind}")
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
    check_length_multiple(length_multiple)
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16" if precision == "bfloat16" else "float32")
    try:
        if kind == "fill-mask":
            graph = _fill_mask_graph(checkpoint, tokenizer, seq_len, top_k, model_dir,
                                     length_multiple)
        elif kind == "embedding":
            graph = _embedding_graph(checkpoint, tokenizer, seq_len, pooling, normalize,
                                     model_dir, length_multiple)
        else:
            graph = _task_graph(model_dir, dataclasses.replace(
                spec, seq_len=seq_len, length_multiple=length_multiple), tokenizer)
    finally:
        keras.config.set_dtype_policy(previous)
    graph.length_multiple = length_multiple
    return graph


def raw_variables(*models) -> list[tf.Variable]:
    seen, variables = set(), []
    for model in models:
        for v in model.variables:
            raw = v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v
            if id(raw) not in seen:
                seen.add(id(raw))
                variables.append(raw)
    return variables


def _signatures(kind: str, input_names: tuple[str, ...], features: ServingFn,
                outputs: ServingFn, encoder, model, seq_len: int,
                tflite_outputs: ServingFn | None = None) -> ServingGraph:
    """The one builder of every export: a serving half (`features`: strings -> packed
    inputs; `outputs`: strings -> results) becomes the signatures serving_default
    (`outputs`), tokenize (`features`) and encode (the encoder on `features`)."""
    return ServingGraph(
        kind=kind, input_names=input_names, seq_len=seq_len,
        functions={
            "serving_default": lambda x: as_float32(outputs(x)),
            "tokenize": features,
            "encode": lambda x: encode_outputs(encoder, features(x)),
        },
        tflite_function=None if tflite_outputs is None else (
            lambda x: as_float32(tflite_outputs(x))),
        variables=raw_variables(model),
        examples={n: _EXAMPLES.get(n, _EXAMPLES["text"]) for n in input_names})


def _fill_mask_graph(checkpoint, tokenizer, seq_len, top_k, source,
                     multiple) -> ServingGraph:
    encoder = build_encoder(checkpoint.config)
    model = build_pretrainer(encoder, checkpoint.config)  # shares the encoder's variables
    assign_weights(encoder, model, checkpoint.weights, source)
    graph = _signatures(
        "fill-mask", ("text",),
        features=lambda x: fill_mask_features(tokenizer, seq_len, x["text"], multiple),
        outputs=lambda x: fill_mask_outputs(model, tokenizer, seq_len, top_k, x["text"],
                                            multiple),
        encoder=encoder, model=model, seq_len=seq_len)
    graph.examples = {"text": _FILL_MASK_EXAMPLES}
    return graph


def _embedding_graph(checkpoint, tokenizer, seq_len, pooling, normalize,
                     source, multiple) -> ServingGraph:
    check_pooling(pooling, None, False, checkpoint.config.num_layers)
    encoder = build_encoder(checkpoint.config)
    assign_encoder_weights(encoder, checkpoint.weights, source=source)

    def outputs(x, multiple=multiple):
        return embedding_serving_outputs(encoder, tokenizer, x, seq_len, pooling, normalize,
                                         length_multiple=multiple)

    return _signatures(
        "embedding", ("text",),
        features=lambda x: embedding_features(tokenizer, x, seq_len, multiple),
        outputs=outputs, tflite_outputs=lambda x: outputs(x, multiple=0),
        encoder=encoder, model=encoder, seq_len=seq_len)


def _task_graph(model_dir, spec, tokenizer) -> ServingGraph:
    try:
        task = task_for_kind(spec.task)
    except ValueError as error:  # a kind no registered task writes
        raise NotImplementedError(f"kbert cannot export {spec.task} models: {error}") from None
    try:
        names = tuple(task.serving_inputs(spec))
    except NotImplementedError:
        raise NotImplementedError(
            f"kbert cannot export {spec.task} models yet: its task module has no serving "
            "graph (Task.serving_inputs / serving_features / serving_outputs)") from None
    model, _, _ = load_task_model(model_dir)
    static = dataclasses.replace(spec, length_multiple=0)  # TFLite: every row T long
    return _signatures(
        spec.task, names,
        features=lambda x: task.serving_features(tokenizer, spec, x),
        outputs=lambda x: task.serving_outputs(model, tokenizer, spec, x),
        tflite_outputs=lambda x: task.tflite_outputs(model, tokenizer, static, x),
        encoder=model.encoder, model=model, seq_len=spec.seq_len)
