"""Lazy package attributes: `import kbert` (or `kbert.serving`) stays light; a public name
imports its module on first use (so tensorflow_text is not loaded before it is needed)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, table: dict[str, str], namespace: dict):
    """Returns (`__getattr__`, `__dir__`) for a package whose public names are `table`
    (name -> module); a resolved name is cached in `namespace` (the package's globals)."""

    def __getattr__(name):
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(namespace) + list(table))

    return __getattr__, __dir__
