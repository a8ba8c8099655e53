"""Writes tests/fixtures/tokenizer/: a small vocab.txt and cases.json, the hard cases of
the tokenizer with the ids and offsets Hugging Face's tokenizer gives for them.

    python scripts/make_tokenizer_fixtures.py --reference-vocab BERT_UNCASED_VOCAB.txt

The committed vocabulary (a few hundred tokens) is made from the cases themselves: the
special tokens, the pieces a full uncased BERT vocabulary (--reference-vocab, e.g. the
30,522-token one) splits them into, some cased words, and single characters (also as
"##" pieces) of the Latin, Greek, Cyrillic and CJK text, but not of emoji and symbols,
so that some words still come out as [UNK]. Expected ids and offsets then come from
`tokenizers.BertWordPieceTokenizer` with that small vocabulary, uncased and cased, so the
tests need neither the big vocabulary nor `tokenizers`.

Offsets are stored as byte offsets into the UTF-8 input (HF's character offsets
converted). Inputs with invalid UTF-8 are given to HF decoded with errors="replace"; their
offsets are not stored (they do not index the original bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, os.pardir, "tests", "fixtures", "tokenizer")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# (name, input). Strings are UTF-8 encoded; bytes are given as they are.
CASES = [
    ("basic", "Hello, World! The cat sat on the mat."),
    ("accents", "Héllo naïve café résumé Ångström Crème Brûlée"),
    ("accents_places", "São Paulo, Zürich, Kraków, Ærøskøbing"),
    ("combining_marks", "e\u0301cole cafe\u0301 n\u0303o"),
    ("cjk_chinese", "中文字符测试 BERT是一个模型"),
    ("cjk_japanese", "日本語のテキストとカタカナ"),
    ("hangul", "한국어 텍스트"),
    ("cjk_compat", "\uf900\uf901 豈"),
    ("emoji", "I love 🍕 and 🥰! 👍🏽 🇫🇷 🧑\u200d💻 ok😀ok"),
    ("control_chars", "a\x00b\x07c\td\ne\rf\x0bg\x0ch\x1fi\x7fj\x85k"),
    ("zero_width", "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u00adsoft\u2060wj"),
    ("zero_width_at_ends", "\u200bstart end\u200b \u200b"),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u2029f\u202fg"),
    ("private_use", "a\ue000b \U000f0000c"),
    ("replacement_char", "a\ufffdb \ufffd"),
    ("long_word_100", "a" * 100),
    ("long_word_101", "a" * 101 + " ok"),
    ("long_word_99_pieces", "ab" * 49 + "c ok"),
    ("long_word_mixed", "un" + "believable" * 12 + ", done"),
    ("long_word_multibyte_100", "ж" * 100 + " ok"),
    ("long_word_multibyte_101", "ж" * 101 + " ok"),
    ("long_word_accented_101", "é" * 101),
    ("long_word_400_bytes", "x" * 401 + " end"),
    ("long_emoji_run", "😀" * 30),
    ("empty", ""),
    ("whitespace_only", "   \t\n  "),
    ("control_only", "\x00\x01\x02"),
    ("zero_width_only", "\u200b\u200b\ufeff"),
    ("fullwidth_punctuation", "你好，世界！（测试）：完成。「引用」"),
    ("fullwidth_letters", "ＡＢＣ　ｄｅｆ １２３"),
    ("ellipsis", "Wait… what…?"),
    ("sharp_s", "Straße groß STRASSE ẞ"),
    ("micro_sign", "5 µm vs 5 μm"),
    ("greek_sigma", "ΣΟΦΟΣ σοφός Σ"),
    ("turkish_i", "İstanbul ıi"),
    ("titlecase_ligatures", "ǅemal ﬁne ﬂow ﬀ"),
    ("signs", "℃ ™ © ½ ² K Å"),
    ("punctuation", "don't stop-me (now) #tag @user e-mail@x.com $5.00 100% a/b\\c ~^`|<>=+"),
    ("unicode_punctuation", "«quoted» „low“ ‘single’ — dash – en ¿qué? ¡sí!"),
    ("numbers", "1,234.56 3.14159 2024-01-01 10th"),
    ("arabic", "مرحبا بالعالم"),
    ("devanagari", "नमस्ते दुनिया"),
    ("thai", "สวัสดีชาวโลก"),
    ("repeated_punctuation", "!!!???...---"),
    ("brackets", "x[1] (y) {z} <w>"),
    ("padded", "  padded  text  "),
    ("cased_words", "Hello HELLO hello"),
    ("invalid_lone_byte", b"ab\xffcd ef"),
    ("invalid_truncated_2", b"caf\xc3 ok"),
    ("invalid_truncated_emoji", b"end \xf0\x9f\x98"),
    ("invalid_mid_word", b"wo\xf0\x9frd"),
    ("invalid_surrogate", b"\xed\xa0\x80 x"),
    ("invalid_overlong", b"\xc0\xaf x \xe0\x80\xaf"),
    ("invalid_continuations", b"ok \x80\x81\xbf ok"),
]

# Cased words added whole to the vocabulary, so cased mode is not all [UNK].
CASED_WORDS = ["Hello", "World", "The", "HELLO", "BERT", "Straße", "STRASSE", "İstanbul",
               "ΣΟΦΟΣ", "Crème", "Brûlée", "São", "Paulo", "Zürich", "Wait", "I",
               "Σ", "ẞ", "µ", "K", "Å"]


def is_piece_char(char: str) -> bool:
    """Characters whose single-character tokens go into the vocabulary."""
    name = unicodedata.name(char, "")
    return unicodedata.category(char)[0] in "LNP" and not any(
        script in name for script in ("ARABIC", "DEVANAGARI", "THAI"))


def byte_offsets(text: str, offsets) -> list[list[int]]:
    positions = [0]
    for char in text:
        positions.append(positions[-1] + len(char.encode("utf-8")))
    return [[positions[s], positions[e]] for s, e in offsets]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-vocab", required=True,
                        help="a full uncased BERT vocab.txt (only read by this script)")
    args = parser.parse_args(argv)

    import tokenizers

    def reference(vocab, lowercase):
        return tokenizers.BertWordPieceTokenizer(
            vocab, lowercase=lowercase, strip_accents=lowercase, clean_text=True,
            handle_chinese_chars=True)

    inputs = [(name, value if isinstance(value, bytes) else value.encode("utf-8"))
              for name, value in CASES]
    texts = [data.decode("utf-8", "replace") for _, data in inputs]

    tokens = []
    for encoding in reference(args.reference_vocab, True).encode_batch(
            texts, add_special_tokens=False):
        tokens += encoding.tokens
    tokens += CASED_WORDS
    for lowercase in (True, False):
        normalizer = reference(args.reference_vocab, lowercase).normalizer
        for text in texts:
            for char in normalizer.normalize_str(text):
                if is_piece_char(char):
                    tokens += [char, "##" + char]
    vocab = SPECIAL + sorted(set(tokens) - set(SPECIAL))
    os.makedirs(OUT, exist_ok=True)
    vocab_path = os.path.join(OUT, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in vocab))

    cases = [{"name": name, "input_hex": data.hex(), "text": text}
             for (name, data), text in zip(inputs, texts)]
    for lowercase in (True, False):
        mode = "uncased" if lowercase else "cased"
        encodings = reference(vocab_path, lowercase).encode_batch(
            texts, add_special_tokens=False)
        for case, (_, data), text, encoding in zip(cases, inputs, texts, encodings):
            valid = data == text.encode("utf-8")
            case[mode] = {"ids": encoding.ids, "tokens": encoding.tokens,
                          "offsets": byte_offsets(text, encoding.offsets) if valid else None}
    header = {"made_by": "scripts/make_tokenizer_fixtures.py",
              "reference": f"tokenizers {tokenizers.__version__} BertWordPieceTokenizer("
                           "clean_text=True, handle_chinese_chars=True, "
                           "strip_accents=lowercase)",
              "offsets": "bytes of the UTF-8 input"}
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        # One case a line: reviewable diffs without a 2,000-line file.
        f.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "cases": [\n')
        f.write(",\n".join(json.dumps(case, ensure_ascii=False) for case in cases))
        f.write("\n]}\n")
    unknown = sum(case["uncased"]["tokens"].count("[UNK]") for case in cases)
    print(f"wrote {vocab_path} ({len(vocab)} tokens) and cases.json ({len(cases)} cases, "
          f"{unknown} uncased [UNK])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
