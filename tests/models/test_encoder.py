import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbert.config import BertConfig
from kbert.models.encoder import build_encoder
from helpers.checks import (assert_outputs_close, check_eager_equals_graph, check_mixed_bfloat16,
                            check_serialization_round_trip, dtype_policy)
from helpers.paths import FIXTURES
from helpers.tiny import random_features as random_inputs, tiny_config, tiny_encoder

# Two blocks: the every-layer outputs, and `rows` running all blocks but the last in full.
# H = 32 (4 heads of 8): the bfloat16 tolerances below are absolute and hold for the values
# of this width; at H = 128 the extremes after a LayerNorm are larger (beyond 2, where a
# bfloat16 step is 2^-6) and two steps there already exceed 2e-2.
SMALL = tiny_config(num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=64)
H = SMALL.hidden_dim


@pytest.mark.parametrize("name,expected", [
    ("tiny", 4_385_920), ("mini", 11_170_560), ("small", 28_763_648),
    ("medium", 41_373_184), ("base", 109_482_240), ("large", 335_141_888)])
def test_preset_parameter_counts(name, expected):
    model = build_encoder(BertConfig.from_preset(name))
    assert model.count_params() == expected
    keras.backend.clear_session()


@pytest.mark.parametrize("length", [1, 7, 64])
def test_output_shapes(length):
    model = build_encoder(SMALL)
    out = model(random_inputs(3, length))
    assert tuple(out["sequence_output"].shape) == (3, length, H)
    assert tuple(out["pooled_output"].shape) == (3, H)
    assert len(out["encoder_outputs"]) == 2
    assert all(tuple(x.shape) == (3, length, H) for x in out["encoder_outputs"])
    np.testing.assert_array_equal(out["encoder_outputs"][-1], out["sequence_output"])
    assert sorted(i.name for i in model.inputs) == ["padding_mask", "segment_ids", "token_ids"]


def test_padding_does_not_change_real_positions():
    model = build_encoder(SMALL)
    short = random_inputs(2, 10, lengths=[10, 6], seed=1)
    long = {k: np.pad(v, [(0, 0), (0, 22)]) for k, v in short.items()}
    # Garbage in padded slots must not leak into real positions either.
    long["token_ids"][:, 10:] = 57
    long["token_ids"][1, 6:10] = 63  # the last id of the 64-token vocabulary
    a, b = model(short), model(long)
    real = short["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(a["sequence_output"])[real],
                               np.asarray(b["sequence_output"])[:, :10][real], atol=2e-6)
    np.testing.assert_allclose(a["pooled_output"], b["pooled_output"], atol=2e-6)


def test_dropout_only_when_training():
    model = build_encoder(SMALL.replace(dropout=0.3))
    x = random_inputs(2, 12, seed=2)
    inference = [np.asarray(model(x, training=False)["sequence_output"]) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    np.testing.assert_allclose(model.predict(x, verbose=0)["sequence_output"], inference[0],
                               atol=1e-5)
    training = np.asarray(model(x, training=True)["sequence_output"])
    assert np.abs(training - inference[0]).max() > 1e-2


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    for activation in ("gelu", "gelu_approximate"):
        model = build_encoder(SMALL.replace(activation=activation))
        x = random_inputs(2, 9, lengths=[9, 4], seed=3)
        check_serialization_round_trip(model, lambda m: m(x),
                                       keras_file=os.path.join(tmp_path, f"{activation}.keras"))


def test_gelu_variants_differ_slightly():
    # Large initial weights, so feed-forward pre-activations reach where the forms differ.
    exact = build_encoder(SMALL.replace(initializer_range=0.5))
    approx = build_encoder(SMALL.replace(activation="gelu_approximate"))
    approx.set_weights(exact.get_weights())
    x = random_inputs(2, 9, seed=4)
    diff = np.abs(np.asarray(exact(x)["sequence_output"])
                  - np.asarray(approx(x)["sequence_output"])).max()
    assert 1e-6 < diff < 5e-2


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "bfloat16"])
@pytest.mark.parametrize("segments", [2, 3])  # 2: a select; other counts: a gather
def test_inference_embeddings_equal_the_keras_layers_sum(policy, segments):
    config = SMALL.replace(num_segments=segments)
    x = random_inputs(3, 16, lengths=[16, 9, 3], seed=5)
    x["segment_ids"][0, 12:] = segments - 1
    with dtype_policy(policy):
        model = build_encoder(config)
    token = model.token_embedding(x["token_ids"])
    expected = model.embeddings_layer_norm(model.embeddings_add(
        [token, model.position_embedding(token), model.segment_embedding(x["segment_ids"])]))
    # Equal up to the rounding of the additions (grappler may regroup them in a graph),
    # after the LayerNorm (values ~1). bfloat16: a rounding of the sum (one ulp of values
    # ~0.03 is 1.2e-4) grows by 1/sigma in the LayerNorm, then one ulp near 1 is 7.8e-3.
    rtol, atol = (1e-6, 1e-6) if policy == "float32" else (1e-2, 2e-2)
    check_eager_equals_graph(lambda f: model.embed(f), x, want=expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_cls_outputs_match_the_full_encoder(policy):
    # The shortcut a classifier's serving graph takes (last block for [CLS] only) gives
    # the full encoder's [CLS] row and pooled output, in eager and graph mode, float32 and
    # bfloat16, with padding.
    x = random_inputs(3, 16, lengths=[16, 9, 3], seed=7)
    atol = 2e-6 if policy == "float32" else 2e-2
    with dtype_policy(policy):
        # Seeded: 2e-2 is about one bfloat16 step for values beyond 2, where the two paths'
        # roundings can differ by two (unseeded, a few weight draws in 40 failed).
        model = tiny_encoder(SMALL, seed=0)
        full = model(x)
        check_eager_equals_graph(
            lambda inputs: model.cls_outputs(inputs), x, atol=atol,
            want={"cls_output": full["sequence_output"][:, 0],
                  "pooled_output": full["pooled_output"]})
    # Dropout still applies when asked (training), so the two paths are the same function.
    dropped = build_encoder(SMALL.replace(dropout=0.5))
    a = dropped.cls_outputs(x, training=True)["pooled_output"].numpy()
    b = dropped.cls_outputs(x, training=False)["pooled_output"].numpy()
    assert np.abs(a - b).mean() > 1e-3


def test_jit_compile_matches_eager():
    model = build_encoder(SMALL)
    x = random_inputs(3, 16, lengths=[16, 9, 3], seed=5)
    check_eager_equals_graph(lambda inputs: model(inputs), x, atol=1e-4, jit_compile=True)


def test_mixed_bfloat16_close_to_float32():
    x = random_inputs(2, 16, lengths=[16, 10], seed=6)
    reference = build_encoder(SMALL)
    with dtype_policy("mixed_bfloat16"):
        model = build_encoder(SMALL)
        model.set_weights(reference.get_weights())
        out = model(x)
        compiled = tf.function(lambda inputs: model(inputs), jit_compile=True)(x)
    want = reference(x)["sequence_output"]
    # bf16 has ~3 significant digits.
    check_mixed_bfloat16(model, {"eager": out["sequence_output"],
                                 "jit-compiled": compiled["sequence_output"]},
                         {"eager": want, "jit-compiled": want},
                         where=x["padding_mask"].astype(bool), max_abs=0.15, min_corr=0.999)


def test_trains_with_fit():
    model = build_encoder(SMALL)
    head = keras.layers.Dense(2, name="head")(model.output["pooled_output"])
    classifier = keras.Model(model.input, head)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       jit_compile=True)
    x = random_inputs(16, 8, seed=7)
    y = (x["token_ids"][:, 0] % 2).astype("int32")
    history = classifier.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("training", [False, True])
def test_call_equals_the_declared_functional_graph(policy, training):
    # `BertEncoder.call` runs `rows`; the functional graph it declares (the Keras layers,
    # run by Keras' own Functional model) is the independent reference, every layer's
    # output included. Training with dropout 0 takes the layers' embedding path.
    x = random_inputs(3, 16, lengths=[16, 9, 3], seed=11)
    with dtype_policy(policy):
        model = build_encoder(SMALL.replace(dropout=0.0))
        reference = keras.Model(model.input, model.output)
        got, want = model(x, training=training), reference(x, training=training)
    atol = 3e-6 if policy == "float32" else 3e-2
    assert len(got["encoder_outputs"]) == SMALL.num_layers
    assert_outputs_close(got, want, atol=atol)


def test_rows_at_positions_equal_those_rows_of_the_full_output():
    x = random_inputs(2, 12, lengths=[12, 7], seed=3)
    model = build_encoder(SMALL)
    full = model(x)["sequence_output"].numpy()
    positions = np.array([[0, 5, 5], [3, 1, 0]], np.int32)
    rows = model.rows(x, positions).numpy()
    np.testing.assert_allclose(rows, np.take_along_axis(full, positions[:, :, None], 1),
                               atol=3e-6)
    np.testing.assert_allclose(model.rows(x, 2).numpy(), full[:, :2], atol=3e-6)


def test_model_written_before_the_redesign_loads_and_answers_the_same():
    # tests/fixtures/pre_redesign: a model directory (with pre-training heads), a .keras
    # file and their outputs, written by kbert before the encoder became BertEncoder.
    from kbert.io.model_dir import read_checkpoint
    from kbert.models.encoder import load_model
    from kbert.models.pretrainer import load_pretrainer

    root = os.path.join(FIXTURES, "pre_redesign")
    expected = np.load(os.path.join(root, "expected.npz"))
    x = {k: expected[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    model = load_model(os.path.join(root, "model"))
    out = model(x)
    np.testing.assert_allclose(out["sequence_output"], expected["sequence_output"], atol=2e-6)
    np.testing.assert_allclose(out["pooled_output"], expected["pooled_output"], atol=2e-6)
    pretrainer = load_pretrainer(read_checkpoint(os.path.join(root, "model")))
    logits = pretrainer({**x, "mask_positions": expected["mask_positions"]})
    np.testing.assert_allclose(logits["mlm_logits"], expected["mlm_logits"], atol=2e-5)
    np.testing.assert_allclose(logits["nsp_logits"], expected["nsp_logits"], atol=2e-6)
    # The old .keras file (a plain functional model then) still loads in safe mode.
    restored = keras.saving.load_model(os.path.join(root, "encoder.keras"))
    np.testing.assert_allclose(restored(x)["sequence_output"], expected["sequence_output"],
                               atol=2e-6)
