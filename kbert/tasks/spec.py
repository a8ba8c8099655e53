"""`TaskSpec`: what a fine-tuned model does, saved as task.json in its model directory.

A model directory without task.json is a plain encoder (with pre-training heads when
`Checkpoint.has_pretraining_heads`); with it, the directory is a fine-tuned task model
that `kbert evaluate`, `kbert predict` and `kbert export` read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

# classification: softmax over `labels` (single text, or a pair when `pair`).
# regression: one score (e.g. STS-B similarity), trained with mean squared error.
# multilabel: any subset of `labels` per text (pair): one sigmoid per label.
# tagging: one of `labels` per word (label on a word's first word-piece).
# qa: extractive question answering (start / end logits over the context).
TASKS = ("classification", "multilabel", "regression", "tagging", "qa")
# Kinds of tasks registered beyond kbert's own (`kbert.tasks.registry.register_task`).
_REGISTERED: list[str] = []


def register_kind(kind: str) -> None:
    """Makes `kind` a valid `TaskSpec.task` (called by `register_task`)."""
    if kind not in TASKS and kind not in _REGISTERED:
        _REGISTERED.append(kind)


def known_kinds() -> tuple[str, ...]:
    return TASKS + tuple(_REGISTERED)

TASK_FILE = "task.json"

# Inference pads a batch to its longest packed row rounded up to this (`TaskSpec.
# length_multiple`): few distinct shapes, kernels on multiples of 8, little padding.
DEFAULT_LENGTH_MULTIPLE = 8


def check_length_multiple(multiple) -> int:
    """`multiple` if it is an int >= 0 (0: fixed length T), else ValueError."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 0:
        raise ValueError(f"length_multiple must be an int >= 0 (0: pad every row to "
                         f"seq_len), got {multiple!r}")
    return multiple


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A fine-tuned task, as stored in task.json.

    Attributes:
        task: one of TASKS, or a kind a registered task declares.
        labels: class names (classification) or tag names (tagging), index = label id;
            empty for regression and qa.
        seq_len: T, the packed sequence length the model was trained with.
        pair: classification / regression take `text_pair` as a second segment.
        classifier_dropout: dropout before the head (BERT: 0.1).
        truncation: packer truncation of pairs ("longest_first" as BERT, or "waterfall").
        doc_stride: qa and long-text windows: tokens between window starts.
        max_query_length: qa: question tokens kept.
        max_answer_length: qa: longest answer in tokens.
        n_best: qa: start / end candidates considered.
        null_score_threshold: qa (SQuAD 2.0): answer "no answer" when the null score
            minus the best span score is above this; None = always answer (SQuAD 1.1).
        tag_scheme: tagging: "IOB1", "IOB2" or "none" (POS tags; token accuracy).
        read_options: the reading options the training file was read with (column
            names, file format), as sorted (name, value) pairs: `kbert evaluate` reads
            other files the same way unless told otherwise.
        class_weights: classification / tagging: one loss weight per label (index =
            label id), from `--class-weights` (kbert.tasks.class_weights); empty = every
            label weighs 1 (no weighting).
        thresholds: multilabel: a label is predicted when its probability is >= its
            threshold (index = label id); chosen per label on the eval file, or given;
            empty = 0.5 for every label.
        length_multiple: how inference pads (the serving graph, `predict`): m > 0 cuts
            each batch to its longest packed row rounded up to a multiple of m, at most
            `seq_len` (which stays the maximum and the truncation length); 0 pads every
            row to `seq_len` (fixed shapes, as a TFLite model needs). Chosen at export /
            predict time, not saved in task.json.
    """

    task: str
    labels: tuple[str, ...] = ()
    seq_len: int = 128
    pair: bool = False
    classifier_dropout: float = 0.1
    truncation: str = "longest_first"
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_score_threshold: float | None = None
    tag_scheme: str = "none"
    read_options: tuple[tuple[str, Any], ...] = ()
    class_weights: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    length_multiple: int = DEFAULT_LENGTH_MULTIPLE

    def __post_init__(self):
        if self.task not in known_kinds():
            raise ValueError(f"unknown task {self.task!r}; choose one of {known_kinds()}")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        options = self.read_options
        # A dict (task.json, callers) or pairs; kept as sorted pairs so the spec stays
        # hashable and comparable.
        pairs = options.items() if isinstance(options, dict) else options
        try:
            pairs = tuple(sorted((str(name), value) for name, value in pairs))
        except (TypeError, ValueError):
            raise ValueError(f"read_options must map option names to values, got "
                             f"{options!r}") from None
        object.__setattr__(self, "read_options", pairs)
        thresholds = tuple(float(t) for t in self.thresholds)
        object.__setattr__(self, "thresholds", thresholds)
        if thresholds and (self.task != "multilabel" or len(thresholds) != len(self.labels)
                           or not all(0.0 <= t <= 1.0 for t in thresholds)):
            raise ValueError(f"thresholds need one number in [0, 1] per label of a "
                             f"multilabel task; got {list(thresholds)} for {self.task} "
                             f"with labels {list(self.labels)}")
        if self.task in ("classification", "multilabel", "tagging") and len(self.labels) < 2:
            raise ValueError(f"a {self.task} task needs at least 2 labels, got "
                             f"{list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in {list(self.labels)}")
        weights = tuple(float(w) for w in self.class_weights)
        object.__setattr__(self, "class_weights", weights)
        if weights:
            if self.task not in ("classification", "tagging") or len(weights) != len(
                    self.labels):
                raise ValueError(f"class_weights need one weight per label of a "
                                 f"classification or tagging task; got {len(weights)} for "
                                 f"{self.task} with labels {list(self.labels)}")
            if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
                raise ValueError(f"class_weights must be finite numbers >= 0, not all 0; "
                                 f"got {list(weights)}")
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be at least 8, got {self.seq_len}")
        check_length_multiple(self.length_multiple)
        if self.tag_scheme not in ("IOB1", "IOB2", "none"):
            raise ValueError(f"unknown tag_scheme {self.tag_scheme!r}; "
                             "choose IOB1, IOB2 or none")

    @property
    def num_outputs(self) -> int:
        """Width of the head: C classes / tags, 1 for regression, 2 (start, end) for qa."""
        return {"regression": 1, "qa": 2}.get(self.task, len(self.labels))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["read_options"] = dict(self.read_options)
        # Empty ones are left out: other models keep the task.json they always had.
        for key in ("class_weights", "thresholds"):
            if d[key]:
                d[key] = list(d[key])
            else:
                del d[key]
        del d["length_multiple"]  # an inference choice, not part of the trained model
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "task spec") -> "TaskSpec":
        known = {f.name for f in dataclasses.fields(cls)} - {"length_multiple"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        if "task" not in d:
            raise ValueError(f"{source}: missing key 'task'")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TaskSpec":
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(d, source=os.fspath(path))
