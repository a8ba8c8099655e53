"""Model references (kbert.convert.references): hf:ORG/NAME[@REV] through the real
huggingface_hub against a loopback server that answers like the Hub (tests/helpers/hub.py),
the Hub cache with HF_HUB_OFFLINE=1, the kbert cache and `kbert cache`, and one-line errors.

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE when it is imported, so each
use runs in a fresh process, as a user's command does."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers.hub import FakeHub
from helpers.paths import REPO
from helpers.tiny import VOCAB, save_tiny_model, tiny_config
from kbert.convert import convert
from kbert.io.model_dir import read_checkpoint


def hf_files(tmp_path, name, seed):
    """The files of a tiny BERT in the Hugging Face layout, as a Hub repository has them."""
    kbert_dir = save_tiny_model(tmp_path / f"{name}-kbert", config=tiny_config(), seed=seed)
    hf_dir = convert(kbert_dir, tmp_path / f"{name}-hf", to="hf")
    files = {}
    for entry in sorted(os.listdir(hf_dir)):
        with open(os.path.join(hf_dir, entry), "rb") as f:
            files[entry] = f.read()
    return kbert_dir, files


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    with FakeHub() as hub:
        old_dir, old = hf_files(tmp, "old", seed=1)
        new_dir, new = hf_files(tmp, "new", seed=2)
        hub.sources = {"old": old_dir, "new": new_dir}
        hub.commits = {"old": hub.add("org/tiny-bert", old, refs=("main", "v1")),
                       "new": hub.add("org/tiny-bert", new, refs=("main",))}
        roberta = dict(new, **{"config.json": json.dumps(
            dict(json.loads(new["config.json"]), model_type="roberta")).encode()})
        hub.add("org/roberta", roberta)
        hub.add("org/no-vocab", {k: v for k, v in new.items() if k != "vocab.txt"})
        yield hub


def run(code, env, hub=None):
    """Runs Python `code` in a fresh process with `env` added; returns (rc, out, err)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", **env)
    if hub is not None:
        full["HF_ENDPOINT"] = hub.url
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=full, timeout=300)
    return result.returncode, result.stdout, result.stderr


RESOLVE = """
import sys
from kbert.convert.references import resolve_model
try:
    print(resolve_model(sys.argv[1] if len(sys.argv) > 1 else {ref!r}))
except (ValueError, FileNotFoundError) as error:
    print("ERROR", error)
"""


def resolve(ref, env, hub=None):
    rc, out, err = run(RESOLVE.format(ref=ref), env, hub)
    assert rc == 0, err[-3000:]
    return out.strip().splitlines()[-1]


def weights_equal(model_dir, source_dir):
    got, want = read_checkpoint(model_dir), read_checkpoint(source_dir)
    assert got.config == want.config and got.vocab == want.vocab
    assert sorted(got.weights) == sorted(want.weights)
    for key in want.weights:
        np.testing.assert_array_equal(got.weights[key], want.weights[key], err_msg=key)


def test_hub_reference_downloads_converts_and_caches(hub, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "KBERT_CACHE": str(tmp_path / "kbert")}
    start = len(hub.requests)
    path = resolve("hf:org/tiny-bert", env, hub)
    assert path.startswith(str(tmp_path / "kbert" / "models")), path
    weights_equal(path, hub.sources["new"])  # main is the newer commit
    with open(os.path.join(path, "source.json")) as f:
        record = json.load(f)
    assert record["reference"] == "hf:org/tiny-bert"
    assert record["revision"] == hub.commits["new"]
    # Only the files a BERT needs were fetched, each once.
    fetched = sorted(r.split("/")[-1] for r in hub.requests[start:] if r.startswith("GET /org"))
    assert fetched == ["config.json", "model.safetensors", "tokenizer_config.json",
                       "vocab.txt"]

    # Again, and offline: the same directory, no download; offline, not one request.
    assert resolve("hf:org/tiny-bert", env, hub) == path
    before = len(hub.requests)
    assert resolve("hf:org/tiny-bert", dict(env, HF_HUB_OFFLINE="1"), hub) == path
    assert len(hub.requests) == before

    # A tag and a commit pin the older weights, in an entry of their own.
    old = resolve("hf:org/tiny-bert@v1", env, hub)
    assert old != path
    weights_equal(old, hub.sources["old"])
    assert resolve(f"hf:org/tiny-bert@{hub.commits['old']}", env, hub) == old

    # `kbert cache list` / `clear` (the CLI, its own process).
    listing = subprocess.run([sys.executable, "-m", "kbert.cli", "cache", "list"],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONPATH=REPO, **env))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'kbert'}: 2 model(s)")
    assert sorted(line.split("\t")[1] for line in lines[1:]) == sorted(hub.commits.values())
    cleared = subprocess.run([sys.executable, "-m", "kbert.cli", "cache", "clear",
                              "hf:org/tiny-bert"], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, PYTHONPATH=REPO, **env))
    assert cleared.stdout.startswith("removed 2 model(s)"), cleared.stdout + cleared.stderr
    assert not os.path.exists(path) and os.listdir(tmp_path / "kbert" / "models") == []


def test_every_command_takes_a_reference(hub, tmp_path):
    """load_model, Tokenizer.from_model_dir and `kbert export` on hf:ORG/NAME: the
    encoder's weights are the repository's, the export is named after it."""
    env = {"HF_HOME": str(tmp_path / "hf"), "KBERT_CACHE": str(tmp_path / "kbert")}
    code = f"""
import numpy as np, kbert
from kbert.text.tokenizer import Tokenizer
from kbert.io.model_dir import read_checkpoint
encoder = kbert.load_model("hf:org/tiny-bert")
want = read_checkpoint({hub.sources['new']!r}).weights
got = {{v.path: v.numpy() for v in encoder.weights}}
key = "transformer_layer_0/self_attention_layer/query/kernel"
np.testing.assert_array_equal(got[key], want[key])
print("tokens", Tokenizer.from_model_dir("hf:org/tiny-bert").vocabulary_size)
"""
    rc, out, err = run(code, env, hub)
    assert rc == 0, err[-3000:]
    assert f"tokens {len(VOCAB)}" in out
    export = subprocess.run(
        [sys.executable, "-m", "kbert.cli", "export", "hf:org/tiny-bert", "--out",
         str(tmp_path / "sm"), "--seq-len", "16"], capture_output=True, text=True,
        timeout=300, env=dict(os.environ, PYTHONPATH=REPO, HF_ENDPOINT=hub.url, **env))
    assert export.returncode == 0, export.stderr[-3000:]
    assert os.path.isfile(tmp_path / "sm" / "tiny-bert" / "1" / "saved_model.pb")


@pytest.mark.parametrize("reference, offline, message", [
    ("hf:org/missing", False, "hf:org/missing: no repository org/missing on http"),
    ("hf:org/tiny-bert@v9", False, "hf:org/tiny-bert@v9: no revision 'v9' in org/tiny-bert"),
    ("hf:org/roberta", False, "hf:org/roberta: model_type is 'roberta'; kbert converts BERT"),
    ("hf:org/no-vocab", False, "hf:org/no-vocab: the repository has no vocab.txt"),
    ("hf:org/tiny-bert", True, "hf:org/tiny-bert: not in the Hugging Face cache"),
    ("hf:org", False, None),  # a user name alone is a repository id the Hub may have
    ("hf:org/a@", False, "hf:org/a@: expected hf:ORG/NAME or hf:ORG/NAME@REVISION"),
])
def test_bad_references_are_one_line(hub, tmp_path, reference, offline, message):
    env = {"HF_HOME": str(tmp_path / "hf"), "KBERT_CACHE": str(tmp_path / "kbert")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    line = resolve(reference, env, hub)
    assert line.startswith("ERROR ")
    if message is not None:
        assert message in line, line
    if offline:
        assert "HF_HUB_OFFLINE=1 is set" in line
    # Nothing half-written is left in the kbert cache.
    models = tmp_path / "kbert" / "models"
    assert not models.exists() or os.listdir(models) == []


def test_local_hugging_face_directory_converts_once(hub, tmp_path):
    """A Hugging Face directory given where a model directory is taken converts into the
    cache once; a changed directory converts again."""
    hf_dir = convert(hub.sources["old"], tmp_path / "hf-dir", to="hf")
    env = {"KBERT_CACHE": str(tmp_path / "kbert")}
    first = resolve(hf_dir, env)
    weights_equal(first, hub.sources["old"])
    assert resolve(hf_dir, env) == first
    os.utime(os.path.join(hf_dir, "config.json"), (1, 1))
    assert resolve(hf_dir, env) != first
    missing = resolve(str(tmp_path / "nowhere"), env)
    assert missing == f"ERROR {tmp_path / 'nowhere'}: no such file or directory"


def test_cut_off_download_is_one_line_and_resumes(hub, tmp_path):
    """A connection that drops mid-file: one line, nothing in the kbert cache; the next
    try completes it and the weights are whole."""
    env = {"HF_HOME": str(tmp_path / "hf"), "KBERT_CACHE": str(tmp_path / "kbert")}
    hub.cut_off.add("model.safetensors")
    try:
        line = resolve("hf:org/tiny-bert", env, hub)
    finally:
        hub.cut_off.clear()
    assert line.startswith("ERROR hf:org/tiny-bert: download failed"), line
    assert "run again to resume it" in line
    models = tmp_path / "kbert" / "models"
    assert not models.exists() or os.listdir(models) == []
    weights_equal(resolve("hf:org/tiny-bert", env, hub), hub.sources["new"])


def test_finetune_from_a_warm_cache_offline(hub, tmp_path):
    """`kbert finetune classify --model hf:ORG/NAME` with HF_HUB_OFFLINE=1 after one
    online use: no request reaches the server, the run finishes."""
    from helpers.finetune import keyword_rows, write_tsv

    env = {"HF_HOME": str(tmp_path / "hf"), "KBERT_CACHE": str(tmp_path / "kbert")}
    resolve("hf:org/tiny-bert", env, hub)
    before = len(hub.requests)
    train = write_tsv(tmp_path / "train.tsv", keyword_rows(64, seed=1))
    dev = write_tsv(tmp_path / "dev.tsv", keyword_rows(16, seed=2))
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(PYTHONPATH=REPO, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1", **env)
    result = subprocess.run(
        [sys.executable, "-m", "kbert.cli", "finetune", "classify", "--model",
         "hf:org/tiny-bert", "--train", train, "--eval", dev, "--out", str(tmp_path / "run"),
         "--seq-len", "16", "--epochs", "1", "--batch-size", "16"],
        capture_output=True, text=True, timeout=300, env=full)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "run" / "metrics.json")
    assert len(hub.requests) == before
