"""Entity-level precision / recall / F1 and token accuracy as the CoNLL `conlleval` script
computes them (the CoNLL-2000 / 2003 shared tasks' official scorer).

conlleval has one set of chunk rules for IOB1 and IOB2 alike: a tag is split at its first
"-" into a prefix (B, I, E, O, ...) and a type (PER, LOC, ...), and

- a chunk starts at B; at I or E after O; at E after E; at I after E; and at any tag
  other than O whose type differs from the previous tag's type. So an I- tag opens a
  chunk after O or a chunk of another type (IOB1's rule, and how conlleval reads an IOB2
  sequence that has an I- where a B- belongs), while "I-PER I-PER" is one chunk.
- a chunk ends before B (after B or I), before O, before E or I after E, and before a tag
  whose type differs from the previous one.

A sentence boundary ends every chunk. A predicted chunk is correct when a gold chunk
starts at the same word with the same type and both end at the same word. Precision =
correct / predicted chunks, recall = correct / gold chunks, F1 their harmonic mean (0 when
there is nothing to divide). Token accuracy counts words whose whole tag is right, O
included. Values are fractions in [0, 1] (conlleval prints percentages).
"""

from __future__ import annotations

from typing import Sequence


def _split(tag: str) -> tuple[str, str]:
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _chunk_end(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's endOfChunk: the chunk holding the previous word ends before this one."""
    if prev in ("B", "I") and tag in ("B", "O"):
        return True
    if prev == "E" and tag in ("E", "I", "O"):
        return True
    if prev in ("[", "]"):  # bracket chunks have length 1
        return True
    return prev not in ("O", ".") and prev_type != kind


def _chunk_start(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's startOfChunk: a chunk starts at this word."""
    # conlleval.pl ORs its rules: a B- after S- / E- of another type falls through to the
    # type rule below, it is not "no start".
    if tag == "B" and prev in ("B", "I", "O"):
        return True
    if prev == "O" and tag in ("I", "E"):
        return True
    if prev == "E" and tag in ("E", "I"):
        return True
    if tag in ("[", "]"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def conlleval(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Scores predicted tag sequences against gold ones, one sequence per sentence.

    Returns:
        {"precision", "recall", "f1", "accuracy"} floats in [0, 1], plus the counts
        "gold_chunks", "predicted_chunks", "correct_chunks" and "words".

    Raises:
        ValueError: when the sentence counts differ or a sentence has a different number
            of predicted and gold tags.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct_chunks = gold_chunks = predicted_chunks = correct_tags = words = 0
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but "
                             f"{len(predicted_tags)} predicted")
        in_correct = False
        last_gold, last_gold_type = "O", ""
        last_pred, last_pred_type = "O", ""
        # The trailing "O" is the sentence boundary: it closes any open chunk.
        for position, (g, p) in enumerate(zip(list(gold_tags) + ["O"],
                                              list(predicted_tags) + ["O"])):
            g_tag, g_type = _split(g)
            p_tag, p_type = _split(p)
            gold_ends = _chunk_end(last_gold, g_tag, last_gold_type, g_type)
            pred_ends = _chunk_end(last_pred, p_tag, last_pred_type, p_type)
            if in_correct:
                if gold_ends and pred_ends and last_gold_type == last_pred_type:
                    in_correct = False
                    correct_chunks += 1
                elif gold_ends != pred_ends or g_type != p_type:
                    in_correct = False
            gold_starts = _chunk_start(last_gold, g_tag, last_gold_type, g_type)
            pred_starts = _chunk_start(last_pred, p_tag, last_pred_type, p_type)
            if gold_starts and pred_starts and g_type == p_type:
                in_correct = True
            if position < len(gold_tags):
                gold_chunks += gold_starts
                predicted_chunks += pred_starts
                correct_tags += (g_tag, g_type) == (p_tag, p_type)
                words += 1
            last_gold, last_gold_type = g_tag, g_type
            last_pred, last_pred_type = p_tag, p_type
    precision = correct_chunks / predicted_chunks if predicted_chunks else 0.0
    recall = correct_chunks / gold_chunks if gold_chunks else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": correct_tags / words if words else 0.0,
            "gold_chunks": gold_chunks, "predicted_chunks": predicted_chunks,
            "correct_chunks": correct_chunks, "words": words}


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Fraction of words whose predicted tag equals the gold tag."""
    return conlleval(gold, predicted)["accuracy"]
