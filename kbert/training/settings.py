"""`PretrainingSettings` and `FinetuneSettings`: one run each, as frozen dataclasses whose
fields are the `kbert pretrain` / `kbert finetune` flags (each default and help text
written once, here).

No TensorFlow here: the command line builds its flags from these fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence


def setting(help: str, default: Any = dataclasses.MISSING, metavar: str | None = None,
             choices: Sequence[str] | None = None, type: Any = None, nargs: str | None = None):
    """A settings field and its command-line flag (`kbert.cli.flags`)."""
    metadata = {"help": help, "metavar": metavar,
                "choices": tuple(choices) if choices else None, "nargs": nargs}
    if type is not None:
        metadata["type"] = type
    return dataclasses.field(default=default, metadata=metadata)


STRATEGIES = ("auto", "tpu", "multi_worker", "mirrored", "one_device", "default")
TRAINING_PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
    """What a pre-training run is; saved as run_config.json (field names are the CLI
    flags). A re-run with the same `out` resumes, and must not change `FIXED_ON_RESUME`."""

    corpus: tuple[str, ...] = setting(
        "text files or globs (or .tfrecord shards of tokenized documents)", metavar="FILES",
        nargs="+")
    out: str = setting("the run directory", metavar="RUN_DIR")
    vocab: str | None = setting("vocab.txt (e.g. from `kbert vocab`)", default=None)
    preset: str = setting("tiny, mini, small, medium, base, large", default="mini")
    init: str | None = setting("continue from a kbert model directory", default=None,
                                metavar="MODEL_DIR")
    cased: bool = setting("cased vocabulary (no lower-casing)", default=False)
    seq_len: int = setting("T, the packed sequence length", default=128)
    max_predictions: int = setting("masked positions predicted per sequence (P)",
                                    default=20)
    batch_size: int = setting("global batch size", default=32)
    steps: int = setting("optimizer steps in total (with --gradient-accumulation N, "
                          "N batches each)", default=10_000)
    learning_rate: float = setting("peak learning rate", default=1e-4)
    warmup_steps: int | None = setting("linear warm-up steps (default: 10%% of --steps)",
                                        default=None, type=int)
    optimizer: str = setting("adamw, or lamb (large batches)", default="adamw",
                              choices=("adamw", "lamb"))
    weight_decay: float = setting("decoupled weight decay", default=0.01)
    gradient_accumulation: int | None = setting("apply gradients every N batches",
                                                 default=None, metavar="N", type=int)
    whole_word_masking: bool = setting("mask every piece of a chosen word", default=False)
    checkpoint_every: int = setting("steps between checkpoints", default=500,
                                     metavar="STEPS")
    log_every: int = setting("steps between metrics.jsonl lines", default=10,
                              metavar="STEPS")
    strategy: str = setting("tf.distribute strategy", default="auto", choices=STRATEGIES)
    precision: str = setting("compute precision", default="auto",
                              choices=TRAINING_PRECISIONS)
    jit_compile: bool = setting("XLA-compile the train step", default=False)
    steps_per_execution: int = setting("train steps per tf.function call", default=1)
    seed: int | None = setting("seeds data order, masking and initialisation",
                                default=None, type=int)
    data_service: str | None = setting(
        "run the input pipeline on tf.data service workers (`kbert data-service`) at this "
        "dispatcher; files are shared out between the workers", default=None,
        metavar="grpc://HOST:PORT")


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning run (field names are the CLI flags).

    Attributes:
        model: any kbert model directory (pre-trained or converted) to start from.
        train: the training file; eval: the evaluation file (None: keep the last epoch).
        out: the run directory (see the module docstring).
        seq_len: T, the packed sequence length.
        epochs, batch_size, learning_rate, warmup_fraction, weight_decay: the recipe.
        seed: seeds Python, numpy, TF and Keras (same data, same machine: same run).
        precision: "float32", "mixed_bfloat16", "mixed_float16" or "auto".
        overwrite: replace an existing `out` (otherwise an error before any work).
        options: task options (column names, regression, doc_stride, ...) passed to
            `Task.read` and `Task.make_spec`.
        jit_compile: XLA-compile the train step.
    """

    model: str = setting("kbert model directory to start from (pre-trained or converted)",
                          metavar="MODEL_DIR")
    train: str = setting("the labelled training file", metavar="FILE")
    out: str = setting("the run directory to write", metavar="DIR")
    eval: str | None = setting("scored after every epoch; picks the best", default=None,
                                metavar="FILE")
    seq_len: int = setting("T, the packed sequence length (default: the task's, 128; qa "
                            "384)", default=128)
    epochs: int = setting("passes over the training data", default=3)
    batch_size: int = setting("examples (windows) per step", default=32)
    learning_rate: float = setting("peak learning rate of AdamW", default=3e-5)
    warmup_fraction: float = setting("share of the steps with a linear warm-up",
                                      default=0.1)
    weight_decay: float = setting("AdamW's decoupled weight decay", default=0.01)
    seed: int = setting("seeds shuffling, dropout and the head", default=0)
    precision: str = setting("compute precision", default="float32",
                              choices=TRAINING_PRECISIONS)
    overwrite: bool = setting("replace DIR if it exists", default=False)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    jit_compile: bool = setting("XLA-compile the train step", default=False)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
        return d
