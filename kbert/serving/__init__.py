"""Serving exported models: a TF Serving client (gRPC and REST) and a local model server.

    PredictionClient, RestClient, format_outputs   kbert.serving.client
    ServingError                                   kbert.serving.errors
    ModelServer                                    kbert.serving.server

Imported on first use (PEP 562): `kbert.serving.cli` (the `kbert serve` parser) stays
light, and a client process never imports tensorflow-text.
"""

import importlib

_LAZY = {
    "PredictionClient": "kbert.serving.client",
    "RestClient": "kbert.serving.client",
    "format_outputs": "kbert.serving.client",
    "ServingError": "kbert.serving.errors",
    "ModelServer": "kbert.serving.server",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kbert.serving' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
