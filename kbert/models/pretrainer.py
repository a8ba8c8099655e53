"""The BERT pre-training model: encoder + masked-LM head + next-sentence head.

`build_pretrainer(encoder, config)` returns a `BertPretrainer`, a functional Keras model
whose only addition is the loss of the paper (so plain `model.fit` trains it):

    loss = sum(mlm_xent * mask_weights) / sum(mask_weights) + mean(nsp_xent)

and metrics logged under the names `masked_lm_loss`, `masked_lm_accuracy`,
`next_sentence_loss`, `next_sentence_accuracy`. The heads' variable paths
(`mlm_head/...`, `nsp_head/...`) are the head keys of the kbert model directory, so head
weights converted from Hugging Face / TF1 checkpoints load by name.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kbert.config import BertConfig
from kbert.io.model_dir import HEAD_PREFIXES, assign_encoder_weights
from kbert.layers import MaskedLMHead, get_activation
from kbert.models.encoder import BertEncoder, build_encoder


def _masked_lm_xent(mask_ids, logits):
    """Per-prediction softmax cross-entropy over V and whether the label has the top logit.

    Same values as `sparse_categorical_crossentropy(from_logits=True)` and
    `argmax(logits) == label`, cheaper on CPU (docs/PERF_LAYERS.md): the softmax is
    computed once and reused by the gradient, the one-hot is an N-element scatter, and the
    accuracy reuses the row maximum. (A label tied with another top logit counts as correct.)
    Returns float32 [N] xent and bool [N] correct for int [N] ids and float32 [N, V] logits.
    """
    idx = tf.stack([tf.range(tf.shape(mask_ids)[0]), tf.cast(mask_ids, tf.int32)], -1)
    row_max = tf.stop_gradient(tf.reduce_max(logits, -1, keepdims=True))
    label_logit = tf.gather_nd(logits, idx)
    correct = label_logit >= row_max[:, 0]

    @tf.custom_gradient
    def xent(logits):
        exp = tf.exp(logits - row_max)
        total = tf.reduce_sum(exp, -1, keepdims=True)
        value = (row_max + tf.math.log(total))[:, 0] - tf.gather_nd(logits, idx)

        def grad(upstream):  # softmax * g - one_hot(label) * g
            return tf.tensor_scatter_nd_sub(exp * (upstream[:, None] / total), idx, upstream)
        return value, grad

    return xent(logits), correct


@keras.saving.register_keras_serializable(package="kbert")
class BertPretrainer(keras.Model):
    """Functional model (inputs: encoder inputs + `mask_positions`; outputs: `mlm_logits`
    float32 [B, P, V], `nsp_logits` float32 [B, 2]) with BERT's pre-training loss.

    Targets (as `kbert.data.pretraining.pretraining_dataset` yields them):
    y = {"mlm_logits": mask_ids int32 [B, P], "nsp_logits": next_sentence_labels int32 [B]},
    sample_weight = {"mlm_logits": mask_weights float32 [B, P], ...}.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masked_lm_loss = keras.metrics.Mean(name="masked_lm_loss")
        self.masked_lm_accuracy = keras.metrics.Mean(name="masked_lm_accuracy")
        self.next_sentence_loss = keras.metrics.Mean(name="next_sentence_loss")
        self.next_sentence_accuracy = keras.metrics.Mean(name="next_sentence_accuracy")

    def call(self, inputs, training=None):
        """The functional graph's function, with the last Transformer block run only where
        the heads read it: [CLS] (NSP) and the masked positions (MLM), P + 1 rows instead
        of T (`BertEncoder.rows`). Same layers, variables, outputs and gradients."""
        if getattr(self, "encoder", None) is None:
            raise ValueError("a BertPretrainer is made by kbert.models.pretrainer."
                             "build_pretrainer (it needs its encoder and heads)")
        mask_positions = tf.cast(inputs["mask_positions"], tf.int32)
        cls = tf.zeros(tf.stack([tf.shape(mask_positions)[0], 1]), tf.int32)
        rows = self.encoder.rows(inputs, tf.concat([cls, mask_positions], axis=1),
                                 training=training)  # [B, 1 + P, H]
        mlm = self.mlm_head(rows[:, 1:])  # already at the masked positions
        nsp = self.nsp_head(self.encoder.pooler(rows[:, 0, :]))
        return {"mlm_logits": self.mlm_output(mlm), "nsp_logits": self.nsp_output(nsp)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mlm_logits = ops.cast(y_pred["mlm_logits"], "float32")
        nsp_logits = ops.cast(y_pred["nsp_logits"], "float32")
        mask_ids, labels = y["mlm_logits"], y["nsp_logits"]
        weights = (ops.cast(sample_weight["mlm_logits"], "float32")
                   if sample_weight is not None and "mlm_logits" in sample_weight
                   else ops.ones_like(ops.cast(mask_ids, "float32")))
        vocabulary = tf.shape(mlm_logits)[-1]
        mlm_xent, mlm_correct = _masked_lm_xent(tf.reshape(mask_ids, [-1]),
                                                tf.reshape(mlm_logits, [-1, vocabulary]))
        mlm_xent = tf.reshape(mlm_xent, tf.shape(mask_ids))
        mlm_correct = tf.cast(tf.reshape(mlm_correct, tf.shape(mask_ids)), "float32")
        # Weighted mean over real predictions only (padding slots have weight 0), as the
        # original; guarded so an all-padding batch gives 0 rather than NaN.
        denominator = ops.maximum(ops.sum(weights), 1e-5)
        mlm_loss = ops.sum(mlm_xent * weights) / denominator
        nsp_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
            labels, nsp_logits, from_logits=True))
        nsp_correct = ops.cast(ops.equal(ops.argmax(nsp_logits, axis=-1),
                                         ops.cast(labels, "int32")), "float32")
        self.masked_lm_loss.update_state(mlm_loss)
        self.masked_lm_accuracy.update_state(ops.sum(mlm_correct * weights) / denominator)
        self.next_sentence_loss.update_state(nsp_loss)
        self.next_sentence_accuracy.update_state(ops.mean(nsp_correct))
        total = mlm_loss + nsp_loss
        # Keras' own losses (e.g. weight regularisers) still count.
        if self.losses:
            total = total + ops.sum(self.losses)
        # Like Keras' compiled losses: each replica returns its share, the gradients are
        # summed across replicas (train_step undoes this for the logged `loss`).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    @property
    def metrics(self):
        own = [self.masked_lm_loss, self.masked_lm_accuracy, self.next_sentence_loss,
               self.next_sentence_accuracy]
        tracker = getattr(self, "_loss_tracker", None)  # created by compile()
        return [tracker, *own] if tracker is not None else own


def build_pretrainer(encoder: BertEncoder, config: BertConfig) -> BertPretrainer:
    """Adds BERT's pre-training heads to `encoder` (shares its layers and variables).

    Masked LM: gather `sequence_output` at `mask_positions` (int32 [B, P]), dense H->H with
    the encoder's activation, LayerNorm, then the token embedding matrix transposed (tied
    weights) plus an output bias. Next sentence: dense H->2 on `pooled_output`. Both
    logits are float32, also under mixed precision, so the softmax over V stays accurate.
    """
    init = keras.initializers.TruncatedNormal(stddev=config.initializer_range)
    mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    inputs = dict(encoder.input)
    inputs["mask_positions"] = mask_positions
    outputs = encoder.output
    mlm_head = MaskedLMHead(
        token_embedding=encoder.token_embedding,
        activation=get_activation(config.activation),
        layer_norm_epsilon=config.layer_norm_epsilon, kernel_initializer=init,
        name="mlm_head")
    nsp_head = keras.layers.Dense(2, kernel_initializer=init, name="nsp_head")
    # Float32 logits under any policy.
    mlm_output = keras.layers.Activation("linear", dtype="float32", name="mlm_logits")
    nsp_output = keras.layers.Activation("linear", dtype="float32", name="nsp_logits")
    model = BertPretrainer(
        inputs=inputs,
        outputs={"mlm_logits": mlm_output(mlm_head(outputs["sequence_output"],
                                                   mask_positions=mask_positions)),
                 "nsp_logits": nsp_output(nsp_head(outputs["pooled_output"]))},
        name="bert_pretrainer")
    # What `call` runs (the same layer objects as the graph's, so nothing new to save).
    model.encoder = encoder
    model.mlm_head, model.nsp_head = mlm_head, nsp_head
    model.mlm_output, model.nsp_output = mlm_output, nsp_output
    return model


def head_weights(model: keras.Model) -> dict:
    """The pre-training heads' variables as {path: float32 array} (model-directory keys)."""
    return {v.path: np.asarray(v.numpy(), np.float32) for v in model.weights
            if v.path.startswith(HEAD_PREFIXES)}


def assign_weights(encoder: keras.Model, model: BertPretrainer, weights, source: str) -> None:
    """Loads model-directory weights: every encoder tensor (strictly, see
    `kbert.io.model_dir.assign_encoder_weights`) and the head tensors that are present; heads
    missing from `weights` (an encoder-only conversion) keep their fresh initialisation."""
    assign_encoder_weights(encoder, weights, source=source)
    for variable in model.weights:
        if variable.path.startswith(HEAD_PREFIXES) and variable.path in weights:
            variable.assign(np.asarray(weights[variable.path], np.float32))


def load_pretrainer(checkpoint, source: str = "checkpoint") -> BertPretrainer:
    """A pretrainer holding a `kbert.io.model_dir.Checkpoint`'s encoder and head weights
    (check `checkpoint.has_pretraining_heads` where trained heads are required)."""
    encoder = build_encoder(checkpoint.config)
    model = build_pretrainer(encoder, checkpoint.config)
    assign_weights(encoder, model, checkpoint.weights, source)
    return model
