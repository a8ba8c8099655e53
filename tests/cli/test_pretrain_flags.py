"""`kbert pretrain` flags, driven through `kbert.cli.main`, checked by what they change in
the run: the masks in the batches it trains on (--whole-word-masking), how far one optimizer
step moves each tensor (--optimizer lamb), batches per optimizer step
(--gradient-accumulation) and batches per call of the compiled step, which is where Keras
runs the callbacks that checkpoint and log (--steps-per-execution).

Each run starts from a tiny model directory with MLM / NSP heads (--init), so the
weights before the run are known, and whose vocabulary splits most words into a stem and
"##" suffixes. `_recording` keeps the pipeline and the model of the run (the real ones,
passed through unchanged) for the checks.
"""

import contextlib
import dataclasses
import io
import json
import os
import random
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbert.data.pretraining
import kbert.models.pretrainer
from helpers.tiny import save_tiny_model
from kbert import cli
from kbert.io.model_dir import read_checkpoint
from kbert.text import masking

STEMS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
SUFFIXES = ["##ing", "##ed", "##er", "##ly"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + STEMS + SUFFIXES
SPECIAL = tuple(VOCAB.index(t) for t in ("[PAD]", "[CLS]", "[SEP]"))


def _write_corpus(path, documents=12, seed=0):
    """Documents of 4 lines of 4-9 words; two words in three have one or two suffixes
    ("bravoinged" -> bravo ##ing ##ed)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            for _ in range(4):
                words = [rng.choice(STEMS) + "".join(
                    rng.choice(SUFFIXES)[2:] for _ in range(rng.choice([0, 1, 1, 2])))
                    for _ in range(rng.randrange(4, 10))]
                f.write(" ".join(words) + " .\n")
            f.write("\n")
    return str(path)


@dataclasses.dataclass
class Run:
    out: str
    printed: str = dataclasses.field(repr=False)
    # The pre-trainer the run compiled and trained.
    model: keras.Model = dataclasses.field(repr=False)
    # (args, kwargs) of the run's `pretraining_dataset` call; None when it built none.
    dataset_call: tuple | None = dataclasses.field(repr=False)
    dataset: tf.data.Dataset | None = dataclasses.field(repr=False)  # what it returned

    @property
    def trained_steps(self) -> int:
        return int(re.search(r"trained (\d+) steps", self.printed).group(1))


def _recording(argv) -> Run:
    """Runs `kbert pretrain ARGV` in this process, keeping its `pretraining_dataset` call
    (arguments and the dataset returned) and the pre-trainer it builds as they pass (the
    real functions run; nothing is replaced)."""
    seen = {}
    build_dataset = kbert.data.pretraining.pretraining_dataset
    build_pretrainer = kbert.models.pretrainer.build_pretrainer

    def dataset(*args, **kwargs):
        seen["dataset_call"] = (args, kwargs)
        seen["dataset"] = build_dataset(*args, **kwargs)
        return seen["dataset"]

    def pretrainer(*args, **kwargs):
        seen["model"] = build_pretrainer(*args, **kwargs)
        return seen["model"]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        # `kbert.training.pretrain` imports both inside the run, so it finds these.
        patch.setattr(kbert.data.pretraining, "pretraining_dataset", dataset)
        patch.setattr(kbert.models.pretrainer, "build_pretrainer", pretrainer)
        assert cli.main(["pretrain"] + [str(a) for a in argv]) == 0
    out = argv[argv.index("--out") + 1]
    # A finished run's re-run builds no pipeline.
    return Run(str(out), printed.getvalue(), seen["model"], seen.get("dataset_call"),
               seen.get("dataset"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_flags")
    return {"root": root, "corpus": _write_corpus(root / "corpus.txt"),
            "init": save_tiny_model(root / "init", VOCAB, seed=0, pretraining_heads=True)}


def _argv(files, out, *flags):
    # float32 named: under "auto" a GPU would train in float16 behind a loss-scale
    # optimizer, which skips the first steps.
    return ["--corpus", files["corpus"], "--init", files["init"], "--out", out,
            "--seq-len", 16, "--max-predictions", 4, "--batch-size", 4, "--seed", 0,
            "--precision", "float32", *flags]


@pytest.fixture(scope="module")
def lamb_run(files):
    """One LAMB step with whole-word masking; no weight decay and no warm-up, so the
    step is LAMB's update alone at the peak learning rate."""
    return _recording(_argv(files, files["root"] / "lamb", "--optimizer", "lamb",
                            "--whole-word-masking", "--steps", 1, "--learning-rate", 1e-2,
                            "--warmup-steps", 0, "--weight-decay", 0))


ACCUMULATION_FLAGS = ("--gradient-accumulation", 2, "--steps-per-execution", 4, "--steps", 4,
                      "--log-every", 1, "--checkpoint-every", 1)


@pytest.fixture(scope="module")
def accumulation_run(files):
    """Four optimizer steps of two batches each, four batches per call of the compiled
    step; a checkpoint and a log line wanted after every optimizer step."""
    return _recording(_argv(files, files["root"] / "accumulate", *ACCUMULATION_FLAGS))


# -- --whole-word-masking -------------------------------------------------------------------

def _original_and_chosen(batch):
    """(original token ids int32 [B, T] before masking, padding_mask [B, T], bool [B, T]
    the masked positions) of a (x, y, sample_weight) pipeline batch."""
    x, y, weights = (tf.nest.map_structure(np.asarray, part) for part in batch)
    original = x["token_ids"].copy()
    chosen = np.zeros(original.shape, bool)
    for r in range(original.shape[0]):
        real = weights["mlm_logits"][r] > 0
        positions = x["mask_positions"][r][real]
        original[r, positions] = y["mlm_logits"][r][real]  # undo the replacements
        chosen[r, positions] = True
    return original, x["padding_mask"], chosen


def _words(ids, length):
    """The words of one packed row as lists of positions: a piece plus the "##" pieces
    right after it (a "##" piece right after [CLS] / [SEP] starts its own, as
    kbert.text.masking counts them)."""
    words, previous_is_word = [], False
    for t, token in enumerate(ids[:length]):
        if token in SPECIAL:
            previous_is_word = False
        elif VOCAB[token].startswith("##") and previous_is_word:
            words[-1].append(t)
        else:
            words.append([t])
            previous_is_word = True
    return words


def _split_and_whole(original, padding_mask, chosen):
    """(words masked only in part, words of several pieces masked whole)."""
    split = whole = 0
    for r in range(original.shape[0]):
        for word in _words(original[r], int(padding_mask[r].sum())):
            taken = int(chosen[r, word].sum())
            split += 0 < taken < len(word)
            whole += taken == len(word) > 1
    return split, whole


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(lamb_run):
    with open(os.path.join(lamb_run.out, "run_config.json")) as f:
        assert json.load(f)["whole_word_masking"] is True
    assert lamb_run.dataset_call[1]["whole_word_masking"] is True
    split = whole = token_level_split = 0
    for seed, batch in enumerate(lamb_run.dataset.take(6)):  # the pipeline the run used
        original, padding_mask, chosen = _original_and_chosen(batch)
        counts = _split_and_whole(original, padding_mask, chosen)
        split, whole = split + counts[0], whole + counts[1]
        # The same rows masked piece by piece do split words: the check can see a run
        # that ignores the flag.
        pieces = masking.mask_tokens(original, padding_mask, max_predictions=4,
                                     mask_id=VOCAB.index("[MASK]"), special_ids=SPECIAL,
                                     random_token_range=(5, len(VOCAB)), seed=seed)
        chosen = np.zeros(original.shape, bool)
        for r, (positions, weights) in enumerate(zip(pieces["mask_positions"].numpy(),
                                                     pieces["mask_weights"].numpy())):
            chosen[r, positions[weights > 0]] = True
        token_level_split += _split_and_whole(original, padding_mask, chosen)[0]
    assert split == 0 and whole >= 5, (split, whole)
    assert token_level_split >= 5


# -- --optimizer lamb -----------------------------------------------------------------------

def test_lamb_step_moves_every_tensor_by_the_same_fraction_of_its_norm(lamb_run, files):
    """LAMB scales each tensor's Adam step to `lr * |w|` (the trust ratio), so after one
    step |w1 - w0| / |w0| is the learning rate for every tensor. AdamW moves each entry
    by about lr: a fraction lr * sqrt(size) / |w0|, 50 lr for a kernel drawn with
    stddev 0.02 but lr for a LayerNorm gamma of ones."""
    assert isinstance(lamb_run.model.optimizer, keras.optimizers.Lamb)
    assert lamb_run.trained_steps == 1
    before = read_checkpoint(files["init"]).weights
    after = read_checkpoint(os.path.join(lamb_run.out, "model")).weights
    assert sorted(after) == sorted(before)
    fractions = {name: np.linalg.norm(after[name] - w) / np.linalg.norm(w)
                 for name, w in before.items() if np.linalg.norm(w) > 0}
    kernels = [name for name in fractions if name.endswith("kernel")]
    assert len(kernels) >= 6 and len(fractions) >= 15, sorted(fractions)
    np.testing.assert_allclose(list(fractions.values()), 1e-2, rtol=1e-3,
                               err_msg=str(fractions))


# -- --gradient-accumulation, --steps-per-execution -----------------------------------------

def _checkpoints(run):
    """(optimizer steps of the checkpoints kept, batches the optimizer had seen at the
    last one: its raw step counter, which counts batches under accumulation)."""
    directory = os.path.join(run.out, "checkpoints")
    state = tf.train.get_checkpoint_state(directory)
    steps = [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]
    reader = tf.train.load_checkpoint(state.model_checkpoint_path)
    return steps, int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def test_gradient_accumulation_makes_one_optimizer_step_of_n_batches(accumulation_run):
    """--steps counts optimizer steps; each one applies the mean gradient of N batches
    (that the update equals one step on the mean gradient: tests/training/test_training.py)."""
    optimizer = accumulation_run.model.optimizer
    assert optimizer.gradient_accumulation_steps == 2
    steps, batches = _checkpoints(accumulation_run)
    assert accumulation_run.trained_steps == steps[-1] == optimizer.iterations.numpy() == 4
    assert batches == 8


def test_rerunning_a_finished_accumulating_run_trains_nothing(files, accumulation_run,
                                                             tmp_path):
    """Re-running the same command resumes and stops at --steps optimizer steps in total,
    so a finished run's re-run trains no further (the resume compares optimizer steps
    with --steps, not batches)."""
    out = tmp_path / "again"
    shutil.copytree(accumulation_run.out, out)
    again = _recording(_argv(files, out, *ACCUMULATION_FLAGS))
    assert again.dataset_call is None  # nothing left to train: no pipeline built
    assert again.trained_steps == 4 and _checkpoints(again)[1] == 8


def test_steps_per_execution_runs_n_batches_per_call(accumulation_run):
    """Keras runs the callbacks once per call of the compiled step: with 4 batches per
    call and 2 per optimizer step, checkpoints and log lines come every 2 optimizer steps
    although every step asks for one (one call per batch would give every step)."""
    assert accumulation_run.model.steps_per_execution == 4
    # 8 batches: two calls, ending at optimizer steps 2 and 4.
    assert _checkpoints(accumulation_run) == ([2, 4], 8)
    with open(os.path.join(accumulation_run.out, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [2, 4]


@pytest.mark.slow
def test_accumulating_run_logs_each_optimizer_step_once(files, tmp_path):
    run = _recording(_argv(files, tmp_path / "run", "--gradient-accumulation", 2,
                           "--steps", 2, "--log-every", 1))
    with open(os.path.join(run.out, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
