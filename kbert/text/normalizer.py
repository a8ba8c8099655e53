"""BERT's text normalisation as a model for tf-text's `FastBertNormalize` op.

`FastBertNormalize` maps every code point through a table (a darts-clone trie of UTF-8
keys -> replacement strings) and keeps a byte offset map back to the input. tf-text's
stock table (`lower_case_nfd_strip_accents=True`) is built from ICU's NFKC case folding,
which neither the original BERT nor Hugging Face does: it folds full-width punctuation to
ASCII, '…' to '...', 'ß' to 'ss', 'µ' to 'μ', final 'ς' to 'σ'. So we build the table
ourselves, from the rules of Hugging Face's `BertNormalizer` (which follows the original
`tokenization.py`), applied one code point at a time:

1. "clean text": drop NUL, U+FFFD and control characters (categories Cc, Cf, Co, as HF;
   the original drops Cc and Cf only; tab, newline and carriage return excepted); map
   whitespace (Unicode White_Space) to ' '.
2. uncased only: NFD, drop non-spacing marks (Mn), then lower-case (`str.lower`, one code
   point at a time, as Rust's `char::to_lowercase` does in HF; no case folding).

Both rules work code point by code point (HF's lower-casing has no final-sigma context),
so a table reproduces them. Splitting into words (whitespace, punctuation, CJK
ideographs) is left to the WordPiece op's own pre-tokenizer.

Invalid UTF-8: the op steps over a malformed sequence one "maximal subpart" at a time
(ICU's `U8_FWD_1`); the table maps every such fragment to the empty string. So a string
with invalid bytes tokenizes as Python's `bytes.decode("utf-8", "replace")` followed by
HF would (U+FFFD is dropped by rule 1).

Checked against `tokenizers` 0.23.3 on every code point: identical except 454 code points
uncased (13 cased), all rare and all from differing Unicode versions. We take character
properties from Python's `unicodedata` (Unicode 14 on Python 3.11); HF's category tables
are older (about 400 marks and format characters added since Unicode ~9 are dropped here
and kept by HF) and its lower-casing (Rust's std) newer (about 55 capitals Unicode 14
does not know). Another Python may build a slightly different table; an exported graph
keeps the table it was built with.
"""

from __future__ import annotations

import functools
import unicodedata

import flatbuffers
import numpy as np

from kbert.text import darts

# Unicode White_Space (what Rust's `char::is_whitespace`, used by HF, tests).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})

# Code points we list: planes 0-3 (everything assigned outside plane 14), plane 14 (tags
# and variation selectors) and the private-use planes 15-16 (equal subtries share their
# trie nodes, so these 131,068 entries cost a few hundred bytes). Planes 4-13 are
# unassigned.
_RANGES = ((0, 0x40000), (0xE0000, 0x110000))

# Encoding of a table entry (fast_bert_normalizer.h): bit 30 "changed", bits 6-29 the
# offset of the replacement in the string pool, bits 0-5 its length in bytes.
_CHANGED = 0x40000000
_LENGTH_BITS = 6
_MAX_LENGTH = (1 << _LENGTH_BITS) - 1


def normalize_char(char: str, lowercase: bool) -> str:
    """BERT normalisation of one code point (rules 1 and 2 of the module docstring)."""
    code = ord(char)
    if code == 0 or code == 0xFFFD or (
            char not in "\t\n\r" and unicodedata.category(char) in _CONTROL_CATEGORIES):
        return ""
    if char in _WHITESPACE:
        return " "
    if not lowercase or code < 0x80 and not "A" <= char <= "Z":
        return char
    stripped = (c for c in unicodedata.normalize("NFD", char)
                if unicodedata.category(c) != "Mn")
    return "".join(c.lower() for c in stripped)


def invalid_utf8_fragments() -> list[bytes]:
    """Every byte string that ICU's `U8_FWD_1` steps over as one malformed unit.

    A lone byte that cannot start a sequence here (0x80-0xFF), or a lead byte with a
    valid first continuation byte whose sequence is cut short (2 bytes of a 3-byte
    sequence; 2 or 3 bytes of a 4-byte one).
    """
    trail = range(0x80, 0xC0)
    fragments = [bytes([b]) for b in range(0x80, 0x100)]
    for lead in range(0xE0, 0xF0):
        first = range(0xA0, 0xC0) if lead == 0xE0 else range(0x80, 0xA0) if lead == 0xED \
            else trail
        fragments += [bytes([lead, t1]) for t1 in first]
    for lead in range(0xF0, 0xF5):
        first = range(0x90, 0xC0) if lead == 0xF0 else range(0x80, 0x90) if lead == 0xF4 \
            else trail
        for t1 in first:
            fragments.append(bytes([lead, t1]))
            fragments += [bytes([lead, t1, t2]) for t2 in trail]
    return fragments


def char_map(lowercase: bool) -> dict[str, str]:
    """Every listed code point that normalisation changes -> its replacement."""
    changes = {}
    for start, stop in _RANGES:
        for code in range(start, stop):
            if 0xD800 <= code < 0xE000:  # surrogates cannot occur in UTF-8
                continue
            char = chr(code)
            mapped = normalize_char(char, lowercase)
            if mapped != char:
                changes[char] = mapped
    return changes


@functools.lru_cache(maxsize=2)
def normalizer_model(lowercase: bool) -> bytes:
    """The `FastBertNormalizerModel` flatbuffer for `tf_text.FastBertNormalizer`.

    Built once per process and casing (about a second).
    """
    entries = {char.encode("utf-8"): mapped.encode("utf-8")
               for char, mapped in char_map(lowercase).items()}
    entries.update((fragment, b"") for fragment in invalid_utf8_fragments())
    null_entry = entries.pop(b"\0")  # the trie cannot hold NUL; the model keeps it apart

    pool = bytearray()
    pool_offsets: dict[bytes, int] = {}

    def encode(replacement: bytes) -> int:
        if not replacement:
            return _CHANGED
        if len(replacement) > _MAX_LENGTH:
            raise ValueError(f"replacement too long for the normalizer: {replacement!r}")
        if replacement not in pool_offsets:
            pool_offsets[replacement] = len(pool)
            pool.extend(replacement)
        return _CHANGED | (pool_offsets[replacement] << _LENGTH_BITS) | len(replacement)

    values = {key: encode(replacement) for key, replacement in sorted(entries.items())}
    trie = darts.build_trie(values)
    return _flatbuffer(lowercase, trie, encode(null_entry), bytes(pool))


def _flatbuffer(lowercase: bool, trie: np.ndarray, null_data: int, pool: bytes) -> bytes:
    # Field ids as in tf-text's fast_bert_normalizer_model.fbs: 0 lower_case_nfd_strip_
    # accents (informational), 1 trie_array [uint32], 2 data_for_codepoint_zero,
    # 3 normalized_string_pool [ubyte].
    builder = flatbuffers.Builder(4 * len(trie) + len(pool) + 1024)
    trie_vector = builder.CreateNumpyVector(trie.astype("<u4"))
    pool_vector = builder.CreateByteVector(pool or b" ")  # a flatbuffer vector may not be absent
    builder.StartObject(4)
    builder.PrependBoolSlot(0, lowercase, False)
    builder.PrependUOffsetTRelativeSlot(1, trie_vector, 0)
    builder.PrependInt32Slot(2, null_data, 0)
    builder.PrependUOffsetTRelativeSlot(3, pool_vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())
