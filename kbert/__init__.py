"""kbert: BERT (Devlin et al., 2018) for TensorFlow / Keras 3."""

from kbert.config import PRESETS, BertConfig
from kbert.model_dir import load_model, read_checkpoint, save_model
from kbert.models import build_encoder
from kbert.text import Tokenizer

__version__ = "0.1.0"
__all__ = ["BertConfig", "PRESETS", "Tokenizer", "build_encoder", "load_model",
           "read_checkpoint", "save_model"]
