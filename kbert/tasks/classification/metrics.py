"""Metrics of classification and regression (GLUE's): accuracy, F1, Matthews correlation,
Pearson and Spearman correlation. Plain numpy; the tests check them against scikit-learn
and scipy."""

from __future__ import annotations

import numpy as np


def accuracy(gold, predicted) -> float:
    """Fraction of equal entries of two int [N] arrays."""
    gold, predicted = _pair(gold, predicted)
    return float(np.mean(gold == predicted))


def confusion(gold, predicted, num_classes: int) -> np.ndarray:
    """int64 [C, C]: row = gold class, column = predicted class."""
    gold, predicted = _pair(gold, predicted)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (gold, predicted), 1)
    return matrix


def f1_per_class(gold, predicted, num_classes: int) -> np.ndarray:
    """float64 [C]: 2PR / (P + R) per class; 0 where the class is neither gold nor
    predicted (scikit-learn's `zero_division=0`)."""
    matrix = confusion(gold, predicted, num_classes)
    true_positives = np.diag(matrix).astype(np.float64)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted count + gold count).
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    return np.divide(2 * true_positives, denominator, out=np.zeros(num_classes),
                     where=denominator > 0)


def binary_f1(gold, predicted, positive: int = 1) -> float:
    """F1 of the `positive` class (GLUE's F1 for MRPC / QQP: class 1)."""
    num_classes = max(int(np.max(gold)), int(np.max(predicted)), positive) + 1
    return float(f1_per_class(gold, predicted, num_classes)[positive])


def macro_f1(gold, predicted, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over all `num_classes` classes."""
    return float(np.mean(f1_per_class(gold, predicted, num_classes)))


def matthews_corrcoef(gold, predicted, num_classes: int) -> float:
    """Matthews correlation (Gorodkin's multi-class form; the usual MCC for 2 classes);
    0 when either side has a single class (the formula's 0/0)."""
    matrix = confusion(gold, predicted, num_classes).astype(np.float64)
    n = matrix.sum()
    correct = np.trace(matrix)
    gold_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    covariance = correct * n - gold_counts @ predicted_counts
    variance = np.sqrt((n * n - predicted_counts @ predicted_counts)
                       * (n * n - gold_counts @ gold_counts))
    return float(covariance / variance) if variance > 0 else 0.0


def pearson(x, y) -> float:
    """Pearson correlation of two float [N] arrays; NaN when either is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _check_same_length(x, y)
    if len(x) and (np.all(x == x[0]) or np.all(y == y[0])):
        # Checked before centring: x - mean(x) of a constant is not always exactly 0.
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator > 0 else float("nan")


def ranks(x) -> np.ndarray:
    """1-based ranks of a float [N] array, ties given their average rank (scipy's
    `rankdata(method="average")`)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Runs of equal values: each gets the mean of the positions it spans.
    starts = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(x)]]) - 1
    average = (first + last) / 2.0 + 1.0
    result = np.empty(len(x), np.float64)
    result[order] = average[run]
    return result


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties handled)."""
    x, y = np.asarray(x), np.asarray(y)
    _check_same_length(x, y)
    return pearson(ranks(x), ranks(y))


def classification_metrics(gold, predicted, num_classes: int) -> dict[str, float]:
    """accuracy, f1 (binary F1 of class 1 with 2 classes, else macro F1), macro_f1,
    matthews_corrcoef."""
    f1 = (binary_f1(gold, predicted) if num_classes == 2
          else macro_f1(gold, predicted, num_classes))
    return {"accuracy": accuracy(gold, predicted), "f1": f1,
            "macro_f1": macro_f1(gold, predicted, num_classes),
            "matthews_corrcoef": matthews_corrcoef(gold, predicted, num_classes)}


def regression_metrics(gold, predicted) -> dict[str, float]:
    """pearson, spearman, mse (mean squared error)."""
    gold, predicted = np.asarray(gold, np.float64), np.asarray(predicted, np.float64)
    _check_same_length(gold, predicted)
    return {"pearson": pearson(gold, predicted), "spearman": spearman(gold, predicted),
            "mse": float(np.mean((gold - predicted) ** 2))}


def _pair(gold, predicted):
    gold, predicted = np.asarray(gold, np.int64), np.asarray(predicted, np.int64)
    _check_same_length(gold, predicted)
    return gold, predicted


def _check_same_length(a, b) -> None:
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D arrays of the same length, got shapes {a.shape} "
                         f"and {b.shape}")
    if len(a) == 0:
        raise ValueError("no examples to score")
