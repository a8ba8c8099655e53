"""Write a directory so that it appears whole or not at all.

Used by every writer of user-facing directories (converted models, exports): the content
is written into a hidden sibling and renamed into place, so a crash or a bad input never
leaves a half-written directory where a user or a polling TF Serving would find it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory that becomes `out` when the block ends without error.

    Raises `FileExistsError` up front if `out` exists (unless `overwrite`), so no work is
    done for nothing. With `overwrite`, the old directory is replaced only after the new
    one is complete. On any exception the temporary directory is removed and `out` is
    left exactly as it was.
    """
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "previous"))
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
