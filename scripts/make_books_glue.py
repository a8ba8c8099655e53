"""Two real-text tasks from the shared books corpus, written in GLUE's layout, for trying
`kbert glue` where GLUE itself cannot be downloaded (they are not GLUE tasks):

    SST-2/   single paragraphs, label 1 = Jane Austen (Emma, Persuasion, Sense and
             Sensibility, Pride and Prejudice), 0 = Herman Melville (Moby Dick)
    RTE/     paragraph pairs: entailment = the next paragraph of the same book,
             not_entailment = a paragraph of another book (next-sentence prediction)

    python scripts/make_books_glue.py ../shared/data/pretrain/books_corpus.txt OUT \
        --train 1000 --dev 300 --test 200
"""

import argparse
import os
import random

# Document order in books_corpus.txt: Iliad, Emma, Persuasion, Sense and Sensibility, Moby
# Dick, Old Granny Fox, Pride and Prejudice, Sherlock Holmes, War and Peace.
AUSTEN, MELVILLE = (1, 2, 3, 6), (4,)


def books(path):
    with open(path, encoding="utf-8") as f:
        parts = f.read().split("\n\n")
    return [[p.strip() for p in part.splitlines() if p.strip()] for part in parts]


def usable(paragraph, low=8, high=60):
    return low <= len(paragraph.split()) <= high and "\t" not in paragraph


def write(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--dev", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = books(args.corpus)
    sizes = {"train": args.train, "dev": args.dev, "test": args.test}

    single = [(p, 1) for b in AUSTEN for p in docs[b] if usable(p)] + [
        (p, 0) for b in MELVILLE for p in docs[b] if usable(p)]
    rng.shuffle(single)
    start = 0
    for split, n in sizes.items():
        chunk, start = single[start:start + n], start + n
        if split == "test":
            write(os.path.join(args.out, "SST-2", "test.tsv"), ["index", "sentence"],
                  [(i, p) for i, (p, _) in enumerate(chunk)])
        else:
            write(os.path.join(args.out, "SST-2", f"{split}.tsv"), ["sentence", "label"], chunk)

    pairs = []
    for b, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if usable(doc[i]) and usable(doc[i + 1]):
                if rng.random() < 0.5:
                    pairs.append((doc[i], doc[i + 1], "entailment"))
                else:
                    other = rng.choice([d for d in range(len(docs)) if d != b and docs[d]])
                    pairs.append((doc[i], rng.choice(docs[other]), "not_entailment"))
    rng.shuffle(pairs)
    start = 0
    for split, n in sizes.items():
        chunk, start = pairs[start:start + n], start + n
        rows = [(i, a, b) + (() if split == "test" else (label,))
                for i, (a, b, label) in enumerate(chunk)]
        header = ["index", "sentence1", "sentence2"] + ([] if split == "test" else ["label"])
        write(os.path.join(args.out, "RTE", f"{split}.tsv"), header, rows)
    print(f"wrote SST-2/ and RTE/ under {args.out}")


if __name__ == "__main__":
    main()
