"""The SavedModel a Beam job runs (kbert.beam.models): a model directory is exported beside
the outputs; for a remote output prefix (here TF's in-memory `ram://` file system, which
goes through the same `tf.io.gfile` calls as `gs://`) it is written locally and copied,
each job getting the next version."""

import numpy as np
import pytest
import tensorflow as tf

from kbert.beam.inference import resolve_saved_model, run_signature
from kbert.beam.models import is_export, job_saved_model
from kbert.export import load
from kbert.tasks.spec import TaskSpec
from helpers.tiny import VOCAB, save_tiny_task_model


def test_remote_exports_are_copied_and_versioned(tmp_path):
    model_dir, _ = save_tiny_task_model(tmp_path / "clf", TaskSpec(
        "classification", labels=("a", "b"), seq_len=16), VOCAB, seed=4)
    prefix = "ram://bucket/jobs/pred"
    first = job_saved_model(str(model_dir), prefix)
    second = job_saved_model(str(model_dir), prefix)
    assert (first, second) == (f"{prefix}-savedmodel/model/1", f"{prefix}-savedmodel/model/2")
    assert is_export(f"{prefix}-savedmodel/model") and not is_export(str(model_dir))
    assert resolve_saved_model(f"{prefix}-savedmodel/model") == second
    # An export is used as it is, and takes no export options.
    assert job_saved_model(second, "ram://elsewhere/x") == second
    with pytest.raises(ValueError, match="is already exported; pooling apply only"):
        job_saved_model(second, "ram://elsewhere/x", pooling="mean")
    texts = [{"text": "a b c"}, {"text": "d"}]
    remote = run_signature(load(second), texts, "serving_default", 8)
    local = job_saved_model(str(model_dir), str(tmp_path / "out" / "pred"))
    assert local == str(tmp_path / "out" / "pred-savedmodel" / "model" / "1")
    for got, want in zip(remote, run_signature(load(local), texts, "serving_default", 1)):
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
        assert got["labels"] == want["labels"]
    assert tf.io.gfile.exists(f"{second}/assets.extra/kbert_export.json")
