"""Input rows for batch inference: one file's bytes -> rows for the model, or dead letters.

No Beam and no TensorFlow here: `parse_rows` reads any binary file object (a local file, a
`gs://` object opened by Beam's file systems), so the rules below are tested on their own.

    .txt            one text per line (the model's single input); blank lines skipped
    .tsv            a header row naming the columns, fields split on TAB, no quoting
    .csv            a header row, RFC 4180 quoting (a quoted field may span lines)
    .jsonl / .json  one JSON object per line, fields by key

Each row becomes an `InputRow`: its id (the `id_column`'s value, else "FILE:LINE"), the
model's inputs by signature name, and where it came from. A row that cannot be read
becomes a `DeadLetter` naming the file, the line and the reason (invalid UTF-8, a missing
column or key, bad JSON, a field that is not text), and the file goes on. A file whose
header lacks a column gives one dead letter for the whole file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import BinaryIO, Iterable, Iterator, Mapping

FORMATS = {".txt": "text", ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
# A dead letter keeps this much of the offending row (enough to find and fix it).
MAX_RAW_CHARS = 1000


@dataclasses.dataclass(frozen=True)
class InputRow:
    """id: the input's id; inputs: {signature input name: text}; source: "FILE:LINE"."""

    id: str
    inputs: dict
    source: str


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A row (or a file) that was not run: where, why, and the row as read."""

    source: str
    reason: str
    raw: str = ""

    def as_json(self) -> dict:
        return {"source": self.source, "reason": self.reason, "raw": self.raw}


def input_format(path: str) -> str:
    """"text", "tsv", "csv" or "jsonl" from the file name (a ".gz" suffix is looked past)."""
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unknown input type {ext!r}; use .txt (one text per line), "
                         ".tsv, .csv or .jsonl")
    return FORMATS[ext]


def parse_rows(path: str, f: BinaryIO | Iterable[bytes], columns: Mapping[str, str],
               id_column: str | None = None) -> Iterator[InputRow | DeadLetter]:
    """Rows of one file.

    Args:
        path: the file's name, for ids and messages; its extension picks the format.
        f: the file's bytes, iterated line by line (b"\\n" endings kept or not).
        columns: {signature input name: column or key}; a .txt file feeds its line to the
            single input.
        id_column: the column holding each row's id; None: "FILE:LINE".
    """
    problem = file_problem(path, columns, id_column)
    if problem:
        raise ValueError(f"{path}: {problem}")
    fmt = input_format(path)
    if fmt == "text":
        yield from _text_rows(path, f, next(iter(columns)))
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, f, columns, id_column)
    else:
        yield from _table_rows(path, f, fmt, columns, id_column)


def file_problem(path: str, columns: Mapping[str, str], id_column: str | None) -> str | None:
    """Why no row of `path` can be read with these columns (its type, or a .txt file for a
    model of several inputs or with an id column), else None."""
    try:
        fmt = input_format(path)
    except ValueError as error:
        return str(error).split(": ", 1)[1]
    if fmt == "text" and len(columns) != 1:
        return (f"a .txt file holds one text per line, but the model takes "
                f"{sorted(columns)}: use .tsv, .csv or .jsonl")
    if fmt == "text" and id_column:
        return f"a .txt file has no id column ({id_column!r}); its ids are FILE:LINE"
    return None


def _raw(data: bytes | str) -> str:
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    text = text.rstrip("\r\n")
    return text[:MAX_RAW_CHARS]


def _lines(path: str, f) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when not UTF-8, raw bytes); BOM dropped."""
    for number, raw in enumerate(f, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None, raw
            continue
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield number, text, raw


def _not_utf8(path: str, number: int, raw: bytes) -> DeadLetter:
    try:
        raw.decode("utf-8")
        where = ""
    except UnicodeDecodeError as error:
        where = f" (byte {raw[error.start]:#04x} at column {error.start + 1})"
    return DeadLetter(f"{path}:{number}", f"not UTF-8 text{where}", _raw(raw))


def _text_rows(path, f, name) -> Iterator[InputRow | DeadLetter]:
    for number, text, raw in _lines(path, f):
        if text is None:
            yield _not_utf8(path, number, raw)
            continue
        text = text.rstrip("\r\n")
        if text.strip():
            source = f"{path}:{number}"
            yield InputRow(source, {name: text}, source)


def _jsonl_rows(path, f, columns, id_column) -> Iterator[InputRow | DeadLetter]:
    for number, text, raw in _lines(path, f):
        source = f"{path}:{number}"
        if text is None:
            yield _not_utf8(path, number, raw)
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as error:
            yield DeadLetter(source, f"not valid JSON ({error})", _raw(text))
            continue
        if not isinstance(obj, dict):
            yield DeadLetter(source, f"expected a JSON object, got {type(obj).__name__}",
                             _raw(text))
            continue
        yield _row(source, obj, columns, id_column, text, keys="key")


def _row(source: str, fields: Mapping, columns, id_column, raw: str,
         keys: str) -> InputRow | DeadLetter:
    """An InputRow from {column: value}, or the first problem as a DeadLetter."""
    inputs = {}
    wanted = dict(columns)
    if id_column:
        wanted[None] = id_column
    for name, column in wanted.items():
        if column not in fields:
            return DeadLetter(source, f"no {keys} {column!r}; the row has "
                              f"{sorted(k for k in fields if k)}", _raw(raw))
        value = fields[column]
        if name is None and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = json.dumps(value)  # numeric ids are common in JSONL
        if not isinstance(value, str):
            what = "the id" if name is None else f"input {name!r}"
            return DeadLetter(source, f"{keys} {column!r} ({what}) must be a string, got "
                              f"{type(value).__name__}", _raw(raw))
        if name is None:
            row_id = value
        else:
            inputs[name] = value
    return InputRow(row_id if id_column else source, inputs, source)


def _table_rows(path, f, fmt, columns, id_column) -> Iterator[InputRow | DeadLetter]:
    def decoded() -> Iterator[tuple[int, str]]:
        for number, text, raw in _lines(path, f):
            if text is None:
                bad.append(_not_utf8(path, number, raw))
                continue
            yield number, text

    bad: list[DeadLetter] = []
    records = _tsv_records(decoded()) if fmt == "tsv" else _csv_records(path, decoded(), bad)
    header = None
    for number, record, raw in records:
        yield from bad
        bad.clear()
        if header is None:
            header = [field.strip() for field in record]
            missing = [c for c in list(columns.values()) + ([id_column] if id_column else [])
                       if c not in header]
            if missing:
                yield DeadLetter(f"{path}:{number}",
                                 f"the header has no column {missing[0]!r} (columns: "
                                 f"{', '.join(header)}); the file was skipped", _raw(raw))
                return
            continue
        source = f"{path}:{number}"
        if len(record) > len(header):
            yield DeadLetter(source, f"the row has {len(record)} fields, the header "
                             f"{len(header)}", _raw(raw))
            continue
        # A short row lacks the columns past its end: those are reported as missing.
        yield _row(source, dict(zip(header, record)), columns, id_column, raw,
                   keys="column")
    yield from bad


def _tsv_records(lines) -> Iterator[tuple[int, list[str], str]]:
    for number, text in lines:
        text = text.rstrip("\r\n")
        if text.strip():
            yield number, text.split("\t"), text


def _csv_records(path, lines, bad: list) -> Iterator[tuple[int, list[str], str]]:
    numbered = iter(lines)
    first = [0]
    last = [""]

    def texts():
        for number, text in numbered:
            if not first[0]:
                first[0] = number
            last[0] = text
            yield text

    reader = csv.reader(texts())
    while True:
        first[0] = 0
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            bad.append(DeadLetter(f"{path}:{first[0]}", f"bad CSV ({error})", _raw(last[0])))
            continue
        if any(field.strip() for field in record):
            yield first[0], record, ",".join(record)
