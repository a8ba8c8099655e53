"""The fine-tuning runner end to end on a tiny learnable task: training, best-epoch
selection, the run directory, evaluate / predict, the CLI."""

import json
import os

import numpy as np
import pytest

from helpers.finetune import keyword_rows, keyword_task_files, settings_kwargs, write_tsv
from kbert.training.finetune import FinetuneSettings, evaluate, finetune, json_safe, predict
from kbert.tasks.classification.task import ClassificationTask
from kbert.tasks.registry import get_task


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return keyword_task_files(tmp_path_factory.mktemp("ft"))


def _settings(data, out, **changes):
    return FinetuneSettings(**settings_kwargs(data, out, **changes))


@pytest.fixture(scope="module")
def run(data):
    settings = _settings(data, data["root"] / "run")
    return settings, finetune(get_task("classify"), settings, verbose=0)


def test_learns_keyword_task(run):
    settings, result = run
    assert result.metrics["best"]["accuracy"] >= 0.95
    assert len(result.seconds_per_epoch) == 3 and all(s > 0 for s in result.seconds_per_epoch)
    epochs = result.metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_run_directory(run):
    settings, result = run
    out = settings.out
    assert sorted(os.listdir(out)) == ["metrics.json", "model", "predictions.jsonl"]
    assert result.model_dir == os.path.join(os.path.abspath(out), "model")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    best = metrics["epochs"][metrics["best_epoch"] - 1]["eval"]
    assert metrics["best"] == best == result.metrics["best"]
    assert metrics["primary_metric"] == "accuracy"
    assert best["accuracy"] == max(e["eval"]["accuracy"] for e in metrics["epochs"])
    assert metrics["spec"]["labels"] == ["bad", "good"] and metrics["spec"]["seq_len"] == 16
    assert metrics["settings"]["learning_rate"] == 1e-3
    with open(os.path.join(out, "predictions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    gold = [r[2] for r in keyword_rows(60, seed=2)]
    assert len(rows) == 60 and rows[0]["source"].endswith("dev.tsv:2")
    assert [r["gold"] for r in rows] == gold
    assert np.mean([r["label"] == g for r, g in zip(rows, gold)]) == best["accuracy"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)


def test_evaluate_and_predict_reload_the_best_model(run, data):
    settings, result = run
    assert evaluate(result.model_dir, data["dev"]) == pytest.approx(result.metrics["best"])
    got = predict(result.model_dir, ["w3 w1 good w7", "bad w2"])
    assert [p["label"] for p in got] == ["good", "bad"]


def test_existing_out_refused_before_any_work(data, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    # The training file does not exist either: the FileExistsError must come first.
    settings = _settings(data, out, train=str(tmp_path / "missing.tsv"))
    with pytest.raises(FileExistsError, match="exists.*--overwrite"):
        finetune(get_task("classify"), settings, verbose=0)
    assert os.listdir(out) == []


class ScriptedMetric(ClassificationTask):
    """The real task, with the primary metric of each epoch scripted so that the best
    epoch is known; records each epoch's predictions."""

    def __init__(self, script):
        super().__init__()
        self.script, self.seen = list(script), []

    def evaluate(self, examples, predictions, spec):
        self.seen.append(predictions)
        scores = super().evaluate(examples, predictions, spec)
        return {**scores, "accuracy": self.script[len(self.seen) - 1]}


def test_best_epoch_weights_are_kept(data, tmp_path):
    task = ScriptedMetric([0.2, 0.9, 0.5])
    result = finetune(task, _settings(data, tmp_path / "run"), verbose=0)
    assert result.best_epoch == 2 and result.metrics["best"]["accuracy"] == 0.9
    with open(os.path.join(tmp_path, "run", "predictions.jsonl")) as f:
        assert [json.loads(line) for line in f] == task.seen[1]
    assert task.seen[1] != task.seen[2]
    examples = task.read(data["dev"])
    got = predict(result.model_dir, examples)
    for mine, epoch_two in zip(got, task.seen[1]):
        assert mine["probabilities"] == pytest.approx(epoch_two["probabilities"], abs=1e-6)


def test_xla_run_rounds_batch_lengths_on_a_copy_of_the_task(data, tmp_path):
    """With jit_compile, batches are cut to multiples of 8 (XLA compiles each shape once);
    the caller's task keeps its exact-length setting."""
    seen = []

    class Recording(ClassificationTask):
        def dataset(self, *args, **kwargs):
            seen.append(self.trim_multiple)
            return super().dataset(*args, **kwargs)

    task = Recording()
    result = finetune(task, _settings(data, tmp_path / "run", epochs=1, jit_compile=True),
                      verbose=0)
    assert seen and set(seen) == {8} and task.trim_multiple == 1
    assert result.metrics["settings"]["jit_compile"] is True


def test_regression_pairs_without_eval(data, tmp_path):
    rows = keyword_rows(64, seed=3, pair=True)
    rows = [(t, p, 1.0 if label == "good" else 0.0) for t, p, label in rows]
    train = write_tsv(tmp_path / "sts.tsv", rows, pair=True)
    options = {"pair_column": "pair"}  # the "regression" task regresses by default
    result = finetune(get_task("regression"), _settings(
        data, tmp_path / "run", train=train, eval=None, epochs=2, options=options),
        verbose=0)
    # Without an eval file the last epoch is kept and there are no predictions.
    assert result.best_epoch == 2 and result.metrics["best"] == {}
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.json", "model"]
    assert result.metrics["primary_metric"] == "pearson"
    # The training file's reading options are saved with the model: evaluate reads
    # another file the same way without being told, and options given override them.
    with open(os.path.join(result.model_dir, "task.json")) as f:
        assert json.load(f)["read_options"] == {"pair_column": "pair"}
    scores = evaluate(result.model_dir, train)
    assert set(scores) == {"pearson", "spearman", "mse"}
    renamed = tmp_path / "renamed.tsv"
    with open(train, encoding="utf-8") as f:
        renamed.write_text(f.read().replace("text\tpair\tlabel", "text\tsecond\tlabel", 1),
                           encoding="utf-8")
    assert evaluate(result.model_dir, str(renamed), pair_column="second") == scores
    with pytest.raises(ValueError, match="pair"):
        evaluate(result.model_dir, str(renamed))
    got = predict(result.model_dir, [("w1 good", "w2")])
    assert set(got[0]) == {"source", "score"} and isinstance(got[0]["score"], float)


def test_registry():
    assert type(get_task("classification")) is type(get_task("classify"))
    with pytest.raises(ValueError, match="unknown task 'ner'"):
        get_task("ner")


def test_json_safe_writes_strict_json():
    # A Pearson of a constant column is NaN; Python would write a bare NaN (not JSON).
    value = {"pearson": float("nan"), "mse": np.float32(1.5), "rows": [np.int64(2), -np.inf],
             "vector": np.array([0.5, np.nan])}
    safe = json_safe(value)
    assert safe == {"pearson": None, "mse": 1.5, "rows": [2, None], "vector": [0.5, None]}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
