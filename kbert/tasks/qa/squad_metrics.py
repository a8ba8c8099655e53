"""The official SQuAD metrics: exact match and token F1 after answer normalisation.

Normalisation as the official evaluate-v1.1 / v2.0 scripts: lower-case, remove ASCII
punctuation, remove the articles a / an / the (as whole words), collapse whitespace.
A prediction scores the maximum over the question's gold answers, every answer text of
the file (the official scripts never read `answer_start`). The two scripts differ on empty
strings, and each mode follows its own: v1.1 scores F1 0 whenever no token is shared
(even "" against a gold that normalises to ""); v2.0 drops golds that normalise to "",
gives an unanswerable question the single gold "", scores "" against "" as 1 on both
metrics, and splits HasAns / NoAns on whether the question's answer list is empty.
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


def f1(prediction: str, gold: str, no_answer: bool = True) -> float:
    """Token F1 between the normalised strings (bag of whitespace tokens).

    no_answer (SQuAD 2.0's rule): when either side is empty, 1.0 if both are, else 0.0.
    Without it (v1.1's script), no shared token is 0.0, empty sides included.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if no_answer and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str], no_answer: bool = True) -> list[str]:
    """The gold answers a prediction is scored against. no_answer (v2.0's script): those
    that do not normalise to "", or [""] when none is left (an unanswerable question);
    else (v1.1's script) all of them ([""] for an empty list, which v1.1 data never has).
    """
    kept = [a for a in answers if normalize_answer(a)] if no_answer else list(answers)
    return kept or [""]


def squad_scores(golds: Sequence[Sequence[str]], predictions: Sequence[str],
                 with_no_answer: bool = False) -> dict[str, float]:
    """Corpus EM / F1 (percent) of `predictions` against each question's gold answers.

    Args:
        golds: per question, its gold answer texts (empty for unanswerable questions).
        predictions: per question, the predicted text ("" = no answer).
        with_no_answer: score as evaluate-v2.0 (else as evaluate-v1.1, see the module
            docstring) and also report its split: has_ans_* over questions with
            answers, no_ans_* over those without, and the counts has_ans_total /
            no_ans_total.

    Returns:
        {"exact_match", "f1", "total"} (+ the has_ans / no_ans keys).
    """
    if len(golds) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em, f = [], []
    for answers, prediction in zip(golds, predictions):
        texts = gold_texts(answers, with_no_answer)
        em.append(max(exact_match(prediction, t) for t in texts))
        f.append(max(f1(prediction, t, with_no_answer) for t in texts))
    scores = {"exact_match": _percent(em), "f1": _percent(f), "total": float(len(em))}
    if with_no_answer:
        has = [bool(a) for a in golds]  # as the v2.0 script: the answer list, not its text
        for name, want in (("has_ans", True), ("no_ans", False)):
            rows = [i for i, h in enumerate(has) if h == want]
            scores[f"{name}_exact_match"] = _percent([em[i] for i in rows])
            scores[f"{name}_f1"] = _percent([f[i] for i in rows])
            scores[f"{name}_total"] = float(len(rows))
    return scores


def _percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0
