"""kbert: BERT (Devlin et al., 2018) for TensorFlow / Keras 3.

The names below are imported on first use (PEP 562), so `import kbert.<module>` stays
light: importing the tokenizer or the encoder pulls in tensorflow-text (keras-hub imports
it too), and code that must run without it, such as a serving client or
`kbert.export.load`'s check for missing tf-text ops, would otherwise load it by accident.
"""

from kbert._lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "BertConfig": "kbert.config",
    "PRESETS": "kbert.config",
    "Tokenizer": "kbert.text",
    "build_encoder": "kbert.models.encoder",
    "load_model": "kbert.models.encoder",
    "read_checkpoint": "kbert.io.model_dir",
    "save_model": "kbert.io.model_dir",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes("kbert", _LAZY, globals())
