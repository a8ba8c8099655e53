"""Small GLUE directories in the exact layout of the official download script (made-up rows
of the tiny vocabulary's words, not GLUE data): every task's folder, file names, header
(or none: CoLA's train / dev), columns, label strings, MRPC's byte-order mark and quote
characters, QQP's broken rows, MNLI's matched / mismatched files and the AX diagnostic.

    glue_dir = make_glue_dir(tmp_path / "glue", tasks=("cola", "mrpc"))

Labels follow the first word of the text (w0 ... w9 -> class by parity) so that a tiny
model has something to learn, though no test needs it to.
"""

from __future__ import annotations

import os
import random

ROWS = {"train": 24, "dev": 10, "test": 7}
# QQP: lines (1-based, header = line 1) of train.tsv that are broken, as some of the real
# file's are: a row cut after its first question, and one with no label field.
QQP_BROKEN_TRAIN_LINES = (5, 12)


def _words(rng: random.Random, first: int, n: int) -> str:
    return " ".join([f"w{first}"] + [f"w{rng.randrange(10, 59)}" for _ in range(n - 1)])


def _row_texts(rng, i):
    first = i % 10
    return first, _words(rng, first, rng.randrange(3, 9)), _words(rng, (first + 3) % 10,
                                                                 rng.randrange(3, 12))


def _write(path, lines, bom=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(("\ufeff" if bom else "") + "\n".join(lines) + "\n")


def make_glue_dir(root, tasks=("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
                               "wnli"), seed: int = 0, diagnostic: bool = True) -> str:
    """Writes the GLUE layout of `tasks` under `root`; returns root as a str."""
    root = os.fspath(root)
    rng = random.Random(seed)
    for task in tasks:
        globals()[f"_{task}"](root, rng)
    if "mnli" in tasks and diagnostic:
        _pair_test(root, rng, "diagnostic/diagnostic.tsv", "index\tsentence1\tsentence2",
                   lambda i, a, b: f"{i}\t{a}\t{b}")
    return root


def _binary(first):
    return str(first % 2)


def _nli(first):
    return ("entailment", "not_entailment")[first % 2]


def _cola(root, rng):
    for split in ("train", "dev"):
        rows = []
        for i in range(ROWS[split]):
            first, a, _ = _row_texts(rng, i)
            mark = "" if first % 2 else "*"
            rows.append(f"gj04\t{_binary(first)}\t{mark}\t{a}")
        _write(os.path.join(root, "CoLA", f"{split}.tsv"), rows)  # no header
    _single_text_test(root, rng, "CoLA")


def _single_text_test(root, rng, title):
    _write(os.path.join(root, title, "test.tsv"), ["index\tsentence"] + [
        f"{i}\t{_row_texts(rng, i)[1]}" for i in range(ROWS["test"])])


def _sst2(root, rng):
    for split in ("train", "dev"):
        rows = ["sentence\tlabel"]
        for i in range(ROWS[split]):
            first, a, _ = _row_texts(rng, i)
            rows.append(f"{a} \t{_binary(first)}")
        _write(os.path.join(root, "SST-2", f"{split}.tsv"), rows)
    _single_text_test(root, rng, "SST-2")


def _mrpc(root, rng):
    for split in ("train", "dev"):
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(ROWS[split]):
            first, a, b = _row_texts(rng, i)
            # Unbalanced quotes are data in GLUE files.
            rows.append(f"{_binary(first)}\t{1000 + i}\t{2000 + i}\t\"{a}\t{b} \" w11")
        _write(os.path.join(root, "MRPC", f"{split}.tsv"), rows, bom=True)
    _pair_test(root, rng, "MRPC/test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String",
               lambda i, a, b: f"{i}\t{3000 + i}\t{4000 + i}\t{a}\t\"{b}")


def _pair_test(root, rng, file, header, row, count=ROWS["test"]):
    """A test file: `header`, then row(i, text, pair) for i < count."""
    rows = [header]
    for i in range(count):
        _, a, b = _row_texts(rng, i)
        rows.append(row(i, a, b))
    _write(os.path.join(root, file), rows)


def _stsb(root, rng):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    for split in ("train", "dev"):
        rows = [head + "\tscore"]
        for i in range(ROWS[split]):
            first, a, b = _row_texts(rng, i)
            score = f"{first / 2:.3f}"
            rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}"
                        f"\t{score}")
        _write(os.path.join(root, "STS-B", f"{split}.tsv"), rows)
    _pair_test(root, rng, "STS-B/test.tsv", head, lambda i, a, b: (
        f"{i}\tmain-news\theadlines\t2015\t{i:04d}\tnone\tnone\t{a}\t{b}"))


def _qqp(root, rng):
    for split in ("train", "dev"):
        rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
        for i in range(ROWS[split]):
            first, a, b = _row_texts(rng, i)
            line = len(rows) + 1
            if split == "train" and line == QQP_BROKEN_TRAIN_LINES[0]:
                rows.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}")
            elif split == "train" and line == QQP_BROKEN_TRAIN_LINES[1]:
                rows.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}")
            else:
                rows.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}?\t{b}?\t{_binary(first)}")
        _write(os.path.join(root, "QQP", f"{split}.tsv"), rows)
    _pair_test(root, rng, "QQP/test.tsv", "id\tquestion1\tquestion2",
               lambda i, a, b: f"{i}\t{a}?\t{b}?")


def _mnli(root, rng):
    base = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
            "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2")
    labels = ("contradiction", "entailment", "neutral")

    def row(i, a, b):
        return (f"{i}\t{31000 + i}\t{31000 + i}n\tfiction\t( {a} )\t( {b} )\t(ROOT {a})"
                f"\t(ROOT {b})\t{a}\t{b}")

    rows = [base + "\tlabel1\tgold_label"]
    for i in range(ROWS["train"]):
        first, a, b = _row_texts(rng, i)
        label = labels[first % 3]
        rows.append(row(i, a, b) + f"\t{label}\t{label}")
    _write(os.path.join(root, "MNLI", "train.tsv"), rows)
    for name in ("dev_matched", "dev_mismatched"):
        rows = [base + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"]
        for i in range(ROWS["dev"]):
            first, a, b = _row_texts(rng, i)
            label = labels[first % 3]
            rows.append(row(i, a, b) + f"\t{label}\t{label}\t{labels[i % 3]}\t{label}"
                        f"\t{label}\t{label}")
        _write(os.path.join(root, "MNLI", f"{name}.tsv"), rows)
    for name, count in (("test_matched", ROWS["test"]), ("test_mismatched", ROWS["test"] + 2)):
        _pair_test(root, rng, f"MNLI/{name}.tsv", base, row, count)


def _pair_task(root, rng, title, first_column, second_column, label_of):
    for split in ("train", "dev"):
        rows = [f"index\t{first_column}\t{second_column}\tlabel"]
        for i in range(ROWS[split]):
            first, a, b = _row_texts(rng, i)
            rows.append(f"{i}\t{a}\t{b}\t{label_of(first)}")
        _write(os.path.join(root, title, f"{split}.tsv"), rows)
    _pair_test(root, rng, f"{title}/test.tsv", f"index\t{first_column}\t{second_column}",
               lambda i, a, b: f"{i}\t{a}\t{b}")


def _qnli(root, rng):
    _pair_task(root, rng, "QNLI", "question", "sentence", _nli)


def _rte(root, rng):
    _pair_task(root, rng, "RTE", "sentence1", "sentence2", _nli)


def _wnli(root, rng):
    _pair_task(root, rng, "WNLI", "sentence1", "sentence2", _binary)
