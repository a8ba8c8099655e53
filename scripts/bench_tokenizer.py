"""Tokenizer throughput: kbert.Tokenizer in tf.data against Hugging Face `tokenizers`.

    python scripts/bench_tokenizer.py --vocab VOCAB.txt --corpus FILE [--cased]

Both tokenize every line of FILE with the same vocabulary, side by side in one run: kbert
batched in `tf.data` (`map` over batches of --batch-size lines, with offsets, and ids
only), Hugging Face with `encode_batch` (which always computes offsets). After a warm-up
pass of each, the three take turns for --repeats rounds (so that load from other
processes hits all of them alike) and each one's best pass is reported. The ids of both
are compared line by line. Needs `tokenizers` (`pip install kbert[reference]`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--cased", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tokenizers

    from kbert.text import Tokenizer

    with open(args.corpus, "rb") as f:
        raw = [line.rstrip(b"\r\n") for line in f]
    lines = [line.decode("utf-8", "replace") for line in raw]
    encoded = [line.encode("utf-8") for line in lines]  # what HF sees, as bytes
    lowercase = not args.cased
    megabytes = sum(map(len, encoded)) / 1e6

    hf = tokenizers.BertWordPieceTokenizer(
        args.vocab, lowercase=lowercase, strip_accents=lowercase, clean_text=True,
        handle_chinese_chars=True)
    tokenizer = Tokenizer(args.vocab, lowercase=lowercase)
    dataset = tf.data.Dataset.from_tensor_slices(encoded).batch(args.batch_size)

    def kbert_pipeline(with_offsets: bool) -> tf.data.Dataset:
        def tokenize(text):
            if with_offsets:
                return tokenizer.tokenize_with_offsets(text)
            return (tokenizer.tokenize(text),)

        return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)

    pipelines = {True: kbert_pipeline(True), False: kbert_pipeline(False)}

    def kbert_pass(with_offsets: bool) -> list:
        return [batch[0] for batch in pipelines[with_offsets]]

    runs = {
        "kbert tf.data, offsets": lambda: kbert_pass(True),
        "kbert tf.data, ids only": lambda: kbert_pass(False),
        "HF tokenizers encode_batch": lambda: hf.encode_batch(lines, add_special_tokens=False),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up (and tracing)
    results = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            results[name] = min(results[name], time.perf_counter() - start)
    kbert_ids = [row for batch in outputs["kbert tf.data, offsets"] for row in batch.to_list()]
    encodings = outputs["HF tokenizers encode_batch"]

    same = sum(a.ids == b for a, b in zip(encodings, kbert_ids))
    n_tokens = sum(len(ids) for ids in kbert_ids)
    print(f"corpus: {len(lines)} lines, {megabytes:.1f} MB, {n_tokens} tokens; "
          f"{'cased' if args.cased else 'uncased'}; batch {args.batch_size}; "
          f"{os.cpu_count()} CPUs; best of {args.repeats}")
    print(f"identical ids: {same}/{len(lines)} lines ({100 * same / len(lines):.3f}%)")
    hf_seconds = results["HF tokenizers encode_batch"]
    for name, seconds in results.items():
        print(f"{name:28s} {len(lines) / seconds:10,.0f} lines/s {n_tokens / seconds:12,.0f} "
              f"tokens/s  {hf_seconds / seconds:5.2f}x HF")
    return 0 if same == len(lines) else 1


if __name__ == "__main__":
    sys.exit(main())
