"""Input files for Beam jobs, read row by row: every row a model input or a dead letter
naming file, line and reason (kbert.beam.sources; no Beam, no TensorFlow)."""

import io

import pytest

from kbert.beam.sources import DeadLetter, InputRow, file_problem, input_format, parse_rows


def rows(name, data, columns=None, id_column=None):
    return list(parse_rows(name, io.BytesIO(data), columns or {"text": "text"}, id_column))


def test_tsv_ids_and_dead_letters():
    got = rows("in.tsv", b"\xef\xbb\xbfid\ttext\n1\thello world\n2\tbad \xff byte\n\n"
                         b"3\n4\tok\textra\n5\tfine\r\n", id_column="id")
    assert got == [
        InputRow("1", {"text": "hello world"}, "in.tsv:2"),
        DeadLetter("in.tsv:3", "not UTF-8 text (byte 0xff at column 7)", "2\tbad \\xff byte"),
        DeadLetter("in.tsv:5", "no column 'text'; the row has ['id']", "3"),
        DeadLetter("in.tsv:6", "the row has 3 fields, the header 2", "4\tok\textra"),
        InputRow("5", {"text": "fine"}, "in.tsv:7"),
    ]


def test_jsonl_rows_pairs_and_numeric_ids():
    got = rows("in.jsonl", b'{"id": 7, "a": "x", "b": "y"}\n{"a": 3, "b": "y", "id": 1}\n'
                           b'not json\n[1]\n{"id": "k", "a": "p"}\n\n',
               columns={"text": "a", "text_pair": "b"}, id_column="id")
    assert got[0] == InputRow("7", {"text": "x", "text_pair": "y"}, "in.jsonl:1")
    assert got[1] == DeadLetter("in.jsonl:2", "key 'a' (input 'text') must be a string, got "
                                "int", '{"a": 3, "b": "y", "id": 1}')
    assert got[2].source == "in.jsonl:3" and got[2].reason.startswith("not valid JSON (")
    assert got[3] == DeadLetter("in.jsonl:4", "expected a JSON object, got list", "[1]")
    assert got[4] == DeadLetter("in.jsonl:5", "no key 'b'; the row has ['a', 'id']",
                                '{"id": "k", "a": "p"}')
    assert len(got) == 5


def test_csv_quoted_newlines_keep_the_first_line_number():
    got = rows("in.csv", b'text,other\n"multi\nline",x\nplain,y\n\xfe\xff,z\n')
    assert got == [InputRow("in.csv:2", {"text": "multi\nline"}, "in.csv:2"),
                   InputRow("in.csv:4", {"text": "plain"}, "in.csv:4"),
                   DeadLetter("in.csv:5", "not UTF-8 text (byte 0xfe at column 1)",
                              "\\xfe\\xff,z")]


def test_text_lines_and_file_level_problems():
    assert rows("in.txt", b"one\n\n  \ntwo\xc3\nthree") == [
        InputRow("in.txt:1", {"text": "one"}, "in.txt:1"),
        DeadLetter("in.txt:4", "not UTF-8 text (byte 0xc3 at column 4)", "two\\xc3"),
        InputRow("in.txt:5", {"text": "three"}, "in.txt:5")]
    # A header without the column: one dead letter for the whole file.
    assert rows("in.tsv", b"a\tb\n1\t2\n3\t4\n") == [DeadLetter(
        "in.tsv:1", "the header has no column 'text' (columns: a, b); the file was skipped",
        "a\tb")]
    with pytest.raises(ValueError, match="in.txt: a .txt file holds one text per line"):
        rows("in.txt", b"x\n", columns={"text": "text", "text_pair": "text_pair"})
    assert file_problem("in.txt", {"text": "text"}, "id") == (
        "a .txt file has no id column ('id'); its ids are FILE:LINE")
    assert file_problem("notes.md", {"text": "text"}, None) == (
        "unknown input type '.md'; use .txt (one text per line), .tsv, .csv or .jsonl")
    assert file_problem("in.jsonl", {"text": "text", "text_pair": "b"}, "id") is None
    with pytest.raises(ValueError, match="unknown input type '.xml'"):
        input_format("gs://bucket/in.xml")
    assert input_format("gs://bucket/in.jsonl.gz") == "jsonl"
