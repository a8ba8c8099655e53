"""The fine-tuning API, as the README shows it: `FinetuneSettings`, `finetune`, `evaluate`,
`predict`, `load_for_inference`.

A stable public name over `kbert.training.finetune`, where the run is implemented; this
module adds nothing of its own (it sits at the top layer, beside the CLI).
"""

from kbert.training.finetune import (FinetuneResult, evaluate, finetune, load_for_inference,
                                     predict)
from kbert.training.settings import FinetuneSettings

__all__ = ["FinetuneResult", "FinetuneSettings", "evaluate", "finetune", "load_for_inference",
           "predict"]
