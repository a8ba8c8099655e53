"""`kbert finetune qa` end to end: SQuAD JSON files -> fine-tuned model -> evaluate, predict."""

import json
import os

from helpers.finetune import tiny_model_dir, write_squad as _write_squad
from helpers.qa import learnable_examples as _learnable_examples

from kbert import cli
from kbert.training.finetune import predict


def test_cli_finetune_qa_evaluate_predict(tmp_path, capsys):
    model = str(tiny_model_dir(tmp_path / "pre"))
    train = _write_squad(tmp_path / "train.json", _learnable_examples(160, 0), "train")
    dev_examples = _learnable_examples(20, 1)
    dev = _write_squad(tmp_path / "dev.json", dev_examples, "dev")
    out = str(tmp_path / "run")
    assert cli.main(["finetune", "qa", "--model", model, "--train", train, "--eval", dev,
                     "--out", out, "--seq-len", "24", "--doc-stride", "8",
                     "--max-query-length", "4", "--epochs", "2", "--batch-size", "16",
                     "--learning-rate", "2e-3"]) == 0
    capsys.readouterr()
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["primary_metric"] == "f1" and metrics["best"]["f1"] >= 90.0, metrics
    assert metrics["spec"]["doc_stride"] == 8 and metrics["spec"]["max_query_length"] == 4
    with open(os.path.join(out, "predictions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == [e.id for e in dev_examples]
    for row, example in zip(rows, dev_examples):
        assert example.context[row["start_char"]:row["end_char"]] == row["answer"]

    assert cli.main(["evaluate", f"{out}/model", "--data", dev]) == 0
    assert f"f1: {metrics['best']['f1']:.4f}" in capsys.readouterr().out

    example = dev_examples[0]
    assert cli.main(["predict", f"{out}/model", example.question,
                     "--pair", example.context]) == 0
    printed = capsys.readouterr().out
    [prediction] = predict(f"{out}/model", [(example.question, example.context)])
    assert prediction["answer"] == example.answers[0].text
    assert printed.startswith(f"{prediction['answer']}\t{prediction['score']:.4f}\t")

    # The same question through `kbert serve`: TEXT goes to `question`, --pair to `context`.
    from kbert.export import export_saved_model
    from kbert.serving.server import ModelServer
    export_saved_model(f"{out}/model", out_root=tmp_path / "root", name="qa", warmup=False)
    with ModelServer(str(tmp_path / "root"), port=0, rest_port=None) as server:
        target = f"127.0.0.1:{server.port}"
        assert cli.main(["predict", "--server", target, "--model", "qa", example.question,
                         "--pair", example.context]) == 0
        answer, score, question = capsys.readouterr().out.rstrip("\n").split("\t")
        assert (answer, question) == (prediction["answer"], example.question)
        assert abs(float(score) - prediction["score"]) < 1e-3
        assert cli.main(["predict", "--server", target, "--model", "qa",
                         example.question]) == 2
        assert "give the contexts with --pair" in capsys.readouterr().err
    assert prediction["start_char"] == example.answers[0].start
