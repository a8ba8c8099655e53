"""Batch inference on Apache Beam's DirectRunner (kbert.beam): a kbert export inside
RunInference gives what `kbert predict` / `kbert embed` give in-process, keeps each
input's id, sends bad rows to dead letters, and writes JSONL, TFRecord and Parquet."""

import glob
import gzip
import json

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that

from kbert import cli
from kbert.beam.pipeline import (BatchInferenceSettings, PredictTexts, ReadTexts,
                                 run_batch_inference)
from kbert.export import export_saved_model
from kbert.tasks.embeddings import embed
from kbert.tasks.spec import TaskSpec
from kbert.training.finetune import predict
from helpers.tiny import VOCAB, save_tiny_model, save_tiny_task_model

T = 32
WORDS = [w for w in VOCAB if not w.startswith(("[", "#"))]


def _texts(n, seed):
    """n texts of 1 to 40 words (some longer than T - 2 word-pieces: truncated)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 41)))) for _ in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam_models")
    pair, _ = save_tiny_task_model(root / "pair", TaskSpec(
        "classification", labels=("no", "maybe", "yes"), seq_len=T, pair=True), VOCAB, seed=1)
    tagger, _ = save_tiny_task_model(root / "tagger", TaskSpec(
        "tagging", labels=("O", "B-X", "I-X"), seq_len=T, doc_stride=8), VOCAB, seed=2)
    plain = save_tiny_model(root / "plain", VOCAB, seed=3)
    return {"pair": str(pair), "tagger": str(tagger), "plain": str(plain), "root": root}


def _jsonl(prefix):
    [path] = [p for p in glob.glob(f"{prefix}-*.jsonl") if "-dead-letters-" not in p]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _dead_letters(prefix):
    [path] = glob.glob(f"{prefix}-dead-letters-*.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_predictions_equal_kbert_predict(models, tmp_path, capsys):
    """`kbert predict DIR --input --output` (a Beam option passed through): one result per
    good row, under its id, equal to the in-process predictions; bad rows are dead letters."""
    premises, hypotheses = _texts(60, 0), _texts(60, 1)
    with open(tmp_path / "pairs.jsonl", "wb") as f:
        for i, (p, h) in enumerate(zip(premises, hypotheses)):
            f.write(json.dumps({"key": f"k{i}", "premise": p, "hypothesis": h}).encode() + b"\n")
        f.write(b'{"key": "x1", "premise": "no hypothesis"}\n')
        f.write(b'{"key": "x2", "premise": "bad \xff", "hypothesis": "y"}\n')
    (tmp_path / "notes.md").write_text("not an input\n")
    out = str(tmp_path / "out" / "pred")
    assert cli.main(["predict", models["pair"], "--input", str(tmp_path / "pairs.jsonl"),
                     str(tmp_path / "notes.md"), "--output", out, "--id-column", "key", "--column", "text=premise",
                     "--column", "text_pair=hypothesis", "--batch-size", "8",
                     "--direct_num_workers=1"]) == 0
    summary = capsys.readouterr().out
    assert "60 result(s)" in summary and "3 dead letter(s)" in summary
    results = {r["id"]: r for r in _jsonl(out)}
    assert sorted(results) == sorted(f"k{i}" for i in range(60))
    expected = predict(models["pair"], list(zip(premises, hypotheses)))
    for i, want in enumerate(expected):
        got = results[f"k{i}"]
        assert got["labels"] == want["label"]
        np.testing.assert_allclose(got["probabilities"],
                                   [want["probabilities"][k] for k in ("no", "maybe", "yes")],
                                   atol=1e-6, err_msg=f"k{i}")
    dead = {d["source"]: d["reason"] for d in _dead_letters(out)}
    pairs = tmp_path / "pairs.jsonl"
    assert dead == {
        f"{pairs}:61": "no key 'hypothesis'; the row has ['key', 'premise']",
        f"{pairs}:62": "not UTF-8 text (byte 0xff at column 31)",
        str(tmp_path / "notes.md"): "unknown input type '.md'; use .txt (one text per line), "
                                    ".tsv, .csv or .jsonl; the file was skipped"}
    # The export it ran is kept beside the outputs.
    assert glob.glob(f"{out}-savedmodel/model/1/saved_model.pb")


@pytest.mark.parametrize("which, pooling, normalize", [("plain", "mean", True),
                                                       ("pair", "cls", False)])
def test_embeddings_equal_kbert_embed(models, tmp_path, capsys, which, pooling, normalize):
    """`kbert embed MODEL --runner direct`: the vectors of `kbert embed` to 1e-6, for a
    pre-trained and for a fine-tuned model (its encoder; the head is left out)."""
    texts = _texts(70, 5)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = str(tmp_path / "emb")
    argv = ["embed", models[which], "--input", str(tmp_path / "texts.txt"), "--output", out,
            "--runner", "direct", "--pooling", pooling, "--seq-len", str(T)]
    assert cli.main(argv + (["--normalize"] if normalize else [])) == 0
    assert "70 result(s)" in capsys.readouterr().out
    results = {r["id"]: r["embeddings"] for r in _jsonl(out)}
    got = np.array([results[f"{tmp_path / 'texts.txt'}:{i + 1}"] for i in range(70)])
    want = embed(models[which], texts, pooling=pooling, normalize=normalize, seq_len=T)
    # Within 1e-6 of each vector's length: Beam batches the texts by length, so the
    # products run in other shapes and sum in another order (float32 rounding).
    gap = np.max(np.abs(got - want), axis=1) / np.linalg.norm(want, axis=1)
    assert gap.max() < 1e-6, gap.max()
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_output_formats_hold_the_same_results(models, tmp_path):
    """JSONL, TFRecord and Parquet shards of a tagger's export: the same rows, each cut to
    its words (the signature pads them to the batch's longest)."""
    export = export_saved_model(models["tagger"], tmp_path / "exports", name="tagger")
    texts = _texts(40, 7)
    with open(tmp_path / "in.tsv", "w", encoding="utf-8") as f:
        f.write("id\ttext\n" + "".join(f"t{i}\t{t}\n" for i, t in enumerate(texts)))
    runs = {}
    for fmt in ("jsonl", "tfrecord", "parquet"):
        prefix = str(tmp_path / fmt / "tags")
        counts = run_batch_inference(BatchInferenceSettings(
            export, (str(tmp_path / "in.tsv"),), prefix, output_format=fmt, id_column="id",
            batch_size=16, num_shards=2))
        assert counts == {"rows": 40, "results": 40, "dead_letters": 0}
        paths = sorted(glob.glob(f"{prefix}-0000[01]-of-00002.{fmt}"))
        assert len(paths) == 2, paths
        runs[fmt] = paths
    rows = {}
    for path in runs["jsonl"]:
        with open(path, encoding="utf-8") as f:
            rows.update({r["id"]: r for r in map(json.loads, f)})
    assert sorted(rows) == sorted(f"t{i}" for i in range(40))
    for i, text in enumerate(texts):
        row = rows[f"t{i}"]
        assert len(row["tags"]) == len(row["tag_ids"]) == row["num_words"] == len(text.split())
        assert row["tags"] == [("O", "B-X", "I-X")[k] for k in row["tag_ids"]]
        assert [text[s:e] for s, e in zip(row["word_start_chars"], row["word_end_chars"])] \
            == text.split()
    examples = [tf.train.Example.FromString(r.numpy())
                for r in tf.data.TFRecordDataset(runs["tfrecord"])]
    assert len(examples) == 40
    for example in examples:
        feature = example.features.feature
        row = rows[feature["id"].bytes_list.value[0].decode()]
        assert [t.decode() for t in feature["tags"].bytes_list.value] == row["tags"]
        assert list(feature["tag_ids"].int64_list.value) == row["tag_ids"]
    table = pq.read_table(runs["parquet"][0]).to_pylist() + pq.read_table(
        runs["parquet"][1]).to_pylist()
    assert len(table) == 40
    for record in table:
        row = rows[record["id"]]
        assert {k: record[k] for k in row} == row


def test_predict_texts_in_a_users_pipeline(models, tmp_path):
    """The PTransform in a pipeline of one's own: keys kept; a batch the model rejects
    (an input it does not take) comes out as dead letters, and the job goes on."""
    export = export_saved_model(models["pair"], tmp_path / "exports", name="pair")
    good = [((f"id{i}", f"src:{i}"), {"text": "a b", "text_pair": "c"}) for i in range(5)]
    bad = [(("bad", "src:99"), {"question": "a b"})]
    with beam.Pipeline() as pipeline:
        predicted = (pipeline | beam.Create(good) | "Good" >> PredictTexts(export))
        rejected = (pipeline | "Bad" >> beam.Create(bad) | "Rejects" >> PredictTexts(export))

        def check_results(items):
            assert sorted(k[0] for k, _ in items) == [f"id{i}" for i in range(5)]
            first = items[0][1]["probabilities"]
            for _, outputs in items:  # the same inputs: the same answers
                np.testing.assert_allclose(outputs["probabilities"], first, atol=1e-6)
                assert outputs["labels"] in (b"no", b"maybe", b"yes")

        def check_dead(items):
            assert len(items) == 1 and items[0]["source"] == "src:99"
            assert items[0]["reason"].startswith("inference failed: ValueError: element 0 "
                                                 "has inputs ['question']")

        assert_that(predicted["results"], check_results, label="results")
        assert_that(predicted["dead_letters"], lambda items: not items or 1 / 0,
                    label="no dead letters")
        assert_that(rejected["dead_letters"], check_dead, label="dead letters")
        assert_that(rejected["results"], lambda items: not items or 1 / 0,
                    label="no results")


def test_job_flag_errors(models, tmp_path, capsys):
    """Beam options only with a job; --output without --input; an export's pooling is
    fixed."""
    for argv, message in [
        (["predict", models["pair"], "a", "--project=p"], "unrecognized arguments: --project=p"),
        (["predict", models["pair"], "a", "--output", "o"], "--output / --runner run a Beam"),
        (["predict", models["pair"], "a", "--input", "f.txt", "--output", "o"],
         "with --input, give only the model"),
        (["embed", models["plain"], "--input", "x", "--runner", "direct"],
         "a Beam job needs --output PREFIX"),
        (["embed", models["plain"], "--input", "x", "--output", "o", "--layer", "0"],
         "--layer / --concat-last-four are not in exported embedding models"),
    ]:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_read_texts_opens_compressed_files(tmp_path):
    """ReadTexts on a .jsonl.gz and a .txt (Beam opens .gz files decompressed): rows keyed
    by (id, FILE:LINE), dead letters beside them."""
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(b'{"text": "one"}\n{"text": "two"}\n{"txt": "x"}\n')
    (tmp_path / "b.txt").write_text("three\n")
    gz, txt = str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.txt")
    with beam.Pipeline() as pipeline:
        read = pipeline | ReadTexts([gz, txt], {"text": "text"})
        assert_that(read["rows"], lambda rows: sorted(rows) == sorted([
            ((f"{gz}:1", f"{gz}:1"), {"text": "one"}), ((f"{gz}:2", f"{gz}:2"), {"text": "two"}),
            ((f"{txt}:1", f"{txt}:1"), {"text": "three"})]) or 1 / 0, label="rows")
        assert_that(read["dead_letters"], lambda dead: [d["source"] for d in dead] == [
            f"{gz}:3"] or 1 / 0, label="dead letters")
