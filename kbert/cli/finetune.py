"""CLI commands of fine-tuned models: `kbert finetune classify|tag|qa`, `kbert evaluate`,
`kbert predict` (local directory or a model server) and `kbert embed`.

`add_parsers(commands)` adds them to kbert.cli's sub-command parser; the handlers print
results and leave user errors (ValueError, FileNotFoundError, FileExistsError) to
kbert.cli.main, which prints them as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from kbert.cli import beam
from kbert.cli.flags import add_field_flags, command, flag_name, given_values, key_values
from kbert.tasks.registry import task_cards
from kbert.training.settings import FinetuneSettings

def add_parsers(commands) -> None:
    """Adds finetune, evaluate, predict and embed to `commands` (an argparse
    `_SubParsersAction`)."""
    _add_finetune(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_embed(commands)


# -- finetune -------------------------------------------------------------------------------

def _add_finetune(commands) -> None:
    """`kbert finetune TASK`: one sub-command per registered task, its flags made from
    `FinetuneSettings` (the run) and the task's `Options`."""
    p = command(commands, "finetune", _finetune,
                help="fine-tune a model directory on a task (classify, tag, qa)")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("run")
    # --seq-len defaults to the task's T (None here).
    add_field_flags(group, FinetuneSettings, skip=("seq_len",))
    group.add_argument("--seq-len", type=int, help="T (default: the task's; 128, qa 384)")
    group.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="a task option (VALUE read as JSON when it parses); repeatable")
    for card in task_cards():
        sub = tasks.add_parser(card.command, parents=[common], help=card.help,
                               description=card.help)
        add_field_flags(sub.add_argument_group(f"{card.command} options"), card.options,
                        given_only=True)
        sub.set_defaults(run=_finetune, task_options=card.options)


def _task_options(args: argparse.Namespace) -> dict:
    """The task options given as flags, then `--option KEY=VALUE` ones."""
    names = [f.name for f in dataclasses.fields(args.task_options)]
    return {**given_values(args, names), **key_values(args.option)}


def _finetune(args: argparse.Namespace) -> None:
    """Fine-tunes MODEL_DIR on a labelled file with BERT's recipe (AdamW, 10 per cent
    warm-up then linear decay, clipping at 1.0), evaluates after every epoch and writes
    OUT/model (the best epoch), OUT/metrics.json and OUT/predictions.jsonl."""
    # lazy: the run imports TensorFlow; `kbert --help` and the other commands must not
    from kbert.tasks.registry import get_task
    from kbert.training.finetune import finetune

    task = get_task(args.task)
    run = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneSettings)
           if f.name not in ("options", "seq_len")}
    settings = FinetuneSettings(**run, seq_len=args.seq_len or task.default_seq_len,
                                options=_task_options(args))
    result = finetune(task, settings)
    best = result.metrics["best"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items()) if best else "no eval file"
    print(f"best epoch {result.best_epoch}: {shown}")
    print(f"seconds per epoch: {', '.join(f'{s:.1f}' for s in result.seconds_per_epoch)}")
    print(f"model directory: {result.model_dir}")


# -- evaluate -------------------------------------------------------------------------------

def _add_evaluate(commands) -> None:
    p = command(commands, "evaluate", _evaluate,
                help="score a fine-tuned model directory on a labelled file")
    p.add_argument("model_dir", metavar="DIR")
    p.add_argument("--data", required=True, metavar="FILE")
    p.add_argument("--out", metavar="FILE.json")
    p.add_argument("--batch-size", type=int, default=32)
    for name, help_text in _read_flags().items():
        p.add_argument(flag_name(name), help=help_text)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a reading option of the task; repeatable")


def _read_flags() -> dict[str, str]:
    """The reading options of every registered task (name -> help; a name two tasks
    share gets both helps)."""
    helps: dict[str, list[str]] = {}
    for card in task_cards():
        for field in dataclasses.fields(card.options):
            if field.metadata.get("read"):
                helps.setdefault(field.name, []).append(
                    f"{card.command}: {field.metadata['help']}")
    return {name: "; ".join(parts) for name, parts in helps.items()}


def _evaluate(args: argparse.Namespace) -> None:
    """Predicts FILE with the fine-tuned model DIR, prints the task's metrics and writes
    them as JSON (default: eval_<FILE name>.json next to DIR). FILE is read with the
    column names / format the training file was read with (saved in DIR/task.json)
    unless given here."""
    # lazy: TensorFlow
    from kbert.training.finetune import evaluate, json_safe

    options = {**given_values(args, _read_flags()), **key_values(args.option)}
    metrics = evaluate(args.model_dir, args.data, batch_size=args.batch_size, **options)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(args.model_dir)),
        f"eval_{os.path.splitext(os.path.basename(args.data))[0]}.json")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"model": os.path.abspath(args.model_dir),
                   "data": os.path.abspath(args.data), "metrics": json_safe(metrics)}, f,
                  indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, out)
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    print(f"wrote {out}")


# -- predict --------------------------------------------------------------------------------

def _add_predict(commands) -> None:
    p = command(commands, "predict", _predict,
                help="a fine-tuned model's predictions: of texts, from a model server, "
                     "or of files on Apache Beam (--input)")
    p.add_argument("args", nargs="+", metavar="[DIR] TEXT",
                   help="the model directory (not with --server), then the texts")
    p.add_argument("--pair", nargs="+", metavar="TEXT",
                   help="second texts of pairs, one per TEXT")
    p.add_argument("--server", metavar="HOST:PORT", help="gRPC address of a model server")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="model name on the server")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(accepts_pipeline_args=True)
    beam.add_job_flags(p, input_flag=True)


def _predict(args: argparse.Namespace) -> None:
    """kbert predict DIR TEXT... runs a fine-tuned model directory; kbert predict
    --server HOST:PORT --model NAME TEXT... asks a model server (TF Serving or `kbert
    serve`) instead. kbert predict MODEL --input FILES --output PREFIX runs a batch job on
    Apache Beam (MODEL: a fine-tuned model directory or its export; --runner direct,
    dataflow, flink or spark; other --options go to Beam)."""
    if args.input:
        beam.run_predict_job(args)
        return
    _no_job_flags(args)
    if args.server:
        if not args.model_name:
            raise ValueError("--server needs --model NAME")
        texts = args.args
    else:
        if args.model_name:
            raise ValueError("--model NAME goes with --server; give DIR for a local model")
        if len(args.args) < 2:
            raise ValueError("give the model directory and at least one text")
        texts = args.args[1:]
    if args.pair is not None and len(args.pair) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(args.pair)} --pair texts")
    if args.server:
        _predict_server(args.server, args.model_name, texts, args.pair)
        return
    # lazy: TensorFlow
    from kbert.tasks.registry import task_for_kind
    from kbert.tasks.task_dir import read_task_spec
    from kbert.training.finetune import predict

    model_dir = args.args[0]
    spec = read_task_spec(model_dir)
    if spec is None:
        raise ValueError(f"{model_dir} has no task.json: it is not a fine-tuned task model "
                         "(fine-tune it with `kbert finetune`)")
    task = task_for_kind(spec.task)
    items = texts if args.pair is None else list(zip(texts, args.pair))
    # QA: TEXT is the question, --pair the context.
    for text, prediction in zip(texts, predict(model_dir, items, args.batch_size)):
        print(task.format_prediction(prediction, text))


def _predict_server(target: str, model_name: str, texts, pairs) -> None:
    # lazy: gRPC and the serving protos
    from kbert.serving.client import PredictionClient

    client = PredictionClient(target)
    # A QA model takes question / context: TEXT is the question, --pair the context.
    names = ("text", "text_pair")
    if "question" in client.metadata(model_name).get("serving_default", {}).get("inputs", {}):
        names = ("question", "context")
        if pairs is None:
            raise ValueError(f"{model_name} is a QA model: give the contexts with --pair")
    inputs = {names[0]: list(texts)}
    if pairs is not None:
        inputs[names[1]] = list(pairs)
    outputs = client.predict(model_name, inputs)
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    for i, text in enumerate(texts):
        if "answer" in outputs:
            answer = outputs["answer"][i]
            answer = answer.decode("utf-8") if isinstance(answer, bytes) else str(answer)
            print(f"{answer}\t{float(outputs['score'][i]):.4f}\t{text}")
        elif "labels" in outputs and "probabilities" in outputs:
            label = outputs["labels"][i]
            label = label.decode("utf-8") if isinstance(label, bytes) else str(label)
            print(f"{label}\t{float(np.max(outputs['probabilities'][i])):.4f}\t{text}")
        elif "scores" in outputs:
            print(f"{float(outputs['scores'][i]):.4f}\t{text}")
        else:
            shown = {k: _jsonable(v[i]) for k, v in outputs.items()}
            print(f"{json.dumps(shown, ensure_ascii=False)}\t{text}")


def _jsonable(value):
    value = np.asarray(value)
    if value.dtype.kind in "SO":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in value.reshape(-1)] if value.ndim else (
            value.item().decode("utf-8", "replace") if isinstance(value.item(), bytes)
            else str(value.item()))
    return value.tolist()


# -- embed ----------------------------------------------------------------------------------

def _add_embed(commands) -> None:
    p = command(commands, "embed", _embed,
                help="text embeddings from any model directory (of files on Apache "
                     "Beam with --runner / --output)")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE|TEXT",
                   help="texts, or files: .txt one text per line; .tsv/.csv/.jsonl with "
                        "--text-column")
    p.add_argument("--text-column", default="text", help="column of .tsv/.csv/.jsonl inputs")
    p.add_argument("--pooling", choices=("cls", "pooled", "mean"), default="cls")
    p.add_argument("--layer", type=int, metavar="N",
                   help="hidden states of layer N (0 = first block, -1 = last)")
    p.add_argument("--concat-last-four", action="store_true",
                   help="concatenate the last four layers (the paper's feature-based best)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each vector")
    p.add_argument("--seq-len", type=int, default=128,
                   help="T; longer texts are truncated (default 128)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", metavar="FILE.npy|FILE.jsonl",
                   help="where to write (default: print a summary)")
    p.set_defaults(accepts_pipeline_args=True)
    beam.add_job_flags(p, input_flag=False)


def _no_job_flags(args: argparse.Namespace) -> None:
    """Beam options (and --output / --runner) belong to batch jobs only."""
    if args.pipeline_args:
        raise ValueError(f"unrecognized arguments: {' '.join(args.pipeline_args)}")
    if args.output or args.runner:
        raise ValueError("--output / --runner run a Beam batch job: give --input FILES")


def embed_inputs(values, text_column: str = "text") -> list[str]:
    """`--input` values: an existing file is read (.txt one text per line, .tsv / .csv /
    .jsonl by column), anything else is a text."""
    # lazy: TensorFlow
    from kbert.data.readers import read_lines, read_text_examples

    texts = []
    for value in values:
        if os.path.isfile(value):
            if value.lower().endswith((".tsv", ".csv", ".jsonl")):
                texts += [e.text for e in read_text_examples(value, text_column=text_column,
                                                             label_column=None)]
            else:
                texts += read_lines(value)
        else:
            texts.append(value)
    return texts


def _embed(args: argparse.Namespace) -> None:
    """Embeds texts with MODEL_DIR's encoder: [CLS] vector, pooled output or mean over
    real tokens, of the last layer, --layer N or the last four layers concatenated;
    optionally L2-normalised. Writes .npy or .jsonl."""
    if args.output or args.runner:
        beam.run_embed_job(args)
        return
    _no_job_flags(args)
    # lazy: TensorFlow
    from kbert.tasks.embeddings import embed

    if args.out and not args.out.endswith((".npy", ".jsonl")):
        raise ValueError(f"--out {args.out}: use a .npy or .jsonl file name")
    texts = embed_inputs(args.input, args.text_column)
    vectors = embed(args.model_dir, texts, pooling=args.pooling, layer=args.layer,
                    concat_last_four=args.concat_last_four, normalize=args.normalize,
                    seq_len=args.seq_len, batch_size=args.batch_size)
    if not args.out:
        for text, vector in zip(texts, vectors):
            head = " ".join(f"{x:.4f}" for x in vector[:4])
            print(f"[{head} ...] ({vector.shape[0]})\t{text}")
        return
    tmp = args.out + ".tmp"
    if args.out.endswith(".npy"):
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for text, vector in zip(texts, vectors):
                f.write(json.dumps({"text": text, "embedding": vector.tolist()},
                                   ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {args.out}",
          file=sys.stdout)
