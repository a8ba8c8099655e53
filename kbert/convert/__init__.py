"""Checkpoint conversion: Hugging Face and original TF1 BERT checkpoints to kbert model
directories, and kbert model directories to the Hugging Face layout (`kbert convert`).

    convert(src, out, to="kbert")   kbert.convert.formats
    detect_format(path), read_any(path)

Modules: `formats` (layout detection and the command), `hf`, `tf1`, `keras_hub` (one
reader / writer each), `names` and `mapping` (the variable-name tables they share),
`references` (hf:ORG/NAME[@REV], kaggle:// handles and directories resolved to kbert model
directories through the kbert cache).
"""

from kbert.convert.formats import FORMATS, convert, detect_format, read_any

__all__ = ["FORMATS", "convert", "detect_format", "read_any"]
