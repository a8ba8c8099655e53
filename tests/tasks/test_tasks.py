"""Task models: TaskSpec validation, heads on the encoder, save / load round trip."""

import json
import os

import numpy as np
import pytest

from kbert.models.encoder import build_encoder
from kbert.tasks import TaskSpec, build_task_model, load_task_model, save_task_model
from helpers.checks import assert_outputs_close
from helpers.tiny import VOCAB, random_features, save_tiny_task_model, tiny_config

# T up to 128: the specs below keep TaskSpec's default seq_len (128), which loading checks
# against the model's max_sequence_length.
CONFIG = tiny_config(max_sequence_length=128)


def _inputs():
    return random_features(3, 16, lengths=[10, 16, 16])


@pytest.mark.parametrize("spec, shapes", [
    (TaskSpec("classification", labels=("neg", "pos"),
              read_options={"text_column": "sentence", "label_column": 2}),
     {"logits": (3, 2)}),
    (TaskSpec("regression"), {"logits": (3, 1)}),
    (TaskSpec("tagging", labels=("O", "B-PER", "I-PER")), {"logits": (3, 16, 3)}),
    (TaskSpec("qa"), {"start_logits": (3, 16), "end_logits": (3, 16)}),
])
def test_round_trip(tmp_path, spec, shapes):
    model = build_task_model(build_encoder(CONFIG), spec)
    x = _inputs()
    before = {k: np.asarray(v) for k, v in model(x).items()}
    assert {k: v.shape for k, v in before.items()} == shapes
    assert all(v.dtype == np.float32 for v in before.values())
    out = save_task_model(tmp_path / "m", model, spec, CONFIG, VOCAB, lowercase=False)
    with open(os.path.join(out, "task.json")) as f:
        assert json.load(f)["task"] == spec.task
    loaded, loaded_spec, checkpoint = load_task_model(out)
    assert loaded_spec == spec and checkpoint.lowercase is False
    assert_outputs_close(loaded(x), before, atol=1e-6, what="reloaded task model")


def test_fresh_head_from_pretrained_dir(tmp_path):
    from kbert.io.model_dir import save_model
    encoder = build_encoder(CONFIG)
    save_model(encoder, CONFIG, tmp_path / "pre", VOCAB)
    spec = TaskSpec("classification", labels=("a", "b", "c"))
    model, _, _ = load_task_model(tmp_path / "pre", spec=spec)
    got = model.get_layer("bert_encoder")(_inputs())["pooled_output"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(encoder(_inputs())["pooled_output"]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="no task.json"):
        load_task_model(tmp_path / "pre")


def test_wrong_head_shape_is_named(tmp_path):
    out, _ = save_tiny_task_model(tmp_path / "m", TaskSpec("classification", labels=("a", "b")),
                                  config=CONFIG)
    TaskSpec("classification", labels=("a", "b", "c")).save(os.path.join(out, "task.json"))
    with pytest.raises(ValueError, match=r"classifier/kernel.*\(128, 2\).*\(128, 3\)"):
        load_task_model(out)


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="ner"), "unknown task"),
    (dict(task="classification", labels=("a",)), "at least 2 labels"),
    (dict(task="tagging", labels=("O", "O")), "duplicate"),
    (dict(task="tagging", labels=("O", "B"), tag_scheme="BIO"), "tag_scheme"),
])
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**kwargs)


def test_spec_read_options_are_sorted_pairs_and_json(tmp_path):
    spec = TaskSpec("qa", read_options={"pair_column": "b", "label_column": 0})
    assert spec.read_options == (("label_column", 0), ("pair_column", "b"))
    assert spec == TaskSpec("qa", read_options=[("pair_column", "b"), ("label_column", 0)])
    spec.save(tmp_path / "task.json")
    with open(tmp_path / "task.json") as f:
        assert json.load(f)["read_options"] == {"label_column": 0, "pair_column": "b"}
    assert TaskSpec.load(tmp_path / "task.json") == spec
    assert TaskSpec("qa").to_dict()["read_options"] == {}
    with pytest.raises(ValueError, match="read_options must map"):
        TaskSpec("qa", read_options=["text_column"])


def test_spec_unknown_key(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"task": "qa", "stride": 3}))
    with pytest.raises(ValueError, match=r"task.json: unknown key\(s\) \['stride'\]"):
        TaskSpec.load(path)
