import os

import keras
import numpy as np

import kbert
from kbert.convert import read_any
from kbert.io.model_dir import HEAD_PREFIXES
from kbert.models.pretrainer import build_pretrainer, load_pretrainer
from helpers.checks import check_eager_equals_graph, dtype_policy
from helpers.tiny import tiny_config

# No dropout: fit's last-epoch accuracy (measured with training on) must be exactly 1.
TINY = tiny_config(dropout=0.0)


def load_fixture_pretrainer(fixtures_dir):
    return load_pretrainer(read_any(os.path.join(fixtures_dir, "hf_tiny_pretraining")))


def test_head_weights_reproduce_reference_logits(fixtures_dir, reference):
    """Converted cls.* heads give Hugging Face BertForPreTraining's logits."""
    model = load_fixture_pretrainer(fixtures_dir)
    x = {k: reference[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    x["mask_positions"] = np.tile(np.arange(12, dtype="int32"), (3, 1))
    out = model(x)
    real = reference["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(out["mlm_logits"])[real],
                               reference["mlm_logits"][real], atol=1e-4)
    np.testing.assert_allclose(out["nsp_logits"], reference["nsp_logits"], atol=1e-5)
    assert sorted(v.path for v in model.weights if v.path.startswith(HEAD_PREFIXES)) == sorted(
        kbert.io.model_dir.MLM_HEAD_KEYS + kbert.io.model_dir.NSP_HEAD_KEYS)


def test_output_projection_is_tied_to_the_token_embedding():
    model = build_pretrainer(kbert.build_encoder(TINY), TINY)
    names = [v.path for v in model.trainable_weights]
    assert names.count("token_embedding/embeddings") == 1
    assert not any("output_kernel" in n for n in names)


def batch(seed=0, b=4, t=10, p=3):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, 50, (b, t)).astype("int32"),
         "segment_ids": np.zeros((b, t), "int32"), "padding_mask": np.ones((b, t), "int32"),
         "mask_positions": np.stack([np.sort(rng.choice(np.arange(1, t), p, replace=False))
                                     for _ in range(b)]).astype("int32")}
    y = {"mlm_logits": rng.integers(5, 50, (b, p)).astype("int32"),
         "nsp_logits": rng.integers(0, 2, b).astype("int32")}
    w = {"mlm_logits": np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], "float32"),
         "nsp_logits": np.ones(b, "float32")}
    return x, y, w


def test_call_equals_the_full_encoder_graph_in_values_and_gradients():
    # BertPretrainer.call runs the last block at [CLS] and the masked positions only; the
    # same layers through the full encoder give the same logits and the same gradients.
    import tensorflow as tf

    config = TINY.replace(num_layers=2)  # a block before the shortened last one
    encoder = kbert.build_encoder(config)
    model = build_pretrainer(encoder, config)
    rng = np.random.default_rng(3)
    for v in model.trainable_weights:  # heads away from their zero / one initialisation
        v.assign(v + rng.normal(0, 0.05, v.shape).astype("float32"))
    x, y, _ = batch(seed=2)
    x["padding_mask"][1, 7:] = 0  # padded keys must stay masked in the shortened block
    x["mask_positions"][1, 2] = 0  # a padding slot of mask_positions points at [CLS]

    def full(inputs):
        out = encoder({k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")})
        return {"mlm_logits": model.mlm_head(
                    out["sequence_output"], mask_positions=inputs["mask_positions"]),
                "nsp_logits": model.nsp_head(out["pooled_output"])}

    def logits_and_gradients(forward):
        def run(inputs):
            with tf.GradientTape() as tape:
                out = forward(inputs)
                loss = (tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                            y["mlm_logits"], out["mlm_logits"]))
                        + tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                            y["nsp_logits"], out["nsp_logits"])))
            gradients = tape.gradient(loss, model.trainable_weights)
            return {**out, "gradients": {v.path: tf.convert_to_tensor(g)
                                         for v, g in zip(model.trainable_weights, gradients)}}
        return run

    want = logits_and_gradients(full)(x)
    assert want["mlm_logits"].dtype == want["nsp_logits"].dtype == tf.float32
    # Eager and traced (the tape inside the graph, as in a training step); equal dtypes too.
    check_eager_equals_graph(logits_and_gradients(model), x, want=want, atol=2e-5)


def _xent(logits, labels):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, labels[..., None], -1)[..., 0]


def test_loss_is_the_weighted_mean_of_bert():
    model = build_pretrainer(kbert.build_encoder(TINY), TINY)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y, w = batch()
    out = model(x)
    mlm = _xent(np.asarray(out["mlm_logits"]), y["mlm_logits"])
    nsp = _xent(np.asarray(out["nsp_logits"]), y["nsp_logits"])
    want_mlm = (mlm * w["mlm_logits"]).sum() / w["mlm_logits"].sum()
    result = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert sorted(result) == ["loss", "masked_lm_accuracy", "masked_lm_loss",
                              "next_sentence_accuracy", "next_sentence_loss"]
    np.testing.assert_allclose(result["masked_lm_loss"], want_mlm, rtol=1e-5)
    np.testing.assert_allclose(result["next_sentence_loss"], nsp.mean(), rtol=1e-5)
    np.testing.assert_allclose(result["loss"], want_mlm + nsp.mean(), rtol=1e-5)
    correct = np.argmax(np.asarray(out["mlm_logits"]), -1) == y["mlm_logits"]
    np.testing.assert_allclose(result["masked_lm_accuracy"],
                               (correct * w["mlm_logits"]).sum() / w["mlm_logits"].sum(), atol=1e-6)


def test_fit_learns_and_logits_stay_float32_under_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        model = build_pretrainer(kbert.build_encoder(TINY), TINY)
        # 1e-2: at H = 128 a step of 2e-2 overshoots and the loss stalls near 3.
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        x, y, w = batch(seed=1)
        assert model(x)["mlm_logits"].dtype == "float32"
        history = model.fit(x, y, sample_weight=w, epochs=60, verbose=0).history
    assert history["masked_lm_loss"][-1] < 0.1 * history["masked_lm_loss"][0]
    assert history["masked_lm_accuracy"][-1] == 1.0
