"""Model references: what a command's `--model` (or a model directory argument) may name.

    DIR                   a kbert model directory, used as it is
    DIR                   a Hugging Face or original TF1 BERT directory: converted once into
                          the kbert cache (keyed by the directory's files), then reused
    DIR                   a keras-hub BertBackbone preset directory (as save_to_preset
                          writes it): converted once, like a Hugging Face directory
    kaggle://...          a keras-hub preset handle, loaded by keras-hub's own preset
                          loader (kagglehub's cache), converted once per handle
    hf:ORG/NAME[@REV]     a Hugging Face Hub repository at a branch, tag or commit (default
                          "main"): the files a BERT needs are downloaded through
                          huggingface_hub (its cache, HF_HOME, HF_ENDPOINT, HF_TOKEN and
                          HF_HUB_OFFLINE=1 as transformers uses them; a progress bar), then
                          converted into the kbert cache keyed by the commit

`resolve_model(reference)` returns the kbert model directory. The kbert cache
(`cache_dir()`: $KBERT_CACHE, else $XDG_CACHE_HOME/kbert, else ~/.cache/kbert) holds one
directory per converted source under `models/`, each with `source.json` (reference,
resolved revision, kbert's model-directory format); it is written atomically, so an
interrupted conversion leaves nothing behind. The second use of a reference finds it there;
with HF_HUB_OFFLINE=1 (or no network) a branch resolves through huggingface_hub's cached
refs, so a reference used once works offline. `list_cache()` / `clear_cache()` back
`kbert cache list` / `kbert cache clear`.

Errors are one line naming the reference (ValueError; FileNotFoundError for a local path
that does not exist): an unknown repository or revision, nothing cached while offline, a
repository that is not a BERT (model_type, missing vocab.txt or weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile

from kbert.convert.formats import convert, detect_format
from kbert.io.atomic import atomic_directory
from kbert.io.model_dir import write_model_dir

HF_PREFIX = "hf:"
KAGGLE_PREFIX = "kaggle://"
SOURCE_FILE = "source.json"
# Bumped when a converted directory's layout changes: entries of another format are
# converted again instead of being read.
MODEL_DIR_FORMAT = 1
# What a BERT needs from a Hub repository (never the PyTorch / TF / Flax weight files
# when safetensors are there).
HF_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors",
            "model.safetensors.index.json", "model-*.safetensors", "bert_config.json",
            "bert_model.ckpt.*")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def cache_dir() -> str:
    """The kbert cache: $KBERT_CACHE, else $XDG_CACHE_HOME/kbert, else ~/.cache/kbert."""
    if os.environ.get("KBERT_CACHE"):
        return os.path.abspath(os.environ["KBERT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kbert")


@dataclasses.dataclass(frozen=True)
class HubReference:
    """hf:ORG/NAME[@REVISION]."""

    repo_id: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"@{self.revision}"
                                               if self.revision != "main" else "")


def parse_reference(reference: str | os.PathLike) -> HubReference | str:
    """A HubReference for "hf:..." (ValueError when malformed), else the path as a str."""
    text = os.fspath(reference)
    if not text.startswith(HF_PREFIX):
        return text
    body = text[len(HF_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if not _REPO.match(repo_id) or (_ and not revision):
        raise ValueError(f"{text}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION")
    return HubReference(repo_id, revision or "main")


def resolve_model(reference: str | os.PathLike) -> str:
    """The kbert model directory for `reference` (see the module docstring)."""
    parsed = parse_reference(reference)
    if isinstance(parsed, HubReference):
        return _resolve_hub(parsed)
    path = parsed
    if path.startswith(KAGGLE_PREFIX):
        return _resolve_keras_hub_handle(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    try:
        fmt = detect_format(path)
    except ValueError:  # not a layout kbert converts: the reader names what is missing
        return path
    if fmt == "kbert":
        return path
    source = os.path.abspath(path)
    # Keyed by the files' names, sizes and times: a changed checkpoint converts again.
    stamp = hashlib.sha256(repr(_fingerprint(source)).encode()).hexdigest()[:16]
    return _cached(source, f"{source}@{stamp}", os.path.basename(source),
                   {"reference": source, "format": fmt, "revision": stamp})


def _resolve_hub(ref: HubReference) -> str:
    snapshot, commit = _download(ref)
    try:
        fmt = detect_format(snapshot)
    except ValueError:
        present = sorted(os.listdir(snapshot))
        raise ValueError(f"{ref}: not a BERT checkpoint the way kbert reads one (it has "
                         f"{', '.join(present) or 'no files'}; expected config.json, "
                         f"vocab.txt and model.safetensors, or the original TF1 files)"
                         ) from None
    if not os.path.isfile(os.path.join(snapshot, "vocab.txt")):
        raise ValueError(f"{ref}: the repository has no vocab.txt (kbert's WordPiece "
                         f"tokenizer needs it)")
    config = _read_json(os.path.join(snapshot, "config.json"))
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"{ref}: model_type is {config.get('model_type')!r}; kbert "
                         f"converts BERT checkpoints (model_type 'bert')")
    return _cached(snapshot, f"hf:{ref.repo_id}@{commit}", ref.repo_id.replace("/", "--"),
                   {"reference": f"{HF_PREFIX}{ref.repo_id}", "revision": commit,
                    "requested_revision": ref.revision, "format": fmt})


def _resolve_keras_hub_handle(handle: str) -> str:
    """A kaggle:// preset through keras-hub (a handle names its version: the key)."""
    from kbert.convert.keras_hub import read_preset  # lazy: keras-hub only for presets

    return _cached(handle, handle, handle[len(KAGGLE_PREFIX):],
                   {"reference": handle, "revision": handle.rsplit("/", 1)[-1],
                    "format": "keras-hub"},
                   make=lambda staging: write_model_dir(staging, read_preset(handle)))


def _download(ref: HubReference) -> tuple[str, str]:
    """(snapshot directory, commit) through huggingface_hub; errors as one line."""
    import huggingface_hub  # lazy: only hf: references need it
    from huggingface_hub import errors

    try:
        snapshot = huggingface_hub.snapshot_download(
            ref.repo_id, revision=ref.revision, allow_patterns=list(HF_FILES))
    except errors.RevisionNotFoundError:
        raise ValueError(f"{ref}: no revision {ref.revision!r} in {ref.repo_id} "
                         f"(a branch, tag or commit of the repository)") from None
    except errors.RepositoryNotFoundError:
        raise ValueError(f"{ref}: no repository {ref.repo_id} on "
                         f"{huggingface_hub.constants.ENDPOINT} (or it is private or gated: "
                         f"set HF_TOKEN)") from None
    except errors.LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 is set" if huggingface_hub.constants.HF_HUB_OFFLINE
               else f"{huggingface_hub.constants.ENDPOINT} cannot be reached")
        raise ValueError(f"{ref}: not in the Hugging Face cache "
                         f"({huggingface_hub.constants.HF_HUB_CACHE}) and {why}") from None
    except Exception as error:  # HTTP, connection (httpx), disk: one line, not a traceback
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(f"{ref}: download failed ({type(error).__name__}: {first}); "
                         f"run again to resume it") from None
    commit = os.path.basename(os.path.normpath(snapshot))
    return snapshot, commit


def _cached(source: str, key: str, name: str, record: dict, make=None) -> str:
    """The kbert cache entry for `key` (the source and its revision), made if not there
    yet by `make(directory)` (default: converting `source` there); its directory is `name`
    plus a digest of the key."""
    name = re.sub(r"[^\w.-]+", "-", name).strip("-.")[-60:] or "model"
    digest = hashlib.sha256(f"{key}|{MODEL_DIR_FORMAT}".encode()).hexdigest()[:12]
    entry = os.path.join(cache_dir(), "models", f"{name}-{digest}")
    if os.path.isfile(os.path.join(entry, SOURCE_FILE)):
        return entry
    with atomic_directory(entry, overwrite=True) as tmp:
        # The writers make a directory of their own: into the staging one, then moved up.
        staging = os.path.join(tmp, "model")
        (make or (lambda out: convert(source, out)))(staging)
        for item in os.listdir(staging):
            os.rename(os.path.join(staging, item), os.path.join(tmp, item))
        os.rmdir(staging)
        with open(os.path.join(tmp, SOURCE_FILE), "w", encoding="utf-8") as f:
            json.dump({**record, "model_dir_format": MODEL_DIR_FORMAT}, f, indent=2)
            f.write("\n")
    return entry


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    path: str
    reference: str
    revision: str
    size_bytes: int


def list_cache() -> list[CacheEntry]:
    """The converted models in the kbert cache, by reference."""
    root = os.path.join(cache_dir(), "models")
    entries = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        record_path = os.path.join(path, SOURCE_FILE)
        if name.startswith(".") or not os.path.isfile(record_path):
            continue
        record = _read_json(record_path)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                   for f in files)
        entries.append(CacheEntry(path, str(record.get("reference", "?")),
                                  str(record.get("revision", "?")), size))
    return sorted(entries, key=lambda e: (e.reference, e.revision))


def clear_cache(references: list[str] | None = None) -> list[CacheEntry]:
    """Removes every entry (or those whose reference is among `references`, written as
    hf:ORG/NAME or a local path); returns what was removed. Each entry goes in one rename,
    so a command using the cache meanwhile sees it whole or not at all."""
    wanted = None
    if references:
        wanted = set()
        for reference in references:
            parsed = parse_reference(reference)
            wanted.add(f"{HF_PREFIX}{parsed.repo_id}" if isinstance(parsed, HubReference)
                       else os.path.abspath(parsed))
    removed = []
    for entry in list_cache():
        if wanted is not None and entry.reference not in wanted:
            continue
        parent = os.path.dirname(entry.path)
        doomed = tempfile.mkdtemp(prefix=".gone-", dir=parent)
        os.rename(entry.path, os.path.join(doomed, "entry"))
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(entry)
    return removed


def _fingerprint(path: str) -> tuple:
    files = []
    for directory, _, names in os.walk(path):
        for name in names:
            stat = os.stat(os.path.join(directory, name))
            files.append((os.path.relpath(os.path.join(directory, name), path), stat.st_size,
                          stat.st_mtime_ns))
    return tuple(sorted(files))


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    return value if isinstance(value, dict) else {}
