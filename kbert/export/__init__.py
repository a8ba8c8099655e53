"""Export: kbert model directories as string-in SavedModels for TF Serving.

    export_saved_model(model_dir, out_root="saved_models", name=None, version=None,
                       seq_len=None, kind=None, precision="float32", ...) -> path
    load(path)                  tf.saved_model.load after registering the tf-text ops
    inspect_saved_model(path)   signatures, custom ops, variable bytes
    custom_ops(path)            op types outside core TF

`kbert.export.inspect` is light (TensorFlow only); the exporter is imported on first use.
"""

from kbert.export.inspect import EXPECTED_CUSTOM_OPS, MissingOpError, custom_ops, inspect_saved_model, load
from kbert.export.layout import version_dir


def export_saved_model(*args, **kwargs) -> str:
    # lazy: the exporter imports tensorflow-text, Keras and every task; `kbert.export.load`
    # and `inspect` must work in a process without them.
    from kbert.export.saved_model import export_saved_model as export

    return export(*args, **kwargs)


export_saved_model.__doc__ = "See `kbert.export.saved_model.export_saved_model`."

__all__ = ["EXPECTED_CUSTOM_OPS", "MissingOpError", "custom_ops", "export_saved_model",
           "inspect_saved_model", "load", "version_dir"]
