"""Held-out evaluation of a pre-trained kbert model, and the corpus split it needs.

    # hold out the last 5% of every document (documents stay documents in both parts)
    python scripts/eval_pretraining.py split CORPUS --train train.txt --eval heldout.txt
    # masked-LM and NSP accuracy on held-out text, beside the most-frequent-token baseline
    python scripts/eval_pretraining.py eval MODEL_DIR heldout.txt --batches 50
"""

import argparse
import collections
import json


def split(corpus, train_path, eval_path, fraction=0.05):
    documents, current = [], []
    with open(corpus, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                current.append(line)
            elif current:
                documents.append(current)
                current = []
    if current:
        documents.append(current)
    with open(train_path, "w", encoding="utf-8") as train, \
            open(eval_path, "w", encoding="utf-8") as held:
        for doc in documents:
            cut = max(1, int(len(doc) * (1 - fraction)))
            train.write("".join(doc[:cut]) + "\n")
            if doc[cut:]:
                held.write("".join(doc[cut:]) + "\n")
    print(f"{len(documents)} documents; held out the last {fraction:.0%} of each")


def evaluate(model_dir, heldout, batches, batch_size, seq_len, max_predictions, seed):
    import numpy as np

    import kbert
    from kbert.data.pretraining import pretraining_dataset
    from kbert.io.model_dir import read_checkpoint
    from kbert.models.pretrainer import load_pretrainer

    checkpoint = read_checkpoint(model_dir)
    model = load_pretrainer(checkpoint)
    tokenizer = kbert.Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    ds = pretraining_dataset(heldout, tokenizer, sequence_length=seq_len,
                             max_predictions=max_predictions, batch_size=batch_size, seed=seed)
    mlm_correct = mlm_total = nsp_correct = nsp_total = 0
    counts = collections.Counter()
    labels_seen = []
    for x, y, w in ds.take(batches).as_numpy_iterator():
        out = model(x)
        real = w["mlm_logits"] > 0
        predicted = np.argmax(np.asarray(out["mlm_logits"]), -1)
        mlm_correct += int((predicted == y["mlm_logits"])[real].sum())
        mlm_total += int(real.sum())
        counts.update(y["mlm_logits"][real].tolist())
        nsp_correct += int((np.argmax(np.asarray(out["nsp_logits"]), -1) == y["nsp_logits"]).sum())
        nsp_total += len(y["nsp_logits"])
        labels_seen.extend(y["nsp_logits"].tolist())
    top_id, top_count = counts.most_common(1)[0]
    result = {
        "masked_lm_accuracy": mlm_correct / mlm_total,
        "most_frequent_token": checkpoint.vocab[top_id],
        "most_frequent_token_accuracy": top_count / mlm_total,
        "next_sentence_accuracy": nsp_correct / nsp_total,
        "next_sentence_majority_accuracy": max(np.mean(labels_seen), 1 - np.mean(labels_seen)),
        "masked_predictions": mlm_total, "pairs": nsp_total,
    }
    print(json.dumps(result, indent=2))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("split")
    p.add_argument("corpus")
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--fraction", type=float, default=0.05)
    p = commands.add_parser("eval")
    p.add_argument("model_dir")
    p.add_argument("heldout")
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    if args.command == "split":
        split(args.corpus, args.train, args.eval, args.fraction)
    else:
        evaluate(args.model_dir, args.heldout, args.batches, args.batch_size, args.seq_len,
                 args.max_predictions, args.seed)


if __name__ == "__main__":
    main()
