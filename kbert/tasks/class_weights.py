"""Class weights for imbalanced labels (classification, pairs, token tagging):
`--class-weights balanced` or a file of label weights, resolved once against the training
labels into `TaskSpec.class_weights` (saved in task.json with the model).

The loss is the weighted mean of the per-example (per-labelled-word) cross entropy,
sum_i w[y_i] * CE_i / sum_i w[y_i], as `torch.nn.CrossEntropyLoss(weight=...)` computes
it: the weights change which mistakes cost more, not the loss's scale, so the learning
rate that suits unweighted training still suits weighted training.

No TensorFlow here.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Iterable, Sequence

BALANCED = "balanced"


def balanced_weights(labels: Sequence[str], observed: Iterable[str]) -> tuple[float, ...]:
    """n / (C * count(label)) for each of `labels` (scikit-learn's
    `compute_class_weight("balanced")`): every class carries the same total weight.

    Args:
        labels: the task's C labels (index = label id).
        observed: the training labels, one per example (tagging: one per labelled word).
    """
    counts = Counter(observed)
    n = sum(counts[label] for label in labels)
    missing = [label for label in labels if counts[label] == 0]
    if missing:
        raise ValueError(f"balanced class weights: label(s) {missing} never occur in the "
                         "training data")
    return tuple(n / (len(labels) * counts[label]) for label in labels)


def read_weights_file(path: str, labels: Sequence[str]) -> tuple[float, ...]:
    """Weights from a file, aligned with `labels`; a label the file leaves out gets 1.0.

    The file is a JSON object {"label": weight, ...} (.json) or lines `label<TAB>weight`
    (any other name; blank lines and lines starting with '#' skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a label the task does not have, a weight that is not a finite number
            >= 0, a label given twice, all weights 0; naming the file (and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--class-weights {path}: no such file (or give "
                                f"'{BALANCED}')")
    entries: list[tuple[str, object, str]] = []  # (label, weight, where)
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if path.lower().endswith(".json"):
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(content, dict):
            raise ValueError(f"{path}: expected a JSON object {{label: weight}}, got "
                             f"{type(content).__name__}")
        entries = [(str(label), weight, f"{path}: key {label!r}")
                   for label, weight in content.items()]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rstrip("\r").split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}: line {number}: expected label<TAB>weight, got "
                                 f"{line!r}")
            entries.append((parts[0].strip(), parts[1].strip(), f"{path}: line {number}"))
    known = {label: i for i, label in enumerate(labels)}
    weights = [1.0] * len(labels)
    seen = set()
    for label, weight, where in entries:
        if label not in known:
            raise ValueError(f"{where}: label {label!r} is not one of the task's labels "
                             f"{list(labels)}")
        if label in seen:
            raise ValueError(f"{where}: label {label!r} is given twice")
        seen.add(label)
        weights[known[label]] = _weight(weight, where)
    if not any(weights):
        raise ValueError(f"{path}: every class weight is 0")
    return tuple(weights)


def resolve_class_weights(value: str | None, labels: Sequence[str],
                          observed: Iterable[str]) -> tuple[float, ...]:
    """`TaskSpec.class_weights` for the `class_weights` option: () when None (no
    weighting), `balanced_weights` for "balanced", else `read_weights_file(value)`."""
    if value is None:
        return ()
    if value == BALANCED:
        return balanced_weights(labels, observed)
    return read_weights_file(os.fspath(value), labels)


def _weight(value, where: str) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if isinstance(value, bool) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{where}: weight {value!r} is not a finite number >= 0")
    return weight
