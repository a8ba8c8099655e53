"""Extractive question answering (SQuAD v1.1 / v2.0): `kbert finetune qa`.

This package's `__init__` is the task's card and options (no TensorFlow); the task itself
is `task.QATask`, its windows `windows`, span decoding `decode`, the official metric
`squad_metrics`.
"""

from __future__ import annotations

import dataclasses

from kbert.tasks.card import TaskCard, option
from kbert.tasks.registry import register_card


@dataclasses.dataclass(frozen=True)
class QAOptions:
    """`kbert finetune qa` options (the keys `make_spec` accepts), with the original
    run_squad.py's defaults."""

    doc_stride: int = option("tokens between context windows", type=int, default=128)
    max_query_length: int = option("question tokens kept", type=int, default=64)
    max_answer_length: int = option("longest answer in tokens", type=int, default=30)
    n_best: int = option("start / end candidates considered", type=int, default=20)
    null_score_threshold: float | None = option(
        "SQuAD 2.0: answer nothing when null score - best span > this (default: 0.0 when "
        "the training data has impossible questions, else always answer)", type=float)


CARD = register_card(TaskCard(
    command="qa", kinds=("qa",), head_name="qa_outputs",
    implementation="kbert.tasks.qa.task:QATask", options=QAOptions, default_seq_len=384,
    help="extractive QA (SQuAD v1.1 / v2.0)"))
