"""The nine GLUE tasks as the official download script (`download_glue_data.py`) lays them
out: folder, files, columns, label strings, metrics, and the leaderboard's file names.

No TensorFlow here: the CLI reads the task names from this table.

Layout facts the readers rely on (docs/GLUE.md has the full table):
- CoLA's train.tsv / dev.tsv have no header (source, label, original mark, sentence);
  its test.tsv has one (index, sentence). Every other file has a header row.
- MRPC's train.tsv / dev.tsv start with a UTF-8 byte-order mark (the header is copied from
  Microsoft's msr_paraphrase_train.txt) and its sentences hold unbalanced '"': GLUE files
  are read with no quoting at all (kbert.data.readers' TSV).
- MNLI has dev_matched / dev_mismatched and test_matched / test_mismatched; one model
  (trained on train.tsv) answers all four and the AX diagnostic (diagnostic/diagnostic.tsv).
- QQP's train / dev hold a few rows with missing fields; they are counted and reported,
  not silently dropped (every other task's broken row is an error naming file and line).
"""

from __future__ import annotations

import dataclasses

# GLUE's metric names -> the keys of kbert's classification / regression evaluate().
METRIC_KEYS = {"mcc": "matthews_corrcoef", "acc": "accuracy", "f1": "f1",
               "pearson": "pearson", "spearman": "spearman"}


@dataclasses.dataclass(frozen=True)
class Split:
    """One evaluated file of a task.

    Attributes:
        column: the results table's column ("MNLI-m") and the leaderboard file's stem
            ("MNLI-m.tsv") for a test split.
        file: path inside GLUE_DIR ("MNLI/dev_matched.tsv").
    """

    column: str
    file: str


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """A GLUE task.

    Attributes:
        name: the CLI name ("sst2"); `title` GLUE's ("SST-2").
        train: train file; dev: the dev splits (the first one picks the best run);
            test: the test splits (leaderboard files), `diagnostic` the AX split answered
            by this task's model (MNLI's).
        header: whether train / dev files have a header row (test files always have).
        text, pair, label: train / dev columns (names, or 0-based field numbers without
            a header); test_text, test_pair, index: test columns.
        labels: the label strings as written in the files; empty for regression.
        metrics: GLUE's metrics of the task, in the order the leaderboard shows them
            (keys of METRIC_KEYS); `paper_metric` the one the paper's Table 1 shows.
        tolerate_broken: rows with missing fields are counted and skipped (QQP), not an
            error.
        score_range: regression predictions are clipped to it in the leaderboard file.
    """

    name: str
    title: str
    train: str
    dev: tuple[Split, ...]
    test: tuple[Split, ...]
    header: bool
    text: str | int
    pair: str | int | None
    label: str | int
    test_text: str
    test_pair: str | None
    index: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    paper_metric: str
    diagnostic: Split | None = None
    tolerate_broken: bool = False
    score_range: tuple[float, float] | None = None

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def columns(self) -> tuple[str, ...]:
        """The results table's columns of this task (one per dev split)."""
        return tuple(split.column for split in self.dev)


def _simple(name, title, text, pair, label, labels, metrics, paper_metric, **kwargs):
    """A task with GLUE's usual files: TITLE/train.tsv, dev.tsv, test.tsv (index column
    "index"), one column per split."""
    return GlueTask(name=name, title=title, train=f"{title}/train.tsv",
                    dev=(Split(title, f"{title}/dev.tsv"),),
                    test=(Split(title, f"{title}/test.tsv"),), header=True, text=text,
                    pair=pair, label=label, test_text=kwargs.pop("test_text", text),
                    test_pair=kwargs.pop("test_pair", pair),
                    index=kwargs.pop("index", "index"), labels=labels, metrics=metrics,
                    paper_metric=paper_metric, **kwargs)


_NLI = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {task.name: task for task in (
    dataclasses.replace(
        _simple("cola", "CoLA", 3, None, 1, ("0", "1"), ("mcc",), "mcc",
                test_text="sentence"), header=False),
    _simple("sst2", "SST-2", "sentence", None, "label", ("0", "1"), ("acc",), "acc"),
    _simple("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("0", "1"),
            ("f1", "acc"), "f1"),
    _simple("stsb", "STS-B", "sentence1", "sentence2", "score", (),
            ("pearson", "spearman"), "spearman", score_range=(0.0, 5.0)),
    _simple("qqp", "QQP", "question1", "question2", "is_duplicate", ("0", "1"),
            ("f1", "acc"), "f1", index="id", tolerate_broken=True),
    GlueTask(name="mnli", title="MNLI", train="MNLI/train.tsv",
             dev=(Split("MNLI-m", "MNLI/dev_matched.tsv"),
                  Split("MNLI-mm", "MNLI/dev_mismatched.tsv")),
             test=(Split("MNLI-m", "MNLI/test_matched.tsv"),
                   Split("MNLI-mm", "MNLI/test_mismatched.tsv")),
             diagnostic=Split("AX", "diagnostic/diagnostic.tsv"), header=True,
             text="sentence1", pair="sentence2", label="gold_label",
             test_text="sentence1", test_pair="sentence2", index="index",
             labels=("contradiction", "entailment", "neutral"), metrics=("acc",),
             paper_metric="acc"),
    _simple("qnli", "QNLI", "question", "sentence", "label", _NLI, ("acc",), "acc"),
    _simple("rte", "RTE", "sentence1", "sentence2", "label", _NLI, ("acc",), "acc"),
    _simple("wnli", "WNLI", "sentence1", "sentence2", "label", ("0", "1"), ("acc",), "acc"),
)}

# The paper's Table 1, left to right (WNLI last: the paper leaves it out of the table and
# of its average, as do we).
TABLE_ORDER = ("MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE",
               "WNLI")
NOT_AVERAGED = ("WNLI",)


def parse_tasks(value: str | None) -> tuple[GlueTask, ...]:
    """GlueTasks from a comma-separated list ("cola,sst2", "SST-2", "sts-b"; None or "all":
    the nine), in GLUE's order; ValueError naming an unknown name and the known ones."""
    if value is None or value.strip().lower() == "all":
        return tuple(GLUE_TASKS.values())
    chosen = []
    for word in value.split(","):
        key = word.strip().lower().replace("-", "").replace("_", "")
        if not key:
            continue
        if key not in GLUE_TASKS:
            raise ValueError(f"unknown GLUE task {word.strip()!r}; the tasks are "
                             f"{', '.join(GLUE_TASKS)}")
        if GLUE_TASKS[key] not in chosen:
            chosen.append(GLUE_TASKS[key])
    if not chosen:
        raise ValueError("--tasks names no task")
    order = list(GLUE_TASKS.values())
    return tuple(sorted(chosen, key=order.index))
