"""Records Hugging Face's packing and `longest_first` truncation for tests/text/test_packer.py.

Reference: transformers 5 `BertTokenizer` (backed by the Rust `tokenizers` library) with the
tiny fixture vocab. Every segment is a text of single-token words, so its ids are known
without a tokenizer; the reference then packs each case with
`tokenizer(first, second, truncation="longest_first", max_length=T, padding="max_length")`.
Requires the `reference` extra:

    python scripts/make_truncation_fixture.py

Writes tests/fixtures/truncation_reference.npz:
    seq_len       int32 [N]       T of each case
    first_ids     int32 [sum n1]  flat ids of the first segments; first_lengths int32 [N]
    second_ids    int32 [sum n2]  flat ids of the second segments; second_lengths int32 [N],
                                  -1 for single-segment cases (no second segment)
    token_ids, segment_ids, padding_mask  int32 [N, max T], -1 beyond each case's T

Also prints how often transformers' pure-Python `truncate_sequences` (the
`PreTrainedTokenizer` backend) disagrees with the tokenizers backend: when both segments
must be cut to an odd budget, it gives the odd token to the first segment, the tokenizers
backend to the longer one (the second on a tie).
"""

import os
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
VOCAB_DIR = os.path.join(FIXTURES, "hf_tiny_base")
OUT = os.path.join(FIXTURES, "truncation_reference.npz")
NUM_PAIRS, NUM_SINGLES = 3000, 500


def random_cases(rng, vocab_words):
    """(T, first ids, second ids or None), most of them too long for T."""
    cases = []
    for i in range(NUM_PAIRS + NUM_SINGLES):
        pair = i < NUM_PAIRS
        seq_len = int(rng.integers(3 if pair else 2, 40))
        # Lengths up to ~1.5 T so that most cases truncate; ties (equal lengths) on purpose
        # in a fifth of the pairs, since that is where implementations differ.
        n1 = int(rng.integers(1, seq_len * 3 // 2 + 2))
        n2 = n1 if pair and rng.random() < 0.2 else int(rng.integers(1, seq_len * 3 // 2 + 2))
        first = rng.choice(vocab_words, n1).tolist()
        second = rng.choice(vocab_words, n2).tolist() if pair else None
        cases.append((seq_len, first, second))
    return cases


def python_backend_longest_first(first, second, num_to_remove):
    """transformers' pure-Python `PreTrainedTokenizer.truncate_sequences` on id lists."""
    from transformers.tokenization_python import PreTrainedTokenizer
    dummy = types.SimpleNamespace(truncation_side="right")
    kept_first, kept_second, _ = PreTrainedTokenizer.truncate_sequences(
        dummy, first, second, num_tokens_to_remove=num_to_remove,
        truncation_strategy="longest_first")
    return len(kept_first), len(kept_second)


def main():
    import transformers

    tokenizer = transformers.BertTokenizer.from_pretrained(VOCAB_DIR)
    vocab = [line.rstrip("\n") for line in open(os.path.join(VOCAB_DIR, "vocab.txt"))]
    # Alphabetic whole words only: each is exactly one WordPiece token.
    words = [i for i, w in enumerate(vocab) if w.isalpha() and w.islower()]
    rng = np.random.default_rng(20240611)
    cases = random_cases(rng, words)

    rows = {"token_ids": [], "segment_ids": [], "padding_mask": []}
    python_disagrees = 0
    for seq_len, first, second in cases:
        text = " ".join(vocab[i] for i in first)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == first
        if second is None:
            enc = tokenizer(text, truncation="longest_first", max_length=seq_len,
                            padding="max_length")
        else:
            text_pair = " ".join(vocab[i] for i in second)
            enc = tokenizer(text, text_pair, truncation="longest_first", max_length=seq_len,
                            padding="max_length")
            excess = len(first) + len(second) + 3 - seq_len
            if excess > 0:
                kept = python_backend_longest_first(first, second, excess)
                types_ = enc["token_type_ids"]
                hf_kept = (types_.count(0) - 2 - enc["attention_mask"].count(0),
                           types_.count(1) - 1)
                python_disagrees += kept != hf_kept
        for key, hf_key in (("token_ids", "input_ids"), ("segment_ids", "token_type_ids"),
                            ("padding_mask", "attention_mask")):
            assert len(enc[hf_key]) == seq_len
            rows[key].append(enc[hf_key])

    max_len = max(c[0] for c in cases)
    out = {
        "seq_len": np.array([c[0] for c in cases], np.int32),
        "first_ids": np.array([i for c in cases for i in c[1]], np.int32),
        "first_lengths": np.array([len(c[1]) for c in cases], np.int32),
        "second_ids": np.array([i for c in cases if c[2] for i in c[2]], np.int32),
        "second_lengths": np.array([len(c[2]) if c[2] else -1 for c in cases], np.int32),
    }
    for key, values in rows.items():
        padded = np.full((len(cases), max_len), -1, np.int32)
        for r, v in enumerate(values):
            padded[r, :len(v)] = v
        out[key] = padded
    np.savez_compressed(OUT, **out)
    truncated = sum(len(f) + (len(s) + 3 if s else 2) > t for t, f, s in cases)
    print(f"wrote {OUT}: {len(cases)} cases ({NUM_PAIRS} pairs, {NUM_SINGLES} single), "
          f"{truncated} truncated; pure-Python backend disagrees on {python_disagrees} "
          f"truncated pairs")


if __name__ == "__main__":
    main()
