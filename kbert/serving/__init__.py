"""Serving exported models: a TF Serving client (gRPC and REST) and a local model server.

    PredictionClient, RestClient, format_outputs   kbert.serving.client
    ServingError                                   kbert.serving.errors
    ModelServer                                    kbert.serving.server

Imported on first use (PEP 562): `kbert.cli.serve` (the `kbert serve` parser) stays
light, and a client process never imports tensorflow-text.
"""

from kbert._lazy import lazy_attributes

_LAZY = {
    "PredictionClient": "kbert.serving.client",
    "RestClient": "kbert.serving.client",
    "format_outputs": "kbert.serving.client",
    "ServingError": "kbert.serving.errors",
    "ModelServer": "kbert.serving.server",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes("kbert.serving", _LAZY, globals())
