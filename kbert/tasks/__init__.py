"""Fine-tuning tasks: the `Task` protocol (`base`) and its registry (`registry`), what a
task model is (`TaskSpec`, task.json: `spec`), its head on the encoder (`heads`) and how a
fine-tuned model directory is saved and loaded (`task_dir`).

Each task is one subpackage that registers its card when imported: classification/,
tagging/, qa/ (the package `__init__` is the card and options, `task.py` the Task).
Fill-mask and embeddings (fill_mask.py, embeddings.py) are the serving graphs of models
that are not fine-tuned.

The names below are imported on first use (PEP 562), so that `kbert.tasks.registry` and
the task cards load without TensorFlow (the command line builds its flags from them).
"""

from kbert._lazy import lazy_attributes

_LAZY = {
    "TASKS": "kbert.tasks.spec",
    "TaskSpec": "kbert.tasks.spec",
    "Task": "kbert.tasks.base",
    "build_task_model": "kbert.tasks.heads",
    "head_weights": "kbert.tasks.heads",
    "load_task_model": "kbert.tasks.task_dir",
    "read_task_spec": "kbert.tasks.task_dir",
    "save_task_model": "kbert.tasks.task_dir",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes("kbert.tasks", _LAZY, globals())
