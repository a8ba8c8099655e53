"""Task names (CLI words and TaskSpec.task values) -> Task classes.

The task modules are imported only when asked for, so a missing or broken module affects
only its own task (and `import kbert.tasks.registry` stays light).
"""

from __future__ import annotations

import importlib

from kbert.tasks.base import Task

# name -> (module, class, constructor arguments). CLI words and TaskSpec.task values.
_TASKS = {
    "classify": ("kbert.tasks.classification", "ClassificationTask", {}),
    "classification": ("kbert.tasks.classification", "ClassificationTask", {}),
    "regression": ("kbert.tasks.classification", "ClassificationTask", {"regression": True}),
    "tag": ("kbert.tasks.tagging", "TaggingTask", {}),
    "tagging": ("kbert.tasks.tagging", "TaggingTask", {}),
    "qa": ("kbert.tasks.qa", "QATask", {}),
}


def task_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """A new Task for `name` ("classify" / "classification", "regression" (the same
    task, regression by default), "tag" / "tagging", "qa"); ValueError for an unknown
    name or a task module this kbert lacks."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_TASKS)}")
    module_name, class_name, kwargs = _TASKS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ValueError(f"the {name!r} task is not available in this kbert "
                         f"({module_name} is missing)") from None
    return getattr(module, class_name)(**kwargs)
