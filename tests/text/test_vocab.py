"""`kbert vocab` / kbert.text.vocab: reserved ids, normalisation shared with the
Tokenizer, coverage of the text it was learned from."""

import pytest

from kbert import cli
from kbert.io.model_dir import read_vocab
from kbert.text import Tokenizer
from kbert.text.vocab import build_vocab, reserved_tokens

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LINES = [
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on.",
    "A café in Zürich serves crème brûlée to visitors from São Paulo.",
    "Tokenizers split words into pieces: playing, played, player, plays, replay.",
    "Die Straße ist 5 µm breit, sagte die Ingenieurin zum Ingenieur.",
    "BERT reads text from left to right and from right to left at once.",
    "Numbers like 1,024 and 3.14 are split at their punctuation (as BERT does).",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    first, second = directory / "a.txt", directory / "b.txt"
    # Repeated so that whole words pass the learner's count threshold.
    first.write_text("\n".join(LINES[:3] * 15) + "\n", encoding="utf-8")
    second.write_bytes(("\n".join(LINES[3:] * 15) + "\n").encode() + b"bad \xff byte\n")
    return [str(first), str(second)]


def unknown_rate(tokenizer, lines) -> float:
    ids = tokenizer(lines).flat_values.numpy().tolist()
    return ids.count(tokenizer.unk_id) / len(ids)


def test_uncased_vocab_has_reserved_ids_and_covers_its_text(corpus):
    vocab = build_vocab(corpus, size=300)
    assert vocab[:5] == SPECIAL
    assert len(vocab) <= 300 and len(set(vocab)) == len(vocab)
    tokenizer = Tokenizer(vocab)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert unknown_rate(tokenizer, LINES) == 0.0
    # Frequent words are whole tokens; the text is seen as the Tokenizer normalises it.
    assert {"the", "dog", "from", "##s"} <= set(vocab)
    chars = set("".join(vocab[5:]))
    assert not any(c.isupper() for c in chars) and not chars & set("éèûãü")
    assert "ß" in chars and "µ" in chars and "μ" not in chars  # no NFKC case folding
    tokens = [vocab[i] for i in tokenizer("Straße").numpy()]
    assert "".join(t.removeprefix("##") for t in tokens) == "straße"


def test_cased_vocab_keeps_case_and_accents(corpus):
    vocab = build_vocab(corpus, size=300, lowercase=False)
    assert vocab[:5] == SPECIAL
    chars = set("".join(vocab[5:]))
    assert {"T", "B", "é", "ü"} <= chars
    assert unknown_rate(Tokenizer(vocab, lowercase=False), LINES) == 0.0


def test_unused_tokens_follow_mask(corpus):
    vocab = build_vocab(corpus, size=300, unused=3)
    assert vocab[:8] == SPECIAL + ["[unused0]", "[unused1]", "[unused2]"]
    assert reserved_tokens(2) == SPECIAL + ["[unused0]", "[unused1]"]
    with pytest.raises(ValueError, match="no room"):
        build_vocab(corpus, size=8, unused=3)


def test_cli(corpus, tmp_path, capsys):
    out = tmp_path / "vocab.txt"
    assert cli.main(["vocab", *corpus, "--size", "200", "--out", str(out), "--cased",
                     "--min-count", "5"]) == 0
    vocab = read_vocab(out)
    assert list(vocab[:5]) == SPECIAL and len(vocab) <= 200
    assert "lowercase=False" in capsys.readouterr().out
    assert unknown_rate(Tokenizer(out, lowercase=False), LINES) == 0.0
    assert cli.main(["vocab", str(tmp_path / "missing.txt"), "--size", "100",
                     "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
