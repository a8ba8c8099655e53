"""Optimisation as in BERT: AdamW (or LAMB) with linear warm-up then linear decay, global
norm clipping at 1.0, no weight decay on LayerNorm parameters and biases, optional
gradient accumulation; and the mixed-precision policy for where training runs."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from kbert.training.settings import TRAINING_PRECISIONS

logger = logging.getLogger(__name__)

# Variable names (the last part of a Keras variable path) that get no weight decay: the
# LayerNorm scale and offset and every bias, as in the original optimization.py.
NO_DECAY = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="kbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup for step < warmup, then falls linearly to
    `end_learning_rate` at `total_steps` (and stays there).

    The value is a function of the optimizer's step counter only, so a run resumed from a
    checkpoint continues the schedule where it stopped. Steps are optimizer updates:
    with gradient accumulation Keras evaluates the schedule at its batch counter, so
    `batches_per_step` (the accumulation N) turns batches back into updates.
    """

    def __init__(self, peak_learning_rate: float, warmup_steps: int, total_steps: int,
                 end_learning_rate: float = 0.0, batches_per_step: int = 1):
        if total_steps <= 0 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps "
                             f"({total_steps}) and total_steps > 0")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.batches_per_step = max(1, int(batches_per_step or 1))

    def __call__(self, step):
        step = tf.cast(step // self.batches_per_step, tf.float32)
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
                "end_learning_rate": self.end_learning_rate,
                "batches_per_step": self.batches_per_step}


def _is_float32_resource(variable) -> bool:
    return isinstance(variable, tf.Variable) and variable.dtype == tf.float32


@keras.saving.register_keras_serializable(package="kbert")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW (same variables and schedule) with Adam's own epsilon, cheaper on CPU.

    Epsilon as in Kingma & Ba's Algorithm 1 and `torch.optim.AdamW`: added to the
    bias-corrected sqrt(v_hat),
        var -= lr * m_hat / (sqrt(v_hat) + eps),
        m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t),
    not Keras' "epsilon hat" (added to the uncorrected sqrt(v)), which is eps / sqrt(1 -
    b2^t) in these terms: 32x larger at the first step, 2.3x after 200. With gradients
    clipped to a global norm of 1 over millions of parameters most |g| are ~1e-4, so
    Keras' form damps the early updates: fine-tuning with it falls behind transformers'
    losses from the second update on; with this epsilon they agree
    (tests/training/test_training_parity_hf.py; figures in docs/PERF_TRAIN_STEP.md).

    Faster on CPU, too: Keras writes each Adam update as ~12 elementwise TF ops per
    variable, each a full pass over the variable's memory, and the global-norm clipping as
    3 more (square, sum, scale), a large share of a small model's step
    (docs/PERF_TRAIN_STEP.md). Here:
    - the update is TF's fused `ResourceApplyAdam` kernel (m, v and the variable in one
      pass; its formula lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + e) is the one
      above with e = eps * sqrt(1 - b2^t)). Under a `tf.distribute` strategy (mirrored
      optimizer slots have no single resource handle) the same formula runs as Keras ops;
      amsgrad is Keras' own;
    - decoupled weight decay multiplies by one scalar (lr * wd) instead of two;
    - the global norm is a sum of `L2Loss` ops (one pass each) instead of square + sum.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        momentum = self._momentums[index].value
        velocity = self._velocities[index].value
        if tf.distribute.has_strategy() or not all(
                _is_float32_resource(v) for v in (variable, momentum, velocity)):
            return self._update_with_ops(gradient, variable, learning_rate)
        gradient = tf.cast(tf.convert_to_tensor(gradient), tf.float32)  # IndexedSlices too
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        beta_2_power = tf.pow(beta_2, step)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.handle, v=velocity.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=beta_2_power,
            lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
            epsilon=self.epsilon * tf.sqrt(1.0 - beta_2_power), grad=gradient)

    def _update_with_ops(self, gradient, variable, learning_rate):
        """The same update as Keras ops (Keras' Adam code with Algorithm 1's epsilon)."""
        from keras import ops

        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon_hat = self.epsilon * ops.sqrt(1 - beta_2_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v),
                                        1 - self.beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha),
                                             ops.add(ops.sqrt(v), epsilon_hat)))

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or tf.distribute.has_strategy():
            return super()._apply_weight_decay(variables)
        factor = (tf.cast(self.learning_rate, tf.float32)
                  * tf.constant(self.weight_decay, tf.float32))
        for variable in variables:
            if self._use_weight_decay(variable):
                tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
                tf_variable.assign_sub(tf_variable * tf.cast(factor, tf_variable.dtype))

    def _clip_gradients(self, grads):
        if not (self.global_clipnorm and self.global_clipnorm > 0):
            return super()._clip_gradients(grads)
        dense = [None if g is None else tf.convert_to_tensor(g) for g in grads]
        # l2_loss(g) = sum(g^2) / 2
        squared = [tf.cast(tf.nn.l2_loss(g), tf.float32) for g in dense if g is not None]
        norm = tf.sqrt(2.0 * tf.add_n(squared))
        clip = tf.constant(self.global_clipnorm, tf.float32)
        # As keras.optimizers' clip_by_global_norm: min(1, clip / norm), NaN when the norm
        # is not finite (so a NaN loss shows up in the weights rather than being hidden).
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in dense]


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
            (Keras' Lamb, after You et al. 2019, for large batches; same betas and
            epsilon). Its weight decay is decoupled: applied before the step, outside
            the trust ratio, unlike the paper's Algorithm 2, which adds wd * w inside the
            update that the trust ratio scales (tests/training/test_lamb_reference.py).
        clip_norm: global-norm clipping of the gradients (1.0 as BERT); None to disable.
        gradient_accumulation_steps: apply the averaged gradients of this many batches
            as one step (a larger effective batch on the same memory); `total_steps` and
            `warmup_steps` still count optimizer steps, so the run takes
            total_steps * N batches.
    """
    if warmup_steps is None:
        warmup_steps = int(warmup_fraction * total_steps)
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps,
                                 batches_per_step=gradient_accumulation_steps or 1)
    common = dict(learning_rate=schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                  weight_decay=weight_decay, global_clipnorm=clip_norm,
                  gradient_accumulation_steps=gradient_accumulation_steps)
    if optimizer == "adamw":
        opt = AdamW(**common)
    elif optimizer == "lamb":
        opt = keras.optimizers.Lamb(**common)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'adamw' or 'lamb'")
    opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return opt


PRECISIONS = TRAINING_PRECISIONS


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
