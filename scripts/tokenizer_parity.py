"""Compares kbert.Tokenizer with Hugging Face's BERT WordPiece tokenizer, line by line.

    python scripts/tokenizer_parity.py --vocab VOCAB.txt --corpus FILE [--cased]

Both get the same lines (decoded as UTF-8 with errors="replace"; kbert gets them
re-encoded). Prints the share of lines with identical ids (no [CLS]/[SEP]), the share with
identical offsets (HF's character offsets converted to bytes), and the first differing
lines. Needs the `tokenizers` package (`pip install kbert[reference]`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def char_to_byte_offsets(text: str) -> list[int]:
    """Byte offset of every character position of `text` (and of its end)."""
    offsets, position = [], 0
    for char in text:
        offsets.append(position)
        position += len(char.encode("utf-8"))
    offsets.append(position)
    return offsets


def hf_tokenizer(vocab: str, lowercase: bool):
    import tokenizers

    return tokenizers.BertWordPieceTokenizer(
        vocab, lowercase=lowercase, strip_accents=lowercase, clean_text=True,
        handle_chinese_chars=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--cased", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="first N lines only")
    parser.add_argument("--show", type=int, default=5, help="differing lines to print")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from kbert.text import Tokenizer

    with open(args.corpus, "rb") as f:
        lines = [line.rstrip(b"\r\n").decode("utf-8", "replace") for line in f]
    if args.limit:
        lines = lines[:args.limit]
    lowercase = not args.cased

    start = time.perf_counter()
    reference = hf_tokenizer(args.vocab, lowercase).encode_batch(
        lines, add_special_tokens=False)
    hf_seconds = time.perf_counter() - start

    tokenizer = Tokenizer(args.vocab, lowercase=lowercase)
    start = time.perf_counter()
    ids, starts, ends = [], [], []
    for i in range(0, len(lines), args.batch_size):
        batch = tf.constant([line.encode("utf-8") for line in lines[i:i + args.batch_size]])
        batch_ids, batch_starts, batch_ends = tokenizer.tokenize_with_offsets(batch)
        ids += batch_ids.to_list()
        starts += batch_starts.to_list()
        ends += batch_ends.to_list()
    kbert_seconds = time.perf_counter() - start

    same_ids = same_offsets = 0
    differing = []
    for line, ref, our_ids, our_starts, our_ends in zip(lines, reference, ids, starts, ends):
        if ref.ids == our_ids:
            same_ids += 1
            to_bytes = char_to_byte_offsets(line)
            ref_offsets = [(to_bytes[s], to_bytes[e]) for s, e in ref.offsets]
            if ref_offsets == list(zip(our_starts, our_ends)):
                same_offsets += 1
        else:
            differing.append((line, ref.tokens, [tokenizer.vocab[i] for i in our_ids]))

    n = len(lines)
    print(f"lines: {n}  ({'cased' if args.cased else 'uncased'}, vocab {args.vocab})")
    print(f"identical ids:     {same_ids}/{n} = {100 * same_ids / max(n, 1):.3f}%")
    print(f"identical offsets: {same_offsets}/{n} = {100 * same_offsets / max(n, 1):.3f}%")
    print(f"time (eager, not a benchmark): HF {hf_seconds:.1f}s, kbert {kbert_seconds:.1f}s")
    for line, ref_tokens, our_tokens in differing[:args.show]:
        first = next((j for j, (a, b) in enumerate(zip(ref_tokens, our_tokens)) if a != b),
                     min(len(ref_tokens), len(our_tokens)))
        print(f"\n--- line: {line[:200]!r}")
        print(f"    HF    [{first}:]: {ref_tokens[first:first + 8]}")
        print(f"    kbert [{first}:]: {our_tokens[first:first + 8]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
