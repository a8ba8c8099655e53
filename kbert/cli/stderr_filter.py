"""Drops TensorFlow's C++ start-up notices from a `kbert` command's standard error.

TF 2.21 writes them to file descriptor 2 from C++ while it loads, whatever
TF_CPP_MIN_LOG_LEVEL says (absl logs before its own initialisation, twice, once per
shared library): "WARNING: All log messages before absl::InitializeLog() is called ...",
the oneDNN notice, "Could not find cuda drivers", the CPU-instructions notice, "failed
call to cuInit" on machines without a GPU, at the first int32 / int64 matrix op the note that
oneDNN falls back to Eigen, and TFLite's note that it made its XNNPACK delegate. None of
them asks anything of the user.

`install()` (called by the `kbert` entry point, not by `main(argv)` in a library or a test)
points fd 2 at a pipe read by a child process running this file, which forwards every
other line unchanged, as bytes. A child process, not a thread: if the command dies in C++
(an abort, a failed check), the child is still there to forward what it printed. `kbert
--verbose ...` or KBERT_TF_LOGS=1 leaves standard error alone.

Run as a script, it is that filter: standard input to standard error.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys

# Whole lines.
NOISE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
)
# Messages of absl-formatted lines ("I0000 00:00:1796260441.977057   30222 port.cc:153] ...").
NOISE_MESSAGES = (
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "failed call to cuInit",
    "oneDNN supports DT_INT",  # DT_INT32, DT_INT64: "only on platforms with AVX-512"
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "TF-TRT Warning: Could not find TensorRT",
)
# The second line of the CPU-instructions notice.
NOISE_PREFIXES = ("To enable the following instructions:",)
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (.*)$")
ENV = "KBERT_TF_LOGS"


def is_noise(line: str) -> bool:
    """Whether one line of standard error (without its newline) is a start-up notice."""
    line = line.rstrip("\r\n")
    if line in NOISE_LINES or line.startswith(NOISE_PREFIXES):
        return True
    match = ABSL_LINE.match(line)
    return bool(match) and match.group(1).startswith(NOISE_MESSAGES)


def install(argv: list[str]) -> None:
    """Routes this process's fd 2 through the filter, unless asked not to (--verbose /
    -v among `argv`, KBERT_TF_LOGS=1) or standard error is not open."""
    if os.environ.get(ENV, "") not in ("", "0") or {"-v", "--verbose"} & set(argv):
        return
    try:
        original = os.dup(2)
    except OSError:
        return
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-S", os.path.abspath(__file__)],
                                 stdin=read_end, stdout=subprocess.DEVNULL, stderr=original,
                                 close_fds=True)
    except OSError:
        for fd in (read_end, write_end, original):
            os.close(fd)
        return
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    atexit.register(_restore, original, child)


def _restore(original: int, child: subprocess.Popen) -> None:
    """At exit: fd 2 back to the real standard error, which closes the pipe, and a short
    wait for the filter to forward the last lines (so that they come before the shell's
    next prompt). A child of the command that inherited fd 2 keeps the pipe open: the
    filter then goes on forwarding for it after this process is gone."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(original, 2)
    os.close(original)
    try:
        child.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass


def _filter() -> None:
    source, sink = sys.stdin.buffer, sys.stderr.buffer
    for raw in iter(source.readline, b""):
        if not is_noise(raw.decode("utf-8", "replace")):
            sink.write(raw)
            sink.flush()


if __name__ == "__main__":
    _filter()
