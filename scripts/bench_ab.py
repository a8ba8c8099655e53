"""Before / after: the same work timed with two kbert checkouts, to see what a change did
to speed (a refactor should change nothing).

For each checkout (a directory holding `kbert/`, e.g. `git worktree add /tmp/base HEAD~1`
and `.`), in its own worker process with that checkout first on `sys.path`:

    export-b1    a random classifier of --preset exported by that checkout's exporter at
                 T = 128, `serving_default` on one real sentence per call
    export-b32   the same, batches of 32 sentences (sentences / s)
    pretrain     one `BertPretrainer` train step of --pretrain-preset (B = 32, T = 128,
                 P = 20, float32), steps / s

Both checkouts build the same weights (same seed) and read the same sentences (lines of
the shared books corpus, else a built-in list). Rounds are interleaved (A, B, B, A, ...),
each system in its own process; medians over rounds and the B / A ratios are printed.

    python scripts/bench_ab.py /tmp/base . --preset base --rounds 6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

BOOKS = "/work/shared/data/pretrain/books_corpus.txt"
FALLBACK = ["The old man looked out over the grey water and said nothing for a while.",
            "She had never seen the city so quiet on a Sunday morning.",
            "It was the best of times, it was the worst of times.",
            "A short walk brought them to the edge of the forest."]


def sentences(n: int) -> list[str]:
    lines = []
    if os.path.isfile(BOOKS):
        with open(BOOKS, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if 8 <= len(words) <= 40:
                    lines.append(" ".join(words))
                if len(lines) >= n:
                    break
    while len(lines) < n:
        lines += FALLBACK
    return lines[:n]


def _worker(tree: str, args: dict, work: str, commands, results) -> None:
    sys.path.insert(0, os.path.abspath(tree))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from kbert.config import BertConfig

    texts = sentences(64)
    state = {}

    def export():
        import kbert.export as export_api
        from kbert.models import build_encoder
        from kbert.tasks import TaskSpec, build_task_model, save_task_model

        keras.utils.set_random_seed(0)
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
            {w.lower().strip(".,;:!?\"'") for t in texts for w in t.split()} - {""})
        config = BertConfig.from_preset(args["preset"], vocabulary_size=len(vocab))
        spec = TaskSpec("classification", labels=("a", "b"), seq_len=128)
        model_dir = save_task_model(os.path.join(work, "model"),
                                    build_task_model(build_encoder(config), spec), spec,
                                    config, vocab, overwrite=True)
        path = export_api.export_saved_model(model_dir, out_root=os.path.join(work, "exp"),
                                             name="clf", models_config=False)
        return export_api.load(path).signatures["serving_default"]

    def pretrain_step():
        from kbert.models import build_encoder
        try:
            from kbert.models.pretrainer import build_pretrainer
        except ImportError:  # checkouts before the layered packages
            from kbert.pretrainer import build_pretrainer

        keras.utils.set_random_seed(0)
        config = BertConfig.from_preset(args["pretrain_preset"], vocabulary_size=30522)
        model = build_pretrainer(build_encoder(config), config)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4))
        rng = np.random.default_rng(0)
        b, t, p = 32, 128, 20
        x = {"token_ids": rng.integers(5, 30522, (b, t)).astype("int32"),
             "segment_ids": np.zeros((b, t), "int32"), "padding_mask": np.ones((b, t), "int32"),
             "mask_positions": np.sort(rng.integers(1, t - 1, (b, p)), 1).astype("int32")}
        y = {"mlm_logits": rng.integers(5, 30522, (b, p)).astype("int32"),
             "nsp_logits": rng.integers(0, 2, b).astype("int32")}
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
        iterator = iter(data)
        model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace
        return model, iterator

    while True:
        command = commands.get()
        if command is None:
            return
        if command == "export":
            serve = state.get("serve") or state.setdefault("serve", export())
            one = [tf.constant([s]) for s in texts[:args["b1_calls"]]]
            batch = tf.constant(texts[:32])
            for s in one[:2]:
                serve(text=s)
            serve(text=batch)
            b1 = []
            for s in one:
                start = time.perf_counter()
                serve(text=s)["probabilities"].numpy()
                b1.append((time.perf_counter() - start) * 1000)
            b32 = []
            for _ in range(args["b32_calls"]):
                start = time.perf_counter()
                serve(text=batch)["probabilities"].numpy()
                b32.append(32 / (time.perf_counter() - start))
            results.put({"export-b1 ms": statistics.median(b1),
                         "export-b32 seq/s": statistics.median(b32)})
        elif command == "pretrain":
            model, iterator = state.get("pre") or state.setdefault("pre", pretrain_step())
            steps = args["pretrain_steps"]
            data = tf.data.Dataset.from_tensors(next(iterator)).repeat()
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            results.put({"pretrain steps/s": steps / (time.perf_counter() - start)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="checkout A (holds kbert/)")
    parser.add_argument("after", help="checkout B (holds kbert/)")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--pretrain-preset", default="mini")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--b1-calls", type=int, default=20)
    parser.add_argument("--b32-calls", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=("export", "pretrain"))
    parser.add_argument("--json", help="also write the medians here")
    args = parser.parse_args()
    options = {"preset": args.preset, "pretrain_preset": args.pretrain_preset,
               "b1_calls": args.b1_calls, "b32_calls": args.b32_calls,
               "pretrain_steps": args.pretrain_steps}
    ctx = mp.get_context("spawn")
    trees = {"A": args.before, "B": args.after}
    jobs = [j for j in ("export", "pretrain") if j not in args.skip]
    workers, queues = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for key, tree in trees.items():
            for job in jobs:  # one process per (checkout, job): nothing else in it
                commands, results = ctx.Queue(), ctx.Queue()
                os.makedirs(os.path.join(work, key + job), exist_ok=True)
                process = ctx.Process(target=_worker, args=(tree, options,
                                                            os.path.join(work, key + job),
                                                            commands, results))
                process.start()
                workers[key, job], queues[key, job] = process, (commands, results)
        samples: dict = {}
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for job in jobs:
                for key in order:
                    commands, results = queues[key, job]
                    commands.put(job)
                    for metric, value in results.get(timeout=3600).items():
                        samples.setdefault((key, metric), []).append(value)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        for commands, _ in queues.values():
            commands.put(None)
        for process in workers.values():
            process.join(timeout=60)
    medians = {f"{k}:{m}": statistics.median(v) for (k, m), v in samples.items()}
    print(f"\nA = {args.before}\nB = {args.after}\n")
    print(f"{'metric':<20} {'A':>10} {'B':>10} {'B / A':>8}")
    for metric in dict.fromkeys(m for _, m in samples):
        a, b = medians[f"A:{metric}"], medians[f"B:{metric}"]
        print(f"{metric:<20} {a:>10.2f} {b:>10.2f} {b / a:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": medians, "samples": {f"{k}:{m}": v for (k, m), v in
                                                        samples.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
