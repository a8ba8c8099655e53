"""Shared by the serving scripts: where the server under test comes from.

    --target HOST:PORT    a running server (kbert serve or TF Serving)
    --root ROOT           start `kbert serve ROOT` in a subprocess
    --model-dir DIR       `kbert export` DIR into a temporary ROOT, then as --root
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

UD_DEV = "/work/shared/data/ud_ewt/en_ewt-ud-dev.conllu"
SQUAD = "/work/shared/data/squad/squad_v1.1_articles_00-37.json"


def real_texts(ud_path: str = UD_DEV, squad_path: str = SQUAD) -> list[str]:
    """UD English-EWT dev sentences (their `# text =` lines) and SQuAD questions,
    interleaved so that any run of texts mixes both."""
    sentences, questions = [], []
    if os.path.isfile(ud_path):
        with open(ud_path, encoding="utf-8") as f:
            sentences = [line[len("# text = "):].strip() for line in f
                         if line.startswith("# text = ")]
    if os.path.isfile(squad_path):
        with open(squad_path, encoding="utf-8") as f:
            for article in json.load(f)["data"]:
                for paragraph in article["paragraphs"]:
                    questions += [qa["question"].strip() for qa in paragraph["qas"]]
    if not sentences and not questions:
        raise SystemExit(f"neither {ud_path} nor {squad_path} exists: this benchmark needs "
                         "the shared data (see ../shared/data/README.md)")
    import numpy as np

    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    rng.shuffle(questions)
    mixed = []
    for i in range(max(len(sentences), len(questions))):
        mixed += [t for t in (sentences[i:i + 1] + questions[i:i + 1]) if t]
    return mixed


def add_server_args(parser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="gRPC address of a running server")
    where.add_argument("--root", help="serve this TF Serving model base directory")
    where.add_argument("--model-dir", help="export this kbert model directory and serve it")
    parser.add_argument("--model", help="model name (default: the only one served)")
    parser.add_argument("--seq-len", type=int, default=128, help="export T (--model-dir)")


@contextlib.contextmanager
def running_server(args, serve_flags=()):
    """Yields the gRPC target; a server started here (with `serve_flags` added to its
    command line) is stopped with SIGTERM after."""
    if args.target:
        yield args.target
        return
    with tempfile.TemporaryDirectory(prefix="kbert-serve-") as tmp:
        root = args.root
        if args.model_dir:
            from kbert.export import export_saved_model

            root = os.path.join(tmp, "saved_models")
            export_saved_model(args.model_dir, out_root=root, name=args.model or "model",
                               seq_len=args.seq_len)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(os.path.join(tmp, "server.log"), "w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "kbert.cli", "serve", root, "--port", "0", "--no-rest",
             "--poll-seconds", "0", *serve_flags],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            line = process.stdout.readline()  # printed once the models are loaded
            match = re.search(r"gRPC (\S+):(\d+)", line)
            if not match:
                process.wait(timeout=30)
                log.seek(0)
                raise SystemExit(f"kbert serve did not start:\n{line}{log.read()[-3000:]}")
            print(line.strip())
            yield f"{match.group(1)}:{match.group(2)}"
        finally:
            process.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = process.wait(timeout=60)
            print(f"server stopped by SIGTERM: exit code {code} after "
                  f"{time.monotonic() - start:.1f} s")


def model_name(client, args) -> str:
    """--model, or the single model a kbert serve root has (found from its directory)."""
    if args.model:
        return args.model
    if args.root:
        names = [e for e in sorted(os.listdir(args.root)) if not e.startswith(".")
                 and os.path.isdir(os.path.join(args.root, e))]
        if len(names) == 1:
            return names[0]
        raise SystemExit(f"{args.root} has models {names}: pick one with --model")
    if args.model_dir:
        return "model"
    raise SystemExit("--model is needed with --target")
