"""`Task`: everything kbert needs from one fine-tuning task, in one class.

One subclass per task: kbert's own live in `classification/task.py`, `tagging/task.py` and
`qa/task.py` and take their attributes from their package's card (registered with
`kbert.tasks.registry.register_card`); a task defined elsewhere registers with
`@kbert.tasks.registry.register_task`. The runner (`kbert.training.finetune`) owns the loop
(optimizer, model.fit, eval each epoch, best checkpoint, metrics.json, predictions); a Task
owns its options, its head, reading files, features, decoding, metrics and the serving
graph that `kbert export` wraps.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from kbert.tasks.card import NoOptions, TaskCard
from kbert.tasks.spec import TaskSpec


class Task(abc.ABC):
    """A fine-tuning task.

    Attributes (class level): those of its `TaskCard` (`card`; a class with a `card`
    gets them from it, `register_task` makes the card from them):
        command: the CLI word (`kbert finetune classify|tag|qa`) and `get_task` name.
        aliases: other `get_task` names -> constructor keyword arguments (e.g.
            "regression" -> {"regression": True}).
        kinds: the `TaskSpec.task` values (task.json, export kinds) this task writes.
        head_name: the output layer's name, and so the weight-key prefix of its tensors in
            a model directory ("classifier" / "tagger" / "qa_outputs", as Hugging Face's
            BertFor* classes name them).
        default_seq_len: T when the user gives none (the paper: 128; SQuAD 384).
        help: one line for `kbert finetune --help`.
        Options: a frozen dataclass of `option(...)` fields: the task's CLI flags and the
            keys `read` / `make_spec` accept (defaults live there, once).
        trim_multiple: tasks whose `dataset` cuts batches to their longest row
            (`kbert.data.batching.trim_to_longest`) round that length up to a multiple
            of this. 1 = the exact longest row, as transformers' padding="longest"
            (Keras relaxes the step's shapes after two traces, so odd lengths cost no
            retracing; docs/PERF_TRAIN_STEP.md has the timing). The runner uses 8 with
            XLA (`jit_compile`), which compiles once per distinct shape.
    """

    card: TaskCard
    command: str
    aliases: Mapping[str, Mapping[str, Any]] = {}
    kinds: tuple[str, ...] = ()
    head_name: str = "head"
    default_seq_len: int = 128
    help: str = ""
    Options: type = NoOptions
    trim_multiple: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        card = cls.__dict__.get("card")
        if card is not None:  # kbert's own tasks: the card (light) is the one truth
            cls.command, cls.aliases, cls.kinds = card.command, card.aliases, card.kinds
            cls.head_name, cls.default_seq_len = card.head_name, card.default_seq_len
            cls.help, cls.Options = card.help, card.options

    @property
    def read_option_names(self) -> tuple[str, ...]:
        """The options of `read` (column names, file format) that the runner saves in
        the spec, so that evaluating reads files as training did."""
        return tuple(f.name for f in dataclasses.fields(self.Options) if f.metadata["read"])

    def check_options(self, options: Mapping[str, Any]) -> Any:
        """`options` as this task's `Options`; ValueError naming unknown keys and the
        known ones."""
        known = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown {self.command} option(s) {unknown}; known: "
                             f"{sorted(known)}")
        return self.Options(**options)

    # -- the model ----------------------------------------------------------------------

    def build_head(self, encoder_outputs: Mapping[str, Any], spec: TaskSpec,
                   initializer) -> tuple[keras.layers.Layer, dict[str, Any]]:
        """The paper's "one additional output layer" on the encoder's symbolic outputs.

        Args:
            encoder_outputs: the encoder's `sequence_output` / `pooled_output` /
                `encoder_outputs` (KerasTensors).
            spec: the task.
            initializer: a Keras initializer for the head's kernel.

        Returns:
            (the head layer, named `head_name`, whose weights the model directory stores;
            the model's outputs by name, float32).
        """
        raise NotImplementedError(f"{type(self).__name__} has no head")

    def format_prediction(self, prediction: Mapping[str, Any], text: str) -> str:
        """One line of `kbert predict` output for a `predict` result of `text`."""
        shown = {k: v for k, v in prediction.items() if k != "source"}
        return f"{json.dumps(shown, ensure_ascii=False)}\t{text}"

    @abc.abstractmethod
    def read(self, path: str, **options) -> list[Any]:
        """Reads a data file into examples; bad input raises ValueError naming the file,
        line and field. `options` are the task's CLI options (e.g. column names)."""

    @abc.abstractmethod
    def make_spec(self, train_examples: Sequence[Any], seq_len: int, **options) -> TaskSpec:
        """The TaskSpec for a model trained on `train_examples` (labels from the file)."""

    def check_examples(self, examples: Sequence[Any], spec: TaskSpec, path: str) -> None:
        """Raises ValueError (naming `path`, line, field) when `examples` cannot be used
        with `spec`, e.g. labels the training file never had."""

    @abc.abstractmethod
    def dataset(self, examples: Sequence[Any], tokenizer, spec: TaskSpec, batch_size: int,
                training: bool, seed: int = 0) -> tf.data.Dataset:
        """Batches of (x, y, sample_weight) for `model.fit` / `model.evaluate`.

        x: {"token_ids", "segment_ids", "padding_mask"} int32 [B, T=spec.seq_len];
        y and sample_weight: dicts keyed by the model's output names (see
        kbert.tasks.heads.build_task_model). `training` shuffles (with `seed`) and repeats
        nothing; the runner calls it once per epoch.
        """

    @abc.abstractmethod
    def loss(self, spec: TaskSpec) -> dict[str, Any]:
        """Keras losses keyed by output name (from_logits)."""

    @abc.abstractmethod
    def predict(self, model, examples: Sequence[Any], tokenizer, spec: TaskSpec,
                batch_size: int) -> list[dict]:
        """One JSON-serialisable prediction per example (label, tags, answer text, ...)."""

    def tune_on_eval(self, examples: Sequence[Any], predictions: Sequence[dict],
                     spec: TaskSpec) -> tuple[TaskSpec, list[dict]]:
        """Decoding settings chosen on the eval file (multi-label thresholds): returns
        the spec to save with this epoch's weights and the predictions decided with it.
        The runner calls it after every epoch's eval predictions, before `evaluate`.
        Default: both unchanged."""
        return spec, list(predictions)

    @abc.abstractmethod
    def evaluate(self, examples: Sequence[Any], predictions: Sequence[dict],
                 spec: TaskSpec) -> dict[str, float]:
        """Metrics of `predictions` against the examples' gold labels."""

    @abc.abstractmethod
    def primary_metric(self, spec: TaskSpec) -> str:
        """The key of `evaluate`'s result that picks the best epoch (higher is better)."""

    # -- serving: the string-in graph that `kbert export` wraps (and TFLite converts) -------
    # Both are traced inside a tf.function whose inputs are string tensors [B]; they must
    # use only core TF ops plus the tokenizer's tf-text ops (docs/FIELD_NOTES.md "TFLite"), and
    # should share their feature / decoding code with `dataset` / `predict` (one code path).

    def serving_inputs(self, spec: TaskSpec) -> tuple[str, ...]:
        """Names of the string [B] inputs: ("text",), ("text", "text_pair") or
        ("question", "context")."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported yet")

    def serving_features(self, tokenizer, spec: TaskSpec,
                         inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The packed model inputs for `inputs`: token_ids / segment_ids / padding_mask
        int32 [N, L] (N >= B when long texts are split into windows), plus any task-specific
        int32 tensors the decoding needs (e.g. which example each window belongs to).
        The export's `tokenize` signature returns these. Pack to T = spec.seq_len, then
        cut with `kbert.data.batching.trim_features(features, spec.length_multiple)` so
        that L is the batch's longest row (rounded up; L = T when length_multiple is 0,
        as for TFLite); a task that skips the cut computes on T positions."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported yet")

    def serving_outputs(self, model, tokenizer, spec: TaskSpec,
                        inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Strings in, named result tensors out (e.g. `probabilities` [B, C], `label_ids`
        [B], `labels` string [B]); calls `model(features, training=False)`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported yet")

    def tflite_outputs(self, model, tokenizer, spec: TaskSpec,
                       inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The graph a TFLite model of this task holds: `serving_outputs` by default. A
        task whose outputs need string ops TFLite has no builtins for returns what comes
        before them (`kbert.serving.tflite_runtime.TFLiteModel` finishes the rest)."""
        return self.serving_outputs(model, tokenizer, spec, inputs)
