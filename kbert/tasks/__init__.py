"""Fine-tuning tasks: what a task model is (`TaskSpec`, task.json), its head on the encoder
(`build_task_model`) and how a fine-tuned model directory is saved and loaded.

Task-specific reading, features, decoding and metrics live in one module per task
(classification.py, tagging.py, qa.py, embeddings.py).
"""

from kbert.tasks.base import Task
from kbert.tasks.heads import HEAD_NAMES, build_task_model, head_weights
from kbert.tasks.spec import TASKS, TaskSpec
from kbert.tasks.task_dir import load_task_model, read_task_spec, save_task_model

__all__ = ["HEAD_NAMES", "TASKS", "Task", "TaskSpec", "build_task_model", "head_weights",
           "load_task_model", "read_task_spec", "save_task_model"]
