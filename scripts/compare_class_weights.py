"""Token tagging with and without `--class-weights balanced`, side by side: each run is
`kbert finetune tag` in its own process on the same data and settings; the table gives
token accuracy, macro F1 over the tags (scikit-learn), the F1 of the rarest training tags
and the training seconds.

    PYTHONPATH=. python scripts/compare_class_weights.py --model models/minilm \\
        --train ../shared/data/ud_ewt/en_ewt-ud-train.conllu \\
        --eval ../shared/data/ud_ewt/en_ewt-ud-dev.conllu --max-train-sentences 2000 \\
        --out runs/class_weights
"""

import argparse
import collections
import json
import os
import subprocess
import sys

import sklearn.metrics

from kbert.data.conll import read_tagging_file


def subset(path, n, out):
    """The first n sentences of a CoNLL-U file (comments kept), as a new file."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().strip().split("\n\n")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n\n".join(blocks[:n]) + "\n\n")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-train-sentences", type=int)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rare", type=int, default=5, help="rarest tags shown")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train = args.train
    if args.max_train_sentences:
        train = subset(train, args.max_train_sentences, os.path.join(args.out, "train.conllu"))
    counts = collections.Counter(t for s in read_tagging_file(train) for t in s.labels)
    gold_sentences = read_tagging_file(args.eval)
    gold = [t for s in gold_sentences for t in s.labels]
    rare = [tag for tag, _ in sorted(counts.items(), key=lambda kv: kv[1])[:args.rare]]
    rows = []
    for name, extra in (("unweighted", []), ("balanced", ["--class-weights", "balanced"])):
        out = os.path.join(args.out, name)
        subprocess.run([sys.executable, "-m", "kbert.cli", "finetune", "tag", "--model",
                        args.model, "--train", train, "--eval", args.eval, "--out", out,
                        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--learning-rate", str(args.learning_rate), "--seq-len",
                        str(args.seq_len), "--overwrite"] + extra, check=True)
        with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
            predicted = [t for line in f for t in json.loads(line)["tags"]]
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        per_tag = dict(zip(sorted(counts), sklearn.metrics.f1_score(
            gold, predicted, labels=sorted(counts), average=None, zero_division=0)))
        rows.append((name, sklearn.metrics.accuracy_score(gold, predicted),
                     sklearn.metrics.f1_score(gold, predicted, labels=sorted(counts),
                                              average="macro", zero_division=0),
                     [per_tag[t] for t in rare], sum(metrics["seconds_per_epoch"])))
    print(f"train sentences: {len(read_tagging_file(train))}, dev words: {len(gold)}, "
          f"epochs {args.epochs}")
    print("| run | accuracy | macro F1 | " + " | ".join(
        f"F1 {t} ({counts[t]})" for t in rare) + " | train s |")
    print("|---|---:|---:|" + "---:|" * len(rare) + "---:|")
    for name, accuracy, macro, rare_f1, seconds in rows:
        print(f"| {name} | {accuracy:.4f} | {macro:.4f} | " +
              " | ".join(f"{v:.3f}" for v in rare_f1) + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main()
