"""CoNLL-2003 and CoNLL-U readers: sentences, labels, line numbers and each error."""

import pytest

from kbert.data.conll import read_conll2003, read_conllu, read_tagging_file

CONLL2003 = """\
-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP I-LOC
"""

CONLLU = """\
# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t0:root\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\t100 000\t100 000\tNUM\tCD\t_\t0\troot\t_\t_
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_conll2003_sentences_labels_lines(tmp_path):
    path = _write(tmp_path, "train.txt", CONLL2003)
    sentences = read_conll2003(path)
    assert [s.words for s in sentences] == [
        ("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn"), ("BRUSSELS",)]
    assert sentences[0].labels == ("I-ORG", "O", "I-MISC", "O", "O")
    assert sentences[1].lines == (9, 10)
    assert sentences[2].lines == (13,) and sentences[2].path == path
    # Another column as the label; tabs work as separators too.
    chunks = read_tagging_file(_write(tmp_path, "chunks.tsv", CONLL2003.replace(" ", "\t")),
                               label_column=2)
    assert chunks[0].labels == ("B-NP", "B-VP", "B-NP", "I-NP", "O")


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = _write(tmp_path, "dev.conllu", CONLLU)
    sentences = read_tagging_file(path)  # .conllu -> CoNLL-U, UPOS
    assert sentences[0].words == ("I", "do", "n't", "know", ".")
    assert sentences[0].labels == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert sentences[0].lines == (3, 5, 6, 8, 9)
    assert sentences[1].words == ("100 000",) and sentences[1].lines == (12,)
    assert read_conllu(path, label_column="xpos")[0].labels == ("PRP", "VBP", "RB", "VB", ".")
    # The format can be forced whatever the extension.
    other = _write(tmp_path, "dev.txt", CONLLU)
    assert read_tagging_file(other, format="conllu")[0].labels[0] == "PRON"


@pytest.mark.parametrize("name, text, message", [
    ("a.txt", "", r"a.txt: empty file"),
    ("b.txt", "-DOCSTART- -X- O\n\n\n", r"b.txt: empty file"),
    ("c.txt", "EU NNP I-ORG\nrejects O\n", r"c.txt:2: 2 columns, but line 1 has 3"),
    ("d.txt", "EU I-ORG\n\nrejects\n", r"d.txt:3: the label column is missing"),
    ("e.conllu", "# only a comment\n\n", r"e.conllu: empty file"),
    ("f.conllu", "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\n", r"f.conllu:1: 9 tab-separated columns"),
    ("g.conllu", "1\tI\tI\t_\tPRP\t_\t0\troot\t_\t_\n", r"g.conllu:1: no UPOS label"),
    ("h.conllu", "x\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", r"h.conllu:1: ID 'x'"),
    ("i.conllu", "1-\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", r"i.conllu:1: ID '1-'"),
    ("j.conllu", "\u00b2\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", r"j.conllu:1: ID '\u00b2'"),
])
def test_errors_name_file_and_line(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=message):
        read_tagging_file(path)


def test_bad_options(tmp_path):
    path = _write(tmp_path, "x.conllu", CONLLU)
    with pytest.raises(ValueError, match="label column must be one of"):
        read_tagging_file(path, label_column="lemma")
    with pytest.raises(ValueError, match="unknown tagging file format"):
        read_tagging_file(path, format="json")
    conll = _write(tmp_path, "x.txt", CONLL2003)
    with pytest.raises(ValueError, match=r"x.txt:3: label column 4 is not one of"):
        read_tagging_file(conll, label_column=4)
    with pytest.raises(ValueError, match="is a column number"):
        read_tagging_file(conll, label_column="upos")


def test_conll2003_columns_split_at_spaces_and_tabs_only(tmp_path):
    # A no-break space or an ideographic space is part of a word; so is a control
    # character (the tokenizer drops it, the word still gets a label).
    path = _write(tmp_path, "w.txt", "100\u00a0000 NUM\nEU\u3000x\tPROPN\n\x1c PUNCT\n\n")
    (sentence,) = read_conll2003(path)
    assert sentence.words == ("100\u00a0000", "EU\u3000x", "\x1c")
    assert sentence.labels == ("NUM", "PROPN", "PUNCT")
