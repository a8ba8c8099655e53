"""`QATask`: extractive question answering (SQuAD v1.1 / v2.0), `kbert finetune qa`.

Features: kbert.tasks.qa.windows (question + context windows, maximum-context flags);
decoding: kbert.tasks.qa.decode (n-best spans, null answer, exact context substrings);
metrics: kbert.tasks.qa.squad_metrics (official EM / F1). The same window and decoding ops
build the training batches, run `predict` and make the exported serving graph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_features
from kbert.data.squad import SquadExample, read_squad
from kbert.tasks.qa import CARD
from kbert.tasks.base import Task
from kbert.tasks.heads import dense_head
from kbert.tasks.qa.decode import answer_text, decode_spans
from kbert.tasks.qa.windows import answer_labels, check_qa_spec, qa_windows
from kbert.tasks.spec import TaskSpec
from kbert.tasks.qa.squad_metrics import squad_scores

MODEL_INPUTS = ("token_ids", "segment_ids", "padding_mask")
# Examples tokenized together in tf.data (their windows are then re-batched).
_EXAMPLE_CHUNK = 64


class QATask(Task):
    """SQuAD-style extractive QA: outputs `start_logits` / `end_logits` [B, T]."""

    card = CARD

    def build_head(self, encoder_outputs, spec: TaskSpec, initializer):
        """Dense to 2 on `sequence_output` (no dropout, as the original run_squad.py):
        `start_logits`, `end_logits` [B, T]."""
        head = dense_head(self.head_name, 2, initializer)
        logits = head(encoder_outputs["sequence_output"])
        return head, {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}

    def format_prediction(self, prediction, text: str) -> str:
        """`answer<TAB>score<TAB>question` (score "nan" when not finite)."""
        score = prediction["score"]
        return f"{prediction['answer']}\t{'nan' if score is None else f'{score:.4f}'}\t{text}"

    def read(self, path: str, **options) -> list[SquadExample]:
        """SQuAD v1.1 / v2.0 JSON (kbert.data.squad.read_squad); no options."""
        return read_squad(path)

    def examples_from_texts(self, questions: Sequence[str],
                            contexts: Sequence[str] | None = None) -> list[SquadExample]:
        """Examples (ids "0", "1", ...) for `kbert predict DIR QUESTION CONTEXT`."""
        if contexts is None or len(contexts) != len(questions):
            raise ValueError("qa predicts from (question, context) pairs")
        return [SquadExample(str(i), str(q), str(c))
                for i, (q, c) in enumerate(zip(questions, contexts))]

    def make_spec(self, train_examples: Sequence[SquadExample], seq_len: int = 384,
                  **options) -> TaskSpec:
        """TaskSpec("qa", ...). `options`: doc_stride, max_query_length, max_answer_length,
        n_best, null_score_threshold (None given or left out: 0.0 when the training data
        has impossible questions, i.e. SQuAD 2.0, else None = always answer)."""
        given = self.check_options(options)
        values = {f.name: f.default if getattr(given, f.name) is None else getattr(given, f.name)
                  for f in dataclasses.fields(given)}
        if values["null_score_threshold"] is None and any(
                e.is_impossible for e in train_examples):
            values["null_score_threshold"] = 0.0
        spec = TaskSpec("qa", seq_len=seq_len, **values)
        check_qa_spec(spec)
        return spec

    def check_examples(self, examples: Sequence[SquadExample], spec: TaskSpec,
                       path: str) -> None:
        check_qa_spec(spec)
        if not examples:
            raise ValueError(f"{path}: no questions")
        if spec.null_score_threshold is None:
            impossible = [e.id for e in examples if e.is_impossible]
            if impossible:
                raise ValueError(
                    f"{path}: {len(impossible)} question(s) are unanswerable (is_impossible,"
                    f" or an empty answers list; e.g. id {impossible[0]!r}) but the model "
                    "always answers (null_score_threshold is None: trained on SQuAD 1.1 "
                    "data)")

    def dataset(self, examples: Sequence[SquadExample], tokenizer, spec: TaskSpec,
                batch_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
        """Window batches: x = model inputs [B, T]; y = {"start_logits", "end_logits"}
        int32 [B], the answer's token positions (0 = [CLS] when the window does not hold
        the whole answer or there is none); sample_weight 0.5 for both outputs, so Keras'
        sum of the two losses is their mean, as run_squad.py / Hugging Face train."""
        check_qa_spec(spec)
        # Questions whose answers were all off their answer_start have no target (see
        # kbert.data.squad): left out here, still scored by evaluate().
        examples = [e for e in examples if e.trainable]
        if not examples:
            raise ValueError("no question has a training target (every answer's text is "
                             "off its answer_start)")
        questions, contexts, starts, ends = _columns(examples)
        ds = tf.data.Dataset.from_tensor_slices((questions, contexts, starts, ends))
        if training:
            ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)

        def featurize(question, context, start, end):
            windows, start_pos, end_pos = answer_labels(tokenizer, spec, question, context,
                                                        start, end)
            x = {name: windows[name] for name in MODEL_INPUTS}
            y = {"start_logits": start_pos, "end_logits": end_pos}
            half = tf.fill(tf.shape(start_pos), 0.5)
            return x, y, {"start_logits": half, "end_logits": half}

        ds = ds.batch(_EXAMPLE_CHUNK).map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.unbatch()
        if training:
            # Windows of one long context would otherwise sit in the same batch.
            ds = ds.shuffle(1024, seed=seed + 1)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def loss(self, spec: TaskSpec) -> dict[str, Any]:
        return {name: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                for name in ("start_logits", "end_logits")}

    def predict(self, model, examples: Sequence[SquadExample], tokenizer, spec: TaskSpec,
                batch_size: int) -> list[dict]:
        """One dict per example: id, answer (exact context substring, "" = no answer),
        start_char / end_char (Python str offsets, -1 for no answer), score (float, the
        answer's start + end logit, or the null score for "")."""
        run = self._predict_function(model, tokenizer, spec)
        # Examples per call: batch_size examples, each one window or more (a context
        # of n tokens takes about n / doc_stride windows).
        per_call = max(1, batch_size)
        predictions = []
        for i in range(0, len(examples), per_call):
            chunk = examples[i:i + per_call]
            out = run(tf.constant([e.question for e in chunk]),
                      tf.constant([e.context for e in chunk]))
            out = {k: v.numpy() for k, v in out.items()}
            for j, example in enumerate(chunk):
                predictions.append({
                    "id": example.id,
                    "answer": out["answer"][j].decode("utf-8"),
                    "start_char": int(out["start_char"][j]),
                    "end_char": int(out["end_char"][j]),
                    "score": _finite(out["score"][j]),
                })
        return predictions

    def _predict_function(self, model, tokenizer, spec: TaskSpec):
        """`serving_outputs` as a tf.function, traced once per (model, tokenizer, spec):
        the runner predicts every epoch with the same objects."""
        key = (id(model), id(tokenizer), spec)
        cached = getattr(self, "_predict_cache", None)
        if cached is None or cached[0] != key:
            run = tf.function(
                lambda q, c: self.serving_outputs(model, tokenizer, spec,
                                                  {"question": q, "context": c}),
                input_signature=[tf.TensorSpec([None], tf.string)] * 2,
                autograph=False)  # as the export builds it (kbert.export.graph)
            # The objects are kept too, so their ids cannot be reused by new ones.
            self._predict_cache = (key, run, model, tokenizer)
        return self._predict_cache[1]

    def evaluate(self, examples: Sequence[SquadExample], predictions: Sequence[dict],
                 spec: TaskSpec) -> dict[str, float]:
        """Official SQuAD EM / F1 (percent); with SQuAD 2.0 data (any impossible question)
        also has_ans_* / no_ans_*."""
        return squad_scores([e.scored_texts for e in examples],
                            [p["answer"] for p in predictions],
                            with_no_answer=any(e.is_impossible for e in examples))

    def primary_metric(self, spec: TaskSpec) -> str:
        return "f1"

    def serving_inputs(self, spec: TaskSpec) -> tuple[str, ...]:
        return ("question", "context")

    def serving_features(self, tokenizer, spec: TaskSpec,
                         inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The windows (see kbert.tasks.qa.windows.qa_windows): model inputs [N, L] plus
        window_example [N], context_index / start_byte / end_byte / max_context [N, L]
        (L: the longest window, `TaskSpec.length_multiple`)."""
        return _serving_windows(tokenizer, spec, inputs["question"], inputs["context"])

    def serving_outputs(self, model, tokenizer, spec: TaskSpec,
                        inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`answer` string [B], `start_char` / `end_char` int32 [B] (character offsets,
        end exclusive, -1 for no answer), `score` float32 [B]."""
        context = tf.convert_to_tensor(inputs["context"], tf.string)
        spans = self._best_spans(model, tokenizer, spec, inputs)
        text = answer_text(context, spans["start_byte"], spans["end_byte"])
        return {"answer": text["answer"], "start_char": text["start_char"],
                "end_char": text["end_char"], "score": spans["score"]}

    def tflite_outputs(self, model, tokenizer, spec: TaskSpec,
                       inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The serving graph up to the best span: `start_byte`, `end_byte` int32 [B] (UTF-8
        byte offsets into `context`, -1 for no answer) and `score` float32 [B]. The answer
        text needs Substr / StringLength, which TFLite has no builtins for."""
        spans = self._best_spans(model, tokenizer, spec, inputs)
        return {"start_byte": spans["start_byte"], "end_byte": spans["end_byte"],
                "score": tf.cast(spans["score"], tf.float32)}

    @staticmethod
    def _best_spans(model, tokenizer, spec: TaskSpec, inputs: dict[str, tf.Tensor]):
        question = tf.convert_to_tensor(inputs["question"], tf.string)
        context = tf.convert_to_tensor(inputs["context"], tf.string)
        windows = _serving_windows(tokenizer, spec, question, context)
        outputs = model({name: windows[name] for name in MODEL_INPUTS}, training=False)
        return decode_spans(spec, outputs["start_logits"], outputs["end_logits"], windows,
                            tf.shape(question)[0])


def _serving_windows(tokenizer, spec: TaskSpec, question: tf.Tensor, context: tf.Tensor
                     ) -> dict[str, tf.Tensor]:
    """`qa_windows` cut to the batch's longest window (`TaskSpec.length_multiple`)."""
    return trim_features(qa_windows(tokenizer, spec, question, context),
                         spec.length_multiple)


def _columns(examples: Sequence[SquadExample]):
    """Questions, contexts and the first answer's UTF-8 byte span (-1 without answer)."""
    starts, ends = [], []
    for e in examples:
        if e.answers and not e.is_impossible:
            answer = e.answers[0]
            start = len(e.context[:answer.start].encode("utf-8"))
            starts.append(start)
            ends.append(start + len(answer.text.encode("utf-8")))
        else:
            starts.append(-1)
            ends.append(-1)
    return ([e.question for e in examples], [e.context for e in examples],
            np.asarray(starts, np.int32), np.asarray(ends, np.int32))


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
