"""Token tagging (NER, POS): `TaggingTask`, the `kbert finetune tag` task.

Data: CoNLL-2003 or CoNLL-U files (`kbert.data.conll`), one label per word. The tag set
is the training file's labels (sorted). Model: the encoder plus dropout and a dense layer
per word-piece (`build_task_model`, output `logits` [B, T, C]).

Training features (`kbert.tasks.tagging.windows`): every word is tokenized on its own, the
word's label goes on its first word-piece and the other pieces get sample weight 0 (so
they are left out of the loss, as in the BERT paper's NER set-up). Sentences longer than
T - 2 pieces are split into overlapping windows (stride `TaskSpec.doc_stride`), never cut;
each word is labelled (and predicted) once, in the window where it has the most context.
The loss is the cross-entropy averaged over the labelled words of a batch (Keras'
"mean_with_sample_weight"), as Hugging Face's token classification averages over the
labels that are not -100.

Predictions are per word: the arg-max tag of the word's first piece. Metrics: token
accuracy, and for IOB1 / IOB2 tag sets entity-level precision / recall / F1 as conlleval
computes them (`kbert.tasks.tagging.conlleval`). The primary metric (best epoch) is F1 for IOB tag
sets, accuracy otherwise (`tag_scheme` "none", e.g. UPOS).

Serving (`serving_outputs`): the input is raw text, string [B]. There are no given words:
a word is a word-piece plus the "##" pieces that follow it, i.e. the text split at
whitespace and at every punctuation character as BERT's basic tokenizer splits it
("don't" -> don ' t). Outputs: `tags` string [B, W] (padded with ""), `tag_ids` int32
[B, W] (padded with -1), `word_starts` / `word_ends` int32 [B, W] BYTE offsets of each
word in the UTF-8 text (padded with -1), `num_words` int32 [B]. The serving graph
uses only core TF ops plus the tokenizer's two tf-text ops, and converts to TFLite.

Speed: training and `predict` batches are cut to their longest window rounded up to 8
tokens (`TaggingTask.trim_batches`), since most sentences are much shorter than T; the
serving graph always pads to T.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_features, trim_to_longest
from kbert.data.conll import Sentence, read_tagging_file
from kbert.tasks.base import Task
from kbert.tasks.class_weights import resolve_class_weights
from kbert.tasks.tagging.conlleval import conlleval
from kbert.tasks.heads import dense_head
from kbert.tasks.spec import TaskSpec
from kbert.tasks.tagging import CARD, TAG_SCHEMES
from kbert.tasks.tagging.windows import (EXAMPLE_INDEX, WORD_INDEX, dense_words, make_windows,
                                     merge_windows, pieces_of_text, pieces_of_words,
                                     window_labels)
from kbert.text.offsets import char_offsets
from kbert.text.tokenizer import SUFFIX

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("token_ids", "segment_ids", "padding_mask")
_IOB_TAG = re.compile(r"^(O|[BI]-.+)$")
# Sentences tokenized together in the input pipeline (their windows are then re-batched).
_FEATURE_BATCH = 64


def detect_tag_scheme(sentences: Sequence[Sentence]) -> str:
    """The tag scheme of training sentences: "IOB1", "IOB2" or "none".

    IOB when every label is O, B-type or I-type (and one is not O); IOB1 when some chunk
    starts with I- (after O, at a sentence start, or after another type), IOB2 otherwise.
    """
    labels = {label for s in sentences for label in s.labels}
    if labels == {"O"} or not all(_IOB_TAG.match(label) for label in labels):
        return "none"
    for sentence in sentences:
        previous = "O"
        for label in sentence.labels:
            if label.startswith("I-") and previous[2:] != label[2:]:
                return "IOB1"
            previous = label
    return "IOB2"


def default_doc_stride(seq_len: int) -> int:
    """Half of a window's T - 2 pieces: a split sentence's words all get >= 1/4 window of
    context on each side, except at the sentence's ends."""
    return max(1, (seq_len - 2) // 2)


class TaggingTask(Task):
    """One tag per word (NER with IOB tags, POS); see the module docstring."""

    card = CARD
    # Training and `predict` batches are cut to their longest window, rounded up to
    # `Task.trim_multiple` (`kbert.data.batching.trim_to_longest`): most sentences are
    # far shorter than T, and padding to T would multiply the work. False keeps every
    # batch at T (static shapes, e.g. for a TPU). The serving graph always uses T.
    trim_batches: bool = True

    # -- the model ---------------------------------------------------------------------
    def build_head(self, encoder_outputs, spec: TaskSpec, initializer):
        """Dropout + dense on `sequence_output`: `logits` [B, T, C] per word-piece."""
        head = dense_head(self.head_name, len(spec.labels), initializer)
        dropout = keras.layers.Dropout(spec.classifier_dropout, name="head_dropout")
        return head, {"logits": head(dropout(encoder_outputs["sequence_output"]))}

    # -- data --------------------------------------------------------------------------
    def read(self, path: str, **options) -> list[Sentence]:
        """Reads a CoNLL-2003 / CoNLL-U file (`kbert.data.conll.read_tagging_file`).

        Options: `format` ("auto" by extension, "conll2003", "conllu") and
        `label_column` (CoNLL-U "upos" / "xpos"; CoNLL-2003 a column number). The
        make_spec options are accepted and ignored here: the runner passes
        one option dict to both.
        """
        self.check_options(options)
        return read_tagging_file(path, format=options.get("format") or "auto",
                                 label_column=options.get("label_column"))

    def examples_from_texts(self, texts: Sequence[str]) -> list[Sentence]:
        """Unlabelled sentences of raw texts (`kbert predict DIR TEXT...`): `predict`
        splits them into words as the serving graph does (module docstring)."""
        return [Sentence((), (), (), "<input>", text=str(text)) for text in texts]

    def make_spec(self, train_examples: Sequence[Sentence], seq_len: int,
                  **options) -> TaskSpec:
        """Tags = the training file's labels (sorted); `tag_scheme` detected unless given.

        Options: `doc_stride` (default `default_doc_stride(seq_len)`), `tag_scheme`
        ("IOB1", "IOB2", "none"), `classifier_dropout`; reading options are ignored.
        """
        self.check_options(options)
        if not train_examples:
            raise ValueError("no training sentences")
        labels = sorted({label for s in train_examples for label in s.labels})
        if len(labels) < 2:
            where = train_examples[0].path or "the training file"
            raise ValueError(f"{where}: only one label ({labels[0]!r}) in the training "
                             "file; tagging needs at least 2")
        tag_scheme = options.get("tag_scheme")
        if tag_scheme is None:
            tag_scheme = detect_tag_scheme(train_examples)
            logger.info("tag scheme: %s (from the training labels)", tag_scheme)
        elif tag_scheme not in TAG_SCHEMES:
            raise ValueError(f"unknown tag scheme {tag_scheme!r}; choose one of {TAG_SCHEMES}")
        extra = {}
        if options.get("classifier_dropout") is not None:
            extra["classifier_dropout"] = float(options["classifier_dropout"])
        extra["class_weights"] = resolve_class_weights(
            options.get("class_weights"), labels,
            (label for s in train_examples for label in s.labels))
        spec = TaskSpec("tagging", labels=tuple(labels), seq_len=seq_len,
                        doc_stride=int(default_doc_stride(seq_len) if options.get("doc_stride")
                                       is None else options["doc_stride"]),
                        tag_scheme=tag_scheme, **extra)
        _check_stride(spec)
        return spec

    def check_examples(self, examples: Sequence[Sentence], spec: TaskSpec, path: str) -> None:
        """Every label must be one of the training file's (error names file and line)."""
        known = set(spec.labels)
        if not examples:
            raise ValueError(f"{path}: no sentences")
        for sentence in examples:  # (unlabelled raw texts have no labels to check)
            for label, line in zip(sentence.labels, sentence.lines):
                if label not in known:
                    raise ValueError(
                        f"{path}:{line}: label {label!r} never occurs in the training file "
                        f"(its {len(spec.labels)} labels: {', '.join(spec.labels)})")

    def dataset(self, examples: Sequence[Sentence], tokenizer, spec: TaskSpec,
                batch_size: int, training: bool, seed: int = 0) -> tf.data.Dataset:
        """Batches of `batch_size` windows: (x, {"logits": labels [B, T']},
        {"logits": weights [B, T']}); weight 1 on each word's labelled position (its
        label's class weight with `spec.class_weights`), 0 elsewhere.

        T' is the batch's longest window rounded up to `trim_multiple` (T with
        `trim_batches` off).
        """
        _check_stride(spec)
        order = np.arange(len(examples))
        if training:
            order = np.random.default_rng(seed).permutation(len(examples))
        label_ids = {label: i for i, label in enumerate(spec.labels)}
        try:
            labels = [[label_ids[label] for label in examples[i].labels] for i in order]
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not one of the task's labels "
                             f"{list(spec.labels)}; check the file with check_examples")
        words = [list(examples[i].words) for i in order]
        class_weights = tf.constant(spec.class_weights or (1.0,), tf.float32)
        ds = tf.data.Dataset.from_tensor_slices((
            _ragged(words, tf.string), _ragged(labels, tf.int32)))

        def features(words, labels):
            windows, word_splits = self._word_windows(tokenizer, spec, words)
            y, weight = window_labels(windows[WORD_INDEX], windows[EXAMPLE_INDEX],
                                      labels.flat_values, word_splits)
            if spec.class_weights:  # the labelled positions weigh their label's weight
                weight = weight * tf.gather(class_weights, y)
            x = {name: windows[name] for name in MODEL_INPUTS}
            return x, {"logits": y}, {"logits": weight}

        ds = ds.batch(_FEATURE_BATCH).map(features, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.unbatch()
        if training:  # the windows of one long sentence should not all land in one batch
            ds = ds.shuffle(4 * _FEATURE_BATCH, seed=seed + 1, reshuffle_each_iteration=False)
        ds = ds.batch(batch_size)
        if self.trim_batches:
            multiple = self.trim_multiple
            ds = ds.map(lambda *batch: trim_to_longest(*batch, multiple=multiple),
                        num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def loss(self, spec: TaskSpec) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight")}

    # -- prediction and metrics --------------------------------------------------------
    def predict(self, model, examples: Sequence[Sentence], tokenizer, spec: TaskSpec,
                batch_size: int) -> list[dict]:
        """[{"words": [...], "tags": [...]}] per sentence, one tag per word.

        Sentences of raw text (`examples_from_texts`) go through the serving graph's
        code: words as BERT's basic tokenizer splits them, plus their byte offsets
        "word_starts" / "word_ends".
        """
        _check_stride(spec)

        @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.string, 1,
                                                          tf.int32)])
        def tag_words(words):
            windows, word_splits = self._word_windows(tokenizer, spec, words)
            if self.trim_batches:
                windows = trim_to_longest(windows)[0]
            return self._decode(model, windows, word_splits[1:] - word_splits[:-1])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)],
                     autograph=False)  # as the export builds it (kbert.export.graph)
        def tag_text(text):
            return self.serving_outputs(model, tokenizer, spec, {"text": text})

        results: list[dict | None] = [None] * len(examples)
        given = [i for i, s in enumerate(examples) if s.text is None]
        raw = [i for i, s in enumerate(examples) if s.text is not None]
        for begin in range(0, len(given), batch_size):
            batch = given[begin:begin + batch_size]
            words = _ragged([examples[i].words for i in batch], tf.string)
            for i, row in zip(batch, tag_words(words).numpy()):
                sentence_words = list(examples[i].words)
                results[i] = {"words": sentence_words,
                              "tags": [spec.labels[t] for t in row[:len(sentence_words)]]}
        for begin in range(0, len(raw), batch_size):
            batch = raw[begin:begin + batch_size]
            out = {k: v.numpy() for k, v in tag_text(
                tf.constant([examples[i].text for i in batch])).items()}
            for row, i in enumerate(batch):
                n = int(out["num_words"][row])
                data = examples[i].text.encode("utf-8")
                starts = out["word_starts"][row, :n].tolist()
                ends = out["word_ends"][row, :n].tolist()
                results[i] = {"words": [data[a:b].decode("utf-8", "replace")
                                        for a, b in zip(starts, ends)],
                              "tags": [spec.labels[t] for t in out["tag_ids"][row, :n]],
                              "word_starts": starts, "word_ends": ends}
        return results

    def evaluate(self, examples: Sequence[Sentence], predictions: Sequence[dict],
                 spec: TaskSpec) -> dict[str, float]:
        """{"accuracy"} (token accuracy), plus {"precision", "recall", "f1"} (conlleval,
        entity level) for IOB tag sets."""
        gold = [list(s.labels) for s in examples]
        predicted = [list(p["tags"]) for p in predictions]
        scores = conlleval(gold, predicted)
        if spec.tag_scheme == "none":
            return {"accuracy": scores["accuracy"]}
        return {k: float(scores[k]) for k in ("precision", "recall", "f1", "accuracy")}

    def primary_metric(self, spec: TaskSpec) -> str:
        return "accuracy" if spec.tag_scheme == "none" else "f1"

    # -- serving -----------------------------------------------------------------------
    def serving_inputs(self, spec: TaskSpec) -> tuple[str, ...]:
        return ("text",)

    def serving_features(self, tokenizer, spec: TaskSpec,
                         inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Windows of `inputs["text"]` (string [B]): token_ids / segment_ids /
        padding_mask int32 [N, L] (L: the longest window, `TaskSpec.length_multiple`),
        `example_index` int32 [N], `word_index` int32 [N, L],
        `num_words` int32 [B], `word_starts` / `word_ends` int32 [B, W] byte offsets."""
        _check_stride(spec)
        is_suffix = tf.constant([t.startswith(SUFFIX) and t != SUFFIX
                                 for t in tokenizer.vocab])
        (piece_ids, piece_words, row_splits, word_splits, starts,
         ends) = pieces_of_text(tokenizer, inputs["text"], is_suffix)
        features = make_windows(piece_ids, piece_words, row_splits, seq_len=spec.seq_len,
                                stride=spec.doc_stride, cls_id=tokenizer.cls_id,
                                sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
        features["num_words"] = word_splits[1:] - word_splits[:-1]
        features["word_starts"] = dense_words(starts, word_splits, -1)
        features["word_ends"] = dense_words(ends, word_splits, -1)
        return trim_features(features, spec.length_multiple)

    def serving_outputs(self, model, tokenizer, spec: TaskSpec,
                        inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """`tags` string [B, W] ("" padding), `tag_ids` int32 [B, W] (-1 padding),
        `word_starts` / `word_ends` int32 [B, W] (UTF-8 byte offsets, -1 padding),
        `word_start_chars` / `word_end_chars` int32 [B, W] (character offsets: the word
        is `text[start:end]` on the Python str; -1 padding), `num_words` int32 [B]."""
        features = self.serving_features(tokenizer, spec, inputs)
        ids = self._decode(model, features, features["num_words"])
        names = tf.constant(list(spec.labels) + [""])
        return {"tags": tf.gather(names, tf.where(ids < 0, len(spec.labels), ids)),
                "tag_ids": ids, "word_starts": features["word_starts"],
                "word_ends": features["word_ends"],
                "word_start_chars": char_offsets(inputs["text"], features["word_starts"]),
                "word_end_chars": char_offsets(inputs["text"], features["word_ends"]),
                "num_words": features["num_words"]}

    # -- shared graph pieces -----------------------------------------------------------
    @staticmethod
    def _word_windows(tokenizer, spec: TaskSpec, words: tf.RaggedTensor):
        piece_ids, piece_words, row_splits, word_splits = pieces_of_words(tokenizer, words)
        windows = make_windows(piece_ids, piece_words, row_splits, seq_len=spec.seq_len,
                               stride=spec.doc_stride, cls_id=tokenizer.cls_id,
                               sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
        return windows, word_splits

    @staticmethod
    def _decode(model, windows: dict[str, tf.Tensor], num_words: tf.Tensor) -> tf.Tensor:
        """int32 [B, W] tag ids (-1 padding): the model on the windows, arg-max per
        position, each word's from its max-context window."""
        logits = model({name: windows[name] for name in MODEL_INPUTS},
                       training=False)["logits"]
        position_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return merge_windows(position_ids, windows[WORD_INDEX], windows[EXAMPLE_INDEX],
                             num_words)


def _ragged(rows: Sequence[Sequence], dtype) -> tf.RaggedTensor:
    """[B, (n)] ragged tensor with int32 row splits from Python rows (one flat constant:
    much faster than tf.ragged.constant on a training file's worth of words)."""
    flat = [value for row in rows for value in row]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, dtype=dtype, shape=[len(flat)]),
        tf.constant([len(row) for row in rows], tf.int32))


def _check_stride(spec: TaskSpec) -> None:
    budget = spec.seq_len - 2
    if not 1 <= spec.doc_stride <= budget:
        raise ValueError(f"doc_stride {spec.doc_stride} must be between 1 and seq_len - 2 = "
                         f"{budget}, so that windows leave no word-piece out")
