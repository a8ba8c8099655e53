"""`ExportSettings`: everything one `kbert export` takes, as a frozen dataclass whose fields
are the command's flags (each default and help text written once, here).

No TensorFlow here: the command line builds its flags from these fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from kbert.tasks.spec import DEFAULT_LENGTH_MULTIPLE, check_length_multiple

PRECISIONS = ("float32", "bfloat16")
QUANTIZATIONS = (None, "dynamic", "float16")


def _flag(help: str, default: Any = None, type: Any = None, choices: Sequence | None = None,
          metavar: str | None = None, flag: str | None = None):
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "metavar": metavar, "flag": flag}
    if type is not None:
        metadata["type"] = type
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """How a model directory is exported (`kbert.export.saved_model.export_saved_model`).

    Attributes:
        out_root: the directory TF Serving's model base paths live in (`--out`).
        name: the model name (default: the model directory's base name).
        version: a positive int; default one more than the largest existing version.
        seq_len: T, the longest packed input (default: task.json's, else 128).
        length_multiple: each request batch is computed on its longest packed row
            rounded up to this multiple, at most T (0: every row padded to T, fixed
            shapes). One traced function serves every length. TFLite models always pad to
            T (docs/TFLITE.md).
        kind: "fill-mask" / "embedding" for a pre-trained model directory (default: from
            the directory); fine-tuned models export as their task.
        precision: "float32", or "bfloat16" (the encoder's weights stored and computed in
            bfloat16; outputs stay float32).
        top_k: fill-mask: guesses per [MASK].
        pooling, normalize: embedding: "mean", "cls" or "pooled", and L2 normalisation.
        warmup: write assets.extra/tf_serving_warmup_requests.
        models_config: write / update OUT_ROOT/models.config listing every model there.
        base_path: where the serving container sees OUT_ROOT, for models.config.
        tflite: also write VERSION/model.tflite; quantize: None, "dynamic" or "float16".
    """

    out_root: str = _flag("export root", default="saved_models", metavar="ROOT",
                          flag="--out")
    name: str | None = _flag("model name (default: MODEL_DIR's base name)")
    version: int | None = _flag(
        "version number (default: the next free one; never overwritten)", type=int,
        metavar="N")
    seq_len: int | None = _flag("sequence length (default: task.json's, else 128)", type=int,
                                metavar="T")
    length_multiple: int = _flag(
        "compute each request batch on its longest text, rounded up to a multiple of M "
        "tokens (at most T); 0: pad every text to T", default=DEFAULT_LENGTH_MULTIPLE,
        type=int, metavar="M")
    kind: str | None = _flag(
        "for a pre-trained model directory (default: fill-mask when it has masked-LM "
        "heads, else embedding); fine-tuned models export as their task",
        choices=("fill-mask", "embedding"))
    precision: str = _flag(
        "bfloat16: the encoder's weights are stored and computed in bfloat16 (half the "
        "size), outputs stay float32", default="float32", choices=PRECISIONS)
    top_k: int = _flag("fill-mask: guesses per [MASK]", default=5, type=int)
    pooling: str = _flag("embedding: how token vectors become one vector", default="mean",
                         choices=("mean", "cls", "pooled"))
    normalize: bool = _flag("embedding: L2-normalise the vectors (sentence-transformers "
                            "style)", default=False, type=bool)
    base_path: str = _flag("where the serving container sees ROOT, for models.config",
                           default="/models")
    tflite: bool = _flag("also write VERSION/model.tflite (strings in, tokenizer inside; "
                         "run it with kbert.serving.tflite_runtime.TFLiteModel)",
                         default=False, type=bool)
    quantize: str | None = _flag("with --tflite: dynamic-range int8 or float16 weights",
                                 choices=("dynamic", "float16"))
    warmup: bool = True
    models_config: bool = True

    def __post_init__(self):
        check_length_multiple(self.length_multiple)

    def graph_options(self) -> dict[str, Any]:
        """The options `kbert.export.graph.build_serving_graph` takes."""
        return {"kind": self.kind, "seq_len": self.seq_len, "precision": self.precision,
                "top_k": self.top_k, "pooling": self.pooling, "normalize": self.normalize,
                "length_multiple": self.length_multiple}
