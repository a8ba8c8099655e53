"""Sequence and sentence-pair classification (single- or multi-label), and regression:
`kbert finetune classify`.

This package's `__init__` is the task's card and options (no TensorFlow); the task itself
is `task.ClassificationTask`, its metrics `metrics`.
"""

from __future__ import annotations

import dataclasses

from kbert.tasks.card import TaskCard, option
from kbert.tasks.registry import register_card

METRICS = ("accuracy", "f1", "macro_f1", "matthews_corrcoef")
MULTILABEL_METRICS = ("micro_f1", "macro_f1", "exact_match")


@dataclasses.dataclass(frozen=True)
class ClassificationOptions:
    """`kbert finetune classify` options (and the keys `read` / `make_spec` accept)."""

    text_column: str | None = option(
        "column / field of the text (default text; a number = 0-based field of a "
        "header-less TSV/CSV)", read=True)
    pair_column: str | None = option("column of the second text of a pair", read=True)
    label_column: str | None = option("column of the label (default label)", read=True)
    regression: bool = option("predict one number (MSE; picks the best epoch by Pearson)",
                              type=bool, default=False)
    metric: str | None = option("eval metric that picks the best epoch (default accuracy; "
                                "multi-label micro_f1)",
                                choices=tuple(dict.fromkeys(METRICS + MULTILABEL_METRICS)))
    doc_stride: int | None = option("tokens between windows of long texts (default T - 2)",
                                    type=int)
    truncation: str | None = option("how pairs are cut to T (default longest_first)",
                                    choices=("longest_first", "waterfall"))
    multi_label: bool = option(
        "several labels per text: a sigmoid per label, binary cross entropy, a threshold "
        "per label chosen on --eval", type=bool, default=False)
    label_separator: str | None = option(
        "multi-label: the label column holds labels split by this (e.g. '|'; an empty "
        "cell = no label)", read=True)
    label_columns: str | None = option(
        "multi-label: comma-separated 0/1 columns, one per label (instead of "
        "--label-column)", read=True)
    threshold: float | None = option(
        "multi-label: one threshold for every label instead of choosing them on --eval",
        type=float)
    class_weights: str | None = option(
        "balanced, or a file of label weights (.json {label: weight}, or label<TAB>weight "
        "lines; labels left out weigh 1): a weighted loss for imbalanced labels")


CARD = register_card(TaskCard(
    command="classify", kinds=("classification", "multilabel", "regression"),
    head_name="classifier",
    implementation="kbert.tasks.classification.task:ClassificationTask",
    options=ClassificationOptions,
    aliases={"classification": {}, "multilabel": {"multi_label": True},
             "regression": {"regression": True}},
    help="single-text / pair classification (single- or multi-label) or regression"))
