"""`pretrain()`: the pre-training run behind `kbert pretrain`, usable from Python and Colab.

A run lives in one output directory::

    RUN_DIR/
      run_config.json     the settings (a re-run with the same RUN_DIR resumes)
      checkpoints/        model + optimizer state every `checkpoint_every` steps
      logs/               TensorBoard
      metrics.jsonl       {"step": ..., "loss": ..., "masked_lm_accuracy": ...} lines
      model/              the result: a kbert model directory with the MLM / NSP heads

Re-running the same command after a crash, a `kill -9` or a SIGTERM resumes from the last
checkpoint (step, optimizer moments, learning-rate schedule) and stops at `steps` in total.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from kbert.training.settings import PretrainingSettings

logger = logging.getLogger(__name__)


# Settings that define the model and its data; a resumed run must not change them.
_FIXED_ON_RESUME = ("vocab", "preset", "init", "cased", "seq_len", "max_predictions",
                    "whole_word_masking")


def _save_settings(settings: PretrainingSettings, path: str) -> None:
    if not os.path.isfile(path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(settings), f, indent=2)


def _check_resume(settings: PretrainingSettings, path: str) -> None:
    """Refuses to resume a run directory with settings that change the model or data."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    changed = [f"{k} ({saved.get(k)!r} -> {getattr(settings, k)!r})" for k in _FIXED_ON_RESUME
               if saved.get(k) != getattr(settings, k)]
    if changed:
        raise ValueError(f"{path}: this run directory was started with other settings: "
                         f"{', '.join(changed)}. Use a new --out, or the original settings "
                         "to resume.")


def _model_and_vocab(settings: PretrainingSettings):
    """(BertConfig, vocab tokens, lowercase, initial weights or None)."""
    # lazy: after the strategy (see `pretrain`)
    from kbert.config import BertConfig
    from kbert.convert.references import resolve_model
    from kbert.io.model_dir import read_checkpoint, read_vocab

    if settings.init:
        checkpoint = read_checkpoint(resolve_model(settings.init))
        return checkpoint.config, checkpoint.vocab, checkpoint.lowercase, checkpoint.weights
    if not settings.vocab:
        raise ValueError("give --vocab (a vocab.txt, e.g. from `kbert vocab`) or --init MODEL_DIR")
    vocab = read_vocab(settings.vocab)
    config = BertConfig.from_preset(settings.preset, vocabulary_size=len(vocab),
                                    max_sequence_length=max(512, settings.seq_len))
    return config, vocab, not settings.cased, None


@dataclasses.dataclass(frozen=True)
class PretrainingResult:
    model_dir: str | None     # RUN_DIR/model; None when stopped early or not the chief
    step: int                 # optimizer steps done in total
    stopped_by: str | None    # None (finished) or "sigterm"


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and \
        "chief" not in resolver.cluster_spec().as_dict()


def _service_dataset(dataset, settings: PretrainingSettings, strategy, done: int):
    """The global-batch pipeline run by tf.data service workers (kbert.data.service).

    Trainer workers of one run share one job (each batch goes to one of them); the job's
    name carries the step it starts from, as a resumed run's pipeline is seeded anew."""
    import tensorflow as tf

    # lazy: after the strategy (see `pretrain`)
    from kbert.data.service import distribute

    name = f"kbert-pretrain-{os.path.basename(os.path.abspath(settings.out))}-{done}"
    data = distribute(dataset, settings.data_service, job_name=name)
    if strategy.num_replicas_in_sync == 1:
        return data
    options = tf.data.Options()
    # The service already gives each trainer its own batches; do not shard them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return strategy.experimental_distribute_dataset(data.with_options(options))


def pretrain(settings: PretrainingSettings, verbose: str | int = "auto") -> PretrainingResult:
    """Runs (or resumes) pre-training.

    Raises `kbert.training.checkpointing.TrainingDiverged` on a NaN loss (the last good checkpoint
    is kept). After SIGTERM it returns with the checkpoint saved, `stopped_by="sigterm"`
    and no model directory written; running it again resumes.
    """
    # lazy: a multi-worker strategy must be built before any TF op runs, so nothing that
    # might run one (the model, data and text modules) is imported before it.
    from kbert.training.distribute import select_strategy

    strategy = select_strategy(settings.strategy)

    import keras

    # lazy: after the strategy (above)
    from kbert.training.optimizers import set_precision

    os.makedirs(settings.out, exist_ok=True)
    _check_resume(settings, os.path.join(settings.out, "run_config.json"))
    config, vocab, lowercase, initial = _model_and_vocab(settings)
    if settings.seq_len > config.max_sequence_length:
        raise ValueError(f"--seq-len {settings.seq_len} exceeds the model's "
                         f"max_sequence_length {config.max_sequence_length}")
    set_precision(settings.precision, strategy)
    if settings.seed is not None:
        # Initial weights and dropout, as --seed promises (data order and masks are seeded
        # by the pipeline itself).
        keras.utils.set_random_seed(settings.seed)
    try:
        return _run(settings, strategy, config, vocab, lowercase, initial, verbose)
    finally:
        keras.config.set_dtype_policy("float32")  # leave the process as it was


def _run(settings, strategy, config, vocab, lowercase, initial, verbose) -> PretrainingResult:
    """Builds the model under `strategy`, restores, trains the remaining steps, saves."""
    import keras

    # lazy: after the strategy (see `pretrain`)
    from kbert.data.documents import count_invalid_utf8, expand_files
    from kbert.data.pretraining import pretraining_dataset
    from kbert.io.model_dir import save_model
    from kbert.models.encoder import build_encoder
    from kbert.models.pretrainer import assign_weights, build_pretrainer, head_weights
    from kbert.text import Tokenizer
    from kbert.training.checkpointing import StepLogger, TrainingCheckpoint
    from kbert.training.optimizers import create_optimizer

    tokenizer = Tokenizer(vocab, lowercase=lowercase)
    text_files = [p for p in expand_files(list(settings.corpus)) if not p.endswith(".tfrecord")]
    invalid = count_invalid_utf8(text_files)
    if invalid:
        logger.warning("%d line(s) of the corpus hold invalid UTF-8; those bytes are read as "
                       "U+FFFD (dropped by the tokenizer)", invalid)

    with strategy.scope():
        encoder = build_encoder(config)
        model = build_pretrainer(encoder, config)
        if initial is not None:
            assign_weights(encoder, model, initial, source=settings.init)
        model.compile(
            optimizer=create_optimizer(
                settings.learning_rate, settings.steps, warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay, optimizer=settings.optimizer,
                gradient_accumulation_steps=settings.gradient_accumulation),
            jit_compile=settings.jit_compile, steps_per_execution=settings.steps_per_execution)
        # Under several workers only the chief's checkpoints are kept; the others write
        # theirs (the same values) beside it, as tf.distribute expects every worker to save.
        chief = _is_chief(strategy)
        suffix = "" if chief else f"-worker-{strategy.cluster_resolver.task_id}"
        checkpoint_dir = os.path.join(settings.out, "checkpoints" + suffix)
        checkpoint = TrainingCheckpoint(checkpoint_dir, model,
                                        every_n_steps=settings.checkpoint_every)
        done = checkpoint.restore()

    # Written once the run is set up, so a mistyped first attempt does not pin settings.
    _save_settings(settings, os.path.join(settings.out, "run_config.json"))
    # Steps are optimizer updates; with gradient accumulation each takes N batches.
    remaining = (settings.steps - done) * (settings.gradient_accumulation or 1)
    if remaining > 0:
        def dataset_fn(input_context=None):
            return pretraining_dataset(
                list(settings.corpus), tokenizer, sequence_length=settings.seq_len,
                max_predictions=settings.max_predictions, batch_size=settings.batch_size,
                whole_word_masking=settings.whole_word_masking,
                # A resumed run gets new data order rather than replaying the first batches.
                seed=None if settings.seed is None else settings.seed + done,
                input_context=input_context, shard_hint=bool(settings.data_service))

        if settings.data_service:
            data = _service_dataset(dataset_fn(), settings, strategy, done)
        elif strategy.num_replicas_in_sync > 1:
            data = strategy.distribute_datasets_from_function(dataset_fn)
        else:
            data = dataset_fn()
        logger.info("training steps %d..%d of %d", done + 1, settings.steps, settings.steps)
        # shuffle=False: the dataset shuffles itself (Keras would warn and ignore it).
        model.fit(data, epochs=1, steps_per_epoch=remaining, verbose=verbose, shuffle=False,
                  callbacks=[checkpoint,
                             StepLogger(os.path.join(settings.out, f"metrics{suffix}.jsonl"),
                                        settings.log_every),
                             keras.callbacks.TensorBoard(os.path.join(settings.out,
                                                                      "logs" + suffix),
                                                         update_freq=settings.log_every)])
        checkpoint.raise_if_diverged()
    if checkpoint.stopped_by == "sigterm":
        logger.warning("stopped by SIGTERM at step %d; checkpoint saved, re-run to resume",
                       checkpoint.step)
        return PretrainingResult(None, checkpoint.step, "sigterm")
    heads = head_weights(model)
    if not chief:  # the chief writes the one model directory
        return PretrainingResult(None, checkpoint.step, None)
    model_dir = os.path.join(settings.out, "model")
    save_model(encoder, config, model_dir, vocab, lowercase=lowercase, heads=heads,
               overwrite=True)
    return PretrainingResult(model_dir, checkpoint.step, None)
