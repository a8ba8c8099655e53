"""`kbert.tasks.qa.squad_metrics` against the official SQuAD evaluation scripts' rules.

The rules, as evaluate-v1.1.py states them (v2.0 shares the normalisation):
- normalize_answer = lower-case; drop every character of Python's `string.punctuation`
  (ASCII only); replace the whole words a / an / the with a space; join the
  whitespace-split tokens with one space. In that order: punctuation goes before the
  article rule, so "state-of-the-art" becomes one token.
- exact match: the normalised strings are equal.
- F1: precision / recall of the bag of normalised tokens (`Counter` intersection, so a
  repeated token counts as often as it appears on both sides); 0 when nothing is shared.
- a prediction scores the max over the question's gold answers, EM and F1 each on its own;
  corpus totals are 100 * the mean over questions.
- v2.0 only: golds that normalise to "" are dropped, a question left with none scores
  against [""], and F1 is 1 when both token lists are empty (0 when only one is).
  HasAns / NoAns split on whether the question's answer list is empty.

Every expected number is worked out by hand in the comment beside it.
"""

import pytest

from kbert.tasks.qa.squad_metrics import exact_match, f1, normalize_answer, squad_scores


@pytest.mark.parametrize("text, normalised", [
    ("Hello, World!", "hello world"),                  # punctuation at the ends of tokens
    ("U.S.A.", "usa"),                                 # ... and inside a token
    ("don't stop", "dont stop"),                       # apostrophe dropped, no split
    ("state-of-the-art", "stateoftheart"),             # punctuation first: no "the" left
    ("snake_case (x)", "snakecase x"),                 # "_" is in string.punctuation
    ("The Beatles", "beatles"),                        # capitalised article at the start
    ("AN apple a day", "apple day"),                   # upper-case article; "a" mid-text
    ("rise of the machines", "rise of machines"),      # article in the middle
    ("the, the. THE!", ""),                            # only articles: nothing left
    ("another theory", "another theory"),              # "an" / "the" inside words stay
    ("Athens and Anna", "athens and anna"),            # ... also at a word's start
    ("a1 the2", "a1 the2"),                            # digits are word characters
    ("  lots \t of\n  space ", "lots of space"),       # whitespace collapsed and trimmed
    ("x\u00a0y", "x y"),                               # no-break space is whitespace
    ("\u201cParis\u201d", "\u201cparis\u201d"),        # curly quotes: not ASCII, kept
    ("caf\u00e9 \u2014 bar\u2026", "caf\u00e9 \u2014 bar\u2026"),  # em dash, ellipsis kept
    ("\u00bfQu\u00e9?", "\u00bfqu\u00e9"),             # ASCII "?" dropped, "\u00bf" kept
    ("", ""),
])
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize("prediction, gold, em", [
    ("The Beatles!", "beatles", 1.0),                  # article, case, punctuation
    ("Beatles", "the beatles band", 0.0),
    ("Denver  \t Broncos\n", "denver broncos", 1.0),   # whitespace
    ("\u201cParis\u201d", "Paris", 0.0),               # Unicode quotes are not stripped
    ('"Paris"', "Paris", 1.0),                         # ASCII quotes are
    ("", "Paris", 0.0),
])
def test_exact_match(prediction, gold, em):
    assert exact_match(prediction, gold) == em


@pytest.mark.parametrize("prediction, gold, expected", [
    # "cat sat on mat" (4) vs "cat on mat" (3): 3 shared; P 3/4, R 1; 2PR/(P+R) = 6/7.
    ("the cat sat on the mat", "a cat on a mat", 6 / 7),
    # {red: 2, blue: 1} & {red: 1, blue: 2} = 2 tokens; P 2/3, R 2/3; F1 2/3.
    ("red red blue", "red blue blue", 2 / 3),
    # "red red" vs "red": min(2, 1) = 1 shared; P 1/2, R 1; F1 2/3.
    ("red red", "red", 2 / 3),
    # Both repeat: min(2, 2) = 2 reds shared (a set would count 1); P 2/3, R 1; F1 0.8.
    ("red red blue", "red red", 0.8),
    # min(3, 2) = 2 shared; P 2/3, R 2/3; F1 2/3 (a set: 1 shared, F1 1/3).
    ("red red red", "red red blue", 2 / 3),
    # Same bag in another order: P 1, R 1.
    ("broncos denver", "Denver Broncos", 1.0),
    # No shared token.
    ("blue", "red", 0.0),
    # "\u201cparis\u201d" and "paris" are different tokens.
    ("\u201cParis\u201d", "Paris", 0.0),
    # "another theory" vs "theory": 1 shared; P 1/2, R 1; F1 2/3 ("an", "the" not cut).
    ("another theory", "the theory", 2 / 3),
])
def test_f1(prediction, gold, expected):
    assert f1(prediction, gold) == pytest.approx(expected, abs=1e-12)
    assert f1(prediction, gold, no_answer=False) == pytest.approx(expected, abs=1e-12)


def test_empty_sides_v1_and_v2():
    # v1.1: F1 is 0 whenever no token is shared, both sides empty included.
    assert f1("", "Paris", no_answer=False) == 0.0
    assert f1("the", "", no_answer=False) == 0.0
    # v2.0: an empty side scores 1 only against another empty side.
    assert f1("", "Paris") == 0.0
    assert f1("Paris", "") == 0.0
    assert f1("an", "the") == 1.0          # both normalise to ""
    assert exact_match("an", "the") == 1.0


def test_v1_corpus_scores_take_the_max_over_golds():
    golds = [
        # "broncos of denver" (3 tokens) vs each gold:
        #   "denver broncos": 2 shared, P 2/3, R 1, F1 0.8
        #   "broncos": 1 shared, P 1/3, R 1, F1 0.5
        #   "broncos team of denver": 3 shared, P 1, R 3/4, F1 6/7  <- the max, last gold
        # EM 0 on all three.
        ["Denver Broncos", "the Broncos", "Broncos team of Denver"],
        # EM 1 on the second gold only (the first differs); F1 1 there too.
        ["Bernadette", "Saint Bernadette Soubirous"],
        # Counter min: 2 of 3 tokens shared each way, F1 2/3; EM 0.
        ["red blue blue"],
        # An empty prediction: EM 0, F1 0.
        ["Paris"],
        # v1.1's quirk: "the" and "a" both normalise to "", so EM 1, but F1 0 (no tokens).
        ["the"],
    ]
    predictions = ["broncos of denver", "The Saint Bernadette Soubirous.", "red red blue",
                   "", "a"]
    scores = squad_scores(golds, predictions)
    # EM: (0 + 1 + 0 + 0 + 1) / 5 = 40%.
    assert scores["exact_match"] == pytest.approx(40.0)
    # F1: (6/7 + 1 + 2/3 + 0 + 0) / 5 = (18 + 21 + 14) / 21 / 5 = 53 / 105 = 50.476...%.
    assert scores["f1"] == pytest.approx(100 * 53 / 105)
    assert scores["total"] == 5.0
    assert "has_ans_total" not in scores


def test_v2_corpus_scores_and_split():
    golds = [
        ["Denver Broncos"],  # "broncos": 1 shared, P 1, R 1/2, F1 2/3; EM 0
        [],                  # no answer, predicted "": EM 1, F1 1
        [],                  # no answer, predicted "Denver": EM 0, F1 0
        ["the", "Paris"],    # "the" dropped (normalises to ""), so gold ["Paris"]; "": 0, 0
        ["An"],              # every gold dropped, so [""]; "the" normalises to "": 1, 1
    ]
    predictions = ["Broncos", "", "Denver", "", "the"]
    scores = squad_scores(golds, predictions, with_no_answer=True)
    # EM: (0 + 1 + 0 + 0 + 1) / 5 = 40%. F1: (2/3 + 1 + 0 + 0 + 1) / 5 = 8/15 = 53.33%.
    assert scores["exact_match"] == pytest.approx(40.0)
    assert scores["f1"] == pytest.approx(100 * 8 / 15)
    # HasAns: questions 1, 4, 5 (their answer lists are not empty, whatever the text).
    # EM (0 + 0 + 1) / 3; F1 (2/3 + 0 + 1) / 3 = 5/9.
    assert scores["has_ans_total"] == 3.0
    assert scores["has_ans_exact_match"] == pytest.approx(100 / 3)
    assert scores["has_ans_f1"] == pytest.approx(100 * 5 / 9)
    # NoAns: questions 2, 3: EM (1 + 0) / 2, F1 (1 + 0) / 2.
    assert scores["no_ans_total"] == 2.0
    assert scores["no_ans_exact_match"] == pytest.approx(50.0)
    assert scores["no_ans_f1"] == pytest.approx(50.0)


def test_v1_and_v2_differ_on_the_same_questions():
    golds, predictions = [["the", "Paris"]], [""]
    # v1.1 keeps the gold "the": "" == "" gives EM 1; F1 0 on both golds (no tokens).
    v1 = squad_scores(golds, predictions)
    assert (v1["exact_match"], v1["f1"]) == (100.0, 0.0)
    # v2.0 drops it: only "Paris" is left, and "" scores 0 on both.
    v2 = squad_scores(golds, predictions, with_no_answer=True)
    assert (v2["exact_match"], v2["f1"]) == (0.0, 0.0)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad_scores([["x"]], ["x", "y"])
