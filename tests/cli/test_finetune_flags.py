"""`kbert finetune` flags, driven through `kbert.cli.main`, checked by what they change in
the run and in what it writes: `classify --pair-column` (where the second text comes
from), `--metric` (the metric that picks the best epoch), `--regression` (a one-number
head, scores instead of labels), `--precision mixed_bfloat16` (bfloat16 compute, float32
weights), `tag --tag-scheme` (how tags are scored) and `qa --null-score-threshold` (when
the answer is empty).

Every run fine-tunes the same tiny random encoder (`helpers.finetune.tiny_model_dir`) on
synthetic files a 1-layer model learns in an epoch or two, at T <= 24.
"""

import json
import os
import random

import keras
import numpy as np
import pytest

import kbert.training.finetune
from helpers.finetune import WORDS, keyword_rows, tiny_model_dir, write_squad
from helpers.qa import learnable_examples
from kbert import cli
from kbert.io.model_dir import read_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("finetune_flags") / "pre")


def _finetune(task, model, out, *flags, record=False):
    """`kbert finetune TASK --model MODEL --out OUT FLAGS` in this process; returns
    (metrics.json, the Keras model the run trained or None). With `record`, the model
    is kept as `load_task_model` hands it to the run (the real function runs)."""
    seen = {}
    load = kbert.training.finetune.load_task_model

    def recorded_load(*args, **kwargs):
        loaded = load(*args, **kwargs)
        seen["model"] = loaded[0]
        return loaded

    argv = ["finetune", task, "--model", model, "--out", str(out)] + [str(f) for f in flags]
    with pytest.MonkeyPatch.context() as patch:
        if record:
            patch.setattr(kbert.training.finetune, "load_task_model", recorded_load)
        assert cli.main(argv) == 0
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        return json.load(f), seen.get("model")


def _predictions(out):
    with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write_table(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        f.writelines("\t".join(row) + "\n" for row in rows)
    return str(path)


# -- classify --pair-column, --metric -------------------------------------------------------

def _pair_rows(n, seed):
    """(text, decoy, second, label) rows: `second` is the keyword text of
    `helpers.finetune.keyword_rows` (the label "good" / "bad" among filler words), `text`
    and `decoy` are filler only, so a model learns the label only when `second` is its
    pair. At most 5 + 10 pieces: nothing is cut at T = 24."""
    rows = keyword_rows(n, seed, pair=True)
    decoys = keyword_rows(n, seed + 1000, pair=True)
    return [(filler, decoy, keyword_text, label) for (keyword_text, filler, label), (_, decoy, _)
            in zip(rows, decoys)]


@pytest.fixture(scope="module")
def pair_run(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    header = ("text", "decoy", "second", "label")
    dev_rows = _pair_rows(60, seed=2)
    files = {"train": _write_table(root / "train.tsv", header, _pair_rows(320, seed=1)),
             "dev": _write_table(root / "dev.tsv", header, dev_rows)}
    metrics, _ = _finetune("classify", model, root / "run", "--train", files["train"],
                           "--eval", files["dev"], "--pair-column", "second",
                           "--metric", "macro_f1", "--seq-len", 24, "--epochs", 2,
                           "--batch-size", 16, "--learning-rate", 1e-3)
    return {"out": root / "run", "metrics": metrics, "dev_rows": dev_rows, **files}


def test_pair_column_is_the_second_segment(pair_run):
    metrics = pair_run["metrics"]
    assert metrics["spec"]["pair"] is True
    assert metrics["spec"]["read_options"] == {"pair_column": "second"}
    # The label is only in `second`: learning it means the model read it.
    assert metrics["best"]["accuracy"] >= 0.9, metrics["best"]
    # The saved model reads its eval file with the same column (task.json), and scores the
    # pair of (text, second) as the run did.
    out = pair_run["out"]
    assert cli.main(["evaluate", f"{out}/model", "--data", pair_run["dev"],
                     "--out", f"{out}/again.json"]) == 0
    with open(f"{out}/again.json") as f:
        assert json.load(f)["metrics"] == pytest.approx(metrics["best"], abs=1e-12)
    predicted = kbert.training.finetune.predict(
        f"{out}/model", [(text, second) for text, _, second, _ in pair_run["dev_rows"]])
    assert [p["label"] for p in predicted] == [p["label"] for p in _predictions(out)]


def test_metric_picks_the_best_epoch(pair_run):
    metrics = pair_run["metrics"]
    assert metrics["primary_metric"] == "macro_f1"
    scores = [epoch["eval"]["macro_f1"] for epoch in metrics["epochs"]]
    assert metrics["best_epoch"] == 1 + scores.index(max(scores))
    assert metrics["best"] == metrics["epochs"][metrics["best_epoch"] - 1]["eval"]


# -- classify --regression --precision mixed_bfloat16 ---------------------------------------

def _score_rows(n, seed):
    """(text, score): `helpers.finetune.keyword_rows` texts scored 1.0 for "good", -1.0
    for "bad" (centred, so that one epoch is enough)."""
    return [(text, "1.0" if label == "good" else "-1.0")
            for text, _, label in keyword_rows(n, seed)]


@pytest.fixture(scope="module")
def regression_run(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    dev_rows = _score_rows(60, seed=2)
    train = _write_table(root / "train.tsv", ("text", "label"), _score_rows(320, seed=1))
    dev = _write_table(root / "dev.tsv", ("text", "label"), dev_rows)
    policy = keras.config.dtype_policy().name
    metrics, trained = _finetune("classify", model, root / "run", "--train", train,
                                 "--eval", dev, "--regression", "--precision",
                                 "mixed_bfloat16", "--seq-len", 16, "--epochs", 1,
                                 "--batch-size", 16, "--learning-rate", 1e-3, record=True)
    return {"out": root / "run", "metrics": metrics, "model": trained,
            "dev_rows": dev_rows, "policy_before": policy}


def test_regression_writes_a_one_number_head_and_scores(regression_run):
    metrics, out = regression_run["metrics"], regression_run["out"]
    assert metrics["task"] == "regression" and metrics["spec"]["labels"] == []
    saved = read_checkpoint(out / "model")
    assert saved.weights["classifier/kernel"].shape == (saved.config.hidden_dim, 1)
    # The scores are the model's numbers: the metrics follow from them and the gold file.
    rows = _predictions(out)
    assert all(set(r) == {"source", "score", "gold"} for r in rows), rows[0]
    scores = np.array([r["score"] for r in rows])
    gold = np.array([float(score) for _, score in regression_run["dev_rows"]])
    assert len(np.unique(scores)) > 10  # numbers, not two classes
    assert metrics["primary_metric"] == "pearson"
    best = metrics["best"]
    assert set(best) == {"pearson", "spearman", "mse"}
    assert best["mse"] == pytest.approx(np.mean((scores - gold) ** 2), rel=1e-6)
    assert best["pearson"] == pytest.approx(np.corrcoef(scores, gold)[0, 1], abs=1e-9)
    assert best["pearson"] >= 0.9, best


def test_regression_predict_prints_a_score(regression_run, capsys):
    text = regression_run["dev_rows"][0][0]
    assert cli.main(["predict", f"{regression_run['out']}/model", text]) == 0
    score, printed_text = capsys.readouterr().out.rstrip("\n").split("\t")
    [expected] = kbert.training.finetune.predict(f"{regression_run['out']}/model", [text])
    assert (score, printed_text) == (f"{expected['score']:.4f}", text)


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_weights(regression_run):
    trained = regression_run["model"]
    assert regression_run["metrics"]["settings"]["precision"] == "mixed_bfloat16"
    assert trained.encoder.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in trained.weights} == {"float32"}
    features = {name: np.ones((2, 8), np.int32)
                for name in ("token_ids", "segment_ids", "padding_mask")}
    outputs = trained.encoder(features)
    assert outputs["sequence_output"].dtype == "bfloat16"
    # The run puts the process's policy back.
    assert keras.config.dtype_policy().name == regression_run["policy_before"] == "float32"


# -- tag --tag-scheme -----------------------------------------------------------------------

def _entity_sentences(n, seed):
    """CoNLL-2003 sentences tagged IOB2: words w0-w9 are ORG entities (B- on the first
    of a run, I- on the next ones), other words O."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words = [rng.choice(WORDS[:20]) for _ in range(rng.randrange(3, 8))]
        tags, inside = [], False
        for word in words:
            entity = int(word[1:]) < 10
            tags.append(("I-ORG" if inside else "B-ORG") if entity else "O")
            inside = entity
        sentences.append((words, tags))
    return sentences


def _write_conll(path, sentences):
    with open(path, "w", encoding="utf-8") as f:
        for words, tags in sentences:
            f.writelines(f"{w} {t}\n" for w, t in zip(words, tags))
            f.write("\n")
    return str(path)


def test_tag_scheme_none_scores_tokens_not_entities(model, tmp_path, capsys):
    """IOB2 data (detected as such without the flag) tagged with `--tag-scheme none`:
    scored by token accuracy alone, which also picks the best epoch."""
    from kbert.data.conll import read_tagging_file
    from kbert.tasks.tagging.task import detect_tag_scheme

    dev_sentences = _entity_sentences(24, seed=2)
    train = _write_conll(tmp_path / "train.txt", _entity_sentences(64, seed=1))
    dev = _write_conll(tmp_path / "dev.txt", dev_sentences)
    assert detect_tag_scheme(read_tagging_file(train)) == "IOB2"
    out = tmp_path / "run"
    metrics, _ = _finetune("tag", model, out, "--train", train, "--eval", dev,
                           "--tag-scheme", "none", "--seq-len", 12, "--epochs", 1,
                           "--batch-size", 8, "--learning-rate", 1e-3)
    assert metrics["spec"]["tag_scheme"] == "none"
    assert metrics["primary_metric"] == "accuracy"
    assert set(metrics["best"]) == {"accuracy"}
    predicted = [tag for row in _predictions(out) for tag in row["tags"]]
    gold = [tag for _, tags in dev_sentences for tag in tags]
    assert metrics["best"]["accuracy"] == pytest.approx(
        np.mean(np.array(predicted) == np.array(gold)), abs=1e-12)
    # The saved model keeps the scheme: `kbert evaluate` reports token accuracy alone.
    capsys.readouterr()
    assert cli.main(["evaluate", f"{out}/model", "--data", dev,
                     "--out", f"{out}/again.json"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("accuracy: ")
    with open(f"{out}/again.json") as f:
        assert set(json.load(f)["metrics"]) == {"accuracy"}


# -- qa --null-score-threshold --------------------------------------------------------------

QA_FLAGS = ("--seq-len", 24, "--doc-stride", 8, "--max-query-length", 4, "--epochs", 1,
            "--batch-size", 16, "--learning-rate", 2e-3)


@pytest.fixture(scope="module")
def qa_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa_threshold")
    dev = learnable_examples(12, 1)
    return {"root": root, "dev_examples": dev, "dev": write_squad(root / "dev.json", dev),
            "train": write_squad(root / "train.json", learnable_examples(32, 0))}


def _qa_run(model, qa_files, name, threshold):
    out = qa_files["root"] / name
    # "--flag=VALUE": argparse reads a lone "-1e3" as an option, not a number.
    metrics, _ = _finetune("qa", model, out, "--train", qa_files["train"], "--eval",
                           qa_files["dev"], f"--null-score-threshold={threshold}", *QA_FLAGS)
    return metrics, _predictions(out)


@pytest.fixture(scope="module")
def qa_never(model, qa_files):
    return _qa_run(model, qa_files, "never", -1e3)


@pytest.mark.slow  # ~10 s on 2 busy cores, most of it tracing QA decoding
def test_very_negative_null_score_threshold_answers_nothing(qa_never, qa_files):
    """The answer is empty when null score - best span score > threshold: at -1000 every
    question gets it (without the flag a model trained on SQuAD 1.1 data answers them
    all: tests/tasks/test_qa_finetune.py)."""
    metrics, rows = qa_never
    assert metrics["spec"]["null_score_threshold"] == -1e3
    assert [r["id"] for r in rows] == [e.id for e in qa_files["dev_examples"]]
    assert all(r["answer"] == "" and r["start_char"] == r["end_char"] == -1 for r in rows)
    assert metrics["best"]["exact_match"] == metrics["best"]["f1"] == 0.0


@pytest.mark.slow
def test_null_score_threshold_empties_the_questions_above_it(model, qa_never, qa_files):
    """With the same seeded training: a huge threshold answers every question; one between
    the questions' gaps (null score - best span score, from the two extreme runs' scores)
    empties exactly the questions whose gap is above it."""
    never, never_rows = qa_never
    always, always_rows = _qa_run(model, qa_files, "always", 1e3)
    assert always["epochs"][0]["loss"] == never["epochs"][0]["loss"]  # the same model
    assert all(r["answer"] and r["start_char"] >= 0 for r in always_rows)

    gaps = {a["id"]: n["score"] - a["score"] for a, n in zip(always_rows, never_rows)}
    ordered = sorted(gaps.values())
    # The widest opening between two gaps in the middle half: far from any question's gap.
    middle = range(len(ordered) // 4, 3 * len(ordered) // 4)
    low = max(middle, key=lambda i: ordered[i + 1] - ordered[i])
    threshold = (ordered[low] + ordered[low + 1]) / 2
    _, rows = _qa_run(model, qa_files, "between", threshold)
    empty = {r["id"] for r in rows if r["answer"] == ""}
    assert empty == {i for i, gap in gaps.items() if gap > threshold}
    assert 0 < len(empty) < len(rows)
    answered = {r["id"]: r["answer"] for r in always_rows}
    assert all(r["answer"] == answered[r["id"]] for r in rows if r["id"] not in empty)
