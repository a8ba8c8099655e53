"""Sequence and sentence-pair classification, and regression (`kbert finetune classify`).

The paper's set-up: dropout + one dense layer on `pooled_output` (kbert.tasks.heads);
softmax cross-entropy over the labels, or one score trained with mean squared error
(`regression=True`, e.g. STS-B).

Labels: the distinct labels of the training file, SORTED (numerically when every label is
an integer, e.g. "0" < "1" < "10", otherwise as strings), so the same data gives the same
label ids whatever its row order. They are saved in task.json; a label id is its index.
With two labels, "f1" is the F1 of the second one (GLUE's positive class "1").

Multi-label (`multi_label`, TaskSpec kind "multilabel"): a text has any subset of the
labels (split in one column, or one 0/1 column each); one sigmoid per label, binary cross
entropy averaged over every (text, label); a label is predicted when its probability is
>= its threshold, chosen per label on the eval file (`tune_on_eval`,
kbert.tasks.classification.multilabel) or given, and saved in task.json.

Class weights (`class_weights`, kbert.tasks.class_weights) weigh each example's loss by
its label's weight: the weighted mean cross entropy.

Long texts (single-text tasks): a text of more than T - 2 word-pieces is split into
windows of T - 2 pieces (each packed as `[CLS] window [SEP]`) starting every
`spec.doc_stride` pieces; the last window ends at the text's end (so every window is full
and the last may overlap its neighbour more). Training uses every window as an example
with the text's label; evaluation and prediction average the LOGITS of a text's windows
(then softmax), so each text gets one prediction. Text pairs are not windowed: they are
truncated as BERT does (`spec.truncation`, longest first).

The windowing, packing and averaging are TF ops (`text_features`, `average_windows`)
shared by the training pipeline, `predict` and the export graph (`serving_outputs`): only
core TF ops plus the tokenizer's two tf-text ops, dense shapes, no ragged kernels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_features, trim_to_longest
from kbert.data.readers import TextExample, read_text_examples
from kbert.tasks.classification import metrics
from kbert.tasks.base import Task
from kbert.tasks.class_weights import resolve_class_weights
from kbert.tasks.classification import CARD, METRICS, MULTILABEL_METRICS, multilabel
from kbert.tasks.heads import dense_head, pooled_logits
from kbert.tasks.spec import TaskSpec
from kbert.text.packer import pack

logger = logging.getLogger(__name__)

_MULTI_LABEL_FORMAT = ("multi-label data needs --label-separator (several labels in one "
                      "column) or --label-columns (one 0/1 column per label)")
# Examples tokenized together in the tf.data pipeline before windows are re-batched.
_TOKENIZE_BATCH = 256


# -- windows (TF ops: tf.data, predict and the serving graph) -------------------------------

def windows(ids: tf.RaggedTensor, length: int, stride: int) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """Splits each row of token ids into windows of at most `length` tokens.

    Args:
        ids: int32 ragged [B, (n)] token ids (ragged rank 1).
        length: W, tokens per window (T - 2 for `[CLS] window [SEP]`), a Python int >= 1.
        stride: tokens between window starts, a Python int in [1, W].

    Returns:
        (windows, example_index): int32 ragged [N, (<= W)], N >= B (rows of <= W tokens
        are one window, themselves), and int32 [N], the row of `ids` each window comes from
        (non-decreasing). A row of n > W tokens gets ceil((n - W) / stride) + 1 windows
        starting at 0, stride, 2 * stride, ..., and the last one at n - W.
    """
    if not 1 <= stride <= length:
        raise ValueError(f"need 1 <= stride ({stride}) <= window length ({length})")
    splits = tf.cast(ids.row_splits, tf.int32)
    n = splits[1:] - splits[:-1]  # [B]
    count = tf.where(n > length, (n - length + stride - 1) // stride + 1, 1)  # [B]
    ends = tf.cumsum(count)  # [B]: one past each row's last window
    w = tf.range(tf.reduce_sum(count))  # [N]
    # Row of window w: how many rows end at or before it. A dense [N, B] comparison (no
    # RaggedGather / repeat kernels, so it converts to TFLite builtins).
    example = tf.reduce_sum(tf.where(w[:, tf.newaxis] >= ends[tf.newaxis, :], 1, 0), axis=1)
    row_count = tf.gather(count, example)
    k = w - (tf.gather(ends, example) - row_count)  # window number within its row
    row_n = tf.gather(n, example)
    start = tf.where(k == row_count - 1, tf.maximum(row_n - length, 0), k * stride)
    size = tf.minimum(row_n - start, length)  # [N]
    pos = tf.range(length)[tf.newaxis, :]
    flat = tf.gather(splits, example)[:, tf.newaxis] + start[:, tf.newaxis] + pos  # [N, W]
    values = tf.gather(ids.values, tf.boolean_mask(flat, pos < size[:, tf.newaxis]))
    return tf.RaggedTensor.from_row_lengths(values, size, validate=False), example


def window_stride(spec: TaskSpec) -> int:
    """The stride used for `spec`: its doc_stride, at most the window length T - 2."""
    return max(1, min(spec.doc_stride, spec.seq_len - 2))


def text_features(tokenizer, spec: TaskSpec, text: tf.Tensor,
                  text_pair: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Packed model inputs for a batch of texts (pairs).

    Args:
        tokenizer: kbert.text.Tokenizer.
        spec: the task (seq_len T, pair, doc_stride, truncation).
        text: string [B]; text_pair: string [B] when `spec.pair`.

    Returns:
        `token_ids`, `segment_ids`, `padding_mask` int32 [N, T] and `example_index` int32
        [N], the text each row belongs to (N = B for pairs, N >= B with windows).
    """
    first = tokenizer.tokenize(text)
    if spec.pair:
        if text_pair is None:
            raise ValueError("this model classifies text pairs: give `text_pair` too")
        packed = pack(first, tokenizer.tokenize(text_pair), sequence_length=spec.seq_len,
                      cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                      pad_id=tokenizer.pad_id, truncation=spec.truncation)
        example = tf.range(tf.shape(text)[0])
    else:
        parts, example = windows(first, spec.seq_len - 2, window_stride(spec))
        packed = pack(parts, sequence_length=spec.seq_len, cls_id=tokenizer.cls_id,
                      sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    return {**packed, "example_index": example}


def average_windows(values: tf.Tensor, example_index: tf.Tensor, batch_size) -> tf.Tensor:
    """Mean of the rows of `values` that belong to each example.

    Args:
        values: float32 [N, C] (e.g. per-window logits).
        example_index: int32 [N] in [0, B).
        batch_size: B (int or scalar int32 tensor); every example must have >= 1 row.

    Returns:
        float32 [B, C]. A [B, N] 0/1 matrix times `values` (MatMul, no segment ops).
    """
    member = tf.where(tf.range(batch_size)[:, tf.newaxis] == example_index[tf.newaxis, :],
                      1.0, 0.0)
    counts = tf.reduce_sum(member, axis=1, keepdims=True)
    return tf.matmul(member, tf.cast(values, tf.float32)) / counts


# -- the task -------------------------------------------------------------------------------

class ClassificationTask(Task):
    """Single-text or pair classification, or regression (`regression=True`).

    Options (`ClassificationOptions`): `text_column` ("text"), `pair_column` (None: single
    texts), `label_column` ("label") for reading; `regression` (the constructor's
    `regression`, False unless the task came as "regression" from the registry),
    `doc_stride` (T - 2: windows side by side), `metric` ("accuracy"; or "f1", "macro_f1",
    "matthews_corrcoef": picks the best epoch of classification; regression always uses
    "pearson"), `truncation` ("longest_first") for the spec.
    """

    card = CARD

    def __init__(self, metric: str = "accuracy", regression: bool = False,
                 multi_label: bool = False):
        self._metric = _check_metric(metric)
        self._regression = bool(regression)
        self._multi_label = bool(multi_label)

    # the model ---------------------------------------------------------------------------
    def build_head(self, encoder_outputs, spec: TaskSpec, initializer):
        """Dropout + dense on `pooled_output`: `logits` [B, C] ([B, 1] for regression)."""
        head = dense_head(self.head_name, 1 if spec.task == "regression" else len(spec.labels),
                          initializer)
        dropout = keras.layers.Dropout(spec.classifier_dropout, name="head_dropout")
        return head, {"logits": head(dropout(encoder_outputs["pooled_output"]))}

    def format_prediction(self, prediction, text: str) -> str:
        """`label<TAB>probability<TAB>text`, `score<TAB>text` for regression,
        `label=p,label=p<TAB>text` (the labels above threshold) for multi-label."""
        if "score" in prediction:
            return f"{prediction['score']:.4f}\t{text}"
        if "labels" in prediction:
            shown = ",".join(f"{label}={prediction['probabilities'][label]:.4f}"
                             for label in prediction["labels"])
            return f"{shown or '(none)'}\t{text}"
        p = prediction["probabilities"][prediction["label"]]
        return f"{prediction['label']}\t{p:.4f}\t{text}"

    # reading -------------------------------------------------------------------------
    def read(self, path: str, **options) -> list[TextExample]:
        self.check_options(options)
        if options.get("multi_label") and not (options.get("label_separator")
                                               or options.get("label_columns")):
            raise ValueError(_MULTI_LABEL_FORMAT)
        kwargs = {key: options[key] for key in self.read_option_names if key in options}
        if kwargs.get("label_columns"):
            kwargs["label_columns"] = _column_names(kwargs["label_columns"])
        return read_text_examples(path, **kwargs)

    def examples_from_texts(self, texts: Sequence[str],
                            pairs: Sequence[str] | None = None) -> list[TextExample]:
        """Unlabelled examples for `predict` from plain strings (and their pairs)."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        return [TextExample(text, None if pairs is None else pairs[i],
                            source=f"<text {i + 1}>") for i, text in enumerate(texts)]

    def make_spec(self, train_examples: Sequence[TextExample], seq_len: int,
                  **options) -> TaskSpec:
        self.check_options(options)
        if not train_examples:
            raise ValueError("no training examples")
        multi = bool(options.get("multi_label", self._multi_label)
                     or options.get("label_separator") or options.get("label_columns"))
        self._metric = _check_metric(options.get("metric") or (
            "micro_f1" if multi else self._metric), multi)
        pair = train_examples[0].text_pair is not None
        regression = bool(options.get("regression", self._regression))
        if multi and regression:
            raise ValueError("choose multi-label or regression, not both")
        stride = options.get("doc_stride")
        stride = seq_len - 2 if stride is None else int(stride)
        if not 1 <= stride <= seq_len - 2:
            raise ValueError(f"doc_stride {stride} must be between 1 and seq_len - 2 = "
                             f"{seq_len - 2}")
        common = dict(seq_len=seq_len, pair=pair, doc_stride=stride,
                      truncation=options.get("truncation") or "longest_first")
        if multi:
            return self._multilabel_spec(train_examples, options, common)
        for example in train_examples:
            if example.label is None:
                raise ValueError(f"{example.source}: the training data has no labels")
        if options.get("threshold") is not None:
            raise ValueError("--threshold is a multi-label option (give --multi-label)")
        if regression:
            if options.get("class_weights") is not None:
                raise ValueError("class weights need classes; a regression model has none")
            for example in train_examples:
                _score(example)
            return TaskSpec("regression", **common)
        seen = {e.label for e in train_examples}
        labels = sorted(seen, key=_label_order(seen))
        if len(labels) < 2:
            raise ValueError(f"{train_examples[0].source.rsplit(':', 1)[0]}: the training "
                             f"data has a single label {labels}; classification needs >= 2")
        weights = resolve_class_weights(options.get("class_weights"), labels,
                                        (e.label for e in train_examples))
        return TaskSpec("classification", labels=tuple(labels), class_weights=weights,
                        **common)

    def _multilabel_spec(self, train_examples, options, common) -> TaskSpec:
        columns = options.get("label_columns")
        if not columns and not options.get("label_separator"):
            raise ValueError(_MULTI_LABEL_FORMAT)
        if options.get("class_weights") is not None:
            raise ValueError("class weights are for single-label classification and "
                             "tagging, not multi-label")
        for example in train_examples:
            if example.labels is None:
                raise ValueError(f"{example.source}: the training data has no labels")
        if columns:  # the columns, in the order given
            labels = _column_names(columns)
        else:
            seen = {label for e in train_examples for label in e.labels}
            labels = sorted(seen, key=_label_order(seen))
        threshold = options.get("threshold")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"--threshold {threshold} must be in [0, 1]")
        thresholds = () if threshold is None else (float(threshold),) * len(labels)
        if len(labels) < 2:
            raise ValueError(f"{train_examples[0].source.rsplit(':', 1)[0]}: multi-label "
                             f"classification needs >= 2 labels, the training data has "
                             f"{labels}")
        return TaskSpec("multilabel", labels=tuple(labels), thresholds=thresholds, **common)

    def check_examples(self, examples: Sequence[TextExample], spec: TaskSpec,
                       path: str) -> None:
        known = set(spec.labels)
        for example in examples:
            if spec.pair != (example.text_pair is not None):
                need = "text pairs (give the pair column)" if spec.pair else "single texts"
                raise ValueError(f"{example.source}: the model takes {need}")
            if spec.task == "multilabel":
                for label in example.labels or ():
                    if label not in known:
                        raise ValueError(f"{example.source}: label {label!r} was not in the "
                                         f"training data; the model knows "
                                         f"{list(spec.labels)}")
                continue
            if example.label is None:
                continue
            if spec.task == "regression":
                _score(example)
            elif example.label not in known:
                raise ValueError(f"{example.source}: label {example.label!r} (label) was "
                                 f"not in the training data; the model knows "
                                 f"{list(spec.labels)}")

    # training data ---------------------------------------------------------------------
    def dataset(self, examples: Sequence[TextExample], tokenizer, spec: TaskSpec,
                batch_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
        """(x, y, sample_weight) batches: one row per window; y {"logits": int32 label id}
        ([1] float32 score for regression), sample_weight {"logits": the label's class
        weight (`spec.class_weights`), 1.0 without}. Training
        batches are cut to their longest row (rounded up to `trim_multiple`,
        `trim_to_longest`)."""
        self.check_examples(examples, spec, "")
        data = {"text": [e.text for e in examples]}
        if spec.pair:
            data["text_pair"] = [e.text_pair for e in examples]
        data["target"] = self._targets(examples, spec)
        data["weight"] = np.ones(len(examples), np.float32)
        if spec.class_weights:
            data["weight"] = np.asarray(spec.class_weights, np.float32)[data["target"]]
        ds = tf.data.Dataset.from_tensor_slices(data)
        if training:
            ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=False)

        def to_windows(batch):
            features = text_features(tokenizer, spec, batch["text"], batch.get("text_pair"))
            example = features.pop("example_index")
            target = tf.gather(batch["target"], example)
            weight = tf.gather(batch["weight"], example)
            return features, {"logits": target}, {"logits": weight}

        ds = ds.batch(_TOKENIZE_BATCH).map(to_windows).unbatch()
        if training:  # windows of one long text should not all land in one batch
            ds = ds.shuffle(4 * _TOKENIZE_BATCH, seed=seed + 1,
                            reshuffle_each_iteration=False)
        ds = ds.batch(batch_size)
        if training:  # most texts are far shorter than T: don't run the encoder on padding
            multiple = self.trim_multiple
            ds = ds.map(lambda *batch: trim_to_longest(*batch, multiple=multiple))
        return ds.prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def _labelled(examples):
        if any(e.label is None for e in examples):
            first = next(e for e in examples if e.label is None)
            raise ValueError(f"{first.source}: no label (needed for training and evaluation)")
        return examples

    def _targets(self, examples, spec) -> np.ndarray:
        if spec.task == "multilabel":  # float32 [N, C] 0 / 1
            index = {label: i for i, label in enumerate(spec.labels)}
            targets = np.zeros((len(examples), len(spec.labels)), np.float32)
            for row, example in enumerate(examples):
                if example.labels is None:
                    raise ValueError(f"{example.source}: no labels (needed for training "
                                     "and evaluation)")
                targets[row, [index[label] for label in example.labels]] = 1.0
            return targets
        self._labelled(examples)
        if spec.task == "regression":
            return np.array([[_score(e)] for e in examples], np.float32)
        index = {label: i for i, label in enumerate(spec.labels)}
        return np.array([index[e.label] for e in examples], np.int32)

    def loss(self, spec: TaskSpec) -> dict[str, Any]:
        if spec.task == "regression":
            return {"logits": keras.losses.MeanSquaredError()}
        if spec.task == "multilabel":  # the mean over every (example, label) sigmoid
            return {"logits": keras.losses.BinaryCrossentropy(from_logits=True)}
        # The weighted mean sum(w * CE) / sum(w) (kbert.tasks.class_weights); with no
        # class weights every w is 1 and this is the plain mean.
        return {"logits": keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight")}

    # prediction ------------------------------------------------------------------------
    def predict(self, model, examples: Sequence[TextExample], tokenizer, spec: TaskSpec,
                batch_size: int) -> list[dict]:
        """Per example: {"source", "label", "label_id", "probabilities": {label: p}} or
        {"source", "score"} for regression, plus "gold" (the file's label) when the
        example has one. Runs `serving_outputs` (the export graph)."""
        run = self._serving_function(model, tokenizer, spec)
        results = []
        for begin in range(0, len(examples), batch_size):
            chunk = examples[begin:begin + batch_size]
            inputs = {"text": tf.constant([e.text for e in chunk])}
            if spec.pair:
                inputs["text_pair"] = tf.constant([e.text_pair for e in chunk])
            outputs = {k: v.numpy() for k, v in run(inputs).items()}
            for i, example in enumerate(chunk):
                gold = {} if example.label is None else {"gold": example.label}
                if spec.task == "regression":
                    results.append({"source": example.source,
                                    "score": float(outputs["scores"][i]), **gold})
                    continue
                if spec.task == "multilabel":
                    gold = {} if example.labels is None else {"gold": list(example.labels)}
                    mask = outputs["label_mask"][i]
                    results.append({
                        "source": example.source,
                        "labels": [label for label, m in zip(spec.labels, mask) if m],
                        "probabilities": {label: float(p) for label, p in
                                          zip(spec.labels, outputs["probabilities"][i])},
                        **gold})
                    continue
                label_id = int(outputs["label_ids"][i])
                results.append({
                    "source": example.source, "label": spec.labels[label_id],
                    "label_id": label_id,
                    "probabilities": {label: float(p) for label, p in
                                      zip(spec.labels, outputs["probabilities"][i])},
                    **gold})
        return results

    def _serving_function(self, model, tokenizer, spec: TaskSpec):
        """`serving_outputs` as a tf.function, traced once per (model, tokenizer, spec)
        (the runner predicts with the same model after every epoch)."""
        key = (id(model), id(tokenizer), spec)
        cached = getattr(self, "_serving_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        signature = {name: tf.TensorSpec([None], tf.string, name=name)
                     for name in self.serving_inputs(spec)}

        # autograph=False as in the export (kbert.export.graph): the graph has no Python
        # control flow to convert, and converting a closure that another model's predict
        # converted before warns "closure mismatch".
        @tf.function(input_signature=[signature], autograph=False)
        def run(inputs):
            return self.serving_outputs(model, tokenizer, spec, inputs)

        # Holding the model in the cache keeps its id from being reused by another one.
        self._serving_cache = (key, run, model, tokenizer)
        return run

    def tune_on_eval(self, examples: Sequence[TextExample], predictions: Sequence[dict],
                     spec: TaskSpec) -> tuple[TaskSpec, list[dict]]:
        """Multi-label without a given threshold: one threshold per label chosen on the
        eval file's probabilities (`multilabel.tune_thresholds`), the predictions'
        labels decided again with them. Other models: unchanged."""
        if spec.task != "multilabel" or spec.thresholds:
            return spec, list(predictions)
        probabilities = np.array([[p["probabilities"][label] for label in spec.labels]
                                  for p in predictions])
        thresholds = multilabel.tune_thresholds(probabilities,
                                                self._targets(examples, spec) > 0)
        decided = [{**p, "labels": [label for label, t in zip(spec.labels, thresholds)
                                    if p["probabilities"][label] >= t]}
                   for p in predictions]
        return dataclasses.replace(spec, thresholds=thresholds), decided

    def evaluate(self, examples: Sequence[TextExample], predictions: Sequence[dict],
                 spec: TaskSpec) -> dict[str, float]:
        """accuracy, f1, macro_f1, matthews_corrcoef (classification), micro_f1,
        macro_f1, exact_match (multi-label) or pearson, spearman, mse (regression); see
        kbert.tasks.classification.metrics and .multilabel."""
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        if spec.task == "multilabel":
            index = {label: i for i, label in enumerate(spec.labels)}
            predicted = np.zeros((len(predictions), len(spec.labels)), bool)
            for row, p in enumerate(predictions):
                predicted[row, [index[label] for label in p["labels"]]] = True
            return multilabel.multilabel_metrics(self._targets(examples, spec) > 0, predicted)
        if spec.task == "regression":  # float64 golds: 3.2, not float32's 3.2000000477
            gold = [_score(e) for e in self._labelled(examples)]
            return metrics.regression_metrics(gold, [p["score"] for p in predictions])
        gold = self._targets(examples, spec)
        index = {label: i for i, label in enumerate(spec.labels)}
        predicted = np.array([index[p["label"]] for p in predictions], np.int64)
        return metrics.classification_metrics(gold, predicted, len(spec.labels))

    def primary_metric(self, spec: TaskSpec) -> str:
        if spec.task == "multilabel":
            return self._metric if self._metric in MULTILABEL_METRICS else "micro_f1"
        return "pearson" if spec.task == "regression" else self._metric

    # serving ---------------------------------------------------------------------------
    def serving_inputs(self, spec: TaskSpec) -> tuple[str, ...]:
        return ("text", "text_pair") if spec.pair else ("text",)

    def serving_features(self, tokenizer, spec: TaskSpec,
                         inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`text_features` of the inputs: token_ids / segment_ids / padding_mask int32
        [N, L] (L: the longest window, `TaskSpec.length_multiple`) and example_index
        int32 [N]."""
        return trim_features(text_features(tokenizer, spec, inputs["text"],
                                           inputs.get("text_pair")), spec.length_multiple)

    def serving_outputs(self, model, tokenizer, spec: TaskSpec,
                        inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Classification: `probabilities` float32 [B, C] (softmax of the window-averaged
        logits), `label_ids` int32 [B], `labels` string [B]. Regression: `scores` float32
        [B]. Multi-label: `probabilities`, `label_mask` int32 [B, C], `labels` string [B]
        (`multilabel_outputs`)."""
        mean = self._text_logits(model, tokenizer, spec, inputs)
        if spec.task == "regression":
            return {"scores": mean[:, 0]}
        if spec.task == "multilabel":
            return multilabel_outputs(mean, spec)
        label_ids = tf.argmax(mean, axis=-1, output_type=tf.int32)
        return {"probabilities": tf.nn.softmax(mean, axis=-1), "label_ids": label_ids,
                "labels": tf.gather(tf.constant(list(spec.labels)), label_ids)}

    def tflite_outputs(self, model, tokenizer, spec: TaskSpec,
                       inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`serving_outputs`, but a multi-label model leaves out the joined `labels`
        string (TFLite has no builtin for ReduceJoin / regex): `probabilities` and
        `label_mask` say the same."""
        if spec.task != "multilabel":
            return self.serving_outputs(model, tokenizer, spec, inputs)
        return multilabel_outputs(self._text_logits(model, tokenizer, spec, inputs), spec,
                                  with_strings=False)

    def _text_logits(self, model, tokenizer, spec: TaskSpec, inputs) -> tf.Tensor:
        """float32 [B, C]: each text's logits, averaged over its windows."""
        features = dict(self.serving_features(tokenizer, spec, inputs))
        example = features.pop("example_index")
        logits = pooled_logits(model, spec, features)  # [N, C]
        return average_windows(logits, example, tf.shape(inputs["text"])[0])


def multilabel_outputs(logits: tf.Tensor, spec: TaskSpec,
                       with_strings: bool = True) -> dict[str, tf.Tensor]:
    """Multi-label results of window-averaged logits float32 [B, C]: `probabilities`
    float32 [B, C] (sigmoid), `label_mask` int32 [B, C] (1 where the probability is >= the
    label's threshold) and, `with_strings`, `labels` string [B]: the labels of the mask
    joined by the training file's label separator ("," for label columns), "" for none."""
    probabilities = tf.sigmoid(logits)
    thresholds = tf.constant(spec.thresholds or
                             (multilabel.DEFAULT_THRESHOLD,) * len(spec.labels), tf.float32)
    above = probabilities >= thresholds
    outputs = {"probabilities": probabilities, "label_mask": tf.cast(above, tf.int32)}
    if with_strings:
        separator = dict(spec.read_options).get("label_separator") or ","
        # Each kept label is written after a separator, then the leading one is cut
        # (dense core ops: Where, ReduceJoin, StaticRegexReplace).
        pieces = tf.where(above, tf.constant([separator + label for label in spec.labels]),
                          "")
        joined = tf.strings.reduce_join(pieces, axis=-1)
        outputs["labels"] = tf.strings.regex_replace(joined, "^" + re.escape(separator), "",
                                                     replace_global=False)
    return outputs


# -- helpers --------------------------------------------------------------------------------

def _check_metric(metric: str, multi: bool = False) -> str:
    choices = MULTILABEL_METRICS if multi else METRICS
    if metric not in choices:
        raise ValueError(f"unknown {'multi-label ' if multi else ''}metric {metric!r}; "
                         f"choose one of {choices}")
    return metric


def _column_names(columns) -> list[str]:
    """`label_columns` as a list: "toxic, insult" (the CLI) or a sequence of names."""
    parts = columns.split(",") if isinstance(columns, str) else columns
    return [str(c).strip() for c in parts if str(c).strip()]


def _label_order(labels):
    """A sort key for label strings: numeric when every label is an integer."""
    try:
        for label in labels:
            int(label)
    except ValueError:
        return str
    return lambda label: (int(label), label)


def _score(example: TextExample) -> float:
    try:
        value = float(example.label)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{example.source}: field label: {example.label!r} is not a number "
                         "(regression needs numeric labels)")
    return value
