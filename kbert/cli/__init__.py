"""`kbert <command>`: the command-line front end, one module per command group.

    app        the parser and error handling; `main` (the `kbert` entry point)
    tools      convert, cache, vocab
    pretrain   pretrain, fill-mask
    finetune   finetune, evaluate, predict, embed
    export     export, inspect
    serve      serve
    stderr_filter  TensorFlow's C++ start-up notices kept off the `kbert` program's stderr

The CLI is the top layer: it may import any kbert module, and nothing imports it (scripts
may use `stderr_filter.install`).
"""

from kbert.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
