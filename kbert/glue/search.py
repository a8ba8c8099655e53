"""The runs of a GLUE task: one configuration, or the BERT paper's hyper-parameter grid, each
configuration with one or more seeds (restarts) on the small tasks.

No TensorFlow here.

Grids (Devlin et al. 2018):
    none    the settings given (`--batch-size`, `--learning-rate`, `--epochs`).
    glue    section 4.1: batch size 32, 3 epochs, learning rate among 5e-5, 4e-5, 3e-5,
            2e-5 (4 runs).
    paper   appendix A.3's grid, batch size {16, 32} x learning rate {5e-5, 3e-5, 2e-5}
            x epochs {2, 3, 4}, with section 4.1's 4e-5 added: 2 x 4 x 3 = 24 runs.
Each configuration is a run of its own (its own warm-up and decay over its own number of
epochs), as in the paper; the run kept is the one with the best dev score.

Restarts: the paper ran "several random restarts" on the small data sets, where
fine-tuning BERT-large was sometimes unstable. `restarts` seeds run for each
configuration on tasks with fewer than SMALL_TASK_EXAMPLES training examples (CoLA, MRPC,
STS-B, RTE, WNLI); the large tasks get one seed.
"""

from __future__ import annotations

import dataclasses
import itertools

SEARCHES = ("none", "glue", "paper")
SMALL_TASK_EXAMPLES = 10_000

_GRIDS = {
    "glue": ((32,), (5e-5, 4e-5, 3e-5, 2e-5), (3,)),
    "paper": ((16, 32), (5e-5, 4e-5, 3e-5, 2e-5), (2, 3, 4)),
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One fine-tuning run of a task."""

    batch_size: int
    learning_rate: float
    epochs: int
    seed: int

    @property
    def name(self) -> str:
        """The run's directory name, e.g. "bs32_lr2e-05_ep3_seed0" (the same settings
        always give the same name: how a resumed search finds its finished runs)."""
        return (f"bs{self.batch_size}_lr{self.learning_rate:.0e}_ep{self.epochs}"
                f"_seed{self.seed}")


def run_configs(search: str, base: RunConfig, restarts: int = 1,
                train_examples: int | None = None) -> list[RunConfig]:
    """The runs of one task, in the order they run: the grid in the order above, every
    seed of a configuration before the next configuration.

    Args:
        search: one of SEARCHES.
        base: the settings of "none", and the first seed of every search.
        restarts: seeds per configuration (base.seed, base.seed + 1, ...) on small tasks.
        train_examples: the task's training examples (small: < SMALL_TASK_EXAMPLES).
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; choose one of {SEARCHES}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    small = train_examples is not None and train_examples < SMALL_TASK_EXAMPLES
    seeds = [base.seed + k for k in range(restarts if small else 1)]
    if search == "none":
        grid = [(base.batch_size, base.learning_rate, base.epochs)]
    else:
        grid = list(itertools.product(*_GRIDS[search]))
    return [RunConfig(batch_size, learning_rate, epochs, seed)
            for batch_size, learning_rate, epochs in grid for seed in seeds]
