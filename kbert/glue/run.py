"""`run_glue()`: the job behind `kbert glue`: read every task's files, fine-tune (one run,
or the paper's search), score dev, predict test with each task's best run, write the
results table and the leaderboard zip. The job directory is resumable: a run that
finished is never redone, so a crash, a budget (`max_runs`, `time_budget`) or a wider
search picks up where the last call stopped.

    OUT/
      data/TASK/train.jsonl      the training examples the runner reads (from GLUE_DIR)
      runs/TASK/RUN/             one fine-tuning run (kbert.training.finetune's directory:
                                 model/, metrics.json), plus
        run.json                 its dev scores and times (written last: the run is done)
        dev_COLUMN.jsonl         its dev predictions
        test/COLUMN.tsv          leaderboard files (the task's best run only)
      results.json, results.md   the table (kbert.glue.report)
      glue_submission.zip        every task's leaderboard files (kbert.glue.submission)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import time

import keras

from kbert.convert.references import HF_PREFIX
from kbert.glue import report, submission
from kbert.glue.files import SplitData, read_split, task_path, write_examples
from kbert.glue.search import RunConfig, run_configs
from kbert.glue.settings import GlueSettings
from kbert.glue.tasks import GlueTask, parse_tasks
from kbert.io.atomic import atomic_file
from kbert.tasks.classification.task import ClassificationTask
from kbert.training.finetune import (METRICS_FILE, MODEL_SUBDIR, finetune, json_safe,
                                     load_for_inference)
from kbert.training.settings import FinetuneSettings

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SUBMISSION_ZIP = "glue_submission.zip"


@dataclasses.dataclass
class _TaskData:
    """A task's files, read (test: the leaderboard splits, then AX when there is one)."""

    train: SplitData
    dev: dict[str, SplitData]
    test: dict[str, SplitData]
    missing: list[str]


def run_glue(settings: GlueSettings, verbose="auto") -> dict:
    """Runs the GLUE job `settings` describes; returns results.json's content.

    Every task's files are read (and checked) before the first run, so a renamed column
    in the last task fails in seconds, not hours.

    Raises:
        FileNotFoundError: GLUE_DIR, a task folder or file, or the model is missing.
        ValueError: bad settings or data (naming task, file, line, column, label).
    """
    _check(settings)
    with _quiet_retracing():
        return _run(settings, verbose)


def _run(settings: GlueSettings, verbose) -> dict:
    tasks = parse_tasks(settings.tasks)
    out = os.path.abspath(settings.out)
    data = {task.name: _read_task(settings.data, task) for task in tasks}
    results = {"model": settings.model, "data": os.path.abspath(settings.data),
               "search": settings.search, "restarts": settings.restarts,
               "seq_len": settings.seq_len, "settings": settings.to_dict(), "tasks": {},
               "stopped": None}
    budget = _Budget(settings)
    test_files: dict[str, bytes] = {}
    for task in tasks:
        task_data = data[task.name]
        train_file = os.path.join(out, "data", task.name, "train.jsonl")
        if not os.path.isfile(train_file):
            write_examples(train_file, task_data.train.examples)
        base = RunConfig(settings.batch_size, settings.learning_rate, settings.epochs,
                         settings.seed)
        configs = run_configs(settings.search, base, settings.restarts,
                              len(task_data.train.examples))
        runs = []
        for number, config in enumerate(configs, start=1):
            run_dir = os.path.join(out, "runs", task.name, config.name)
            record = _read_record(run_dir)
            if record is None:
                if not os.path.isdir(os.path.join(run_dir, MODEL_SUBDIR)):
                    reason = budget.exhausted()
                    if reason:
                        results["stopped"] = reason
                        continue
                    logger.info("%s run %d of %d: %s", task.title, number, len(configs),
                                config.name)
                    budget.started += 1
                    _train(settings, task, config, train_file, run_dir, verbose)
                record = _score_dev(settings, task, task_data, config, run_dir)
            runs.append(record)
        best = report.best_run(task, runs)
        test_seconds = 0.0
        if best is not None:
            start = time.perf_counter()
            test_files.update(_test_files(settings, task, task_data,
                                          os.path.join(out, "runs", task.name, best["run"])))
            test_seconds = time.perf_counter() - start
        results["tasks"][task.name] = {
            "title": task.title, "train_examples": len(task_data.train.examples),
            "dev_examples": {c: len(s.examples) for c, s in task_data.dev.items()},
            "test_examples": {c: len(s.examples) for c, s in task_data.test.items()},
            "broken_rows": {"train": task_data.train.broken, **{
                f"dev {c}": s.broken for c, s in task_data.dev.items()}},
            "missing": task_data.missing, "planned_runs": len(configs), "runs": runs,
            "best": best, "test_seconds": test_seconds}
        _write_results(out, results)  # after every task: progress shows as it comes
        if best is not None:
            logger.info("%s: best %s, %s", task.title, best["run"], ", ".join(
                f"{column} {report.metric_value(task, best['dev'][column], task.paper_metric) * 100:.1f}"
                for column in task.columns))
    if test_files:
        submission.write_zip(os.path.join(out, SUBMISSION_ZIP), test_files)
    results["submission"] = sorted(test_files)
    _write_results(out, results)
    return results


# -- reading --------------------------------------------------------------------------------

def _read_task(glue_dir: str, task: GlueTask) -> _TaskData:
    train = read_split(glue_dir, task, task.train)
    if train.broken:
        logger.warning("GLUE task %s: %s: %d broken row(s) skipped (lines %s%s)", task.title,
                       train.path, len(train.broken), ", ".join(map(str, train.broken[:5])),
                       ", ..." if len(train.broken) > 5 else "")
    labels = {e.label for e in train.examples}
    dev = {split.column: read_split(glue_dir, task, split.file, train_labels=labels)
           for split in task.dev}
    test = {split.column: read_split(glue_dir, task, split.file, test=True)
            for split in task.test}
    missing = []
    if task.diagnostic is not None:
        try:
            task_path(glue_dir, task, task.diagnostic.file)
        except FileNotFoundError:
            # The download script fetches AX only with --tasks all / diagnostic.
            missing.append(os.path.join(glue_dir, task.diagnostic.file))
            logger.warning("GLUE task %s: no %s; %s.tsv is left out of the submission",
                           task.title, missing[-1], task.diagnostic.column)
        else:
            test[task.diagnostic.column] = read_split(glue_dir, task, task.diagnostic.file,
                                                      test=True)
    return _TaskData(train, dev, test, missing)


# -- one run --------------------------------------------------------------------------------

def _train(settings: GlueSettings, task: GlueTask, config: RunConfig, train_file: str,
           run_dir: str, verbose) -> None:
    options = {"text_column": "text", "label_column": "label"}
    if task.pair is not None:
        options["pair_column"] = "text_pair"
    if task.regression:
        options["regression"] = True
    run = FinetuneSettings(
        model=settings.model, train=train_file, out=run_dir, eval=None,
        seq_len=settings.seq_len, epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, seed=config.seed, precision=settings.precision,
        overwrite=False, options=options)
    # No eval file: a run keeps its last epoch (the number of epochs is a searched
    # setting, as in the paper); dev is scored once, below.
    finetune(ClassificationTask(), run, verbose=verbose)
    keras.backend.clear_session()
    gc.collect()


def _score_dev(settings: GlueSettings, task: GlueTask, task_data: _TaskData,
               config: RunConfig, run_dir: str) -> dict:
    start = time.perf_counter()
    clf, model, spec, tokenizer = load_for_inference(os.path.join(run_dir, MODEL_SUBDIR))
    dev = {}
    for column, split in task_data.dev.items():
        predictions = clf.predict(model, split.examples, tokenizer, spec,
                                  settings.predict_batch_size)
        dev[column] = clf.evaluate(split.examples, predictions, spec)
        lines = [json.dumps(json_safe(p), ensure_ascii=False) for p in predictions]
        atomic_file(os.path.join(run_dir, f"dev_{column}.jsonl"),
                    ("\n".join(lines) + "\n").encode("utf-8"))
    with open(os.path.join(run_dir, METRICS_FILE), encoding="utf-8") as f:
        train_seconds = sum(json.load(f)["seconds_per_epoch"])
    record = {"run": config.name, **dataclasses.asdict(config), "dev": dev,
              "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start}
    atomic_file(os.path.join(run_dir, RUN_FILE), _json_bytes(record))
    del model
    keras.backend.clear_session()
    gc.collect()
    return record


def _read_record(run_dir: str) -> dict | None:
    """run.json of a finished run, or None (never ran, or stopped before scoring)."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    # JSON has no NaN (json_safe wrote None): back to NaN for the comparisons.
    for metrics in record["dev"].values():
        for key, value in metrics.items():
            if value is None:
                metrics[key] = math.nan
    return record


# -- test predictions -----------------------------------------------------------------------

def _test_files(settings: GlueSettings, task: GlueTask, task_data: _TaskData,
                run_dir: str) -> dict[str, bytes]:
    """{"CoLA.tsv": content, ...} of the best run, predicted once (kept in RUN/test/)."""
    folder = os.path.join(run_dir, "test")
    names = {column: f"{column}.tsv" for column in task_data.test}
    if not all(os.path.isfile(os.path.join(folder, n)) for n in names.values()):
        clf, model, spec, tokenizer = load_for_inference(os.path.join(run_dir, MODEL_SUBDIR))
        for column, split in task_data.test.items():
            predictions = clf.predict(model, split.examples, tokenizer, spec,
                                      settings.predict_batch_size)
            if task.regression:
                values = [submission.format_score(p["score"], task.score_range)
                          for p in predictions]
            else:
                values = [p["label"] for p in predictions]
            atomic_file(os.path.join(folder, names[column]),
                        submission.prediction_tsv(split.indexes, values))
        del model
        keras.backend.clear_session()
    files = {}
    for name in names.values():
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = f.read()
    return files


# -- the rest -------------------------------------------------------------------------------

class _RetracingNotice(logging.Filter):
    """Drops TF's "N out of the last M calls ... triggered tf.function retracing": every
    run builds a new model, hence new train functions; expected here, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    tf_logger, notice = logging.getLogger("tensorflow"), _RetracingNotice()
    tf_logger.addFilter(notice)
    try:
        yield
    finally:
        tf_logger.removeFilter(notice)


class _Budget:
    """How many new runs may start (`max_runs`) and until when (`time_budget` hours)."""

    def __init__(self, settings: GlueSettings):
        self.max_runs, self.hours = settings.max_runs, settings.time_budget
        self.start, self.started = time.monotonic(), 0

    def exhausted(self) -> str | None:
        if self.max_runs is not None and self.started >= self.max_runs:
            return f"--max-runs {self.max_runs} reached"
        if self.hours is not None and time.monotonic() - self.start > self.hours * 3600:
            return f"--time-budget {self.hours:g} h spent"
        return None


def _check(settings: GlueSettings) -> None:
    for name in ("seq_len", "batch_size", "epochs", "restarts", "predict_batch_size"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if settings.max_runs is not None and settings.max_runs < 0:
        raise ValueError(f"max_runs must be >= 0, got {settings.max_runs}")
    if settings.time_budget is not None and not settings.time_budget > 0:
        raise ValueError(f"time_budget must be > 0 hours, got {settings.time_budget}")
    if not os.path.isdir(settings.data):
        raise FileNotFoundError(f"--data {settings.data}: no such directory")
    if not str(settings.model).startswith(HF_PREFIX) and not os.path.exists(settings.model):
        raise FileNotFoundError(f"--model {settings.model}: no such file or directory")


def _write_results(out: str, results: dict) -> None:
    atomic_file(os.path.join(out, RESULTS_JSON), _json_bytes(results))
    atomic_file(os.path.join(out, RESULTS_MD), report.markdown(results).encode("utf-8"))


def _json_bytes(content) -> bytes:
    return (json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n").encode("utf-8")
