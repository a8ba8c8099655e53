"""Multi-label classification's numpy half: the metrics (micro / macro F1, exact match) and
the per-label thresholds chosen on the eval file. The tests check the metrics against
scikit-learn.

A text may carry any subset of the C labels; the model gives one sigmoid probability per
label, and a label is predicted when its probability is >= its threshold.
"""

from __future__ import annotations

import numpy as np

METRICS = ("micro_f1", "macro_f1", "exact_match")
DEFAULT_THRESHOLD = 0.5
# Thresholds tried per label: 0.05, 0.10, ..., 0.95 (a coarse grid generalises better
# from a small eval file than every distinct probability would).
CANDIDATES = tuple(round(0.05 * k, 2) for k in range(1, 20))


def label_f1(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """float64 [C]: F1 of each label over the examples (0 where the label is neither gold
    nor predicted anywhere: scikit-learn's zero_division=0).

    Args:
        gold, predicted: bool / 0-1 [N, C].
    """
    gold, predicted = np.asarray(gold, bool), np.asarray(predicted, bool)
    true_positives = (gold & predicted).sum(axis=0).astype(np.float64)
    denominator = gold.sum(axis=0) + predicted.sum(axis=0)
    return np.divide(2 * true_positives, denominator, out=np.zeros(gold.shape[1]),
                     where=denominator > 0)


def multilabel_metrics(gold, predicted) -> dict[str, float]:
    """micro_f1 (over every (example, label) decision), macro_f1 (mean of the labels'
    F1), exact_match (share of examples whose whole label set is right).

    Args:
        gold, predicted: bool / 0-1 [N, C], N >= 1.
    """
    gold, predicted = np.asarray(gold, bool), np.asarray(predicted, bool)
    if gold.shape != predicted.shape or gold.ndim != 2 or not len(gold):
        raise ValueError(f"need two [N, C] arrays with N >= 1, got {gold.shape} and "
                         f"{predicted.shape}")
    true_positives = (gold & predicted).sum()
    denominator = gold.sum() + predicted.sum()
    micro = float(2 * true_positives / denominator) if denominator else 0.0
    return {"micro_f1": micro, "macro_f1": float(label_f1(gold, predicted).mean()),
            "exact_match": float(np.mean(np.all(gold == predicted, axis=1)))}


def tune_thresholds(probabilities, gold) -> tuple[float, ...]:
    """One threshold per label: the CANDIDATES value that maximises the label's F1 on
    (probabilities, gold); among equal F1s the one nearest DEFAULT_THRESHOLD (so a label
    that is never gold in the eval file, F1 0 at every threshold, keeps 0.5).

    Args:
        probabilities: float [N, C]; gold: bool / 0-1 [N, C].
    """
    probabilities, gold = np.asarray(probabilities, np.float64), np.asarray(gold, bool)
    best = []
    for c in range(probabilities.shape[1]):
        scores = [label_f1(gold[:, c:c + 1], probabilities[:, c:c + 1] >= t)[0]
                  for t in CANDIDATES]
        top = max(scores)
        ties = [t for t, s in zip(CANDIDATES, scores) if s == top]
        best.append(min(ties, key=lambda t: (abs(t - DEFAULT_THRESHOLD), t)))
    return tuple(best)
