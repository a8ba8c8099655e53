"""Serving exported models: a TF Serving client (gRPC and REST) and a local model server."""

from kbert.serving.client import PredictionClient, RestClient, format_outputs
from kbert.serving.errors import ServingError

__all__ = ["PredictionClient", "RestClient", "ServingError", "format_outputs"]
