"""`GlueSettings`: one `kbert glue` job, as a frozen dataclass whose fields are its flags.

No TensorFlow here: the command line builds its flags from these fields.
"""

from __future__ import annotations

import dataclasses

from kbert.glue.search import SEARCHES
from kbert.training.settings import TRAINING_PRECISIONS, setting


@dataclasses.dataclass(frozen=True)
class GlueSettings:
    """A GLUE job (field names are the `kbert glue` flags). `out` is resumable: the same
    command again skips every finished run."""

    data: str = setting("the GLUE directory (the official download script's layout)",
                        metavar="GLUE_DIR")
    model: str = setting("model directory or hf:ORG/NAME to fine-tune", metavar="MODEL")
    out: str = setting("the job directory (runs, results, leaderboard zip)", metavar="DIR")
    tasks: str | None = setting("comma-separated tasks (cola, sst2, mrpc, stsb, qqp, mnli, "
                                "qnli, rte, wnli; default all nine)", default=None)
    search: str = setting("none: one run per task with the settings below; glue: the "
                          "paper's section 4.1 (4 learning rates); paper: its appendix "
                          "grid (24 runs)", default="none", choices=SEARCHES)
    restarts: int = setting("seeds per configuration on the small tasks (< 10k training "
                            "examples)", default=1)
    max_runs: int | None = setting("start at most N new runs, then report", default=None,
                                   metavar="N", type=int)
    time_budget: float | None = setting("start no new run after this many hours",
                                        default=None, metavar="HOURS", type=float)
    seq_len: int = setting("T, the packed sequence length", default=128)
    batch_size: int = setting("batch size (search none)", default=32)
    learning_rate: float = setting("peak learning rate (search none)", default=2e-5)
    epochs: int = setting("epochs (search none)", default=3)
    seed: int = setting("the first seed of every configuration", default=0)
    precision: str = setting("compute precision", default="float32",
                             choices=TRAINING_PRECISIONS)
    predict_batch_size: int = setting("batch size of dev and test prediction", default=64)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
