"""kbert's LAMB (`create_optimizer(optimizer="lamb")`) against a NumPy LAMB written here.

The reference is You et al. 2019 ("Large Batch Optimization for Deep Learning"),
Algorithm 2, in float64:

    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)
    r = m_hat / (sqrt(v_hat) + eps)  (+ wd * w in the paper)
    w -= lr * phi(||w||) / ||r|| * r

with the choices kbert documents in `kbert/training/optimizers.py` (the module docstring
and `create_optimizer`'s), which are also where it departs from the paper:
- weight decay is decoupled (`weight_decay: decoupled weight decay`). kbert's LAMB is
  `keras.optimizers.Lamb`, whose base optimizer subtracts lr * wd * w from the variable
  *before* the LAMB step (keras `BaseOptimizer._apply_weight_decay`, called ahead of
  `update_step`): the decay is not scaled by the trust ratio, and the ratio is taken on
  the already-decayed w. The paper puts wd * w inside r;
- no decay on LayerNorm scale / offset and biases (`NO_DECAY`, matched on the variable's
  name); the trust ratio still applies to them (the paper: every layer);
- phi is the identity, and the ratio is 1 when ||w|| or ||r|| is 0 (the paper's phi(0) = 0
  would leave a zero-initialised bias at zero for ever);
- gradients are first clipped to a global norm of 1.0 (BERT's recipe, not the paper's);
- the learning rate is `WarmupLinearDecay` at the step count before the update;
- Adam's bias correction, and epsilon added to the bias-corrected sqrt(v_hat), as the paper.
`test_each_choice_is_visible` checks that undoing any one of these moves the result far
beyond the tolerance, so the main test cannot pass by accident.

A comparison with `keras.optimizers.Lamb` would compare the code with itself:
`create_optimizer` returns that class.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbert.training.optimizers import create_optimizer

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-6  # create_optimizer's documented values
PEAK, WARMUP, TOTAL, WEIGHT_DECAY, CLIP = 0.05, 2, 6, 0.1, 1.0
# WarmupLinearDecay at iterations 0..5, by its docstring: peak * k / 2 for k < 2, then
# peak * (1 - (k - 2) / (6 - 2)).
LEARNING_RATES = (0.0, 0.025, 0.05, 0.0375, 0.025, 0.0125)

# name -> (shape, initial value, gradient scale). "gamma"'s gradients are ~eps, so where
# epsilon is added shows; "bias" and "zero_kernel" start at ||w|| = 0.
VARIABLES = {
    "kernel": ((3, 4), "normal", 1.0),
    "embeddings": ((5, 2), "normal", 0.3),
    "zero_kernel": ((2, 3), "zeros", 1.0),
    "bias": ((4,), "zeros", 1.0),
    "gamma": ((4,), "ones", 1e-6),
    "beta": ((4,), "normal", 0.5),
}
DECAYED = frozenset({"kernel", "embeddings", "zero_kernel"})  # the rest match NO_DECAY
ZERO_START = frozenset({"zero_kernel", "bias"})


def _initial_values(rng):
    make = {"normal": lambda shape: rng.normal(0, 1, shape), "zeros": np.zeros,
            "ones": np.ones}
    return {name: make[init](shape).astype(np.float32)
            for name, (shape, init, _) in VARIABLES.items()}


def _gradients(rng, steps):
    """Per step, per variable. Even steps have a global norm above CLIP (clipped), odd
    steps one below it (left alone)."""
    out = []
    for step in range(steps):
        size = 3.0 if step % 2 == 0 else 0.05
        out.append({name: (size * scale * rng.normal(0, 1, shape)).astype(np.float32)
                    for name, (shape, _, scale) in VARIABLES.items()})
    return out


def lamb_reference(initial, gradients, *, learning_rates=LEARNING_RATES,
                   weight_decay=WEIGHT_DECAY, decayed=DECAYED, clip_norm=CLIP,
                   decay_inside_trust_ratio=False, zero_norm_ratio=1.0,
                   bias_correction=True, epsilon_on_corrected=True):
    """LAMB in float64 (the module docstring's algorithm); the keywords' defaults are
    kbert's documented choices. Returns the final weights by name."""
    w = {k: x.astype(np.float64) for k, x in initial.items()}
    m = {k: np.zeros_like(x) for k, x in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, (grads, lr) in enumerate(zip(gradients, learning_rates), start=1):
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
        scale = min(1.0, clip_norm / norm)
        for name, g in grads.items():
            g = g.astype(np.float64) * scale
            wd = weight_decay if name in decayed else 0.0
            if not decay_inside_trust_ratio:
                w[name] = w[name] - lr * wd * w[name]
            m[name] = BETA_1 * m[name] + (1 - BETA_1) * g
            v[name] = BETA_2 * v[name] + (1 - BETA_2) * g * g
            c1, c2 = (1 - BETA_1 ** t, 1 - BETA_2 ** t) if bias_correction else (1.0, 1.0)
            if epsilon_on_corrected:
                r = (m[name] / c1) / (np.sqrt(v[name] / c2) + EPSILON)
            else:  # Keras Adam's "epsilon hat": eps added to the uncorrected sqrt(v)
                r = (m[name] / c1) * np.sqrt(c2) / (np.sqrt(v[name]) + EPSILON)
            if decay_inside_trust_ratio:
                r = r + wd * w[name]
            w_norm, r_norm = np.linalg.norm(w[name]), np.linalg.norm(r)
            ratio = w_norm / r_norm if w_norm > 0 and r_norm > 0 else zero_norm_ratio
            w[name] = w[name] - lr * ratio * r
    return w


def _run_kbert(initial, gradients):
    variables = {name: keras.Variable(value, name=name, dtype="float32")
                 for name, value in initial.items()}
    optimizer = create_optimizer(PEAK, total_steps=TOTAL, warmup_steps=WARMUP,
                                 weight_decay=WEIGHT_DECAY, optimizer="lamb", clip_norm=CLIP)
    for grads in gradients:
        optimizer.apply_gradients(
            [(tf.constant(grads[name]), variables[name]) for name in variables])
    assert int(optimizer.iterations) == len(gradients)
    return {name: variable.numpy() for name, variable in variables.items()}


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(16)
    initial = _initial_values(rng)
    gradients = _gradients(rng, TOTAL)
    return initial, gradients, _run_kbert(initial, gradients)


def _relative_gap(a, b):
    return max(float(np.max(np.abs(a[n] - b[n]) / (np.abs(b[n]) + 1e-3))) for n in VARIABLES)


def test_lamb_matches_the_numpy_reference(run):
    initial, gradients, kbert = run
    reference = lamb_reference(initial, gradients)
    for name in VARIABLES:
        # float32 against float64 over six steps; atol only for entries near 0. A variable
        # that starts at zero norm takes its first step with ratio 1, i.e. lr * r itself,
        # and r carries float32's rounding of 1 - b2^t (0.001999 at t = 2, rounded to
        # ~3e-8: ~1.5e-5 relative in v_hat). Elsewhere the trust ratio cancels r's scale.
        rtol = 5e-5 if name in ZERO_START else 1e-6
        np.testing.assert_allclose(kbert[name], reference[name], rtol=rtol, atol=1e-8,
                                   err_msg=name)
    # Every variable moved by far more than the tolerance, the zero-norm ones included
    # (their first ratio is 1).
    for name in VARIABLES:
        assert np.max(np.abs(kbert[name] - initial[name])) > 1e-3, name


@pytest.mark.parametrize("change", [
    dict(decay_inside_trust_ratio=True),           # the paper's placement of wd * w
    dict(decayed=frozenset(VARIABLES)),            # decay on biases / LayerNorm too
    dict(clip_norm=np.inf),                        # no global-norm clipping
    dict(learning_rates=(PEAK,) * TOTAL),          # no warm-up / decay
    dict(zero_norm_ratio=0.0),                     # the paper's phi(0) = 0
    dict(bias_correction=False),                   # BERT's AdamWeightDecay style
    dict(epsilon_on_corrected=False),              # Keras Adam's epsilon hat
], ids=lambda change: next(iter(change)))
def test_each_choice_is_visible(run, change):
    """Undoing any one documented choice moves the weights far beyond the main test's
    tolerance, so that test could not pass if kbert made a different one."""
    initial, gradients, kbert = run
    assert _relative_gap(lamb_reference(initial, gradients, **change), kbert) > 1e-4
