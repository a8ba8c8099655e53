"""Gathering a whole checkpoint through the name table, with errors that name tensors."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from kbert.config import BertConfig
from kbert.convert import names  # the module, not the package API

_MAX_LISTED = 12


class CheckpointMismatchError(ValueError):
    """A checkpoint lacks tensors, has unexpected ones, or has a shape that does not fit."""


def _raise(source: str, problems: list[str]) -> None:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
    raise CheckpointMismatchError(f"{source}: {len(problems)} problem(s):\n  {text}")


def gather(shapes: Mapping[str, tuple[int, ...]], load: Callable[[str], np.ndarray],
           config: BertConfig, source_name: Callable[[names.Entry], str], out_in: bool,
           source: str, ignore: Callable[[str], bool] = lambda name: False
           ) -> dict[str, np.ndarray]:
    """Reads every encoder tensor (and the pre-training heads when present) into kbert keys.

    Args:
        shapes: source tensor name -> shape, for every tensor in the source.
        load: source name -> numpy array.
        source_name: the source's name for a table entry.
        out_in: whether the source stores dense kernels [out, in] (PyTorch layout).
        source: a path used in error messages.
        ignore: names that are neither kbert weights nor errors (optimizer slots, tied
            copies, buffers).

    Raises:
        CheckpointMismatchError naming every missing, unexpected or misshapen tensor with
        both shapes; nothing is returned partially.
    """
    problems: list[str] = []
    heads = names.head_entries()
    head_names = [source_name(e) for e in heads]
    present_heads = [n for n in head_names if n in shapes]
    if present_heads and len(present_heads) != len(heads):
        missing = [n for n in head_names if n not in shapes]
        problems.append(f"pre-training heads are incomplete: missing {', '.join(missing)}")
    entries = names.encoder_entries(config) + (heads if present_heads else [])

    weights: dict[str, np.ndarray] = {}
    used = set()
    for entry in entries:
        name = source_name(entry)
        expected = names.expected_source_shape(entry, config, out_in)
        if name not in shapes:
            if entry in heads and present_heads and len(present_heads) != len(heads):
                continue  # already reported as incomplete heads
            problems.append(f"missing tensor {name!r} (expected shape {expected})")
            continue
        used.add(name)
        if tuple(shapes[name]) != expected:
            problems.append(f"tensor {name!r} has shape {tuple(shapes[name])}, "
                            f"expected {expected} from the config")
            continue
        array = np.asarray(load(name))
        if not np.issubdtype(array.dtype, np.floating):
            problems.append(f"tensor {name!r} has dtype {array.dtype}, expected a float type")
            continue
        weights[entry.kbert] = np.ascontiguousarray(
            names.to_kbert(array, entry, config, out_in), dtype=np.float32)
    for name in sorted(shapes):
        if name not in used and not ignore(name):
            problems.append(f"unexpected tensor {name!r} with shape {tuple(shapes[name])}")
    if problems:
        _raise(source, problems)
    return weights
