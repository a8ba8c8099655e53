"""Command-line flags made from dataclass fields, so a default or a help text is written
once, beside the field (`FinetuneSettings`, a task's `Options`)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from typing import Any, Iterable

# Python type names as they appear in annotations (under `from __future__ import
# annotations` they are strings), for fields whose metadata gives no type.
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def command(commands, name: str, run, help: str) -> argparse.ArgumentParser:
    """Adds sub-command `name` to `commands`: `help` is its line in `kbert --help`, the
    docstring of `run` (the handler, called with the parsed arguments) its description."""
    parser = commands.add_parser(name, help=help,
                                 description=inspect.cleandoc(run.__doc__ or help))
    parser.set_defaults(run=run)
    return parser


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def field_type(field: dataclasses.Field) -> type:
    """A field's value type: metadata "type", else the first name in its annotation."""
    given = field.metadata.get("type")
    if given is not None:
        return given
    annotation = field.type if isinstance(field.type, str) else getattr(
        field.type, "__name__", "str")
    if field.metadata.get("nargs"):  # "tuple[str, ...]": the type of each value
        annotation = annotation.partition("[")[2] or "str"
    return _TYPES.get(annotation.split("|")[0].split(",")[0].strip(), str)


def add_field_flags(parser, cls, skip: Iterable[str] = (), given_only: bool = False) -> None:
    """Adds one flag per field of dataclass `cls` that has a "help" in its metadata (also:
    "choices", "metavar", "type", "flag" for a flag name other than `--field-name`).

    A bool field is a flag without a value. A field without a default is a required flag.
    With `given_only`, every flag defaults to None (False for a bool) so that the caller
    sees which were given and the dataclass supplies the rest (`given_values`);
    otherwise the flag's default is the field's, shown in the help.
    """
    for field in dataclasses.fields(cls):
        if field.name in skip or "help" not in field.metadata:
            continue
        kind = field_type(field)
        help_text = field.metadata["help"]
        has_default = field.default is not dataclasses.MISSING
        flag = field.metadata.get("flag") or flag_name(field.name)
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"type": kind, "help": help_text, "dest": field.name}
        if field.metadata.get("choices"):
            kwargs["choices"] = field.metadata["choices"]
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if field.metadata.get("nargs"):
            kwargs["nargs"] = field.metadata["nargs"]
        if not has_default:
            kwargs["required"] = True
        elif not given_only:
            kwargs["default"] = field.default
            if field.default is not None and "default" not in help_text:
                kwargs["help"] = f"{help_text} (default {field.default})"
        elif field.default is not None and "default" not in help_text:
            kwargs["help"] = f"{help_text} (default {field.default})"
        parser.add_argument(flag, **kwargs)


def given_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among `names` that were given (not None, not a False bool flag)."""
    values = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            values[name] = value
    return values


def key_values(items: Iterable[str], flag: str = "--option") -> dict[str, Any]:
    """`KEY=VALUE` strings as a dict (VALUE read as JSON when it parses; KEY's '-' as
    '_'); ValueError naming the item for anything else."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        values[key.strip().replace("-", "_")] = parsed
    return values
