"""The task registry: cards by CLI word (`get_task`) and by `TaskSpec.task` kind
(`task_for_kind`), and `register_task`, the class decorator a new task uses.

kbert's own tasks (classification, tagging, qa) register their cards when their light
packages are imported (`BUILTIN_PACKAGES`, on the first look-up); their implementations
are imported when a task object is asked for, so `import kbert.tasks.registry` and the
`kbert` command line stay free of TensorFlow until a task runs. A task defined elsewhere
(a user's module, a test) registers with `@register_task` and is then fine-tuned,
predicted and exported like the built-in ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from kbert.io.model_dir import register_head_prefix
from kbert.tasks.card import NoOptions, TaskCard
from kbert.tasks.spec import register_kind

# kbert's own task packages: each registers its card when imported.
BUILTIN_PACKAGES = ("kbert.tasks.classification", "kbert.tasks.tagging", "kbert.tasks.qa")

_NAMES: dict[str, tuple[TaskCard, dict[str, Any]]] = {}  # get_task name -> (card, kwargs)
_KINDS: dict[str, TaskCard] = {}  # TaskSpec.task -> card
_builtins_loaded = False


def register_card(card: TaskCard) -> TaskCard:
    """Registers `card`: its command, aliases and kinds become known to `get_task`,
    `TaskSpec`, the model directory (its head prefix), the CLI and the exporter. A name or
    kind that another task holds is a ValueError; registering the same task again (by
    command and implementation name) replaces it."""
    names = {card.command: {}, **{name: dict(kwargs) for name, kwargs in card.aliases.items()}}
    for name in names:
        taken = _NAMES.get(name)
        if taken is not None and not _same_task(taken[0], card):
            raise ValueError(f"task name {name!r} is taken by the {taken[0].command!r} task")
    for kind in card.kinds:
        taken = _KINDS.get(kind)
        if taken is not None and not _same_task(taken, card):
            raise ValueError(f"task kind {kind!r} is taken by the {taken.command!r} task")
    for name, kwargs in names.items():
        _NAMES[name] = (card, kwargs)
    for kind in card.kinds:
        _KINDS[kind] = card
        register_kind(kind)
    register_head_prefix(f"{card.head_name}/")
    return card


def register_task(cls: type) -> type:
    """Class decorator for a `kbert.tasks.base.Task` subclass: makes its card from the
    class attributes `command`, `kinds`, `head_name` and optionally `Options`, `aliases`,
    `default_seq_len`, `help`, registers it (`register_card`) and sets `cls.card`."""
    card = TaskCard(command=getattr(cls, "command", ""), kinds=tuple(getattr(cls, "kinds", ())),
                    head_name=getattr(cls, "head_name", ""), implementation=cls,
                    options=getattr(cls, "Options", NoOptions),
                    aliases=dict(getattr(cls, "aliases", {})),
                    default_seq_len=getattr(cls, "default_seq_len", 128),
                    help=getattr(cls, "help", ""))
    if not card.head_name:
        raise ValueError(f"{cls.__name__}: a task needs a head_name")
    register_card(card)
    cls.card = card
    return cls


def _same_task(a: TaskCard, b: TaskCard) -> bool:
    def name(card):
        impl = card.implementation
        return impl if isinstance(impl, str) else f"{impl.__module__}:{impl.__qualname__}"
    return a.command == b.command and name(a) == name(b)


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)


def task_names() -> tuple[str, ...]:
    """Every `get_task` name (CLI words and aliases)."""
    _load_builtins()
    return tuple(_NAMES)


def task_cards() -> tuple[TaskCard, ...]:
    """The registered cards, each once, in registration order."""
    _load_builtins()
    cards = []
    for card, _ in _NAMES.values():
        if not any(card is seen for seen in cards):
            cards.append(card)
    return tuple(cards)


def kinds() -> tuple[str, ...]:
    """Every registered `TaskSpec.task` kind."""
    _load_builtins()
    return tuple(_KINDS)


def get_task(name: str):
    """A new Task for a CLI word or alias ("classify" / "classification", "regression"
    (classification with regression on), "tag" / "tagging", "qa", or a registered one);
    ValueError for an unknown name."""
    _load_builtins()
    if name not in _NAMES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_NAMES)}")
    card, kwargs = _NAMES[name]
    return card.load()(**kwargs)


def task_for_kind(kind: str):
    """The Task that writes `TaskSpec.task == kind` (e.g. "regression" ->
    ClassificationTask(regression=True)); ValueError for an unknown kind."""
    _load_builtins()
    if kind not in _KINDS:
        raise ValueError(f"unknown task {kind!r}; choose one of {', '.join(_KINDS)}")
    return get_task(kind) if kind in _NAMES else _KINDS[kind].load()()
