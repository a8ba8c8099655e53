"""Pre-training step throughput: kbert vs Hugging Face transformers (PyTorch, CPU).

Same config / batch / sequence length / number of masked predictions, random token ids,
each contender in its own worker process (its own thread pools: TF's idle threads spin for
a while after each op and, in one process, slowed the PyTorch loop run after them by up to
15%), rounds interleaved in a rotated order:

- kbert: `build_pretrainer` + BERT's AdamW, one `model.fit` train step (float32, and
  bfloat16 mixed precision), optionally XLA;
- PyTorch: `BertForPreTraining` + `torch.optim.AdamW`, the MLM head applied only at the
  masked positions (as kbert does) in float32 and under
  `torch.autocast("cpu", dtype=torch.bfloat16)` (float32 weights and optimizer, bfloat16
  matmuls: the counterpart of kbert's mixed_bfloat16), and as shipped (logits at every
  position, float32).

Prints sequences/s (median over rounds, after warm-up) and each contender's ratio to both
PyTorch masked-position contenders: compare kbert float32 with "vs pt fp32" and kbert
mixed_bfloat16 with "vs pt bf16" (equal precision). Needs the `reference` extra.

    python scripts/bench_pretraining_step.py --presets mini base
"""

import argparse
import os
import statistics
import time

import numpy as np


def make_batch(config, batch, length, predictions, seed=0):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, config.vocabulary_size, (batch, length)).astype("int32"),
         "segment_ids": (np.arange(length)[None] >= length // 2).repeat(batch, 0).astype("int32"),
         "padding_mask": np.ones((batch, length), "int32"),
         "mask_positions": np.sort(np.stack([rng.choice(np.arange(1, length - 1), predictions,
                                                        replace=False) for _ in range(batch)]),
                                   axis=1).astype("int32")}
    y = {"mlm_logits": rng.integers(5, config.vocabulary_size, (batch, predictions)).astype("int32"),
         "nsp_logits": rng.integers(0, 2, batch).astype("int32")}
    w = {"mlm_logits": np.ones((batch, predictions), "float32"),
         "nsp_logits": np.ones(batch, "float32")}
    return x, y, w


class KbertStep:
    def __init__(self, config, batch, precision, jit_compile):
        import keras
        import tensorflow as tf

        import kbert
        from kbert.models.pretrainer import build_pretrainer
        from kbert.training.optimizers import create_optimizer

        keras.config.set_dtype_policy(precision)
        model = build_pretrainer(kbert.build_encoder(config), config)
        model.compile(optimizer=create_optimizer(1e-4, total_steps=10_000),
                      jit_compile=jit_compile)
        keras.config.set_dtype_policy("float32")
        x, y, w = batch
        self.data = tf.data.Dataset.from_tensors((x, y, w)).repeat()
        self.model = model

    def run(self, steps):
        """Seconds from the first step's start to the last step's end (what PyTorch's loop
        measures); `self.fit_seconds` is the whole `fit()` call. Each `fit()` call also
        builds an iterator and callbacks and, now and then, spent seconds after its last step
        (seen: 4.4 s after a 10-step fit): timing whole 5-step calls capped every kbert
        variant at ~31 seq/s whatever the step cost."""
        import keras

        times = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if not times:
                    times.append(time.perf_counter())

            def on_train_batch_end(self, batch, logs=None):
                times.append(time.perf_counter())

        start = time.perf_counter()
        self.model.fit(self.data, steps_per_epoch=steps, epochs=1, verbose=0,
                       callbacks=[Clock()])
        self.fit_seconds = time.perf_counter() - start
        return times[-1] - times[0]


class TorchStep:
    def __init__(self, config, batch, masked_only, autocast=False):
        import torch
        import transformers

        hf = transformers.BertConfig(
            vocab_size=config.vocabulary_size, hidden_size=config.hidden_dim,
            num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_dim, hidden_act="gelu")
        self.model = transformers.BertForPreTraining._from_config(
            hf, attn_implementation="sdpa").train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, eps=1e-6,
                                           weight_decay=0.01)
        x, y, _ = batch
        self.ids = torch.from_numpy(x["token_ids"]).long()
        self.segments = torch.from_numpy(x["segment_ids"]).long()
        self.mask = torch.from_numpy(x["padding_mask"]).long()
        self.positions = torch.from_numpy(x["mask_positions"]).long()
        self.mask_ids = torch.from_numpy(y["mlm_logits"]).long()
        self.nsp = torch.from_numpy(y["nsp_logits"]).long()
        self.masked_only = masked_only
        self.autocast = autocast
        self.torch = torch

    def step(self):
        torch = self.torch
        self.optimizer.zero_grad()
        # Forward and loss under autocast, backward outside it (PyTorch's AMP recipe);
        # bfloat16 needs no loss scaling.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self._loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()

    def _loss(self):
        torch = self.torch
        if self.masked_only:
            out = self.model.bert(input_ids=self.ids, token_type_ids=self.segments,
                                  attention_mask=self.mask)
            hidden = torch.gather(out.last_hidden_state, 1, self.positions[..., None].expand(
                -1, -1, out.last_hidden_state.shape[-1]))
            mlm = self.model.cls.predictions(hidden)
            nsp = self.model.cls.seq_relationship(out.pooler_output)
            labels = self.mask_ids
        else:
            out = self.model(input_ids=self.ids, token_type_ids=self.segments,
                             attention_mask=self.mask)
            mlm, nsp = out.prediction_logits, out.seq_relationship_logits
            labels = torch.full(self.ids.shape, -100, dtype=torch.long)
            labels.scatter_(1, self.positions, self.mask_ids)
        return (torch.nn.functional.cross_entropy(mlm.reshape(-1, mlm.shape[-1]),
                                                  labels.reshape(-1), ignore_index=-100)
                + torch.nn.functional.cross_entropy(nsp, self.nsp))

    def run(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - start


TORCH_FP32 = "pytorch float32 masked positions"
TORCH_BF16 = "pytorch bf16 autocast masked positions"


def _make_contender(name: str, preset: str, args):
    from kbert.config import BertConfig

    config = BertConfig.from_preset(preset, dropout=0.1)
    batch = make_batch(config, args.batch_size, args.seq_len, args.max_predictions)
    if name.startswith("kbert"):
        precision = "mixed_bfloat16" if "bfloat16" in name else "float32"
        return KbertStep(config, batch, precision, jit_compile=name.endswith("XLA"))
    import torch

    torch.set_num_threads(os.cpu_count())
    return TorchStep(config, batch, masked_only="masked positions" in name,
                     autocast=name == TORCH_BF16)


def _worker(name: str, preset: str, args, conn) -> None:
    """Builds one contender, warms it up, then times `steps` steps per request."""
    step = _make_contender(name, preset, args)
    step.run(2)  # warm-up: tracing, allocation
    conn.send("ready")
    while (steps := conn.recv()) is not None:
        seconds = step.run(steps)
        conn.send((seconds, getattr(step, "fit_seconds", None)))


def main():
    import multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["mini", "base"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-predictions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True")
    parser.add_argument("--skip-shipped", action="store_true",
                        help="skip PyTorch with logits at every position")
    parser.add_argument("--skip-autocast", action="store_true",
                        help="skip PyTorch under bfloat16 autocast (kbert's mixed_bfloat16 "
                             "then has no equal-precision rival)")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds of quiet before each timed run (the previous "
                             "worker's spinning threads go to sleep)")
    args = parser.parse_args()

    from kbert.config import BertConfig

    context = mp.get_context("spawn")
    for preset in args.presets:
        config = BertConfig.from_preset(preset, dropout=0.1)
        names = ["kbert float32", "kbert mixed_bfloat16", TORCH_FP32]
        if not args.skip_autocast:
            names.append(TORCH_BF16)
        if args.xla:
            names += ["kbert float32 XLA", "kbert mixed_bfloat16 XLA"]
        if not args.skip_shipped:
            names.append("pytorch float32 as shipped")
        workers = {}
        for name in names:  # one at a time, so no warm-up overlaps another's
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(name, preset, args, child),
                                      daemon=True)
            process.start()
            if parent.recv() != "ready":
                raise RuntimeError(f"{name}: worker failed to start")
            workers[name] = (process, parent)
        rates = {name: [] for name in names}
        fit_rates = {name: [] for name in names if name.startswith("kbert")}
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                conn = workers[name][1]
                time.sleep(args.pause)
                conn.send(args.steps)
                seconds, fit_seconds = conn.recv()
                rates[name].append(args.steps * args.batch_size / seconds)
                if name in fit_rates:
                    fit_rates[name].append(args.steps * args.batch_size / fit_seconds)
        for process, conn in workers.values():
            conn.send(None)
            process.join(timeout=30)
        references = [statistics.median(rates[n]) if n in rates else None
                      for n in (TORCH_FP32, TORCH_BF16)]

        def ratios(median):
            return "".join(f"{median / r:10.2f}x" if r else f"{'-':>11s}" for r in references)

        print(f"\n{preset} (L{config.num_layers}/H{config.hidden_dim}), T={args.seq_len}, "
              f"B={args.batch_size}, P={args.max_predictions}, {os.cpu_count()} cores, "
              f"{args.rounds} rounds x {args.steps} steps, one process per contender")
        print(f"{'':38s} {'seq/s':>8s} {'vs pt fp32':>11s}{'vs pt bf16':>11s}   per round")
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{name:38s} {median:8.2f} {ratios(median)}   "
                  + " ".join(f"{v:.1f}" for v in values))
        print("whole fit() calls (with setup/teardown):")
        for name, values in fit_rates.items():
            median = statistics.median(values)
            print(f"{name:38s} {median:8.2f} {ratios(median)}")
        print("(vs pt fp32 / bf16: this rate / PyTorch's masked-positions step in float32 / "
              "under bfloat16 autocast; equal precision: kbert float32 with fp32, "
              "kbert mixed_bfloat16 with bf16)")


if __name__ == "__main__":
    main()
