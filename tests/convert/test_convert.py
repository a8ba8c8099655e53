import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

import kbert
from kbert.cli import main as cli_main
from kbert.convert import convert, detect_format, read_any
from kbert.convert.mapping import CheckpointMismatchError

SOURCES = ("hf_tiny_pretraining", "hf_tiny_base", "tf1_tiny")


def copy_fixture(fixtures_dir, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(os.path.join(fixtures_dir, name), dst)
    return dst


def leftovers(parent):
    """Temporary directories an atomic writer may have left in `parent`."""
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


@pytest.mark.parametrize("source", SOURCES)
def test_import_matches_reference(source, fixtures_dir, reference, tmp_path):
    out = convert(os.path.join(fixtures_dir, source), tmp_path / "model")
    model = kbert.load_model(out)
    inputs = {k: reference[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    got = model(inputs)
    real = reference["padding_mask"].astype(bool)
    seq = np.asarray(got["sequence_output"])
    np.testing.assert_allclose(seq[real], reference["sequence_output"][real], atol=1e-5)
    np.testing.assert_allclose(got["pooled_output"], reference["pooled_output"], atol=1e-5)
    for layer, want in zip(got["encoder_outputs"], reference["encoder_outputs"]):
        np.testing.assert_allclose(np.asarray(layer)[real], want[real], atol=1e-5)
    assert detect_format(out) == "kbert"
    assert kbert.read_checkpoint(out).lowercase is True


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


@pytest.mark.parametrize("source", ("hf_tiny_pretraining", "tf1_tiny"))
def test_pretraining_heads_are_kept_and_correct(source, fixtures_dir, reference, tmp_path):
    """Head weights reproduce the reference MLM / NSP logits (numpy forward pass)."""
    checkpoint = read_any(os.path.join(fixtures_dir, source))
    assert checkpoint.has_pretraining_heads
    w = checkpoint.weights
    model = kbert.build_encoder(checkpoint.config)
    kbert.io.model_dir.assign_encoder_weights(model, w, source)
    inputs = {k: reference[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    out = model(inputs)
    h = np.asarray(out["sequence_output"], np.float64)
    t = _gelu(h @ w["mlm_head/intermediate_dense/kernel"] + w["mlm_head/intermediate_dense/bias"])
    t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-12)
    t = t * w["mlm_head/intermediate_layer_norm/gamma"] + w["mlm_head/intermediate_layer_norm/beta"]
    mlm = t @ w["token_embedding/embeddings"].T + w["mlm_head/output_bias"]
    real = reference["padding_mask"].astype(bool)
    np.testing.assert_allclose(mlm[real], reference["mlm_logits"][real], atol=1e-4)
    nsp = np.asarray(out["pooled_output"]) @ w["nsp_head/kernel"] + w["nsp_head/bias"]
    np.testing.assert_allclose(nsp, reference["nsp_logits"], atol=1e-5)


def test_base_layout_has_no_heads(fixtures_dir):
    assert not read_any(os.path.join(fixtures_dir, "hf_tiny_base")).has_pretraining_heads


def _hf_tensors(path):
    return safetensors.numpy.load_file(os.path.join(path, "model.safetensors"))


@pytest.mark.parametrize("source", ("hf_tiny_pretraining", "hf_tiny_base"))
def test_hf_round_trip_is_bit_exact(source, fixtures_dir, tmp_path):
    src = os.path.join(fixtures_dir, source)
    convert(src, tmp_path / "kbert")
    convert(tmp_path / "kbert", tmp_path / "hf", to="hf")
    before, after = _hf_tensors(src), _hf_tensors(tmp_path / "hf")
    assert sorted(before) == sorted(after)
    for name in before:
        assert before[name].dtype == after[name].dtype
        assert np.array_equal(before[name], after[name]), name
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    original = json.loads(open(os.path.join(src, "config.json")).read())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size",
                "hidden_act", "layer_norm_eps"):
        assert config[key] == original[key], key
    assert (tmp_path / "hf" / "vocab.txt").read_text() == open(
        os.path.join(src, "vocab.txt")).read()


def test_tf1_to_hf_equals_the_hf_original(fixtures_dir, tmp_path):
    """The TF1 fixture holds the HF fixture's weights: TF1 -> HF must reproduce them."""
    convert(os.path.join(fixtures_dir, "tf1_tiny"), tmp_path / "hf", to="hf")
    want = _hf_tensors(os.path.join(fixtures_dir, "hf_tiny_pretraining"))
    got = _hf_tensors(tmp_path / "hf")
    assert sorted(want) == sorted(got)
    assert all(np.array_equal(want[k], got[k]) for k in want)


def test_kbert_round_trip_through_hf(fixtures_dir, tmp_path):
    convert(os.path.join(fixtures_dir, "tf1_tiny"), tmp_path / "a")
    convert(tmp_path / "a", tmp_path / "hf", to="hf")
    convert(tmp_path / "hf", tmp_path / "b")
    a, b = kbert.read_checkpoint(tmp_path / "a"), kbert.read_checkpoint(tmp_path / "b")
    assert a.config == b.config and a.vocab == b.vocab
    assert sorted(a.weights) == sorted(b.weights)
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_sharded_safetensors(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    tensors = _hf_tensors(src)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(src / shard),
                                    metadata={"format": "pt"})
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    os.remove(src / "model.safetensors")
    a = read_any(src).weights
    b = read_any(os.path.join(fixtures_dir, "hf_tiny_base")).weights
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_old_layernorm_names_are_accepted(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    tensors = _hf_tensors(src)
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in tensors.items()}
    safetensors.numpy.save_file(renamed, str(src / "model.safetensors"), metadata={"format": "pt"})
    assert read_any(src).config.num_layers == 2


# Bad input ---------------------------------------------------------------------------


def _rewrite(src, change):
    tensors = _hf_tensors(src)
    change(tensors)
    safetensors.numpy.save_file(tensors, os.path.join(src, "model.safetensors"),
                                metadata={"format": "pt"})


BAD_TENSORS = {
    "missing": (lambda t: t.pop("encoder.layer.1.attention.self.key.bias"),
                r"missing tensor 'encoder.layer.1.attention.self.key.bias' "
                r"\(expected shape \(32,\)\)"),
    "unexpected": (lambda t: t.update({"classifier.weight": np.zeros((3, 32), np.float32)}),
                   r"unexpected tensor 'classifier.weight' with shape \(3, 32\)"),
    "misshapen": (lambda t: t.update({"encoder.layer.0.intermediate.dense.weight":
                                      np.zeros((48, 32), np.float32)}),
                  r"'encoder.layer.0.intermediate.dense.weight' has shape \(48, 32\), "
                  r"expected \(64, 32\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSORS))
def test_bad_tensor_is_named_and_nothing_is_written(case, fixtures_dir, tmp_path):
    change, message = BAD_TENSORS[case]
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    _rewrite(src, change)
    with pytest.raises(CheckpointMismatchError, match=message):
        convert(src, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out") and not leftovers(tmp_path)


def test_config_that_does_not_fit_the_weights(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "tf1_tiny", tmp_path)
    config = json.loads((src / "bert_config.json").read_text())
    config["num_hidden_layers"] = 3
    (src / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError,
                       match=r"missing tensor 'bert/encoder/layer_2/attention/self/query/kernel'"
                             r" \(expected shape \(32, 32\)\)"):
        convert(src, tmp_path / "out")


def test_incomplete_heads(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_pretraining", tmp_path)
    _rewrite(src, lambda t: t.pop("cls.seq_relationship.bias"))
    with pytest.raises(CheckpointMismatchError, match="heads are incomplete: missing "
                                                      "cls.seq_relationship.bias"):
        convert(src, tmp_path / "out")


def test_untied_decoder_is_refused(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_pretraining", tmp_path)
    _rewrite(src, lambda t: t.update({"cls.predictions.decoder.weight": np.ones(
        t["bert.embeddings.word_embeddings.weight"].shape, np.float32)}))
    with pytest.raises(CheckpointMismatchError, match="decoder.weight differs"):
        convert(src, tmp_path / "out")


@pytest.mark.parametrize("missing", ["vocab.txt", "config.json"])
def test_missing_file(missing, fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    os.remove(src / missing)
    with pytest.raises((FileNotFoundError, ValueError), match=missing.replace(".", r"\.")):
        convert(src, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_pytorch_bin_only_is_explained(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    os.rename(src / "model.safetensors", src / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safe_serialization=True"):
        convert(src, tmp_path / "out")


def test_tf1_missing_checkpoint_tensor(fixtures_dir, tmp_path):
    import tensorflow as tf

    src = tmp_path / "tf1"
    os.makedirs(src)
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(os.path.join(fixtures_dir, "tf1_tiny", name), src)
    reader = tf.train.load_checkpoint(os.path.join(fixtures_dir, "tf1_tiny", "bert_model.ckpt"))
    keep = [n for n in reader.get_variable_to_shape_map() if n != "bert/pooler/dense/bias"]
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(n, initializer=reader.get_tensor(n)) for n in keep]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(src / "bert_model.ckpt"), write_meta_graph=False)
    with pytest.raises(CheckpointMismatchError, match="missing tensor 'bert/pooler/dense/bias'"):
        convert(src, tmp_path / "out")


def test_unrecognised_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a recognised checkpoint directory"):
        convert(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        convert(tmp_path / "nope", tmp_path / "out")


def test_wrong_model_type(fixtures_dir, tmp_path):
    src = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "roberta"
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'roberta'"):
        convert(src, tmp_path / "out")


def test_existing_output_is_kept_unless_overwrite(fixtures_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        convert(os.path.join(fixtures_dir, "hf_tiny_base"), out)
    assert (out / "precious.txt").read_text() == "keep me"
    # A failing overwrite leaves the old directory as it was.
    bad = copy_fixture(fixtures_dir, "hf_tiny_base", tmp_path)
    _rewrite(bad, lambda t: t.pop("pooler.dense.bias"))
    with pytest.raises(CheckpointMismatchError):
        convert(bad, out, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep me"
    convert(os.path.join(fixtures_dir, "hf_tiny_base"), out, overwrite=True)
    assert kbert.io.model_dir.is_model_dir(out) and not (out / "precious.txt").exists()
    assert not leftovers(tmp_path)


# CLI ---------------------------------------------------------------------------------


def test_cli_convert_both_ways(fixtures_dir, tmp_path, capsys):
    assert cli_main(["convert", os.path.join(fixtures_dir, "tf1_tiny"), str(tmp_path / "k")]) == 0
    assert cli_main(["convert", str(tmp_path / "k"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert detect_format(tmp_path / "hf") == "hf"
    assert cli_main(["convert", str(tmp_path / "k"), str(tmp_path / "hf"), "--to", "hf"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err


def test_console_script_runs(fixtures_dir, tmp_path):
    """The installed entry point (python -m kbert.cli stands in where `kbert` is not on PATH)."""
    exe = shutil.which("kbert")
    cmd = [exe] if exe else [sys.executable, "-m", "kbert.cli"]
    result = subprocess.run(cmd + ["convert", os.path.join(fixtures_dir, "hf_tiny_base"),
                                   str(tmp_path / "k")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(cmd + ["convert", str(tmp_path / "missing"), str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no such directory" in result.stderr
