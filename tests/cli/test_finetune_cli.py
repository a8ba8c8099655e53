"""`kbert finetune / evaluate / predict` through kbert.cli.main: outputs, the files they
write, one-line errors with exit code 2; a seeded run repeats exactly."""

import json
import os

import pytest

from helpers.finetune import keyword_task_files, settings_kwargs
from kbert import cli
from kbert.training.finetune import FinetuneSettings, finetune
from kbert.tasks.registry import get_task


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return keyword_task_files(tmp_path_factory.mktemp("ftcli"))


def test_cli_finetune_evaluate_predict(data, tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["finetune", "classify", "--model", data["model"], "--train", data["train"],
            "--eval", data["dev"], "--out", out, "--seq-len", "16", "--epochs", "1",
            "--batch-size", "32", "--learning-rate", "1e-3"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "best epoch 1: accuracy" in printed and f"{out}/model" in printed
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err

    assert cli.main(["evaluate", f"{out}/model", "--data", data["dev"]]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(out, "eval_dev.json")) as f:
        written = json.load(f)["metrics"]
    with open(os.path.join(out, "metrics.json")) as f:
        assert written == pytest.approx(json.load(f)["best"])
    assert f"accuracy: {written['accuracy']:.4f}" in printed

    assert cli.main(["predict", f"{out}/model", "w1 good w2", "bad"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[2] for line in lines] == ["w1 good w2", "bad"]
    # The printed label and its probability are the model's (the Python API's).
    from kbert.training.finetune import predict
    expected = predict(f"{out}/model", ["w1 good w2", "bad"])
    assert [line.split("\t")[:2] for line in lines] == [
        [p["label"], f"{p['probabilities'][p['label']]:.4f}"] for p in expected]

    # Same settings through the Python API: the same run (seeded), to the last digit.
    again = finetune(get_task("classify"), FinetuneSettings(**settings_kwargs(
        data, tmp_path / "again", epochs=1, batch_size=32)), verbose=0)
    with open(os.path.join(out, "metrics.json")) as f:
        first = json.load(f)
    assert again.metrics["epochs"][0]["loss"] == first["epochs"][0]["loss"]
    assert again.metrics["best"] == first["best"]


@pytest.mark.parametrize("argv, message", [
    (["predict", "--server", "localhost:1", "text"], "--server needs --model NAME"),
    (["predict", "dir_only"], "give the model directory and at least one text"),
    (["finetune", "classify", "--model", "m", "--train", "t", "--out", "o",
      "--option", "novalue"], "expected KEY=VALUE"),
    (["finetune", "classify", "--model", "nowhere", "--train", "t", "--out", "o"],
     "--model nowhere: no such file"),
])
def test_cli_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
