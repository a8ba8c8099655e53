"""The official SQuAD metrics: exact match and token F1 after answer normalisation.

Normalisation as the official evaluate-v1.1 / v2.0 scripts: lower-case, remove ASCII
punctuation, remove the articles a / an / the (as whole words), collapse whitespace.
A prediction scores the maximum over the question's gold answers. SQuAD 2.0: an
unanswerable question has the single gold answer "" and a prediction of "" scores 1 on
both metrics; HasAns / NoAns split the scores by whether the question has answers.
All scores are percentages (0..100), as the official scripts print them.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token F1 between the normalised strings (bag of whitespace tokens).

    When either side is empty (SQuAD 2.0 no-answer), 1.0 if both are, else 0.0.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
    """The gold answers a prediction is scored against: those that do not normalise to
    "" (as the v2.0 script), or [""] when none is left (an unanswerable question)."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(golds: Sequence[Sequence[str]], predictions: Sequence[str],
                 with_no_answer: bool = False) -> dict[str, float]:
    """Corpus EM / F1 (percent) of `predictions` against each question's gold answers.

    Args:
        golds: per question, its gold answer texts (empty for unanswerable questions).
        predictions: per question, the predicted text ("" = no answer).
        with_no_answer: also report SQuAD 2.0's split: has_ans_* over questions with
            answers, no_ans_* over those without, and the counts has_ans_total /
            no_ans_total.

    Returns:
        {"exact_match", "f1", "total"} (+ the has_ans / no_ans keys).
    """
    if len(golds) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em, f = [], []
    for answers, prediction in zip(golds, predictions):
        texts = gold_texts(answers)
        em.append(max(exact_match(prediction, t) for t in texts))
        f.append(max(f1(prediction, t) for t in texts))
    scores = {"exact_match": _percent(em), "f1": _percent(f), "total": float(len(em))}
    if with_no_answer:
        has = [bool(gold_texts(a)[0]) for a in golds]
        for name, want in (("has_ans", True), ("no_ans", False)):
            rows = [i for i, h in enumerate(has) if h == want]
            scores[f"{name}_exact_match"] = _percent([em[i] for i in rows])
            scores[f"{name}_f1"] = _percent([f[i] for i in rows])
            scores[f"{name}_total"] = float(len(rows))
    return scores


def _percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0
