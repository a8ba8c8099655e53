"""Token tagging (NER with IOB tags, POS): `kbert finetune tag`.

This package's `__init__` is the task's card and options (no TensorFlow); the task itself
is `task.TaggingTask`, its windows `windows`, entity scoring `conlleval`.
"""

from __future__ import annotations

import dataclasses

from kbert.tasks.card import TaskCard, option
from kbert.tasks.registry import register_card

TAG_SCHEMES = ("IOB1", "IOB2", "none")


@dataclasses.dataclass(frozen=True)
class TaggingOptions:
    """`kbert finetune tag` options (and the keys `read` / `make_spec` accept)."""

    tag_scheme: str | None = option(
        "entity tags (scored by entity F1) or none (POS: token accuracy)", choices=TAG_SCHEMES)
    format: str | None = option(
        "file format (default: .conllu files CoNLL-U, others CoNLL-2003)",
        choices=("auto", "conll2003", "conllu"), read=True)
    label_column: str | None = option(
        "CoNLL-U: upos (default) or xpos; CoNLL-2003: column number (default: the last)",
        read=True)
    doc_stride: int | None = option(
        "word-pieces between windows of long sentences (default (T-2)/2)", type=int)
    classifier_dropout: float | None = option("dropout before the tagger (default 0.1)",
                                              type=float)
    class_weights: str | None = option(
        "balanced, or a file of label weights (.json {label: weight}, or label<TAB>weight "
        "lines; labels left out weigh 1): a weighted loss for imbalanced labels")


CARD = register_card(TaskCard(
    command="tag", kinds=("tagging",), head_name="tagger",
    implementation="kbert.tasks.tagging.task:TaggingTask", options=TaggingOptions,
    aliases={"tagging": {}}, help="token tagging (NER, POS)"))
