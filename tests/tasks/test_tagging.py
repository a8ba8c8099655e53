"""Token tagging: first-piece labels, windows with BERT's max-context rule, conlleval
against seqeval, a tiny model trained with model.fit, serving graph = predict."""

import random

import numpy as np
import pytest
import tensorflow as tf
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

from kbert.data.conll import Sentence
from kbert.tasks import TaskSpec, build_task_model
from kbert.tasks.tagging.conlleval import conlleval
from kbert.tasks.tagging.windows import make_windows, merge_windows, pieces_of_words
from kbert.tasks.tagging.task import TaggingTask, detect_tag_scheme
from kbert.text.tokenizer import Tokenizer
from kbert.training.optimizers import create_optimizer
from helpers.checks import check_tflite_parity
from helpers.graphs import tflite_runner
from helpers.tiny import save_tiny_model, tiny_config, tiny_encoder

FIRST = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + FIRST + ["##xy", "##zz"]
TASK = TaggingTask()


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(VOCAB)


def _sentence(words, labels, first_line=1):
    return Sentence(tuple(words), tuple(labels),
                    tuple(range(first_line, first_line + len(words))), "mem.txt")


# -- first-piece labels --------------------------------------------------------------------
def test_label_on_first_piece_only(tokenizer):
    examples = [_sentence(["Ab", "cdxyzz", "\u200b", "ef,"], ["B-A", "I-A", "O", "B-E"]),
                _sentence(["gh"], ["O"])]
    spec = TASK.make_spec(examples, seq_len=12)
    assert spec.labels == ("B-A", "B-E", "I-A", "O") and spec.tag_scheme == "IOB2"
    x, y, w = next(iter(TASK.dataset(examples, tokenizer, spec, batch_size=8, training=False)))
    ids = {t: i for i, t in enumerate(VOCAB)}
    # [CLS] ab cd ##xy ##zz [UNK] ef , [SEP]: the zero-width word became one [UNK]; the
    # batch is cut to its longest row (9 of T = 12).
    np.testing.assert_array_equal(x["token_ids"][0], [ids[t] for t in (
        "[CLS]", "ab", "cd", "##xy", "##zz", "[UNK]", "ef", ",", "[SEP]")])
    np.testing.assert_array_equal(x["padding_mask"][0], [1] * 9)
    np.testing.assert_array_equal(y["logits"][0], [0, 0, 2, 0, 0, 3, 1, 0, 0])
    np.testing.assert_array_equal(w["logits"][0], [0, 1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(y["logits"][1][:3], [0, 3, 0])
    np.testing.assert_array_equal(w["logits"][1], [0, 1] + [0] * 7)


# -- windows and the max-context merge -----------------------------------------------------
def _bert_windows(n_pieces, budget, stride):
    """(start, length) of each window, as run_squad.py's doc_spans loop."""
    spans, start = [], 0
    while start < n_pieces:
        length = min(n_pieces - start, budget)
        spans.append((start, length))
        if start + length == n_pieces:
            break
        start += min(length, stride)
    return spans


def _bert_max_context(spans, position):
    """run_squad.py's _check_is_max_context: the span index that wins `position`."""
    best, best_score = None, None
    for index, (start, length) in enumerate(spans):
        if not start <= position < start + length:
            continue
        score = min(position - start, start + length - 1 - position) + 0.01 * length
        if best_score is None or score > best_score:
            best, best_score = index, score
    return best


@pytest.mark.parametrize("seq_len, stride", [(10, 3), (10, 8), (10, 1), (7, 2), (64, 20)])
def test_windows_and_max_context(tokenizer, seq_len, stride):
    rng = random.Random(seq_len * 100 + stride)
    suffixes = ["", "", "xy", "xyzz"]
    sentences = [[rng.choice(FIRST) + rng.choice(suffixes) for _ in range(n)]
                 for n in (23, 3, 0, 40, 8)]
    words = tf.ragged.constant(sentences, dtype=tf.string, row_splits_dtype=tf.int32)
    piece_ids, piece_words, row_splits, word_splits = pieces_of_words(tokenizer, words)
    windows = make_windows(piece_ids, piece_words, row_splits, seq_len=seq_len,
                           stride=stride, cls_id=2, sep_id=3, pad_id=0)
    token_ids = windows["token_ids"].numpy()
    word_index = windows["word_index"].numpy()
    example = windows["example_index"].numpy()
    pieces = [tokenizer.tokenize(tf.constant(s, tf.string)).to_list() if s else []
              for s in sentences]
    budget = seq_len - 2
    row = 0
    for b, sentence_pieces in enumerate(pieces):
        flat = [p for word in sentence_pieces for p in word]
        first_piece = np.cumsum([0] + [len(word) for word in sentence_pieces])[:-1]
        spans = _bert_windows(len(flat), budget, stride) or [(0, 0)]
        for k, (start, length) in enumerate(spans):
            assert example[row] == b
            assert list(token_ids[row]) == ([2] + flat[start:start + length] + [3]
                                            + [0] * (seq_len - length - 2))
            expected = [-1] * seq_len
            for w, p in enumerate(first_piece):
                if start <= p < start + length and _bert_max_context(spans, p) == k:
                    expected[p - start + 1] = w
            assert list(word_index[row]) == expected, (b, k)
            row += 1
    assert row == len(example)

    # Merge: every word gets exactly one value, the one at its first piece in its window.
    values = tf.constant(np.arange(token_ids.size).reshape(token_ids.shape), tf.int32)
    merged = merge_windows(values, windows["word_index"], windows["example_index"],
                           word_splits[1:] - word_splits[:-1]).numpy()
    assert merged.shape == (len(sentences), max(map(len, sentences)))
    for b, sentence in enumerate(sentences):
        for w in range(merged.shape[1]):
            if w >= len(sentence):
                assert merged[b, w] == -1
                continue
            where = np.argwhere((example[:, None] == b) & (word_index == w))
            assert len(where) == 1
            assert merged[b, w] == values.numpy()[tuple(where[0])]


def test_batches_trimmed_to_longest_window(tokenizer):
    """trim_batches cuts padding columns only: same tokens, labels and model outputs."""
    examples = [_sentence(["ab"] * n, ["X", "Y"] * (n // 2) + ["X"] * (n % 2))
                for n in (3, 17, 5)]
    spec = TASK.make_spec(examples, seq_len=64)
    full_task = TaggingTask()
    full_task.trim_batches = False
    x, y, w = next(iter(TASK.dataset(examples, tokenizer, spec, 8, training=False)))
    fx, fy, fw = next(iter(full_task.dataset(examples, tokenizer, spec, 8, training=False)))
    # The longest sentence: 17 pieces + [CLS] + [SEP] = 19 (24 when rounded up to 8).
    assert x["token_ids"].shape == (3, 19) and fx["token_ids"].shape == (3, 64)
    rounded_task = TaggingTask()
    rounded_task.trim_multiple = 8
    rx, _, _ = next(iter(rounded_task.dataset(examples, tokenizer, spec, 8, training=False)))
    assert rx["token_ids"].shape == (3, 24)
    np.testing.assert_array_equal(rx["token_ids"][:, :19], x["token_ids"])
    for a, b in ((x["token_ids"], fx["token_ids"]), (y["logits"], fy["logits"]),
                 (w["logits"], fw["logits"])):
        np.testing.assert_array_equal(a, b[:, :19])
        assert not np.any(b[:, 19:])
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB))), spec)
    real = fx["padding_mask"].numpy()[:, :19, None] > 0
    np.testing.assert_allclose(np.where(real, model(x)["logits"], 0),
                               np.where(real, model(fx)["logits"][:, :19], 0), atol=1e-5)


def test_stride_must_cover_every_piece():
    with pytest.raises(ValueError, match="doc_stride 9 must be between 1 and seq_len - 2 = 8"):
        TASK.make_spec([_sentence(["ab", "cd"], ["X", "Y"])], seq_len=10, doc_stride=9)
    with pytest.raises(ValueError, match="doc_stride 0 must be between 1"):  # not the default
        TASK.make_spec([_sentence(["ab", "cd"], ["X", "Y"])], seq_len=10, doc_stride=0)


# -- metrics -------------------------------------------------------------------------------
def _seqeval(gold, predicted):
    return (precision_score(gold, predicted), recall_score(gold, predicted),
            f1_score(gold, predicted), accuracy_score(gold, predicted))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_conlleval_matches_seqeval_on_random_tags():
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC-X", "I-MISC-X"]
    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))]
                for _ in range(rng.randint(1, 5))]
        predicted = [[rng.choice(tags) if rng.random() < 0.4 else g for g in s] for s in gold]
        r = conlleval(gold, predicted)
        np.testing.assert_allclose([r["precision"], r["recall"], r["f1"], r["accuracy"]],
                                   _seqeval(gold, predicted), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("gold, predicted, chunks", [
    # IOB1: I- opens a chunk after O; B- only splits two adjacent chunks of one type.
    ([["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]], [["I-PER", "I-PER", "O", "I-LOC", "I-LOC"]],
     (3, 2, 1)),  # (gold chunks, predicted chunks, correct)
    # A type change inside I- tags starts a new chunk.
    ([["I-PER", "I-LOC"]], [["B-PER", "B-LOC"]], (2, 2, 2)),
    # IOB2 read the conlleval way: a stray I- after O still starts a chunk.
    ([["B-ORG", "I-ORG", "O"]], [["O", "I-ORG", "O"]], (1, 1, 0)),
    # A chunk never crosses a sentence boundary.
    ([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]], (2, 2, 2)),
    # Nothing predicted: precision 0, not a division by zero.
    ([["B-PER", "O"]], [["O", "O"]], (1, 0, 0)),
])
def test_conlleval_hand_checked(gold, predicted, chunks):
    r = conlleval(gold, predicted)
    assert (r["gold_chunks"], r["predicted_chunks"], r["correct_chunks"]) == chunks
    np.testing.assert_allclose([r["precision"], r["recall"], r["f1"], r["accuracy"]],
                               _seqeval(gold, predicted), atol=1e-12)


@pytest.mark.parametrize("tags, chunks", [
    (["S-LOC", "B-PER", "E-PER"], 2),  # conlleval.pl: B- after another type's S- starts one
    (["E-LOC", "B-PER"], 2),
    (["B-PER", "B-PER"], 2),
])
def test_conlleval_or_of_start_rules(tags, chunks):
    r = conlleval([tags], [tags])
    assert (r["gold_chunks"], r["correct_chunks"]) == (chunks, chunks)


def test_tag_scheme_detection_and_unseen_labels():
    iob1 = [_sentence(["a", "b"], ["I-PER", "O"])]
    iob2 = [_sentence(["a", "b"], ["B-PER", "I-PER"])]
    pos = [_sentence(["a", "b"], ["NOUN", "VERB"])]
    assert [detect_tag_scheme(s) for s in (iob1, iob2, pos)] == ["IOB1", "IOB2", "none"]
    spec = TASK.make_spec(pos, seq_len=16)
    assert TASK.primary_metric(spec) == "accuracy"
    assert TASK.primary_metric(TASK.make_spec(iob1 + iob2, seq_len=16)) == "f1"
    dev = [_sentence(["a", "b"], ["NOUN", "VERB"]),
           _sentence(["c", "d", "e"], ["NOUN", "ADJ", "NOUN"], first_line=4)]
    with pytest.raises(ValueError, match=r"dev.conllu:5: label 'ADJ' never occurs in the "
                                         r"training file \(its 2 labels: NOUN, VERB\)"):
        TASK.check_examples(dev, spec, "dev.conllu")


# -- a tiny learnable task: model.fit, predict, serving ------------------------------------
def _tag(word, next_word):
    """A rule that needs context: a word's tag depends on its first piece and on whether
    the next word starts with a vowel-ish piece."""
    base = "N" if word[:2] in ("ab", "cd", "ef", "gh") else "V"
    if word.endswith("xy"):
        return "X"
    return base + ("1" if next_word[:2] in ("ab", "ef", "ij", "mn") else "2")


def _tiny_data(n, seed):
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        words = [rng.choice(FIRST) + rng.choice(["", "", "xy", "zz"])
                 for _ in range(rng.randint(3, 10))]
        tags = [_tag(w, words[j + 1] if j + 1 < len(words) else "") for j, w in
                enumerate(words)]
        examples.append(_sentence(words, tags, first_line=100 * i))
    return examples


@pytest.fixture(scope="module")
def trained(tokenizer):
    train = _tiny_data(160, seed=1)
    spec = TASK.make_spec(train, seq_len=12, doc_stride=4, classifier_dropout=0.0)
    model = build_task_model(tiny_encoder(tiny_config(len(VOCAB)), seed=1), spec)
    epochs, batch = 6, 8
    steps = epochs * sum(1 for _ in TASK.dataset(train, tokenizer, spec, batch, False))
    model.compile(optimizer=create_optimizer(2e-3, steps, weight_decay=0.0),
                  loss=TASK.loss(spec))
    for epoch in range(epochs):
        model.fit(TASK.dataset(train, tokenizer, spec, batch, training=True, seed=epoch),
                  verbose=0)
    return model, spec


def test_tiny_task_learns(trained, tokenizer):
    model, spec = trained
    assert spec.tag_scheme == "none" and set(spec.labels) == {"N1", "N2", "V1", "V2", "X"}
    dev = _tiny_data(40, seed=2)
    predictions = TASK.predict(model, dev, tokenizer, spec, batch_size=8)
    assert [p["words"] for p in predictions] == [list(s.words) for s in dev]
    metrics = TASK.evaluate(dev, predictions, spec)
    assert metrics["accuracy"] >= 0.95, metrics


def test_serving_outputs_match_predict(trained, tokenizer):
    model, spec = trained
    # Words that BERT's basic tokenizer splits the same way (whitespace, punctuation),
    # one sentence longer than a window (12 tokens: 10 pieces) to exercise the merge.
    rng = random.Random(3)
    sentences = [["Ab", "cdxy", ",", "ef", "."],
                 [rng.choice(FIRST) + rng.choice(["", "zz"]) for _ in range(17)], ["gh"]]
    examples = [_sentence(s, ["X"] * len(s)) for s in sentences]
    expected = TASK.predict(model, examples, tokenizer, spec, batch_size=2)
    texts = ["Ab  cdxy, ef.", " ".join(sentences[1]), "gh", ""]
    serve = tf.function(lambda text: TASK.serving_outputs(model, tokenizer, spec,
                                                          {"text": text}),
                        input_signature=[tf.TensorSpec([None], tf.string)])
    out = {k: v.numpy() for k, v in serve(tf.constant(texts)).items()}
    assert out["tags"].dtype == object and out["tag_ids"].dtype == np.int32
    np.testing.assert_array_equal(out["num_words"], [5, 17, 1, 0])
    for b, prediction in enumerate(expected + [{"tags": []}]):
        n = len(prediction["tags"])
        assert [t.decode() for t in out["tags"][b, :n]] == prediction["tags"]
        assert [spec.labels[i] for i in out["tag_ids"][b, :n]] == prediction["tags"]
        assert all(t == b"" for t in out["tags"][b, n:])
        assert (out["tag_ids"][b, n:] == -1).all() and (out["word_starts"][b, n:] == -1).all()
    empty = serve(tf.constant(["", " \u200b "]))  # no word in the whole batch
    assert empty["tags"].shape == (2, 0) and list(empty["num_words"].numpy()) == [0, 0]
    spans = [texts[0].encode()[s:e] for s, e in zip(out["word_starts"][0, :5],
                                                    out["word_ends"][0, :5])]
    assert spans == [b"Ab", b"cdxy", b",", b"ef", b"."]


def test_serving_offsets_are_bytes(trained, tokenizer):
    model, spec = trained
    text = "\u00e9ab cd\u00e9"  # é is 2 bytes in UTF-8 and not in the vocabulary
    out = TASK.serving_outputs(model, tokenizer, spec, {"text": tf.constant([text])})
    starts, ends = out["word_starts"].numpy()[0], out["word_ends"].numpy()[0]
    assert [text.encode()[s:e].decode() for s, e in zip(starts, ends)] == ["\u00e9ab", "cd\u00e9"]
    chars = out["word_start_chars"].numpy()[0], out["word_end_chars"].numpy()[0]
    assert [text[s:e] for s, e in zip(*chars)] == ["\u00e9ab", "cd\u00e9"]


def test_serving_character_offsets_slice_the_python_str(trained, tokenizer):
    model, spec = trained
    texts = ["\u00e9ab \U0001F600 cd \u4e2d\u6587 \u00fc\u00dfx", "ab", ""]
    out = TASK.serving_outputs(model, tokenizer, spec, {"text": tf.constant(texts)})
    out = {k: v.numpy() for k, v in out.items()}
    assert out["num_words"][0] >= 5
    for b, text in enumerate(texts):
        n = out["num_words"][b]
        by_bytes = [text.encode()[s:e].decode() for s, e in
                    zip(out["word_starts"][b, :n], out["word_ends"][b, :n])]
        by_chars = [text[s:e] for s, e in
                    zip(out["word_start_chars"][b, :n], out["word_end_chars"][b, :n])]
        assert by_chars == by_bytes and all(by_chars)
        assert (out["word_start_chars"][b, n:] == -1).all()


def test_predict_raw_text_matches_serving(trained, tokenizer):
    model, spec = trained
    texts = ["Ab  cdxy, ef.", "gh ijzz"]
    got = TASK.predict(model, TASK.examples_from_texts(texts), tokenizer, spec, batch_size=4)
    words = TASK.predict(model, [_sentence(["Ab", "cdxy", ",", "ef", "."], ["X"] * 5),
                                 _sentence(["gh", "ijzz"], ["X"] * 2)], tokenizer, spec, 4)
    assert [p["words"] for p in got] == [["Ab", "cdxy", ",", "ef", "."], ["gh", "ijzz"]]
    assert [p["tags"] for p in got] == [p["tags"] for p in words]
    assert got[1]["word_starts"] == [0, 3] and got[1]["word_ends"] == [2, 7]


def _conll_file(path, sentences):
    with open(path, "w", encoding="utf-8") as f:
        f.write("-DOCSTART- -X- O\n\n")
        for s in sentences:
            f.writelines(f"{w} {t}\n" for w, t in zip(s.words, s.labels))
            f.write("\n")
    return str(path)


def test_finetune_tag_end_to_end(tmp_path, tokenizer, capsys):
    """The runner and CLI with TaggingTask: files in, model dir + metrics out, and the
    saved model scores the eval file exactly as the run reported."""
    import json

    from kbert.cli import main
    from kbert.training.finetune import evaluate

    save_tiny_model(tmp_path / "pre", VOCAB)
    entity = {"N1": "B-ORG", "N2": "I-ORG", "V1": "O", "V2": "O", "X": "B-PER"}
    data = [_sentence(s.words, [entity[t] for t in s.labels]) for s in _tiny_data(48, 5)]
    train = _conll_file(tmp_path / "train.txt", data[:32])
    dev = _conll_file(tmp_path / "dev.txt", data[32:])
    out = tmp_path / "run"
    assert main(["finetune", "tag", "--model", str(tmp_path / "pre"), "--train", train,
                 "--eval", dev, "--out", str(out), "--seq-len", "10", "--epochs", "2",
                 "--batch-size", "8", "--learning-rate", "1e-3",
                 "--option", "doc_stride=3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary_metric"] == "f1" and metrics["spec"]["tag_scheme"] == "IOB1"
    assert metrics["spec"]["doc_stride"] == 3
    assert set(metrics["best"]) == {"precision", "recall", "f1", "accuracy"}
    predictions = [json.loads(line) for line in
                   (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["words"] for p in predictions] == [list(s.words) for s in data[32:]]
    again = evaluate(str(out / "model"), dev)
    assert again == pytest.approx(metrics["best"], abs=1e-12)
    # kbert predict DIR TEXT: raw text split into words as the serving graph does.
    capsys.readouterr()
    assert main(["predict", str(out / "model"), "Ab cdxy, ef."]) == 0
    shown = json.loads(capsys.readouterr().out.split("\t")[0])
    assert shown["words"] == ["Ab", "cdxy", ",", "ef", "."] and len(shown["tags"]) == 5
    # An eval label that training never saw: one line naming file and line.
    with open(dev, "a", encoding="utf-8") as f:
        f.write("ab B-LOC\n")
    with pytest.raises(ValueError, match=r"dev.txt:\d+: label 'B-LOC' never occurs"):
        evaluate(str(out / "model"), dev)


@pytest.mark.slow
def test_serving_graph_converts_to_tflite(tokenizer):
    """The serving graph (tokenizer, windows, merge, tag lookup) converts to TFLite
    builtins plus the tokenizer's two tf-text ops and gives the graph's outputs."""
    from kbert.export.tflite import CHAR_OFFSET_OUTPUTS

    # length_multiple 0: a TFLite graph pads to a static T, as kbert's TFLite export does.
    spec = TaskSpec("tagging", labels=("A", "B", "O"), seq_len=10, doc_stride=3,
                    length_multiple=0)
    # The approximate GELU: exact GELU's Erfc is the encoder's TFLite question, not this
    # graph's.
    config = tiny_config(len(VOCAB), activation="gelu_approximate")
    model = build_task_model(tiny_encoder(config), spec)

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = [v.value for v in model.variables]  # each weight once

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            # As kbert's TFLite export: the character offsets (Substr / StringLength, no
            # TFLite builtins) are left out of the graph; TFLiteModel recomputes them.
            outputs = TASK.serving_outputs(model, tokenizer, spec, {"text": text})
            return {k: v for k, v in outputs.items() if k not in CHAR_OFFSET_OUTPUTS}

    module = Serving()
    runner = tflite_runner(module.serve.get_concrete_function(), module)
    for text in ["Ab cdxy, ef.", "", " ".join(["abzz", "cd", "efxy"] * 5) + " \u00e9gh"]:
        check_tflite_parity(runner, module.serve, {"text": np.array([text], dtype=object)},
                            atol=0)
