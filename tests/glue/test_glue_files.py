"""GLUE's layout (kbert.glue.files / tasks), the search grid, the paper's table and the
leaderboard files, without training: files made in each task's exact layout by
tests/helpers/glue.py."""

import math
import os
import zipfile

import pytest

from helpers.glue import QQP_BROKEN_TRAIN_LINES, ROWS, make_glue_dir
from kbert.glue import report, submission
from kbert.glue.files import read_split
from kbert.glue.search import SMALL_TASK_EXAMPLES, RunConfig, run_configs
from kbert.glue.tasks import GLUE_TASKS, parse_tasks


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("glue"))


def _lines(path):
    with open(path, encoding="utf-8-sig") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("name", list(GLUE_TASKS))
def test_every_split_of_every_task_reads_as_laid_out(glue_dir, name):
    task = GLUE_TASKS[name]
    train = read_split(glue_dir, task, task.train)
    expected_train = ROWS["train"] - (len(QQP_BROKEN_TRAIN_LINES) if name == "qqp" else 0)
    assert len(train.examples) == expected_train
    assert (train.examples[0].text_pair is None) == (task.pair is None)
    for example in train.examples:
        assert example.label in task.labels if task.labels else float(example.label) >= 0
    for split in task.dev:
        dev = read_split(glue_dir, task, split.file)
        assert len(dev.examples) == ROWS["dev"]
    for split in task.test + ((task.diagnostic,) if task.diagnostic else ()):
        test = read_split(glue_dir, task, split.file, test=True)
        rows = _lines(os.path.join(glue_dir, split.file))[1:]
        assert len(test.examples) == len(rows)
        assert test.indexes == [row.split("\t")[0] for row in rows]
        assert all(e.label is None for e in test.examples)


def test_the_fields_are_the_files_columns(glue_dir):
    # CoLA: no header, the sentence is field 4, the label field 2.
    cola = read_split(glue_dir, GLUE_TASKS["cola"], "CoLA/train.tsv")
    first = _lines(os.path.join(glue_dir, "CoLA/train.tsv"))[0].split("\t")
    assert (cola.examples[0].text, cola.examples[0].label) == (first[3], first[1])
    assert cola.examples[0].source.endswith("CoLA/train.tsv:1")
    # MRPC: the byte-order mark does not hide "Quality"; quotes stay in the text.
    mrpc = read_split(glue_dir, GLUE_TASKS["mrpc"], "MRPC/train.tsv")
    row = _lines(os.path.join(glue_dir, "MRPC/train.tsv"))[1].split("\t")
    assert (mrpc.examples[0].label, mrpc.examples[0].text, mrpc.examples[0].text_pair) == (
        row[0], row[3], row[4])
    assert mrpc.examples[0].text.startswith('"') and '"' in mrpc.examples[0].text_pair
    # MNLI: the label is gold_label (the last of dev's six label columns).
    mnli = read_split(glue_dir, GLUE_TASKS["mnli"], "MNLI/dev_matched.tsv")
    rows = _lines(os.path.join(glue_dir, "MNLI/dev_matched.tsv"))
    header = rows[0].split("\t")
    assert [e.label for e in mnli.examples] == [
        r.split("\t")[header.index("gold_label")] for r in rows[1:]]
    assert mnli.examples[0].text == rows[1].split("\t")[header.index("sentence1")]


def test_qqp_broken_rows_are_counted_not_dropped_silently(glue_dir):
    qqp = read_split(glue_dir, GLUE_TASKS["qqp"], "QQP/train.tsv")
    assert qqp.broken == list(QQP_BROKEN_TRAIN_LINES)
    lines = {int(e.source.rsplit(":", 1)[1]) for e in qqp.examples}
    assert not lines & set(QQP_BROKEN_TRAIN_LINES)


def test_a_broken_row_elsewhere_names_task_file_and_line(tmp_path):
    root = make_glue_dir(tmp_path / "glue", tasks=("rte",))
    path = os.path.join(root, "RTE", "train.tsv")
    with open(path, "a", encoding="utf-8") as f:
        f.write("99\tw1 w2\n")
    with pytest.raises(ValueError, match=r"GLUE task RTE: .*RTE/train.tsv: line 26: the row "
                                         r"has 2 field\(s\)"):
        read_split(root, GLUE_TASKS["rte"], "RTE/train.tsv")


def test_missing_folder_and_file_name_the_task(tmp_path):
    root = make_glue_dir(tmp_path / "glue", tasks=("mnli",))
    with pytest.raises(FileNotFoundError, match=r"GLUE task SST-2: no folder .*SST-2"):
        read_split(root, GLUE_TASKS["sst2"], "SST-2/train.tsv")
    os.remove(os.path.join(root, "MNLI", "dev_mismatched.tsv"))
    with pytest.raises(FileNotFoundError, match=r"GLUE task MNLI: no file .*dev_mismatched"):
        read_split(root, GLUE_TASKS["mnli"], "MNLI/dev_mismatched.tsv")


def test_a_renamed_column_names_task_file_and_column(tmp_path):
    root = make_glue_dir(tmp_path / "glue", tasks=("sst2",))
    path = os.path.join(root, "SST-2", "dev.tsv")
    lines = _lines(path)
    lines[0] = "text\tlabel"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"GLUE task SST-2: .*SST-2/dev.tsv: line 1: no "
                                         r"column 'sentence' \(text\); the header has "
                                         r"\['text', 'label'\]"):
        read_split(root, GLUE_TASKS["sst2"], "SST-2/dev.tsv")


def test_labels_are_checked(tmp_path):
    root = make_glue_dir(tmp_path / "glue", tasks=("rte", "stsb"))
    rte = GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match=r"RTE/dev.tsv: line \d+: label 'entailment' never "
                                         r"appears in the training file; it has "
                                         r"\['not_entailment'\]"):
        read_split(root, rte, "RTE/dev.tsv", train_labels={"not_entailment"})
    path = os.path.join(root, "RTE", "train.tsv")
    lines = _lines(path)
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tcontradiction"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"RTE/train.tsv: line 4: label 'contradiction' is "
                                         r"not one of RTE's labels"):
        read_split(root, rte, "RTE/train.tsv")
    path = os.path.join(root, "STS-B", "dev.tsv")
    lines = _lines(path)
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tn/a"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"STS-B/dev.tsv: line 3: label 'n/a' is not a number"):
        read_split(root, GLUE_TASKS["stsb"], "STS-B/dev.tsv")


def test_task_names():
    assert [t.title for t in parse_tasks(None)] == [
        "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
    assert [t.name for t in parse_tasks("RTE, sst-2,STS_B,rte")] == ["sst2", "stsb", "rte"]
    with pytest.raises(ValueError, match=r"unknown GLUE task 'snli'; the tasks are cola, "):
        parse_tasks("cola,snli")


def test_search_grids():
    base = RunConfig(32, 2e-5, 3, seed=7)
    assert run_configs("none", base) == [base]
    paper = run_configs("paper", base, restarts=3, train_examples=100_000)
    assert len(paper) == 24 and {r.seed for r in paper} == {7}
    assert {(r.batch_size, r.learning_rate, r.epochs) for r in paper} == {
        (b, lr, e) for b in (16, 32) for lr in (5e-5, 4e-5, 3e-5, 2e-5) for e in (2, 3, 4)}
    small = run_configs("paper", base, restarts=3, train_examples=SMALL_TASK_EXAMPLES - 1)
    assert len(small) == 72 and [r.seed for r in small[:4]] == [7, 8, 9, 7]
    glue = run_configs("glue", base)
    assert [(r.batch_size, r.learning_rate, r.epochs) for r in glue] == [
        (32, 5e-5, 3), (32, 4e-5, 3), (32, 3e-5, 3), (32, 2e-5, 3)]
    assert len({r.name for r in small}) == 72
    assert RunConfig(16, 5e-5, 2, 0).name == "bs16_lr5e-05_ep2_seed0"
    with pytest.raises(ValueError, match="unknown search 'grid'"):
        run_configs("grid", base)


def _result(task, metrics_by_column):
    run = {"run": "r", "batch_size": 32, "learning_rate": 2e-5, "epochs": 3, "seed": 0,
           "dev": metrics_by_column, "train_seconds": 1.0, "eval_seconds": 1.0}
    return {"title": GLUE_TASKS[task].title, "train_examples": 1000, "broken_rows": {},
            "planned_runs": 1, "runs": [run], "best": run}


def test_the_table_reproduces_the_papers_average():
    # BERT-base's row of the paper's Table 1 (test set) averages to the paper's 79.6.
    paper = {"mnli": {"MNLI-m": {"accuracy": .846}, "MNLI-mm": {"accuracy": .834}},
             "qqp": {"QQP": {"f1": .712, "accuracy": .9}},
             "qnli": {"QNLI": {"accuracy": .905}}, "sst2": {"SST-2": {"accuracy": .935}},
             "cola": {"CoLA": {"matthews_corrcoef": .521}},
             "stsb": {"STS-B": {"spearman": .858, "pearson": .87}},
             "mrpc": {"MRPC": {"f1": .889, "accuracy": .85}},
             "rte": {"RTE": {"accuracy": .664}}, "wnli": {"WNLI": {"accuracy": .1}}}
    results = {"model": "bert-base", "search": "none", "restarts": 1, "seq_len": 128,
               "tasks": {name: _result(name, m) for name, m in paper.items()}}
    scores = report.paper_scores(results)
    assert round(scores["Average"], 1) == 79.6  # WNLI left out
    table = report.markdown(results)
    header = next(line for line in table.splitlines() if line.startswith("| System"))
    assert header == ("| System | MNLI-m | MNLI-mm | QQP | QNLI | SST-2 | CoLA | STS-B | MRPC "
                      "| RTE | WNLI | Average |")
    assert "| bert-base | 84.6 | 83.4 | 71.2 | 90.5 | 93.5 | 52.1 | 85.8 | 88.9 | 66.4 | 10.0 " \
           "| 79.6 |" in table
    assert "MRPC F1 88.9 / acc 85.0" in table


def test_best_run_never_picks_nan():
    task = GLUE_TASKS["stsb"]
    nan = {"dev": {"STS-B": {"spearman": math.nan}}, "run": "a"}
    low = {"dev": {"STS-B": {"spearman": -0.2}}, "run": "b"}
    assert report.best_run(task, [nan, low])["run"] == "b"


def test_leaderboard_files(tmp_path):
    assert submission.prediction_tsv(["0", "1"], ["entailment", "neutral"]) == \
        b"index\tprediction\n0\tentailment\n1\tneutral\n"
    assert [submission.format_score(s, (0.0, 5.0)) for s in (-0.3, 2.34567, 5.2)] == [
        "0.000", "2.346", "5.000"]
    with pytest.raises(ValueError, match="2 test rows but 1 predictions"):
        submission.prediction_tsv(["0", "1"], ["0"])
    path = str(tmp_path / "s.zip")
    submission.write_zip(path, {"RTE.tsv": b"index\tprediction\n", "AX.tsv": b"x"})
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["AX.tsv", "RTE.tsv"]
