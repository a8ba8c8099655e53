"""Keras models built from `kbert.layers`: the BERT encoder (`encoder`) and the
pre-training model with its masked-LM and next-sentence heads (`pretrainer`).

The task models (an encoder plus one output layer) are built by `kbert.tasks`.
"""

from kbert.models.encoder import (ENCODER_NAME, INPUT_NAMES, BertEncoder, build_encoder,
                                  encoder_inputs, load_model)

__all__ = ["ENCODER_NAME", "INPUT_NAMES", "BertEncoder", "build_encoder", "encoder_inputs",
           "load_model"]
