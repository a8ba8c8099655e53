import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from helpers.paths import FIXTURES  # noqa: E402  (after the environment is set)


@pytest.fixture
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def reference():
    """Inputs and Hugging Face reference outputs for the tiny fixture checkpoints."""
    with np.load(os.path.join(FIXTURES, "tiny_reference.npz")) as data:
        return {k: data[k] for k in data.files}
