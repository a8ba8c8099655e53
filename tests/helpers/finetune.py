"""Tiny model directories and synthetic labelled files for the fine-tuning tests."""

import random

WORDS = [f"w{i}" for i in range(40)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["good", "bad"]


def tiny_model_dir(path, num_layers=1, seed=0, activation="gelu"):
    """A randomly initialised tiny encoder (`helpers.tiny.tiny_config`: 1 layer by default,
    H=128) for `VOCAB`, saved as a kbert model directory; the same seed gives the same
    weights."""
    from helpers.tiny import save_tiny_model, tiny_config

    config = tiny_config(len(VOCAB), num_layers=num_layers, activation=activation)
    return save_tiny_model(path, VOCAB, config=config, seed=seed)


def keyword_rows(n, seed, pair=False):
    """(text, pair, label) rows: the label is the keyword ("good" / "bad") hidden among
    random filler words, so a model can learn it in a few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["good", "bad"])
        words = [rng.choice(WORDS) for _ in range(rng.randrange(3, 10))]
        words.insert(rng.randrange(len(words) + 1), label)
        other = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 6)))
        rows.append((" ".join(words), other if pair else None, label))
    return rows


def write_tsv(path, rows, pair=False):
    with open(path, "w", encoding="utf-8") as f:
        f.write("text\tpair\tlabel\n" if pair else "text\tlabel\n")
        for text, other, label in rows:
            f.write("\t".join([text] + ([other] if pair else []) + [str(label)]) + "\n")
    return str(path)


def keyword_task_files(root):
    """A tiny model directory and keyword-task train (320 rows) / dev (60 rows) TSVs."""
    return {"root": root, "model": tiny_model_dir(root / "pre"),
            "train": write_tsv(root / "train.tsv", keyword_rows(320, seed=1)),
            "dev": write_tsv(root / "dev.tsv", keyword_rows(60, seed=2))}


def settings_kwargs(data, out, **changes):
    """FinetuneSettings arguments for the keyword task: T=16, 3 epochs of batch 16 at
    1e-3 (a tiny random encoder learns the keyword in one or two epochs)."""
    values = dict(model=data["model"], train=data["train"], eval=data["dev"], out=str(out),
                  seq_len=16, epochs=3, batch_size=16, learning_rate=1e-3)
    values.update(changes)
    return values


def write_squad(path, examples, title="synthetic"):
    """`examples` (kbert.data.squad.SquadExample) as a SQuAD v1.1 JSON file, one
    paragraph per question; returns the path as a string."""
    import json

    paragraphs = [{"context": e.context, "qas": [{
        "id": e.id, "question": e.question,
        "answers": [{"text": a.text, "answer_start": a.start} for a in e.answers]}]}
        for e in examples]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}, f)
    return str(path)
