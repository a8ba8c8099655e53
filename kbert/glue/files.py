"""Reading one file of a GLUE task (train, dev, test or the AX diagnostic) as laid out by
the official download script (kbert.glue.tasks), and writing the examples the fine-tuning
runner reads.

Every problem names the task and the file (and the line and column where there is one):
a missing task folder or file, a renamed column, a row with too few fields, an empty text,
a label that is not one of the task's. QQP's broken rows are the exception the task table
allows (`GlueTask.tolerate_broken`): counted, their line numbers kept, reported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from kbert.data.readers import TextExample, tsv_rows
from kbert.glue.tasks import GlueTask
from kbert.io.atomic import atomic_file


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One file of a task, read.

    Attributes:
        path: the file.
        examples: its rows in file order (labels None in test files); `source` is
            "path:line".
        indexes: the test file's `index` (QQP: `id`) column, one per example; empty for
            train / dev.
        broken: line numbers of rows skipped as broken (QQP only; elsewhere an error).
    """

    path: str
    examples: list[TextExample]
    indexes: list[str]
    broken: list[int]


def task_path(glue_dir: str, task: GlueTask, file: str) -> str:
    """GLUE_DIR/file, checked: FileNotFoundError naming the task when its folder or the
    file is missing."""
    folder = os.path.join(glue_dir, os.path.dirname(file))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"GLUE task {task.title}: no folder {folder} (GLUE_DIR must hold the "
            f"official download script's layout: {os.path.dirname(file)}/"
            f"{os.path.basename(file)}, ...)")
    path = os.path.join(glue_dir, file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE task {task.title}: no file {path}")
    return path


def read_split(glue_dir: str, task: GlueTask, file: str, test: bool = False,
               train_labels: set[str] | None = None) -> SplitData:
    """Reads `file` (a path inside GLUE_DIR) of `task`.

    Args:
        test: a test / diagnostic file: header with `task.test_text` / `test_pair` /
            `index`, no labels, every row kept (the leaderboard wants one prediction per
            index).
        train_labels: the labels the training file had; a dev label outside them is an
            error naming it (classification only).

    Raises:
        FileNotFoundError: the task's folder or the file is missing.
        ValueError: a renamed column, a short row, an empty text, a label that is not the
            task's (or not a number for STS-B), a dev label training never saw.
    """
    path = task_path(glue_dir, task, file)
    if test:
        wanted = {"text": task.test_text, "index": task.index}
        if task.test_pair is not None:
            wanted["text_pair"] = task.test_pair
    else:
        wanted = {"text": task.text, "label": task.label}
        if task.pair is not None:
            wanted["text_pair"] = task.pair
    header = test or task.header
    rows = tsv_rows(path)
    positions, width = dict(wanted), None
    if header:
        first = next(rows, None)
        if first is None:
            raise ValueError(f"GLUE task {task.title}: {path} is empty")
        names = [name.strip() for name in first[1]]
        width = len(names)
        for field, column in wanted.items():
            if column not in names:
                raise ValueError(f"GLUE task {task.title}: {path}: line {first[0]}: no "
                                 f"column {column!r} ({field}); the header has {names}")
            positions[field] = names.index(column)
    needed = max(positions.values()) + 1
    examples, indexes, broken = [], [], []
    for line, fields in rows:
        problem = _row_problem(task, fields, positions, needed, width, test)
        if problem is not None:
            if task.tolerate_broken and not test:
                broken.append(line)
                continue
            raise ValueError(f"GLUE task {task.title}: {path}: line {line}: {problem}")
        value = {field: fields[position] for field, position in positions.items()}
        label = None if test else value["label"].strip()
        if label is not None and train_labels is not None and task.labels \
                and label not in train_labels:
            raise ValueError(f"GLUE task {task.title}: {path}: line {line}: label {label!r} "
                             f"never appears in the training file; it has "
                             f"{sorted(train_labels)}")
        examples.append(TextExample(value["text"], value.get("text_pair"), label,
                                    source=f"{path}:{line}"))
        if test:
            indexes.append(value["index"].strip())
    if not examples:
        raise ValueError(f"GLUE task {task.title}: {path} has no data rows")
    return SplitData(path, examples, indexes, broken)


def _row_problem(task: GlueTask, fields, positions, needed, width, test) -> str | None:
    """Why a row cannot be used, or None."""
    if len(fields) < needed:
        return (f"the row has {len(fields)} field(s), need at least {needed}"
                + (f" (the header has {width})" if width else ""))
    if task.tolerate_broken and width is not None and len(fields) != width:
        return f"the row has {len(fields)} fields, the header {width}"
    for field in ("text", "text_pair"):
        # Test rows keep an empty text (every index needs a prediction).
        if field in positions and not fields[positions[field]].strip() and not test:
            return f"field {field} (column {positions[field] + 1}) is empty"
    if test:
        return None
    label = fields[positions["label"]].strip()
    if task.regression:
        try:
            score = float(label)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            return f"label {label!r} is not a number ({task.title} is a regression task)"
    elif label not in task.labels:
        return f"label {label!r} is not one of {task.title}'s labels {list(task.labels)}"
    return None


def write_examples(path: str, examples: list[TextExample]) -> None:
    """The examples as JSONL (`text`, `text_pair` when a pair, `label`), written
    atomically: the file the fine-tuning runner reads (columns text / text_pair / label)."""
    lines = []
    for example in examples:
        row = {"text": example.text}
        if example.text_pair is not None:
            row["text_pair"] = example.text_pair
        row["label"] = example.label
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_file(path, ("\n".join(lines) + "\n").encode("utf-8"))
