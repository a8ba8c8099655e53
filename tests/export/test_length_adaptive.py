"""Length-adaptive signatures (`length_multiple`): every kind computes on the batch's
longest packed row (rounded up to a multiple of 8, at most T) and answers exactly what the
fixed-T graph answers, from one traced function for every length."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kbert.export.graph import ServingModule, build_serving_graph
from kbert.tasks import TaskSpec
from kbert.text import Tokenizer
from helpers.paths import FIXTURES
from helpers.tiny import kind_model_dir, tiny_config

VOCAB = os.path.join(FIXTURES, "tokenizer", "vocab.txt")
T = 32
SHORT = ["Héllo naïve café!", "the cat sat", "", "A B C", "Well, well... 42?"]
LONG = ["the cat sat on the mat and then some more words to force windows " * 4,
        "x" * 300, "東京 is big " * 9]
PAIRS = ["ok", "the dog", "something", "", "no", "the cat sat on the mat " * 5, "y", "z z"]


def _model_dir(root, kind):
    """A tiny model directory of `kind`; large initial weights make the outputs differ."""
    config = tiny_config(Tokenizer(VOCAB).vocabulary_size, initializer_range=0.3)
    return kind_model_dir(root, kind, VOCAB, config, T)


def _inputs(names, texts):
    n = len(texts)
    values = {"text": texts, "text_pair": (PAIRS * 2)[:n], "question": (PAIRS * 2)[:n],
              "context": texts}
    return {name: tf.constant(values[name]) for name in names}


def _functions(model_dir, multiple, **options):
    graph = build_serving_graph(model_dir, length_multiple=multiple, **options)
    module = ServingModule(graph)
    return graph, module, module.concrete_functions()


@pytest.mark.parametrize("kind, options", [
    ("classification", {}), ("pair", {}), ("regression", {}), ("tagging", {}), ("qa", {}),
    ("embedding", {"pooling": "mean", "seq_len": T}),
    ("embedding", {"pooling": "cls", "seq_len": T}), ("fill-mask", {"top_k": 3, "seq_len": T})])
def test_outputs_equal_the_fixed_length_graph(tmp_path, kind, options):
    model_dir = _model_dir(tmp_path, kind)
    graph, _, adaptive = _functions(model_dir, 8, **options)
    _, _, fixed = _functions(model_dir, 0, **options)
    texts = {"fill-mask": ["The [MASK] sat.", "[MASK]", "a b [MASK] c [MASK] " * 9, "no"]}
    batches = [texts.get(kind, SHORT), texts.get(kind, SHORT + LONG), texts.get(kind, LONG)]
    if kind == "fill-mask":
        batches = [batches[0][:2], batches[0], batches[0][2:]]
    widths = []
    for batch in batches:
        inputs = _inputs(graph.input_names, batch)
        got = adaptive["serving_default"](**inputs)
        want = fixed["serving_default"](**inputs)
        assert set(got) == set(want)
        for key, value in want.items():
            if value.dtype.is_floating:
                np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=2e-5,
                                           rtol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(got[key].numpy(), value.numpy(), err_msg=key)
        features = adaptive["tokenize"](**inputs)
        full = fixed["tokenize"](**inputs)
        mask = full["padding_mask"].numpy()
        longest = int(mask.sum(axis=1).max())
        width = features["padding_mask"].shape[1]
        assert width == min(T, -(-longest // 8) * 8), (kind, batch)
        assert full["padding_mask"].shape[1] == T
        for key, value in full.items():  # the cut-away columns held padding only
            value = value.numpy()
            if value.ndim >= 2 and value.shape[1] == T:
                np.testing.assert_array_equal(features[key].numpy(), value[:, :width],
                                              err_msg=key)
        encoded = adaptive["encode"](**inputs)["sequence_output"].numpy()
        np.testing.assert_allclose(
            encoded, fixed["encode"](**inputs)["sequence_output"].numpy()[:, :width],
            atol=2e-5, err_msg="encode")
        widths.append(width)
    # One concrete function served three different lengths, short batches on few columns.
    assert widths[0] < T and widths[-1] == T or kind == "fill-mask", widths
    assert len(set(widths)) >= 2


def test_the_tflite_function_keeps_t_static(tmp_path):
    model_dir = _model_dir(tmp_path, "classification")
    graph, module, _ = _functions(model_dir, 8)
    tflite = module.tflite_concrete_function()
    shapes = {op.outputs[0].shape.as_list()[1:] for op in tflite.graph.get_operations()
              if op.type == "StridedSlice" and op.outputs and op.outputs[0].shape.rank == 2}
    assert graph.length_multiple == 8
    # The fixed-T TFLite graph has no cut to a dynamic width: every [N, x] slice is static.
    assert [None] not in [s for s in shapes], shapes


def test_export_records_the_multiple_and_loads_in_a_fresh_process(tmp_path):
    import json
    import subprocess
    import sys

    from kbert.export.saved_model import export_saved_model

    model_dir = _model_dir(tmp_path, "classification")
    out = export_saved_model(model_dir, tmp_path / "sm", name="m", models_config=False)
    with open(os.path.join(out, "assets.extra", "kbert_export.json")) as f:
        assert json.load(f)["length_multiple"] == 8
    fixed = export_saved_model(model_dir, tmp_path / "sm", name="m", length_multiple=0,
                               models_config=False)
    from kbert.export.tflite import export_tflite
    with pytest.raises(ValueError, match="length-adaptive export.*convert the model directory"):
        export_tflite(out, tmp_path / "m.tflite")  # TFLite needs a static T
    assert not os.path.exists(tmp_path / "m.tflite")
    code = f"""
import json, numpy as np, tensorflow as tf, kbert.export as e
a = e.load({out!r}).signatures; b = e.load({fixed!r}).signatures
widths = []
for texts in ({SHORT!r}, {SHORT + LONG!r}):
    x = tf.constant(texts)
    np.testing.assert_allclose(a["serving_default"](text=x)["probabilities"].numpy(),
                               b["serving_default"](text=x)["probabilities"].numpy(), atol=2e-5)
    widths.append([a["tokenize"](text=x)["token_ids"].shape[1],
                   b["tokenize"](text=x)["token_ids"].shape[1]])
print(json.dumps(widths))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    short, mixed = json.loads(run.stdout.strip().splitlines()[-1])
    assert short[0] < T and short[1] == T and mixed == [T, T]


def test_bad_length_multiple_is_refused(tmp_path):
    from kbert.export.settings import ExportSettings

    with pytest.raises(ValueError, match="length_multiple must be an int >= 0"):
        ExportSettings(length_multiple=-8)
    with pytest.raises(ValueError, match="length_multiple must be an int >= 0"):
        TaskSpec("regression", length_multiple=1.5)
    spec = TaskSpec("regression", length_multiple=16)
    assert "length_multiple" not in spec.to_dict()  # an inference choice, not in task.json
    assert TaskSpec.from_dict(spec.to_dict()).length_multiple == 8
