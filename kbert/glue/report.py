"""The results of a GLUE job: picking each task's best run, and the table laid out as the
BERT paper's Table 1 (Markdown; the same content is results.json).

No TensorFlow here.

A run record (what `kbert.glue.run` stores per run, run.json) is a dict:
    {"run": "bs32_lr2e-05_ep3_seed0", "batch_size", "learning_rate", "epochs", "seed",
     "dev": {column: {metric key: value}}, "train_seconds", "eval_seconds"}
with the metric keys of kbert's classification / regression `evaluate` (accuracy, f1,
matthews_corrcoef, pearson, spearman, ...).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from kbert.glue.tasks import GLUE_TASKS, METRIC_KEYS, NOT_AVERAGED, TABLE_ORDER, GlueTask

_METRIC_TITLES = {"mcc": "MCC", "acc": "acc", "f1": "F1", "pearson": "Pearson",
                  "spearman": "Spearman"}


def metric_value(task: GlueTask, column_metrics: Mapping[str, float], metric: str) -> float:
    """The GLUE metric `metric` ("mcc", "f1", ...) of one column's metrics; NaN if absent."""
    value = column_metrics.get(METRIC_KEYS[metric])
    return math.nan if value is None else float(value)


def selection_score(task: GlueTask, run: Mapping) -> float:
    """What picks a task's best run: the paper's metric on the first dev split (MNLI:
    matched). NaN (a constant prediction's correlation) never wins."""
    value = metric_value(task, run["dev"][task.dev[0].column], task.paper_metric)
    return -math.inf if math.isnan(value) else value


def best_run(task: GlueTask, runs: Sequence[Mapping]) -> Mapping | None:
    """The run with the highest `selection_score` (the first such in run order)."""
    best = None
    for run in runs:
        if best is None or selection_score(task, run) > selection_score(task, best):
            best = run
    return best


def paper_scores(results: Mapping) -> dict[str, float]:
    """{column: 100 x the paper's metric of the best run} for the tasks in `results`
    (the "tasks" of results.json), and "Average": their mean over the columns present
    but WNLI, as the paper's Table 1 averages (MNLI-m and MNLI-mm count once each)."""
    scores = {}
    for name, result in results["tasks"].items():
        task = GLUE_TASKS[name]
        best = result.get("best")
        if best is None:
            continue
        for column in task.columns:
            scores[column] = 100 * metric_value(task, best["dev"][column], task.paper_metric)
    averaged = [v for column, v in scores.items() if column not in NOT_AVERAGED]
    if averaged:
        scores["Average"] = sum(averaged) / len(averaged)
    return scores


def markdown(results: Mapping) -> str:
    """results.json as Markdown: the paper's table (dev scores of the best runs), then per
    task every GLUE metric, the best run, the runs done and their time, broken rows, then
    every run of every task."""
    tasks = results["tasks"]
    scores = paper_scores(results)
    columns = [c for c in TABLE_ORDER if c in scores] + (["Average"] if "Average" in scores
                                                          else [])
    size = {column: tasks[name]["train_examples"] for name in tasks
            for column in GLUE_TASKS[name].columns}
    lines = [f"# GLUE dev results: {results['model']}", "",
             f"Search `{results['search']}`, restarts {results['restarts']} on the small "
             f"tasks; T = {results['seq_len']}. Dev scores x 100 of each task's best run, "
             "laid out as Table 1 of Devlin et al. (2018): MNLI, QNLI, SST-2, RTE, WNLI "
             "accuracy; QQP and MRPC F1; STS-B Spearman; CoLA Matthews correlation. "
             "Average: the mean of the columns shown, WNLI left out as in the paper.", ""]
    if columns:
        lines += ["| " + " | ".join(["System"] + columns) + " |",
                  "|" + "---|" + "---:|" * len(columns),
                  "| " + " | ".join(["(train examples)"] + [
                      _size(size[c]) if c in size else "" for c in columns]) + " |",
                  "| " + " | ".join([results["model"]] + [
                      f"{scores[c]:.1f}" for c in columns]) + " |", ""]
    else:
        lines += ["No task has a finished run yet.", ""]
    lines += ["## Per task", "",
              "| task | dev metrics | best run | runs done | train + eval seconds | "
              "train examples | broken rows |", "|---|---|---|---:|---:|---:|---:|"]
    for name, result in tasks.items():
        task = GLUE_TASKS[name]
        best = result.get("best")
        shown = "–" if best is None else "; ".join(
            f"{column} " + " / ".join(
                f"{_METRIC_TITLES[m]} {100 * metric_value(task, best['dev'][column], m):.1f}"
                for m in task.metrics) for column in task.columns)
        seconds = sum(r["train_seconds"] + r["eval_seconds"] for r in result["runs"])
        broken = sum(len(lines_) for lines_ in result["broken_rows"].values())
        lines.append(f"| {task.title} | {shown} | {best['run'] if best else '–'} | "
                     f"{len(result['runs'])} of {result['planned_runs']} | {seconds:.0f} | "
                     f"{result['train_examples']} | {broken} |")
    lines += ["", "## Every run", "", "| task | run | batch | learning rate | epochs | seed | "
              "dev score | train s | eval s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, result in tasks.items():
        task = GLUE_TASKS[name]
        for run in result["runs"]:
            value = metric_value(task, run["dev"][task.dev[0].column], task.paper_metric)
            lines.append(
                f"| {task.title} | {run['run']} | {run['batch_size']} | "
                f"{run['learning_rate']:g} | {run['epochs']} | {run['seed']} | "
                f"{100 * value:.1f} | {run['train_seconds']:.0f} | {run['eval_seconds']:.0f} |")
    missing = [path for result in tasks.values() for path in result.get("missing", ())]
    if missing:
        lines += ["", "Not in the submission (file missing): " + ", ".join(missing)]
    if results.get("stopped"):
        lines += ["", f"Stopped early: {results['stopped']}. Run the same command again to "
                  "go on; finished runs are not redone."]
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)
