"""Optimisation as in BERT: AdamW (or LAMB) with linear warm-up then linear decay, global
norm clipping at 1.0, no weight decay on LayerNorm parameters and biases, optional
gradient accumulation; and the mixed-precision policy for where training runs."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

# Variable names (the last part of a Keras variable path) that get no weight decay: the
# LayerNorm scale and offset and every bias, as in the original optimization.py.
NO_DECAY = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="kbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup for step < warmup, then falls linearly to
    `end_learning_rate` at `total_steps` (and stays there).

    The value is a function of the optimizer's step counter only, so a run resumed from a
    checkpoint continues the schedule where it stopped.
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int, total_steps: int,
                 end_learning_rate: float = 0.0):
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps "
                             f"({total_steps}) and total_steps > 0")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak, end = self.peak_learning_rate, self.end_learning_rate
        warmup = tf.cast(self.warmup_steps, tf.float32)
        total = tf.cast(self.total_steps, tf.float32)
        warm = peak * step / tf.maximum(warmup, 1.0)
        progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
        decay = peak + (end - peak) * progress
        return tf.where(step < warmup, warm, decay)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "end_learning_rate": self.end_learning_rate}


def create_optimizer(learning_rate: float, total_steps: int, warmup_steps: int | None = None,
                     warmup_fraction: float = 0.1, weight_decay: float = 0.01,
                     optimizer: str = "adamw", clip_norm: float | None = 1.0,
                     gradient_accumulation_steps: int | None = None) -> keras.optimizers.Optimizer:
    """BERT's optimiser.

    Args:
        learning_rate: peak learning rate (1e-4 pre-training, 2e-5..5e-5 fine-tuning).
        total_steps: optimizer steps of the whole run (the decay reaches 0 there).
        warmup_steps: linear warm-up steps; default `warmup_fraction` of `total_steps`.
        weight_decay: decoupled weight decay (0.01), not applied to NO_DECAY variables.
        optimizer: "adamw" (beta1 0.9, beta2 0.999, epsilon 1e-6 as BERT) or "lamb"
            (You et al. 2019, for large batches; same betas and epsilon).
        clip_norm: global-norm clipping of the gradients (1.0 as BERT); None to disable.
        gradient_accumulation_steps: apply the averaged gradients of this many batches
            as one step (a larger effective batch on the same memory).
    """
    if warmup_steps is None:
        warmup_steps = int(warmup_fraction * total_steps)
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps)
    common = dict(learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                  weight_decay=weight_decay, global_clipnorm=clip_norm,
                  gradient_accumulation_steps=gradient_accumulation_steps)
    if optimizer == "adamw":
        opt = keras.optimizers.AdamW(**common)
    elif optimizer == "lamb":
        opt = keras.optimizers.Lamb(**common)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'adamw' or 'lamb'")
    opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return opt


PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def set_precision(precision: str = "auto", strategy: tf.distribute.Strategy | None = None) -> str:
    """Sets Keras' global dtype policy; returns the policy name.

    "auto": bfloat16 on TPU, float16 on GPU (Keras wraps the optimizer in a loss-scale
    optimizer for it at `compile`), float32 on CPU, where bfloat16 only pays on CPUs with
    native bf16 matrix units — ask for it with "mixed_bfloat16".
    Call before building the model.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            precision = "mixed_bfloat16"
        elif tf.config.list_logical_devices("GPU"):
            precision = "mixed_float16"
        else:
            precision = "float32"
    keras.config.set_dtype_policy(precision)
    logger.info("dtype policy: %s", precision)
    return precision
