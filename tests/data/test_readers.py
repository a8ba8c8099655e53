"""TSV / CSV / JSONL readers: GLUE quirks (BOM, quotes as data), numbered columns, and an
error naming file, line and field for each kind of bad input."""

import json

import pytest

from kbert.data.readers import TextExample, read_lines, read_text_examples


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_tsv_bom_and_unbalanced_quotes(tmp_path):
    # GLUE's SST-2 / MNLI files have quotes that are data; a CSV reader would merge lines.
    path = _write(tmp_path / "a.tsv", '\ufeffsentence\tlabel\n'
                  'it \'s a "great film\t1\n'
                  '" hide new secretions\t0\r\n\n')
    got = read_text_examples(path, text_column="sentence")
    assert got == [TextExample('it \'s a "great film', None, "1", f"{path}:2"),
                   TextExample('" hide new secretions', None, "0", f"{path}:3")]


def test_tsv_pairs_and_extra_columns(tmp_path):
    path = _write(tmp_path / "mrpc.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                  "1\t7\t8\tHe said.\tHe says.\n")
    [example] = read_text_examples(path, text_column="#1 String", pair_column="#2 String",
                                   label_column="Quality")
    assert (example.text, example.text_pair, example.label) == ("He said.", "He says.", "1")


def test_numbered_columns_read_headerless_file(tmp_path):
    # CoLA's train.tsv: source, label, original label, sentence; no header.
    path = _write(tmp_path / "cola.tsv", "gj04\t1\t\tOur friends won't buy this.\n"
                  "gj04\t0\t*\tThey drank the pub.\n")
    got = read_text_examples(path, text_column="3", label_column="1")
    assert [(e.text, e.label, e.source) for e in got] == [
        ("Our friends won't buy this.", "1", f"{path}:1"),
        ("They drank the pub.", "0", f"{path}:2")]


def test_csv_quoting_and_multiline_fields(tmp_path):
    path = _write(tmp_path / "a.csv", 'label,text\npos,"good, ""really"""\n'
                  'neg,"two\nlines"\nneg,plain\n')
    got = read_text_examples(path)
    assert [(e.text, e.label) for e in got] == [('good, "really"', "pos"),
                                                ("two\nlines", "neg"), ("plain", "neg")]
    assert [e.source.rsplit(":", 1)[1] for e in got] == ["2", "3", "5"]


def test_jsonl_numbers_and_booleans_as_written(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": True},
            {"text": "c", "label": 0.5}]
    path = _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert [e.label for e in read_text_examples(path)] == ["1", "true", "0.5"]
    assert [e.label for e in read_text_examples(path, label_column=None)] == [None] * 3


@pytest.mark.parametrize("name, content, kwargs, message", [
    ("e.tsv", "", {}, r"e.tsv: the file is empty"),
    ("e.jsonl", "\n\n", {}, r"e.jsonl: the file is empty"),
    ("h.tsv", "text\tlabel\n", {}, r"h.tsv: no examples"),
    ("m.tsv", "sentence\tlabel\nx\t1\n", {},
     r"m.tsv: line 1: no column 'text' \(text\) in the header; the columns are "
     r"\['sentence', 'label'\]"),
    ("s.tsv", "text\tlabel\nfine\t1\nshort\n", {},
     r"s.tsv: line 3: the row has 1 field\(s\), column 'label' \(label\) is field 2"),
    ("t.tsv", "text\tlabel\n \t1\n", {}, r"t.tsv: line 2: field 'text' \(text\) is empty"),
    ("p.csv", "text,pair,label\na,,1\n", {"pair_column": "pair"},
     r"p.csv: line 2: field 'pair' \(text_pair\) is empty"),
    ("l.tsv", "text\tlabel\nx\t\n", {}, r"l.tsv: line 2: field 'label' \(label\) is empty"),
    ("j.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 2}\n', {},
     r"j.jsonl: line 2: not valid JSON"),
    ("k.jsonl", '{"text": "a", "label": 1}\n{"txt": "b", "label": 2}\n', {},
     r"k.jsonl: line 2: no field 'text' \(text\)"),
    ("o.jsonl", '["a", 1]\n', {}, r"o.jsonl: line 1: expected a JSON object, got list"),
    ("n.jsonl", '{"text": ["a"], "label": 1}\n', {},
     r"n.jsonl: line 1: field 'text' \(text\) must be a string or a number, got list"),
    ("x.tsv", "text\tlabel\n", {"text_column": 0},
     r"x.tsv: give all columns as names or all as numbers"),
    ("x.xml", "<a/>", {}, r"x.xml: unknown file type '.xml'"),
    ("d.tsv", "text\tlabel\ttext\nx\t1\ty\n", {},
     r"d.tsv: line 1: the header names column 'text' \(text\) 2 times"),
])
def test_errors_name_file_line_field(tmp_path, name, content, kwargs, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        read_text_examples(path, **kwargs)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv: no such file"):
        read_text_examples(str(tmp_path / "nope.tsv"))


def test_read_lines(tmp_path):
    assert read_lines(_write(tmp_path / "a.txt", "\ufeffone\n\n two \r\n")) == ["one",
                                                                               " two "]
    with pytest.raises(ValueError, match="is empty"):
        read_lines(_write(tmp_path / "b.txt", "\n \n"))


def test_tsv_lone_carriage_return_is_data_and_crlf_is_an_ending(tmp_path):
    path = _write(tmp_path / "r.tsv", "text\tlabel\r\nhello\rworld\t1\r\nok\t0\n")
    examples = read_text_examples(path)
    assert [(e.text, e.label) for e in examples] == [("hello\rworld", "1"), ("ok", "0")]
    assert examples[1].source.endswith("r.tsv:3")


def test_labels_are_stripped(tmp_path):
    # "1 " and " 1" are the label "1", not classes of their own.
    path = _write(tmp_path / "s.tsv", "text\tlabel\na\t1 \nb\t 1\nc\t0\n")
    assert [e.label for e in read_text_examples(path)] == ["1", "1", "0"]
    path = _write(tmp_path / "s.csv", "text, label\nfoo, 1\n")
    assert [e.label for e in read_text_examples(path)] == ["1"]


@pytest.mark.parametrize("name", ["u.tsv", "u.csv", "u.jsonl", "u.txt"])
def test_bad_utf8_names_file_and_line(tmp_path, name):
    rows = {"u.jsonl": [b'{"text": "a", "label": 1}', b'{"text": "b\xff", "label": 1}'],
            "u.csv": [b"text,label", b"b\xff,1"]}.get(name, [b"text\tlabel", b"b\xff\t1"])
    path = tmp_path / name
    path.write_bytes(b"\n".join(rows + [b"c\t1"]) + b"\n")
    with pytest.raises(ValueError, match=rf"{name}: line 2: not UTF-8 text \(byte 0xff"):
        read_text_examples(str(path))
    with pytest.raises(ValueError, match=rf"{name}: line 2: not UTF-8"):
        read_lines(str(path))
