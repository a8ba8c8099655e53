"""Builds the small public-domain samples bundled in kbert/data/samples/ (used by the
quickstart demo and the notebooks' small configuration) from the shared books corpus.

    python scripts/make_samples.py /work/shared/data/pretrain/books_corpus.txt

books_sample.txt: the first paragraphs of six Project Gutenberg books, one paragraph per
line, a blank line between books (the pre-training input format).
authors_{train,dev}.tsv: paragraphs of 15-120 words labelled with their author ("austen":
Emma, Persuasion, Pride and Prejudice; "melville": Moby Dick), not taken from the
pre-training sample; train and dev come from disjoint halves of each book.
"""

import argparse
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "kbert", "data", "samples")
# Book order in books_corpus.txt (blank-line separated).
TITLES = ["iliad", "emma", "persuasion", "sense_and_sensibility", "moby_dick", "holmes",
          "pride_and_prejudice", "granny_fox", "war_and_peace"]
PRETRAIN_BOOKS = ("iliad", "sense_and_sensibility", "holmes", "granny_fox", "war_and_peace",
                  "emma")
PRETRAIN_LINES = 330
AUTHORS = {"emma": "austen", "persuasion": "austen", "pride_and_prejudice": "austen",
           "moby_dick": "melville"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    args = parser.parse_args()
    books, current = [], []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                books.append(current)
                current = []
    if current:
        books.append(current)
    books = dict(zip(TITLES, books))

    with open(os.path.join(OUT, "books_sample.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(books[t][:PRETRAIN_LINES]) for t in PRETRAIN_BOOKS))
        f.write("\n")

    rng = random.Random(0)
    splits = {"train": [], "dev": []}
    for title, author in AUTHORS.items():
        start = PRETRAIN_LINES if title in PRETRAIN_BOOKS else 0
        paragraphs = [p.replace("\t", " ") for p in books[title][start:]
                      if 15 <= len(p.split()) <= 120]
        half = len(paragraphs) // 2
        # Austen has three books, Melville one: take as many Melville paragraphs as Austen's.
        per_book = 150 if author == "austen" else 450
        splits["train"] += [(p, author) for p in rng.sample(paragraphs[:half], per_book)]
        splits["dev"] += [(p, author) for p in rng.sample(paragraphs[half:], per_book // 3)]
    for split, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(OUT, f"authors_{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("text\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for text, label in rows)


if __name__ == "__main__":
    main()
