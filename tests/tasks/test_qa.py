"""Extractive QA: SQuAD reader, official metrics, windows, decoding, training, serving."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from kbert.data.squad import read_squad
from kbert.tasks import TaskSpec, build_task_model
from kbert.tasks.qa.task import QATask
from kbert.tasks.qa.decode import answer_text, decode_spans
from kbert.tasks.qa.windows import answer_labels, qa_windows
from kbert.tasks.qa.squad_metrics import exact_match, f1, normalize_answer, squad_scores
from kbert.text.tokenizer import Tokenizer

from helpers.qa import VOCAB, learnable_examples
from helpers.tiny import tiny_config, tiny_encoder


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(VOCAB)


# -- official metrics ------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, gold, em", [
    ("The Cat", "cat", 1.0),           # case and article
    ("cat.", "cat", 1.0),              # punctuation
    ("an  apple ", "apple", 1.0),      # article, whitespace
    ("theater", "ater", 0.0),          # "the" only as a whole word
    ("Denver Broncos", "Broncos", 0.0),
])
def test_exact_match(prediction, gold, em):
    assert exact_match(prediction, gold) == em


def test_normalize_and_f1_by_hand():
    assert normalize_answer("The  Big, RED dog!") == "big red dog"
    # "big red dog" vs "red cat": 1 common token, P = 1/3, R = 1/2, F1 = 0.4.
    assert f1("the big red dog", "a red cat") == pytest.approx(0.4)
    # Repeated tokens count with multiplicity: "red red" vs "red": P 1/2, R 1, F1 2/3.
    assert f1("red red", "red") == pytest.approx(2 / 3)
    assert f1("blue", "red") == 0.0
    assert f1("", "") == 1.0 and f1("", "red") == 0.0


def test_v1_and_v2_rules_on_golds_that_normalise_to_nothing():
    # evaluate-v1.1: F1 is 0 when no token is shared, even "" against "" (EM still 1).
    v1 = squad_scores([["The"]], ["the"])
    assert v1["exact_match"] == 100.0 and v1["f1"] == 0.0
    # evaluate-v2.0: such a gold is dropped, leaving [""]; "" then scores 1 on both, and
    # the question still counts as having answers (its list is not empty).
    v2 = squad_scores([["The"]], ["the"], with_no_answer=True)
    assert v2["exact_match"] == 100.0 and v2["f1"] == 100.0
    assert v2["has_ans_total"] == 1.0 and v2["no_ans_total"] == 0.0


def test_corpus_scores_max_over_golds_and_no_answer_split():
    scores = squad_scores([["Denver Broncos", "Broncos"], ["a red cat"]],
                          ["broncos", "the big red dog"])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(70.0)  # (1.0 + 0.4) / 2
    v2 = squad_scores([["x y"], [], ["z"]], ["x", "", ""], with_no_answer=True)
    # x vs "x y": EM 0, F1 2/3; "" on a no-answer question: 1, 1; "" vs "z": 0, 0.
    assert v2["exact_match"] == pytest.approx(100 / 3)
    assert v2["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert v2["has_ans_exact_match"] == 0.0
    assert v2["has_ans_f1"] == pytest.approx(100 / 3)
    assert v2["no_ans_exact_match"] == 100.0 and v2["no_ans_total"] == 1.0


# -- reader ----------------------------------------------------------------------------------

def _squad_file(tmp_path, data, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": "2.0", "data": data}), encoding="utf-8")
    return path


def test_reader_v2_and_bad_answers(tmp_path, caplog):
    context = "Café au lait costs 3 euros."
    data = [{"title": "Drinks", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "What costs 3 euros?",
         "answers": [{"text": "Café au lait", "answer_start": 0},
                     {"text": "lait", "answer_start": 3},       # wrong start: not a target
                     {"text": "lait", "answer_start": 4}]},     # its id once in the warning
        {"id": "q2", "question": "How much?",
         "answers": [{"text": "4 euros", "answer_start": 19}]},  # not there: no target
        {"id": "q3", "question": "Who drinks it?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Café", "answer_start": 0}]},
        {"id": "q4", "question": "Why?", "answers": []},  # no flag, no answers: impossible
    ]}]}]
    with caplog.at_level(logging.WARNING, logger="kbert.data.squad"):
        examples = read_squad(_squad_file(tmp_path, data))
    assert [e.id for e in examples] == ["q1", "q2", "q3", "q4"]
    q1, q2, q3, q4 = examples
    assert q1.title == "Drinks" and [a.text for a in q1.answers] == ["Café au lait"]
    assert q1.answers[0].end == 12 and not q1.is_impossible and q1.trainable
    # Evaluation scores against every text of the file, as the official scripts do.
    assert q1.scored_texts == ("Café au lait", "lait", "lait")
    assert q2.answers == () and not q2.trainable and q2.scored_texts == ("4 euros",)
    assert q3.is_impossible and q3.answers == () and q3.plausible_answers[0].text == "Café"
    assert q3.trainable and q3.scored_texts == ()
    assert q4.is_impossible and q4.trainable and q4.scored_texts == ()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 3 answer(s)" in warning and "(question ids: q1, q2)" in warning
    assert "1 question(s) left without a training target" in warning


def test_evaluation_scores_golds_whose_offsets_are_wrong(tmp_path, tokenizer):
    context = "The Denver Broncos won."
    data = [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "who", "answers": [
            {"text": "Denver Broncos", "answer_start": 4},
            {"text": "Broncos", "answer_start": 999}]},  # as evaluate-v1.1: still a gold
        {"id": "b", "question": "who", "answers": [{"text": "won", "answer_start": 0}]},
    ]}]}]
    examples = read_squad(_squad_file(tmp_path, data))
    task, spec = QATask(), TaskSpec("qa", seq_len=16, max_query_length=2)
    predictions = [{"answer": "Broncos"}, {"answer": "won"}]
    assert task.evaluate(examples, predictions, spec)["exact_match"] == 100.0
    # "b" has no training target: its windows are not in the training data.
    batches = list(task.dataset(examples, tokenizer, spec, batch_size=8, training=False))
    windows = qa_windows(tokenizer, spec, tf.constant(["who"]), tf.constant([context]))
    assert sum(int(x["token_ids"].shape[0]) for x, _, _ in batches) == int(
        windows["token_ids"].shape[0])
    with pytest.raises(ValueError, match="no question has a training target"):
        task.dataset(examples[1:], tokenizer, spec, batch_size=8, training=True)


@pytest.mark.parametrize("data, message", [
    ([{"title": "t", "paragraphs": [{"qas": []}]}],
     r"missing key 'data\[0\].paragraphs\[0\].context'"),
    ([{"paragraphs": [{"context": "x", "qas": [{"id": "a", "question": "q"}]}]}],
     r"missing key 'data\[0\].paragraphs\[0\].qas\[0\].answers'"),
    ([{"paragraphs": [{"context": "x", "qas": [
        {"id": "a", "question": "q", "answers": [{"text": "x", "answer_start": "0"}]}]}]}],
     r"qas\[0\].answers\[0\].answer_start must be an integer, got str"),
    ([{"paragraphs": [{"context": "x", "qas": [
        {"id": "a", "question": "q", "answers": [{"text": "x", "answer_start": 0}]},
        {"id": "a", "question": "q", "answers": [{"text": "x", "answer_start": 0}]}]}]}],
     r"qas\[1\].id: duplicate question id 'a'"),
])
def test_reader_errors_name_file_and_field(tmp_path, data, message):
    path = _squad_file(tmp_path, data)
    with pytest.raises(ValueError, match=message) as error:
        read_squad(path)
    assert str(path) in str(error.value)


def test_reader_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON"):
        read_squad(path)


# -- windows ---------------------------------------------------------------------------------

def test_windows_positions_labels_and_max_context(tokenizer):
    # Question "a b c" keeps 2 tokens; room = 10 - 3 - 2 = 5 context tokens per window,
    # step = min(5, doc_stride 2) = 2: windows over tokens 0-4, 2-6, 4-7.
    spec = TaskSpec("qa", seq_len=10, doc_stride=2, max_query_length=2)
    windows, start, end = answer_labels(
        tokenizer, spec, tf.constant(["a b c", "j"]), tf.constant(["a b c d e f g h", "é ï"]),
        tf.constant([4, -1]), tf.constant([7, -1]))  # answer "c d" = bytes [4, 7)
    w = {k: v.numpy() for k, v in windows.items()}
    a, b, cls, sep, pad = 5, 6, 2, 3, 0
    np.testing.assert_array_equal(w["token_ids"], [
        [cls, a, b, sep, 5, 6, 7, 8, 9, sep],
        [cls, a, b, sep, 7, 8, 9, 10, 11, sep],
        [cls, a, b, sep, 9, 10, 11, 12, sep, pad],
        [cls, 14, sep, 9, 13, sep, pad, pad, pad, pad]])  # é -> e, ï -> i (uncased)
    np.testing.assert_array_equal(w["segment_ids"][2], [0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(w["padding_mask"][3], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(w["window_example"], [0, 0, 0, 1])
    np.testing.assert_array_equal(w["context_index"][1], [-1] * 4 + [2, 3, 4, 5, 6, -1])
    np.testing.assert_array_equal(w["start_byte"][3], [-1, -1, -1, 0, 3] + [-1] * 5)
    np.testing.assert_array_equal(w["end_byte"][3], [-1, -1, -1, 2, 5] + [-1] * 5)
    # Max context by hand (score = min(left, right) + 0.01 * length): token 2 -> window 0
    # (2.05 vs 0.05); token 3 ties at 1.05 -> the earlier window 0; token 4 -> window 1
    # (2.05 vs 0.05, 0.04); token 5 -> window 1 (1.05 vs 1.04); token 6 -> window 2.
    np.testing.assert_array_equal(w["max_context"], [
        [0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]])
    # The answer's tokens 2-3 are whole in windows 0 (positions 6, 7) and 1 (4, 5) only.
    np.testing.assert_array_equal(start.numpy(), [6, 4, 0, 0])
    np.testing.assert_array_equal(end.numpy(), [7, 5, 0, 0])


def test_windows_empty_context_and_long_stride(tokenizer):
    # doc_stride larger than the room: windows do not overlap (step = room = 3).
    spec = TaskSpec("qa", seq_len=8, doc_stride=100, max_query_length=2)
    w = qa_windows(tokenizer, spec, tf.constant(["a b", "a b"]),
                   tf.constant(["", "a b c d e f g"]))
    np.testing.assert_array_equal(w["window_example"].numpy(), [0, 1, 1, 1])
    np.testing.assert_array_equal(w["token_ids"].numpy()[0], [2, 5, 6, 3, 3, 0, 0, 0])
    np.testing.assert_array_equal(w["context_index"].numpy()[:, 4:7],
                                  [[-1, -1, -1], [0, 1, 2], [3, 4, 5], [6, -1, -1]])
    np.testing.assert_array_equal(w["max_context"].numpy().sum(1), [0, 3, 3, 1])


# -- decoding --------------------------------------------------------------------------------

def _decode(tokenizer, spec, questions, contexts, set_logits):
    windows = qa_windows(tokenizer, spec, tf.constant(questions), tf.constant(contexts))
    shape = windows["token_ids"].shape
    start, end = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    set_logits(start, end)
    spans = decode_spans(spec, tf.constant(start), tf.constant(end), windows, len(questions))
    text = answer_text(tf.constant(contexts), spans["start_byte"], spans["end_byte"])
    return ([s.decode() for s in text["answer"].numpy()], text["start_char"].numpy(),
            spans["score"].numpy())


SPEC = TaskSpec("qa", seq_len=10, doc_stride=2, max_query_length=2)
CONTEXT = "a b c d e f g h"  # token i at character 2 * i; windows as in the test above


def test_decode_rejects_end_before_start(tokenizer):
    def logits(start, end):
        start[0, 6] = 5  # token 2 ("c")
        end[0, 5], end[0, 7] = 6, 4  # token 1 (before the start), token 3
    answers, starts, scores = _decode(tokenizer, SPEC, ["a b"], [CONTEXT], logits)
    assert answers == ["c d"] and starts.tolist() == [4] and scores[0] == 9


def test_decode_length_limit(tokenizer):
    spec = TaskSpec("qa", seq_len=10, doc_stride=2, max_query_length=2, max_answer_length=2)

    def logits(start, end):
        start[0, 4] = 5  # token 0
        end[0, 7], end[0, 5] = 5, 1  # token 3 (4 tokens long: too long), token 1
    answers, _, scores = _decode(tokenizer, spec, ["a b"], [CONTEXT], logits)
    assert answers == ["a b"] and scores[0] == 6


def test_decode_max_context(tokenizer):
    def logits(start, end):
        # Token 4 in window 0 (position 8) is not its max-context window: not a start.
        start[0, :] = -100
        start[0, 8], end[0, 8] = 10, 10
        start[1, 6], end[1, 6] = 3, 3  # token 4 in window 1, its max-context window
    answers, starts, scores = _decode(tokenizer, SPEC, ["a b"], [CONTEXT], logits)
    assert answers == ["e"] and starts.tolist() == [8] and scores[0] == 6


@pytest.mark.parametrize("threshold, answer", [(None, "c"), (0.0, ""), (7.5, "c"),
                                               (6.5, "")])
def test_decode_null_threshold(tokenizer, threshold, answer):
    spec = TaskSpec("qa", seq_len=10, doc_stride=2, max_query_length=2,
                    null_score_threshold=threshold)

    def logits(start, end):
        start[:, 4:9], end[:, 4:9] = -3, -3  # every span scores -6 ...
        start[0, 6], end[0, 6] = -2, -1  # ... but "c" (token 2) -3
        start[:, 0], end[:, 0] = [1, 3, 2], [3, 1, 3]  # null scores 4, 4, 5: min 4
    answers, starts, scores = _decode(tokenizer, spec, ["a b"], [CONTEXT], logits)
    # null - best = 4 - (-3) = 7: "" when 7 > threshold.
    assert answers == [answer]
    assert scores[0] == (-3 if answer else 4) and starts[0] == (4 if answer else -1)


def test_non_ascii_answers_are_exact_substrings(tokenizer):
    context = "Él vio 東京 😀 y café!"
    # Tokens: 0 el, 1 vio, 2 東, 3 京, 4 [UNK] (the emoji), 5 y, 6 cafe, 7 !
    spans = {(0, 0): "Él", (2, 3): "東京", (4, 4): "😀", (6, 6): "café", (6, 7): "café!",
             (1, 5): "vio 東京 😀 y"}
    spec = TaskSpec("qa", seq_len=16, max_query_length=2)
    for (first, last), expected in spans.items():
        def logits(start, end):
            start[0, 3 + first], end[0, 3 + last] = 10, 10  # question "a": context at 3
        answers, starts, _ = _decode(tokenizer, spec, ["a"], [context], logits)
        assert answers == [expected]
        assert context[starts[0]:starts[0] + len(expected)] == expected
    windows = qa_windows(tokenizer, spec, tf.constant(["a"]), tf.constant([context]))
    assert windows["token_ids"].numpy()[0, 7] == VOCAB.index("[UNK]")


@pytest.mark.parametrize("dropped", ["\u00ad", "\u200b", "\u200b\u00ad", "\ue000", "\x01"])
def test_answers_end_at_their_last_visible_character(tokenizer, dropped):
    # The tokenizer's end offset of "cafe" takes in the dropped characters after it.
    context = f"y cafe{dropped} el"
    spec = TaskSpec("qa", seq_len=16, max_query_length=2)

    def logits(start, end):
        start[0, 4], end[0, 4] = 10, 10  # question "a" [CLS] a [SEP]: "cafe" at 3 + 1
    answers, starts, _ = _decode(tokenizer, spec, ["a"], [context], logits)
    assert answers == ["cafe"] and starts[0] == 2
    end_byte = len(f"y cafe{dropped}".encode())  # the token's end offset
    text = answer_text(tf.constant([context]), tf.constant([2]), tf.constant([end_byte]))
    assert text["answer"].numpy()[0] == b"cafe" and text["end_char"].numpy()[0] == 6


# -- the task: training and serving -----------------------------------------------------------

def test_tiny_qa_trains_and_serving_matches_predict(tokenizer, tmp_path):
    import keras

    task = QATask()
    train, evaluation = learnable_examples(160, 0), learnable_examples(20, 1)
    spec = task.make_spec(train, seq_len=24, doc_stride=8, max_query_length=4)
    assert spec.null_score_threshold is None and spec.seq_len == 24
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB)), seed=0), spec)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=task.loss(spec))
    data = task.dataset(train, tokenizer, spec, batch_size=16, training=True)
    x, y, weights = next(iter(data))
    assert x["token_ids"].shape == (16, 24) and y["start_logits"].dtype == tf.int32
    history = model.fit(data, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.3 * losses[0]

    predictions = task.predict(model, evaluation, tokenizer, spec, batch_size=8)
    metrics = task.evaluate(evaluation, predictions, spec)
    assert metrics["exact_match"] >= 90.0, metrics
    for example, prediction in zip(evaluation, predictions):
        s, e = prediction["start_char"], prediction["end_char"]
        assert example.context[s:e] == prediction["answer"]

    # The serving graph: strings [None] in, through a SavedModel.
    module = tf.Module()
    module.variables_ = [v.value for v in model.variables]
    module.serve = tf.function(
        lambda question, context: task.serving_outputs(
            model, tokenizer, spec, {"question": question, "context": context}),
        input_signature=[tf.TensorSpec([None], tf.string, name="question"),
                         tf.TensorSpec([None], tf.string, name="context")])
    tf.saved_model.save(module, str(tmp_path / "served"))
    loaded = tf.saved_model.load(str(tmp_path / "served"))  # kept: serve needs its variables
    served = loaded.serve(
        tf.constant([e.question for e in evaluation]),
        tf.constant([e.context for e in evaluation]))
    assert [a.decode() for a in served["answer"].numpy()] == [p["answer"] for p in predictions]
    np.testing.assert_array_equal(served["start_char"].numpy(),
                                  [p["start_char"] for p in predictions])
    np.testing.assert_allclose(served["score"].numpy(), [p["score"] for p in predictions],
                               rtol=1e-5)


def test_spec_checks(tokenizer):
    task = QATask()
    with pytest.raises(ValueError, match="max_query_length of at most 12"):
        task.make_spec([], seq_len=16)
    with pytest.raises(ValueError, match="unknown qa option"):
        task.make_spec([], seq_len=128, stride=3)
    from kbert.data.squad import SquadExample
    impossible = [SquadExample("x", "q", "c", is_impossible=True)]
    assert task.make_spec(impossible, seq_len=128).null_score_threshold == 0.0
    with pytest.raises(ValueError, match=r"dev.json: 1 question\(s\) are unanswerable"):
        task.check_examples(impossible, task.make_spec([], seq_len=128), "dev.json")
