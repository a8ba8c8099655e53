"""What kbert knows about a task before importing it: its `TaskCard` and its options.

Light on purpose (dataclasses only): the command line builds `kbert finetune TASK` and its
flags from the registered cards without importing TensorFlow; the task's implementation
(a `kbert.tasks.base.Task` subclass) is imported when a task object is needed.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping, Sequence


def option(help: str, type: Any = str, choices: Sequence | None = None, read: bool = False,
           default: Any = None):
    """A field of a task's `Options` dataclass: one `kbert finetune TASK --flag` and one
    key of the options dict that `Task.read` / `Task.make_spec` receive.

    Args:
        help: the flag's help text.
        type: str, int, float or bool (a bool is a flag without a value).
        choices: the allowed values, if a closed set.
        read: a reading option (column names, file format): saved in task.json's
            `read_options`, so `kbert evaluate` reads other files the same way.
        default: the value when the flag is not given (None: the task decides, e.g. from
            T or the training data).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "type": type, "choices": tuple(choices) if choices else None,
        "read": read})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A task without options."""


@dataclasses.dataclass(frozen=True)
class TaskCard:
    """A task as the registry, the CLI and the exporter see it.

    Attributes:
        command: the CLI word (`kbert finetune classify|tag|qa`) and `get_task` name.
        kinds: the `TaskSpec.task` values (task.json, export kinds) the task writes.
        head_name: the output layer's name, and so the weight-key prefix of its tensors
            in a model directory ("classifier", "tagger", "qa_outputs": Hugging Face's
            BertFor* names).
        implementation: the `Task` subclass, or "module:Class" (imported on first use).
        options: a frozen dataclass of `option(...)` fields (the task's flags).
        aliases: other `get_task` names -> constructor keyword arguments (e.g.
            "regression" -> {"regression": True}).
        default_seq_len: T when the user gives none (the paper: 128; SQuAD: 384).
        help: one line for `kbert finetune --help`.
    """

    command: str
    kinds: tuple[str, ...]
    head_name: str
    implementation: Any
    options: type = NoOptions
    aliases: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    default_seq_len: int = 128
    help: str = ""

    def __post_init__(self):
        if not self.command or not self.kinds:
            raise ValueError(f"a task card needs a command and kinds, got {self!r}")
        if not dataclasses.is_dataclass(self.options):
            raise ValueError(f"{self.command}: options must be a dataclass, got "
                             f"{self.options!r}")

    def load(self) -> type:
        """The Task subclass (importing its module when given as "module:Class")."""
        if not isinstance(self.implementation, str):
            return self.implementation
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)
