"""Checks that several test files run, after the manner of keras-hub's TestCase (its
serialization, precision and saving tests): each one takes a model, layer or graph and the
test's own tolerance, and fails with a message that names what differed (the output key,
the variable path, eager or graph, TFLite or TensorFlow).

    assert_outputs_close            two nests of outputs: same keys, shapes, dtypes; floats
                                    within a tolerance, everything else equal
    check_eager_equals_graph        a function gives the same values eagerly and traced
    check_serialization_round_trip  get_config -> from_config, and a .keras file, change
                                    nothing
    check_mixed_bfloat16            float32 variables, bfloat16 outputs close to float32 ones
    check_tflite_parity             a TFLite model gives a TensorFlow graph's outputs
    dtype_policy                    a Keras dtype policy for the length of a `with` block
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np
import tensorflow as tf


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy is `name` inside the block and float32 after it (the
    tests' default), even when the block raises."""
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


# -- comparing outputs ------------------------------------------------------------------------

def _flatten(value, path=""):
    """{path: leaf} of a nest of dicts, lists and tuples ("" for a single leaf)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {path: value}
    flat = {}
    for key, item in items:
        flat.update(_flatten(item, f"{path}/{key}" if path else str(key)))
    return flat


def _as_numpy(value):
    """(numpy array, dtype name) of a tensor, variable, gradient or array; bfloat16 and
    float16 values become float32 (the comparison's arithmetic), strings bytes."""
    if isinstance(value, tf.IndexedSlices):  # an embedding's gradient
        value = tf.convert_to_tensor(value)
    if isinstance(value, (tf.Tensor, tf.Variable, keras.Variable)):
        value = tf.convert_to_tensor(value)
        dtype = value.dtype.name
        if value.dtype.is_floating:
            value = tf.cast(value, tf.float32)
        value = value.numpy()
    else:
        value = np.asarray(value)
        dtype = value.dtype.name
    if value.dtype.kind in "OSU":  # TensorFlow gives bytes, TFLite runners bytes or str
        dtype = "string"
        value = np.array([v if isinstance(v, bytes) else str(v).encode()
                          for v in value.reshape(-1)], dtype=object).reshape(value.shape)
    return value, dtype


def assert_outputs_close(got, want, *, atol: float, rtol: float = 1e-7, what: str = "output",
                         check_dtype: bool = True) -> None:
    """`got` and `want` (a tensor or array, or dicts / lists of them) have the same keys and,
    key by key, the same shape and dtype (`check_dtype`); float values are within
    `np.testing.assert_allclose(atol, rtol)` of each other (compared in float32; rtol
    defaults to numpy's), all other values (ints, bools, strings) are equal.

    A failure names `what` and the key, e.g. "graph mlm_logits" or "TFLite labels".
    """
    got, want = _flatten(got), _flatten(want)
    assert set(got) == set(want), (f"{what}: keys differ, missing {sorted(set(want) - set(got))}"
                                   f", unexpected {sorted(set(got) - set(want))}")
    for key in want:
        name = f"{what} {key}".strip()
        a, a_dtype = _as_numpy(got[key])
        b, b_dtype = _as_numpy(want[key])
        assert a.shape == b.shape, f"{name}: shape {a.shape}, expected {b.shape}"
        if check_dtype:
            assert a_dtype == b_dtype, f"{name}: dtype {a_dtype}, expected {b_dtype}"
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


# -- eager and graph --------------------------------------------------------------------------

def check_eager_equals_graph(fn, *args, want=None, atol: float, rtol: float = 1e-7,
                             jit_compile: bool = False, input_signature=None):
    """`fn(*args)` run eagerly and inside `tf.function` (XLA-compiled with `jit_compile`)
    give the same outputs, within `atol` / `rtol` (as in `assert_outputs_close`).

    Args:
        fn: a function of tensors (a model, a layer call, a closure) returning a tensor or
            a dict / list of them.
        *args: its arguments (tensors, numpy arrays or dicts of them).
        want: if given, both runs are compared with it instead of with each other (an
            independent reference, e.g. the full encoder for a shortcut).
        input_signature: if given, `fn` is also traced with it (e.g. unknown batch and
            length) and compared.

    Returns:
        (eager outputs, graph outputs).
    """
    eager = fn(*args)
    reference = eager if want is None else want
    if want is not None:
        assert_outputs_close(eager, want, atol=atol, rtol=rtol, what="eager")
    graph = tf.function(fn, jit_compile=jit_compile)(*args)
    assert_outputs_close(graph, reference, atol=atol, rtol=rtol,
                         what="jit-compiled graph" if jit_compile else "graph")
    if input_signature is not None:
        traced = tf.function(fn, input_signature=input_signature)(*args)
        assert_outputs_close(traced, reference, atol=atol, rtol=rtol,
                             what=f"graph traced for {input_signature}")
    return eager, graph


# -- serialization ----------------------------------------------------------------------------

def check_serialization_round_trip(instance, run, keras_file: str | os.PathLike | None = None):
    """A Keras layer or model survives serialization: `type(instance).from_config(
    instance.get_config())` has the same config and the same variable paths (kbert's
    weight names in model directories and converters; so every weight needs a name), and,
    given `instance`'s weights, the same `run` outputs, bit for bit. With `keras_file` (a
    path ending in ".keras"; models only), `instance.save` there and
    `keras.saving.load_model` in Keras' default safe mode give the same class and outputs
    too.

    Args:
        instance: a built Keras layer or model.
        run: `run(layer_or_model)` -> its outputs on the test's inputs (it also builds the
            unbuilt clone).

    Returns:
        The outputs of `run(instance)`.
    """
    want = run(instance)
    config = instance.get_config()
    clone = type(instance).from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) changed the config"
    if not clone.built:
        run(clone)
    paths = [(v.path, w.path) for v, w in zip(clone.weights, instance.weights)]
    changed = [pair for pair in paths if pair[0] != pair[1]]
    assert len(clone.weights) == len(instance.weights) and not changed, (
        f"from_config changed the variables: {len(clone.weights)} for "
        f"{len(instance.weights)}; paths (clone, original) {changed[:3]}")
    clone.set_weights(instance.get_weights())
    assert_outputs_close(run(clone), want, atol=0, rtol=0, what="from_config")
    if keras_file is not None:
        instance.save(keras_file)
        restored = keras.saving.load_model(keras_file)  # safe_mode=True by default
        assert type(restored) is type(instance), (
            f".keras file loaded as {type(restored).__name__}, saved a "
            f"{type(instance).__name__}")
        assert_outputs_close(run(restored), want, atol=0, rtol=0, what=".keras file")
    return want


# -- mixed precision --------------------------------------------------------------------------

def check_mixed_bfloat16(model, got, want, *, max_abs: float, mean_abs: float | None = None,
                         min_corr: float | None = None, where=None,
                         dtype: str = "bfloat16") -> None:
    """`model`, built under `dtype_policy("mixed_bfloat16")`, keeps every float variable in
    float32, and its outputs `got` are `dtype` (bfloat16: computed in it) and close to
    float32 values `want`.

    Args:
        got, want: a tensor or a dict of them (same keys), e.g. {"eager": ...,
            "jit-compiled": ...} and the float32 values each should be near.
        max_abs: every |got - want| is below this (bfloat16 keeps 8 bits of mantissa,
            about 3 significant digits, so the test states what its values allow).
        mean_abs: if given, the mean |got - want| is below this.
        min_corr: if given, the correlation of got and want is above this.
        where: if given, a boolean mask of the values compared (e.g. real tokens only).
    """
    floats = [v for v in model.weights if v.dtype in ("float32", "float16", "bfloat16")]
    for v in floats:
        assert v.dtype == "float32", f"variable {v.path} is {v.dtype}, not float32"
    got, want = _flatten(got), _flatten(want)
    assert set(got) == set(want), f"outputs {sorted(got)} against references {sorted(want)}"
    for key in want:
        name = f"mixed_bfloat16 output {key}".strip()
        got_dtype = tf.as_dtype(got[key].dtype).name
        assert got_dtype == dtype, f"{name} is {got_dtype}, not {dtype}"
        a, _ = _as_numpy(got[key])
        b, _ = _as_numpy(want[key])
        assert a.shape == b.shape, f"{name}: shape {a.shape}, expected {b.shape}"
        if where is not None:
            a, b = a[where], b[where]
        difference = np.abs(a - b)
        assert difference.max() < max_abs, (
            f"{name}: max |bfloat16 - float32| = {difference.max():.3g}, not < {max_abs}")
        if mean_abs is not None:
            assert difference.mean() < mean_abs, (
                f"{name}: mean |bfloat16 - float32| = {difference.mean():.3g}, "
                f"not < {mean_abs}")
        if min_corr is not None:
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert corr > min_corr, f"{name}: correlation {corr:.6f} with float32, not > {min_corr}"


# -- TFLite -----------------------------------------------------------------------------------

def check_tflite_parity(tflite, reference, inputs: dict, *, atol: float, rtol: float = 0.0,
                        extra_outputs=()) -> tuple[dict, dict]:
    """A TFLite model gives the outputs of the TensorFlow graph it was converted from.

    Args:
        tflite: called as `tflite(**inputs)`: a `kbert.serving.tflite_runtime.TFLiteModel`
            or a signature runner (`helpers.graphs.tflite_runner`), numpy outputs.
        reference: the TensorFlow side, called with `tf.constant` of each input (a
            `tf.function`, a loaded signature), or its outputs already computed (a dict).
        inputs: {input name: values in the form `tflite` takes (lists, numpy arrays)}.
        atol, rtol: for float outputs; by default |TFLite - TF| <= atol. Ints and strings
            must be equal (strings compared as bytes).
        extra_outputs: names only the TFLite side has.

    Returns:
        (TFLite outputs, TensorFlow outputs), numpy.
    """
    got = tflite(**inputs)
    want = reference if isinstance(reference, dict) else reference(
        **{name: tf.constant(value) for name, value in inputs.items()})
    assert set(got) == set(want) | set(extra_outputs), (
        f"TFLite outputs {sorted(got)}, expected {sorted(set(want) | set(extra_outputs))}")
    assert_outputs_close({name: got[name] for name in want}, want, atol=atol, rtol=rtol,
                         what="TFLite")
    return got, {name: _as_numpy(value)[0] for name, value in want.items()}
