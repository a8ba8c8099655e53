"""A kbert export inside Beam's RunInference: `SavedModelHandler`, a Beam model handler for
string-in TensorFlow SavedModels.

Beam's own `TFModelHandlerTensor` cannot load them here: it imports tensorflow_hub (which
needs tf_keras and setuptools' pkg_resources), loads with `tf.keras.models.load_model`,
which under Keras 3 reads `.keras` files only, and stacks each batch into one tensor. A
kbert export takes several named string inputs and answers a dict. So this handler is a
`ModelHandler` of its own, keeping Beam's batching (BatchElements inside RunInference),
model sharing between threads and metrics: the model is loaded with `kbert.export.load`
(tf-text ops registered), and a batch of `{input name: str}` elements becomes calls of the
signature, whose outputs are split back into one dict of numpy values per element.

Within a batch the elements are run in sub-batches of `call_batch_size`, sorted by
length: the export computes each call on its longest text (length-adaptive
signatures), so texts of similar length share a call and little is spent on padding.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from kbert.export.inspect import load

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# Elements handed to one inference call; they are sorted by length and run
# `call_batch_size` at a time.
DEFAULT_MAX_BATCH = 256


def split_outputs(outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, Any]]:
    """{name: array [B, ...]} -> B dicts {name: row}. Rows padded to the batch's longest
    (a tagger's words, padded to W) are cut to the row's `num_words`."""
    rows = [{} for _ in range(count)]
    num_words = outputs.get("num_words")
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != count:
            raise ValueError(f"output {name!r} has shape {value.shape}; expected a first "
                             f"(batch) dimension of {count}")
        for i in range(count):
            row = value[i]
            if num_words is not None and name != "num_words" and row.ndim >= 1:
                row = row[:int(num_words[i])]
            rows[i][name] = row
    return rows


def run_signature(model, elements: Sequence[Mapping[str, str]], signature: str,
                  call_batch_size: int) -> list[dict[str, Any]]:
    """Runs `model.signatures[signature]` on `elements` ({input name: str}); returns one
    output dict per element, in order."""
    fn = model.signatures[signature]
    names = sorted(fn.structured_input_signature[1])
    for i, element in enumerate(elements):
        if sorted(element) != names:
            raise ValueError(f"element {i} has inputs {sorted(element)}; the {signature} "
                             f"signature takes {names}")
    order = sorted(range(len(elements)),
                   key=lambda i: sum(len(elements[i][n]) for n in names))
    results: list[dict[str, Any] | None] = [None] * len(elements)
    for start in range(0, len(order), call_batch_size):
        chunk = order[start:start + call_batch_size]
        feeds = {n: tf.constant([elements[i][n] for i in chunk], tf.string) for n in names}
        outputs = {k: v.numpy() for k, v in fn(**feeds).items()}
        for i, row in zip(chunk, split_outputs(outputs, len(chunk))):
            results[i] = row
    return results


class SavedModelHandler(ModelHandler):
    """Beam model handler for a kbert export: examples are `{input name: str}` dicts,
    inferences `{output name: numpy value}` dicts (the signature's outputs for that row).

    Args:
        saved_model: a version directory, or a NAME directory (its latest version); any
            path TensorFlow reads (`gs://` included).
        signature: "serving_default" (the task's answers), "encode" or "tokenize".
        call_batch_size: texts per signature call.
        max_batch_size: elements Beam hands to one inference call (sorted by length and
            cut into calls); min_batch_size and the other keyword arguments as in Beam's
            `ModelHandler` (`large_model`, `model_copies`, ...).
    """

    def __init__(self, saved_model: str, signature: str = "serving_default",
                 call_batch_size: int = DEFAULT_BATCH_SIZE,
                 max_batch_size: int = DEFAULT_MAX_BATCH, min_batch_size: int = 1,
                 **kwargs):
        if call_batch_size < 1:
            raise ValueError(f"call_batch_size must be >= 1, got {call_batch_size}")
        super().__init__(min_batch_size=min_batch_size,
                         max_batch_size=max(max_batch_size, min_batch_size), **kwargs)
        self._model_uri = saved_model
        self._signature = signature
        self._call_batch_size = call_batch_size

    def load_model(self):
        model = load(self._model_uri)
        if self._signature not in model.signatures:
            raise ValueError(f"{self._model_uri} has no signature {self._signature!r}; it "
                             f"has {sorted(model.signatures)}")
        return model

    def run_inference(self, batch: Sequence[Mapping[str, str]], model,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        rows = run_signature(model, batch, self._signature, self._call_batch_size)
        return [PredictionResult(example, row, self._model_uri)
                for example, row in zip(batch, rows)]

    def get_num_bytes(self, batch: Sequence[Mapping[str, str]]) -> int:
        return sum(len(v.encode("utf-8")) for element in batch for v in element.values())

    def get_metrics_namespace(self) -> str:
        return "kbert"


def signature_io(saved_model: str, signature: str = "serving_default"
                 ) -> tuple[tuple[str, ...], dict[str, tf.TensorSpec]]:
    """(input names, {output name: TensorSpec}) of an export's signature, for building a
    pipeline before any worker loads the model."""
    model = load(saved_model)
    if signature not in model.signatures:
        raise ValueError(f"{saved_model} has no signature {signature!r}; it has "
                         f"{sorted(model.signatures)}")
    fn = model.signatures[signature]
    return tuple(sorted(fn.structured_input_signature[1])), dict(fn.structured_outputs)


def resolve_saved_model(path: str) -> str:
    """`path` if it holds saved_model.pb, else its highest numbered version; through TF's
    file systems, so `gs://` exports resolve as local ones do."""
    path = path.rstrip("/")
    if tf.io.gfile.exists(f"{path}/saved_model.pb"):
        return path
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"{path} does not exist")
    numbered = sorted(int(e.rstrip("/")) for e in tf.io.gfile.listdir(path)
                      if e.rstrip("/").isdigit()
                      and tf.io.gfile.exists(f"{path}/{e.rstrip('/')}/saved_model.pb"))
    if not numbered:
        raise FileNotFoundError(f"{path} is neither a SavedModel (no saved_model.pb) nor a "
                                "directory of numbered versions")
    return f"{path}/{numbered[-1]}"
