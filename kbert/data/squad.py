"""SQuAD v1.1 / v2.0 JSON reader: articles -> paragraphs -> questions.

    {"version": "1.1", "data": [{"title": ..., "paragraphs": [{"context": ...,
        "qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": 0}],
                 "is_impossible": false, "plausible_answers": [...]}]}]}]}

`is_impossible` and `plausible_answers` are SQuAD 2.0 fields (unanswerable questions); a
v1.1 file has neither. A question with an empty `answers` list and no `is_impossible` is
unanswerable, as the official v2.0 evaluation script decides. `answer_start` is a
CHARACTER offset into the context (Python str indexing). An answer whose text is not at
its `answer_start` cannot be a training target: it is counted, left out of `answers` and
reported in one warning, but stays in `gold_texts`, which evaluation scores against (the
official scripts never read `answer_start`). A question left with no usable answer is
kept for evaluation and left out of training. Malformed files raise ValueError naming the
file and the field's JSON path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

logger = logging.getLogger(__name__)

# How many ids of skipped answers the warning shows.
_SHOWN_IDS = 5


@dataclasses.dataclass(frozen=True)
class SquadAnswer:
    """An answer span: `context[start:start + len(text)] == text` (character offsets)."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """Character offset just after the answer (exclusive)."""
        return self.start + len(self.text)


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question on one paragraph.

    Attributes:
        id: the question id (unique in a file).
        question, context: the texts.
        answers: the gold answers found at their `answer_start` (the first is the
            training target); empty when impossible, or when none was found.
        title: the article's title (used to split by article).
        is_impossible: SQuAD 2.0: the paragraph does not answer the question.
        plausible_answers: SQuAD 2.0: wrong-but-plausible spans of an impossible question.
        gold_texts: every answer text of the file, what evaluation scores against
            (empty: the texts of `answers`).
    """

    id: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...] = ()
    title: str = ""
    is_impossible: bool = False
    plausible_answers: tuple[SquadAnswer, ...] = ()
    gold_texts: tuple[str, ...] = ()

    @property
    def scored_texts(self) -> tuple[str, ...]:
        """The answer texts evaluation scores against (empty when impossible)."""
        if self.is_impossible:
            return ()
        return self.gold_texts or tuple(a.text for a in self.answers)

    @property
    def trainable(self) -> bool:
        """Has a training target: impossible (no answer) or an answer at its offset."""
        return self.is_impossible or bool(self.answers)


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
    """Reads a SQuAD v1.1 or v2.0 JSON file into examples, in file order.

    Raises:
        ValueError: the file is not JSON, a key is missing or has the wrong type (the
            message names the file and the field, e.g. `data[0].paragraphs[3].qas[1].id`),
            question ids repeat, or no question is left.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            root = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    reader = _Reader(path)
    articles = reader.field(root, "data", list, "")
    examples = []
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        reader.check(article, dict, where)
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(reader.field(article, "paragraphs", list, where)):
            examples.extend(reader.paragraph(paragraph, title, f"{where}.paragraphs[{p}]"))
    reader.report()
    if not examples:
        raise ValueError(f"{path}: no questions")
    return examples


class _Reader:
    """Field access with errors that name the file and the JSON path; counts skips."""

    def __init__(self, path: str):
        self.path = path
        self.ids: set[str] = set()
        self.skipped_answers = 0
        self.skipped_ids: list[str] = []
        self.skipped_questions: set[str] = set()
        self.untrainable_questions = 0

    def check(self, value, kind, where: str):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{self.path}: {where or 'the top level'} must be "
                             f"{_KIND_NAMES[kind]}, got {type(value).__name__}")
        return value

    def field(self, obj: dict, key: str, kind, where: str):
        self.check(obj, dict, where)
        name = f"{where}.{key}" if where else key
        if key not in obj:
            raise ValueError(f"{self.path}: missing key {name!r}")
        return self.check(obj[key], kind, name)

    def paragraph(self, paragraph, title: str, where: str) -> list[SquadExample]:
        context = self.field(paragraph, "context", str, where)
        examples = []
        for q, qa in enumerate(self.field(paragraph, "qas", list, where)):
            at = f"{where}.qas[{q}]"
            qid = str(self.field(qa, "id", (str, int), at))
            if qid in self.ids:
                raise ValueError(f"{self.path}: {at}.id: duplicate question id {qid!r}")
            self.ids.add(qid)
            question = self.field(qa, "question", str, at)
            impossible = bool(self.check(qa.get("is_impossible", False), bool,
                                         f"{at}.is_impossible"))
            if not impossible and "is_impossible" not in qa:
                # The v2.0 script: no answers = unanswerable, whatever the flag says.
                impossible = not self.field(qa, "answers", list, at)
            answers = self.answers(qa, "answers", context, qid, at, required=not impossible)
            plausible = self.answers(qa, "plausible_answers", context, qid, at,
                                     required=False)
            texts = ()
            if impossible:
                answers = ()  # SQuAD 2.0 impossible questions have an empty answer list
            else:
                texts = tuple(self.field(a, "text", str, f"{at}.answers[{i}]")
                              for i, a in enumerate(qa["answers"]))
                if not answers:
                    self.untrainable_questions += 1
            examples.append(SquadExample(qid, question, context, answers, title, impossible,
                                         plausible, texts))
        return examples

    def answers(self, qa: dict, key: str, context: str, qid: str, at: str,
                required: bool) -> tuple[SquadAnswer, ...]:
        if key not in qa and not required:
            return ()
        kept = []
        for i, answer in enumerate(self.field(qa, key, list, at)):
            where = f"{at}.{key}[{i}]"
            text = self.field(answer, "text", str, where)
            start = self.field(answer, "answer_start", int, where)
            if start < 0 or not text.strip() or context[start:start + len(text)] != text:
                self.skipped_answers += 1
                self.skipped_questions.add(qid)
                if len(self.skipped_ids) < _SHOWN_IDS and qid not in self.skipped_ids:
                    self.skipped_ids.append(qid)
                continue
            kept.append(SquadAnswer(text, start))
        return tuple(kept)

    def report(self) -> None:
        if self.skipped_answers:
            logger.warning(
                "%s: skipped %d answer(s) whose text is not at their answer_start in the "
                "context (question ids: %s%s); %d question(s) left without a training "
                "target are left out of training (evaluation still scores them against "
                "all their answer texts)", self.path, self.skipped_answers,
                ", ".join(self.skipped_ids),
                ", ..." if len(self.skipped_questions) > len(self.skipped_ids) else "",
                self.untrainable_questions)


_KIND_NAMES = {list: "a list", dict: "an object", str: "a string", int: "an integer",
               bool: "true or false", (str, int): "a string"}
