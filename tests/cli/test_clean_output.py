"""What a `kbert` command prints: no TensorFlow C++ start-up notices unless asked for,
progress labelled with the run's epochs, written files with the user's umask."""

import os
import subprocess
import sys

import pytest

from helpers.finetune import keyword_task_files, settings_kwargs
from helpers.paths import REPO
from kbert.cli.stderr_filter import is_noise
from kbert.io.atomic import atomic_directory, atomic_file

# As TF 2.21 printed them here, on a machine without a GPU.
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796260441.977057   30222 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off "
    "errors from different computation orders. To turn them off, set the environment "
    "variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796260441.978152   30222 cudart_stub.cc:31] Could not find cuda drivers "
    "on your machine, GPU will not be used.",
    "I0000 00:00:1796260442.036277   30222 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in "
    "other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796257088.386553   23643 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796257092.947097   23643 util.cc:131] oneDNN supports DT_INT32 only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if "
    "present.",
    "E0000 00:00:1796263741.935668   13062 util.cc:131] oneDNN supports DT_INT64 only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if "
    "present.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT_LINES = [
    "kbert inspect: error: /nowhere does not exist",
    "W0000 00:00:1796257092.947097   23643 op_kernel.cc:1857] OP_REQUIRES failed at "
    "strided_slice_op.cc:117 : INVALID_ARGUMENT: slice index 3 of dimension 0 out of bounds.",
    "E0000 00:00:1796257092.947097   23643 cuda_platform.cc:52] something else went wrong",
    "Traceback (most recent call last):",
    "WARNING:tensorflow:5 out of the last 5 calls to <function f> triggered tf.function "
    "retracing.",
    "",
]


@pytest.mark.parametrize("line", STARTUP_LINES)
def test_startup_notices_are_noise(line):
    assert is_noise(line) and is_noise(line + "\n")


@pytest.mark.parametrize("line", KEPT_LINES)
def test_other_lines_are_kept(line):
    assert not is_noise(line)


def _kbert(args, **env):
    return subprocess.run([sys.executable, "-m", "kbert.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO, **env))


def test_commands_print_no_startup_notices(tmp_path):
    """The same command (it imports TensorFlow, then fails on its argument) with and
    without the filter: TF does print the notices here, and only the filter removes
    them; the command's own error line comes through either way."""
    missing = str(tmp_path / "nowhere")
    raw = _kbert(["inspect", missing], KBERT_TF_LOGS="1")
    assert raw.returncode == 2
    assert any(is_noise(line) for line in raw.stderr.splitlines()), raw.stderr
    clean = _kbert(["inspect", missing])
    assert clean.returncode == 2
    assert clean.stderr.splitlines() == [f"kbert inspect: error: {missing} does not exist"]
    verbose = _kbert(["--verbose", "inspect", missing])
    assert any(is_noise(line) for line in verbose.stderr.splitlines())


def test_progress_counts_the_runs_epochs(tmp_path, capsys):
    from kbert.tasks.registry import get_task
    from kbert.training.finetune import FinetuneSettings, finetune

    data = keyword_task_files(tmp_path / "data")
    capsys.readouterr()
    result = finetune(get_task("classify"),
                      FinetuneSettings(**settings_kwargs(data, tmp_path / "run", epochs=3)),
                      verbose=2)
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("Epoch ")]
    assert printed == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert [e["epoch"] for e in result.metrics["epochs"]] == [1, 2, 3]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_outputs_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_file(tmp_path / "model.tflite", b"x")
        with atomic_directory(tmp_path / "version") as staging:
            with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
                f.write(b"x")
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "model.tflite").st_mode & 0o777) == oct(0o666 & ~umask)
    assert oct(os.stat(tmp_path / "version").st_mode & 0o777) == oct(0o777 & ~umask)
    assert (tmp_path / "model.tflite").read_bytes() == b"x"
