"""`kbert glue` end to end on a tiny model: one task per layout family (CoLA header-less,
MRPC byte-order mark and quotes, STS-B regression, QQP broken rows, MNLI matched /
mismatched / AX), the metrics against scikit-learn and scipy, the leaderboard zip
against each test file; the paper's search resumed after a budget."""

import json
import os
import zipfile

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from helpers.glue import make_glue_dir
from helpers.tiny import save_tiny_model
from kbert.cli.app import main
from kbert.glue.tasks import GLUE_TASKS

TASKS = ("cola", "mrpc", "stsb", "qqp", "mnli")
RUN = "bs8_lr5e-05_ep1_seed0"


def _rows(path):
    with open(path, encoding="utf-8-sig") as f:
        return [line.split("\t") for line in f.read().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue_job")
    glue_dir = make_glue_dir(root / "glue", tasks=TASKS)
    model = str(save_tiny_model(root / "model"))
    out = str(root / "out")
    assert main(["glue", "--data", glue_dir, "--model", model, "--out", out,
                 "--tasks", ",".join(TASKS), "--epochs", "1", "--batch-size", "8",
                 "--learning-rate", "5e-5", "--seq-len", "32"]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return glue_dir, out, json.load(f)


def test_every_task_ran_once_and_is_scored_with_its_glue_metrics(job):
    glue_dir, out, results = job
    assert list(results["tasks"]) == list(TASKS)
    for name in TASKS:
        task = GLUE_TASKS[name]
        result = results["tasks"][name]
        assert [r["run"] for r in result["runs"]] == [RUN] and result["best"]["run"] == RUN
        for split in task.dev:
            rows = _rows(os.path.join(glue_dir, split.file))
            if task.header:
                header, rows = rows[0], rows[1:]
                gold = [row[header.index(task.label)] for row in rows]
            else:
                gold = [row[task.label] for row in rows]
            with open(os.path.join(out, "runs", name, RUN, f"dev_{split.column}.jsonl"),
                      encoding="utf-8") as f:
                predicted = [json.loads(line) for line in f]
            scores = result["best"]["dev"][split.column]
            if task.regression:
                y, p = np.array(gold, float), np.array([x["score"] for x in predicted])
                assert scores["pearson"] == pytest.approx(scipy.stats.pearsonr(y, p)[0],
                                                          abs=1e-9)
                assert scores["spearman"] == pytest.approx(scipy.stats.spearmanr(y, p)[0],
                                                           abs=1e-9)
                continue
            p = [x["label"] for x in predicted]
            assert scores["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(gold, p))
            if "mcc" in task.metrics:
                assert scores["matthews_corrcoef"] == pytest.approx(
                    sklearn.metrics.matthews_corrcoef(gold, p), abs=1e-12)
            if "f1" in task.metrics:
                assert scores["f1"] == pytest.approx(sklearn.metrics.f1_score(
                    gold, p, pos_label="1", zero_division=0.0))
    assert results["tasks"]["qqp"]["broken_rows"]["train"] == [5, 12]
    assert results["tasks"]["qqp"]["train_examples"] == 22


def test_the_table_is_the_papers_layout(job):
    _, out, results = job
    with open(os.path.join(out, "results.md"), encoding="utf-8") as f:
        table = f.read()
    assert "| System | MNLI-m | MNLI-mm | QQP | CoLA | STS-B | MRPC | Average |" in table
    mnli = results["tasks"]["mnli"]["best"]["dev"]
    row = next(line for line in table.splitlines() if line.startswith(f"| {results['model']}"))
    assert row.split(" | ")[1] == f"{100 * mnli['MNLI-m']['accuracy']:.1f}"


def test_the_zip_holds_one_leaderboard_file_per_test_file(job):
    glue_dir, out, _ = job
    with zipfile.ZipFile(os.path.join(out, "glue_submission.zip")) as archive:
        assert sorted(archive.namelist()) == sorted([
            "CoLA.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
            "AX.tsv"])
        files = {name: archive.read(name).decode("utf-8").splitlines()
                 for name in archive.namelist()}
    sources = {"CoLA.tsv": "CoLA/test.tsv", "MRPC.tsv": "MRPC/test.tsv",
               "STS-B.tsv": "STS-B/test.tsv", "QQP.tsv": "QQP/test.tsv",
               "MNLI-m.tsv": "MNLI/test_matched.tsv", "MNLI-mm.tsv": "MNLI/test_mismatched.tsv",
               "AX.tsv": "diagnostic/diagnostic.tsv"}
    for name, source in sources.items():
        test_rows = _rows(os.path.join(glue_dir, source))[1:]
        lines = files[name]
        assert lines[0] == "index\tprediction"
        assert [line.split("\t")[0] for line in lines[1:]] == [r[0] for r in test_rows], name
        values = [line.split("\t")[1] for line in lines[1:]]
        if name == "STS-B.tsv":
            assert all(0.0 <= float(v) <= 5.0 for v in values)
        else:
            task = GLUE_TASKS["mnli" if name in ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv")
                              else name.split(".")[0].lower()]
            assert set(values) <= set(task.labels), name


def test_the_papers_search_stops_at_its_budget_and_resumes(tmp_path, capsys):
    glue_dir = make_glue_dir(tmp_path / "glue", tasks=("rte",))
    model = str(save_tiny_model(tmp_path / "model"))
    out = str(tmp_path / "out")
    command = ["glue", "--data", glue_dir, "--model", model, "--out", out, "--tasks", "rte",
               "--search", "paper", "--seq-len", "32"]
    assert main(command + ["--max-runs", "2"]) == 0
    assert "stopped early (--max-runs 2 reached)" in capsys.readouterr().out
    runs = os.path.join(out, "runs", "rte")
    first = {name: os.stat(os.path.join(runs, name, "run.json")).st_mtime_ns
             for name in os.listdir(runs)}
    assert sorted(first) == ["bs16_lr5e-05_ep2_seed0", "bs16_lr5e-05_ep3_seed0"]
    assert main(command + ["--max-runs", "1"]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        result = json.load(f)["tasks"]["rte"]
    assert [r["run"] for r in result["runs"]] == [
        "bs16_lr5e-05_ep2_seed0", "bs16_lr5e-05_ep3_seed0", "bs16_lr5e-05_ep4_seed0"]
    assert result["planned_runs"] == 24
    for name, mtime in first.items():  # not redone
        assert os.stat(os.path.join(runs, name, "run.json")).st_mtime_ns == mtime
    best = max(result["runs"], key=lambda r: r["dev"]["RTE"]["accuracy"])
    assert result["best"]["dev"]["RTE"]["accuracy"] == best["dev"]["RTE"]["accuracy"]
    with open(os.path.join(out, "results.md"), encoding="utf-8") as f:
        assert " | 3 of 24 | " in f.read()


def test_bad_directory_fails_before_any_run(tmp_path, capsys):
    glue_dir = make_glue_dir(tmp_path / "glue", tasks=("cola",))
    model = str(save_tiny_model(tmp_path / "model"))
    out = tmp_path / "out"
    assert main(["glue", "--data", glue_dir, "--model", model, "--out", str(out),
                 "--tasks", "cola,rte"]) == 2
    assert "GLUE task RTE: no folder" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_a_missing_diagnostic_is_reported_not_fatal(tmp_path, capsys):
    glue_dir = make_glue_dir(tmp_path / "glue", tasks=("mnli",), diagnostic=False)
    model = str(save_tiny_model(tmp_path / "model"))
    out = tmp_path / "out"
    # --max-runs 0: read and check everything, train nothing.
    assert main(["glue", "--data", glue_dir, "--model", model, "--out", str(out),
                 "--tasks", "mnli", "--max-runs", "0"]) == 0
    assert "stopped early (--max-runs 0 reached)" in capsys.readouterr().out
    with open(out / "results.json", encoding="utf-8") as f:
        result = json.load(f)["tasks"]["mnli"]
    assert result["missing"] == [os.path.join(glue_dir, "diagnostic", "diagnostic.tsv")]
    assert result["runs"] == [] and result["best"] is None
    assert "Not in the submission (file missing): " in (out / "results.md").read_text()
    assert not (out / "glue_submission.zip").exists()
