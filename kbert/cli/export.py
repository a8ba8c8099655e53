"""`kbert export` and `kbert inspect`: parsers and handlers (added by kbert.cli)."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.export.saved_model import export_saved_model

    try:
        out = export_saved_model(
            args.model_dir, out_root=args.out, name=args.name, version=args.version,
            seq_len=args.seq_len, kind=args.kind, precision=args.precision, top_k=args.top_k,
            pooling=args.pooling, normalize=args.normalize,
            base_path=args.base_path, tflite=args.tflite, quantize=args.quantize)
    except NotImplementedError as error:  # a task kind without a serving graph yet
        raise ValueError(str(error)) from None
    print(f"exported {out}; TF Serving config: {args.out}/models.config")


def _inspect(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.export.inspect import MissingOpError, format_inspection, inspect_saved_model, load

    print(format_inspection(inspect_saved_model(args.path)))
    if args.load:
        try:
            loaded = load(args.path)
        except MissingOpError as error:
            raise ValueError(str(error)) from None
        print(f"loaded: signatures {sorted(loaded.signatures)}")


def add_parsers(commands) -> None:
    """Adds `export` and `inspect` to kbert's sub-command parsers."""
    p = commands.add_parser(
        "export", help="export a model directory as a string-in SavedModel for TF Serving",
        description="Writes OUT/NAME/VERSION (TF Serving's layout; the version appears "
                    "atomically) with signatures serving_default (strings in, results out), "
                    "tokenize and encode, a warm-up file, and updates OUT/models.config.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--name", help="model name (default: MODEL_DIR's base name)")
    p.add_argument("--out", default="saved_models", metavar="ROOT",
                   help="export root (default: saved_models)")
    p.add_argument("--version", type=int, metavar="N",
                   help="version number (default: the next free one; never overwritten)")
    p.add_argument("--seq-len", type=int, metavar="T",
                   help="sequence length (default: task.json's, else 128)")
    p.add_argument("--kind", choices=("fill-mask", "embedding"),
                   help="for a pre-trained model directory (default: fill-mask when it has "
                        "masked-LM heads, else embedding); fine-tuned models export as "
                        "their task")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: the encoder's weights are stored and computed in bfloat16 "
                        "(half the size), outputs stay float32")
    p.add_argument("--top-k", type=int, default=5, help="fill-mask: guesses per [MASK]")
    p.add_argument("--pooling", choices=("mean", "cls", "pooled"), default="mean",
                   help="embedding: how token vectors become one vector (default: mean)")
    p.add_argument("--normalize", action="store_true",
                   help="embedding: L2-normalise the vectors (sentence-transformers style)")
    p.add_argument("--base-path", default="/models",
                   help="where the serving container sees ROOT, for models.config "
                        "(default: /models)")
    p.add_argument("--tflite", action="store_true",
                   help="also write VERSION/model.tflite (strings in, tokenizer inside; "
                        "run it with kbert.serving.tflite_runtime.TFLiteModel)")
    p.add_argument("--quantize", choices=("dynamic", "float16"),
                   help="with --tflite: dynamic-range int8 or float16 weights")
    p.set_defaults(run=_export)

    p = commands.add_parser(
        "inspect", help="signatures and custom ops of an exported SavedModel",
        description="Shows a SavedModel's signatures (inputs, outputs, dtypes, shapes), "
                    "the ops outside core TensorFlow in its graph, and its variable bytes. "
                    "PATH is a version directory or a model directory (latest version).")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--load", action="store_true",
                   help="also load it as kbert.export.load does (checks the ops resolve)")
    p.set_defaults(run=_inspect)
