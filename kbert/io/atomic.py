"""Write a directory or a file so that it appears whole or not at all.

Used by every writer of user-facing directories (converted models, exports) and files
(`model.tflite`): the content is written into a hidden sibling and renamed into place, so a
crash or a bad input never leaves a half-written result where a user or a polling TF
Serving would find it. What appears has the permissions a plain `mkdir` / `open` would
give under the user's umask (tempfile makes its directories 0700 and files 0600, which a
serving container running as another user could not read).
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
        os.chmod(tmp, 0o777 & ~current_umask())
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


def atomic_file(path: str | os.PathLike, content: bytes) -> None:
    """Writes `content` to `path` through a hidden sibling renamed into place; the file
    gets mode 0666 less the umask. On any error `path` is left as it was."""
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask

