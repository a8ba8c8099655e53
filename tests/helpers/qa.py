"""A tiny QA vocabulary and a learnable synthetic SQuAD-style task."""

import numpy as np

from kbert.data.squad import SquadAnswer, SquadExample

WORDS = [f"w{i}" for i in range(40)]
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")
         + ["?", ".", "el", "vio", "東", "京", "y", "cafe", "!", "where"] + WORDS)


def learnable_examples(n, seed):
    """Answers always run from "w1" to "w2" (0-2 words between) in a context of 30
    other words: learnable from the tokens alone by a 1-layer model."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        words = [f"w{j}" for j in rng.integers(3, 40, 30)]
        at, gap = int(rng.integers(0, 26)), int(rng.integers(0, 3))
        answer = ["w1"] + [f"w{j}" for j in rng.integers(3, 40, gap)] + ["w2"]
        words[at:at] = answer
        context = " ".join(words)
        text = " ".join(answer)
        examples.append(SquadExample(f"q{i}", "where", context,
                                     (SquadAnswer(text, context.index(text)),)))
    return examples
