"""Readers for labelled text files: TSV, CSV and JSONL with named (or numbered) columns.

    TSV    (.tsv, .txt)  one row per line, fields split on TAB, NO quoting: a '"' is data,
                         as GLUE's files need (their unbalanced quotes are part of the text).
    CSV    (.csv)        RFC 4180 quoting (Python's csv module); a quoted field may span
                         lines, the line number reported is the row's first line.
    JSONL  (.jsonl, .json with one object per line)  fields by key.

TSV and CSV files start with a header row naming the columns, unless the columns are given
as integers (0-based field indices, e.g. `text_column=3` for GLUE's header-less CoLA
train.tsv): then every line is data. A UTF-8 byte-order mark is dropped. Blank lines are
skipped. Lines end at "\n" ("\r\n" too; a lone "\r" is data). Every problem, bad UTF-8
included, raises `ValueError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Iterator, Sequence

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One labelled (or unlabelled) text or text pair.

    Attributes:
        text: the first (or only) text.
        text_pair: the second text of a pair, None for single texts.
        label: the label as written in the file (a string; regression scores are parsed
            later, where the task is known), None when the file has no label column.
        source: where the example came from ("file:line"), for error messages.
        labels: multi-label files only: the example's set of labels (possibly empty), in
            the file's order; `label` then holds the cell as written (or None).
    """

    text: str
    text_pair: str | None = None
    label: str | None = None
    source: str = "<input>"
    labels: tuple[str, ...] | None = None


Column = str | int


def file_format(path: str | os.PathLike) -> str:
    """"tsv", "csv" or "jsonl" from the file name's extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unknown file type {ext!r}; use .tsv, .txt, .csv or .jsonl")
    return FORMATS[ext]


def parse_column(value: Column | None) -> Column | None:
    """A column given on the command line: digits mean a 0-based field index."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def read_text_examples(path: str | os.PathLike, text_column: Column = "text",
                       pair_column: Column | None = None,
                       label_column: Column | None = "label",
                       label_separator: str | None = None,
                       label_columns: Sequence[Column] | None = None) -> list[TextExample]:
    """Reads texts (pairs) and labels from a TSV / CSV / JSONL file.

    Args:
        path: the file; its extension picks the format (see the module docstring).
        text_column: name (or 0-based index in a header-less TSV / CSV) of the text.
        pair_column: the second text of a pair, or None.
        label_column: the label, or None for unlabelled files.
        label_separator: multi-label: the label column holds several labels split by
            this string ("toxic|insult"; an empty cell = no label): `TextExample.labels`.
        label_columns: multi-label: one 0/1 column per label (1 / true: the example has
            the label named by the column); `label_column` is then not read.

    Returns:
        TextExample per data row, in file order; labels are kept as strings (JSON numbers
        and booleans as written, e.g. 1 -> "1", true -> "true").

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, missing column, short row, empty text, bad JSON line,
            mixing named and numbered columns; the message names file, line and field.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    columns = {"text": parse_column(text_column), "text_pair": parse_column(pair_column),
               "label": parse_column(label_column)}
    if label_columns:
        columns["label"] = None
        for i, column in enumerate(label_columns):
            columns[f"{_FLAG}{i}"] = parse_column(column)
    elif label_separator is not None and columns["label"] is not None:
        if not label_separator:
            raise ValueError("label_separator must not be empty")
        columns[_LABEL_SET] = columns.pop("label")
    columns = {field: c for field, c in columns.items() if c is not None}
    numbered = [isinstance(c, int) for c in columns.values()]
    if any(numbered) and not all(numbered):
        raise ValueError(f"{path}: give all columns as names or all as numbers, got "
                         f"{columns}")
    fmt = file_format(path)
    if fmt == "jsonl":
        if any(numbered):
            raise ValueError(f"{path}: JSONL fields are named; got numbered columns {columns}")
        rows = _jsonl_rows(path, columns)
    else:
        rows = _table_rows(path, fmt, columns, header=not any(numbered))
    examples = [_example(path, line, fields, columns, label_separator)
                for line, fields in rows]
    if not examples:
        raise ValueError(f"{path}: no examples (only a header or blank lines)")
    return examples


# Field names of multi-label cells: the separated label cell, and the i-th 0/1 column.
_LABEL_SET, _FLAG = "labels", "label column "
_TRUE, _FALSE = ("1", "true", "1.0"), ("0", "false", "0.0")


def _example(path: str, line: int, fields: dict, columns: dict,
             separator: str | None) -> TextExample:
    """A TextExample of one row's fields; multi-label cells become `labels`."""
    if _LABEL_SET in fields:
        cell = fields.pop(_LABEL_SET)
        parts = [part.strip() for part in cell.split(separator)]
        return TextExample(source=f"{path}:{line}", label=cell,
                           labels=tuple(p for p in parts if p), **fields)
    flags = sorted((name for name in fields if name.startswith(_FLAG)),
                   key=lambda name: int(name[len(_FLAG):]))
    if not flags:
        return TextExample(source=f"{path}:{line}", **fields)
    labels = []
    for name in flags:
        value = fields.pop(name).strip().lower()
        if value not in _TRUE + _FALSE:
            raise ValueError(f"{path}: line {line}: field {columns[name]!r} must be 0 or 1 "
                             f"(a label column), got {value!r}")
        if value in _TRUE:
            labels.append(str(columns[name]))
    return TextExample(source=f"{path}:{line}", labels=tuple(labels), **fields)


def _table_rows(path: str, fmt: str, columns: dict[str, Column],
                header: bool) -> Iterator[tuple[int, dict]]:
    """(line number, {field: value}) for every data row of a TSV / CSV file."""
    with open(path, "rb") as f:
        lines = _decoded_lines(path, f)
        records = _tsv_records(lines) if fmt == "tsv" else _csv_records(path, lines)
        positions = None
        if not header:
            positions = dict(columns)
        seen_any = False
        for line, record in records:
            seen_any = True
            if positions is None:  # the header row
                names = [name.strip() for name in record]
                positions = {}
                for field, column in columns.items():
                    if column not in names:
                        raise ValueError(
                            f"{path}: line {line}: no column {column!r} ({field}) in the "
                            f"header; the columns are {names}")
                    if names.count(column) > 1:
                        raise ValueError(
                            f"{path}: line {line}: the header names column {column!r} "
                            f"({field}) {names.count(column)} times")
                    positions[field] = names.index(column)
                continue
            yield line, _fields(path, line, record, positions, columns)
        if not seen_any:
            raise ValueError(f"{path}: the file is empty")


def _decoded_lines(path: str, f) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) of a binary file, split at b"\n" only
    (a lone "\r" inside a TSV field is data, as in some GLUE rows), decoded line by line
    so that bad UTF-8 is reported on its own line; a UTF-8 byte-order mark is dropped."""
    for line, raw in enumerate(f, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: line {line}: not UTF-8 text (byte "
                             f"{raw[error.start]:#04x} at column {error.start + 1})") from None
        yield line, text[1:] if line == 1 and text.startswith("\ufeff") else text


def _tsv_records(lines) -> Iterator[tuple[int, list[str]]]:
    for line, text in lines:
        text = text.rstrip("\r\n")
        if text.strip():
            yield line, text.split("\t")


def _csv_records(path: str, lines) -> Iterator[tuple[int, list[str]]]:
    # The csv module reads an iterable of lines that keep their endings (as newline="").
    reader = csv.reader(text for _, text in lines)
    start = 1
    try:
        for record in reader:
            # reader.line_num is the last physical line of the record; report the first.
            line, start = start, reader.line_num + 1
            if any(field.strip() for field in record):
                yield line, record
    except csv.Error as error:
        raise ValueError(f"{path}: line {reader.line_num}: bad CSV ({error})") from None


def _fields(path: str, line: int, record: Sequence[str], positions: dict[str, int],
            columns: dict[str, Column]) -> dict[str, str]:
    fields = {}
    for field, position in positions.items():
        if position >= len(record):
            raise ValueError(f"{path}: line {line}: the row has {len(record)} field(s), "
                             f"column {columns[field]!r} ({field}) is field {position + 1}")
        fields[field] = _checked(path, line, field, columns[field], record[position])
    return fields


def _checked(path: str, line: int, field: str, column: Column, value) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = json.dumps(value)
    elif not isinstance(value, str):
        raise ValueError(f"{path}: line {line}: field {column!r} ({field}) must be a string "
                         f"or a number, got {type(value).__name__}")
    if field in ("text", "text_pair") and not value.strip():
        raise ValueError(f"{path}: line {line}: field {column!r} ({field}) is empty")
    if field == "label":
        # "1 " and "1" are one label (a stray space would otherwise be a class of its own).
        value = value.strip()
        if not value:
            raise ValueError(f"{path}: line {line}: field {column!r} (label) is empty")
    return value


def _jsonl_rows(path: str, columns: dict[str, Column]) -> Iterator[tuple[int, dict]]:
    seen_any = False
    with open(path, "rb") as f:
        for line, text in _decoded_lines(path, f):
            if not text.strip():
                continue
            seen_any = True
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {line}: not valid JSON ({error})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {line}: expected a JSON object, got "
                                 f"{type(obj).__name__}")
            fields = {}
            for field, column in columns.items():
                if column not in obj:
                    raise ValueError(f"{path}: line {line}: no field {column!r} ({field}); "
                                     f"the object has {sorted(obj)}")
                fields[field] = _checked(path, line, field, column, obj[column])
            yield line, fields
    if not seen_any:
        raise ValueError(f"{path}: the file is empty")


def tsv_rows(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a TSV file, split on TAB with no
    quoting, UTF-8 byte-order mark dropped, bad UTF-8 a ValueError naming the line; for
    readers that interpret rows themselves (kbert.glue.files)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        yield from _tsv_records(_decoded_lines(path, f))


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-blank lines of a plain UTF-8 text file (one text per line), BOM dropped."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        lines = [text.rstrip("\r\n") for _, text in _decoded_lines(path, f)]
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"{path}: the file is empty")
    return texts
