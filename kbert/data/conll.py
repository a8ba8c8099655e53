"""Readers for token-tagging files: CoNLL-2003 (NER) and CoNLL-U (POS).

Both return a list of `Sentence`s: the words, one label per word, and the 1-based line of
each word in its file, so that later checks (labels never seen in training, ...) can name
the line.

CoNLL-2003 (`read_conll2003`): one word per line, columns separated by spaces or tabs,
the word first and the label last (`EU NNP B-NP B-ORG`); a blank line ends a sentence;
`-DOCSTART-` lines are document separators (they also end a sentence). Every word line of a
file must have the same number of columns, at least two. The labels are read as they are,
IOB1 (the original CoNLL-2003 release: a chunk starts with I- unless it follows a chunk of
the same type) or IOB2 (every chunk starts with B-).

CoNLL-U (`read_conllu`): 10 tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD
DEPREL DEPS MISC); `#` lines are comments; a blank line ends a sentence. The label is
UPOS (column 4) or XPOS (column 5). Multiword-token ranges (ID `1-2`) and empty nodes
(ID `1.1`) are skipped: the syntactic words are the ones that carry the tags. A word may
contain spaces in CoNLL-U (the columns are tab-separated); it stays one word.

`read_tagging_file` picks the format from the extension (`.conllu` -> CoNLL-U, anything
else -> CoNLL-2003) unless one is given.
"""

from __future__ import annotations

import dataclasses
import os
import re

FORMATS = ("auto", "conll2003", "conllu")
CONLLU_LABEL_COLUMNS = {"upos": 3, "xpos": 4}
DOCSTART = "-DOCSTART-"
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
# CoNLL-U IDs: a word index, a multiword range "1-2" or an empty node "1.1" (ASCII digits).
_WORD_ID = re.compile(r"[1-9][0-9]*")
_SKIPPED_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*|[0-9]+\.[1-9][0-9]*")


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One tagged sentence.

    Attributes:
        words: the words, as written in the file.
        labels: one label per word.
        lines: the 1-based line number of each word in `path`.
        path: the file it was read from.
        text: only for unlabelled raw text to tag (`kbert predict DIR TEXT`): the text,
            with `words`, `labels` and `lines` empty; the tagger splits it into words.
    """

    words: tuple[str, ...]
    labels: tuple[str, ...]
    lines: tuple[int, ...]
    path: str = ""
    text: str | None = None


def read_tagging_file(path: str | os.PathLike, format: str = "auto",
                      label_column: str | int | None = None) -> list[Sentence]:
    """Reads a CoNLL-2003 or CoNLL-U file (see the module docstring).

    Args:
        path: the file (UTF-8).
        format: "auto" (by extension: `.conllu` is CoNLL-U), "conll2003" or "conllu".
        label_column: CoNLL-U: "upos" (default) or "xpos". CoNLL-2003: the 0-based column
            of the label (default: the last one; the word is always column 0).

    Raises:
        ValueError: naming the file and line, for an empty file, a line with the wrong
            number of columns, a missing label.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown tagging file format {format!r}; choose one of {FORMATS}")
    if format == "auto":
        format = "conllu" if os.fspath(path).lower().endswith(".conllu") else "conll2003"
    if format == "conllu":
        return read_conllu(path, label_column="upos" if label_column is None else label_column)
    if isinstance(label_column, str):
        try:
            label_column = int(label_column)
        except ValueError:
            raise ValueError(f"{os.fspath(path)}: a CoNLL-2003 label column is a column "
                             f"number (0 = the word), got {label_column!r}") from None
    return read_conll2003(path, label_column=label_column)


def read_conll2003(path: str | os.PathLike, label_column: int | None = None) -> list[Sentence]:
    """Reads a CoNLL-2003 style file: word first, label in `label_column` (default last)."""
    path = os.fspath(path)
    sentences: list[Sentence] = []
    columns_seen: tuple[int, int] | None = None  # (number of columns, first line with it)
    words, labels, lines = [], [], []

    def end_sentence():
        if words:
            sentences.append(Sentence(tuple(words), tuple(labels), tuple(lines), path))
            words.clear(), labels.clear(), lines.clear()

    for number, line in _lines(path):
        # Columns are separated by spaces or tabs only: str.split() would also split at
        # a no-break space or U+3000 inside a word, or drop a word of control characters.
        fields = _COLUMN_SEPARATOR.split(line.strip(" \t\r\n"))
        if fields == [""]:
            fields = []
        if not fields:
            end_sentence()
            continue
        if fields[0] == DOCSTART:
            end_sentence()
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: the label column is missing (one column "
                             f"{fields[0]!r}; expected the word, ..., the label)")
        if columns_seen is None:
            columns_seen = (len(fields), number)
        elif len(fields) != columns_seen[0]:
            raise ValueError(f"{path}:{number}: {len(fields)} columns, but line "
                             f"{columns_seen[1]} has {columns_seen[0]}; every word line "
                             "needs the same columns")
        column = len(fields) - 1 if label_column is None else label_column
        if not 1 <= column < len(fields):
            raise ValueError(f"{path}:{number}: label column {column} is not one of the "
                             f"line's columns 1..{len(fields) - 1} (column 0 is the word)")
        words.append(fields[0])
        labels.append(fields[column])
        lines.append(number)
    end_sentence()
    if not sentences:
        raise ValueError(f"{path}: empty file (no tagged words)")
    return sentences


def read_conllu(path: str | os.PathLike, label_column: str = "upos") -> list[Sentence]:
    """Reads a CoNLL-U file; the label is UPOS (`label_column="upos"`) or XPOS."""
    path = os.fspath(path)
    key = str(label_column).lower()
    if key not in CONLLU_LABEL_COLUMNS:
        raise ValueError(f"{path}: CoNLL-U label column must be one of "
                         f"{sorted(CONLLU_LABEL_COLUMNS)}, got {label_column!r}")
    column = CONLLU_LABEL_COLUMNS[key]
    sentences: list[Sentence] = []
    words, labels, lines = [], [], []
    for number, line in _lines(path):
        if not line.strip():
            if words:
                sentences.append(Sentence(tuple(words), tuple(labels), tuple(lines), path))
                words, labels, lines = [], [], []
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise ValueError(f"{path}:{number}: {len(fields)} tab-separated columns; "
                             "CoNLL-U needs 10 (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL "
                             "DEPS MISC)")
        token_id = fields[0]
        if _SKIPPED_ID.fullmatch(token_id):
            continue  # multiword-token range or empty node: not a tagged word
        if not _WORD_ID.fullmatch(token_id):
            raise ValueError(f"{path}:{number}: ID {token_id!r} is not a word index, a "
                             "range (1-2) or an empty node (1.1)")
        label = fields[column]
        if label in ("", "_"):
            raise ValueError(f"{path}:{number}: no {key.upper()} label (column "
                             f"{column + 1} is {label!r})")
        words.append(fields[1])
        labels.append(label)
        lines.append(number)
    if words:
        sentences.append(Sentence(tuple(words), tuple(labels), tuple(lines), path))
    if not sentences:
        raise ValueError(f"{path}: empty file (no tagged words)")
    return sentences


def _lines(path: str):
    """(1-based line number, line without its newline); a UTF-8 BOM is dropped."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
