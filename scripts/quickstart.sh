#!/usr/bin/env bash
# kbert's main job in one command, on a fresh machine (about 10 minutes on 2 CPU cores):
#   set up .venv -> WordPiece vocabulary from a bundled public-domain books sample ->
#   pre-train a tiny BERT (masked LM + next sentence) -> fill-mask -> fine-tune it to tell
#   Jane Austen from Herman Melville (bundled paragraphs) -> export a SavedModel and a
#   TFLite file -> `kbert serve` -> gRPC request -> the TFLite model on the same texts ->
#   stop the server.
# Everything is written under runs/quickstart/ (KBERT_DEMO_DIR to change it); the export
# goes to saved_models/quickstart_authors/VERSION (a new version on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${KBERT_DEMO_DIR:-runs/quickstart}
SAMPLES=kbert/data/samples
STEPS=${KBERT_DEMO_STEPS:-1500}
step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

step "1/8 setting up .venv (pip install -e .)"
bash scripts/setup_env.sh
KBERT=.venv/bin/kbert
rm -rf "$WORK"
mkdir -p "$WORK"

step "2/8 WordPiece vocabulary from $SAMPLES/books_sample.txt"
"$KBERT" vocab "$SAMPLES/books_sample.txt" --size 6000 --min-count 3 --out "$WORK/vocab.txt"

step "3/8 pre-training a tiny BERT for $STEPS steps (masked LM + next sentence prediction)"
"$KBERT" pretrain --preset tiny --corpus "$SAMPLES/books_sample.txt" --vocab "$WORK/vocab.txt" \
  --seq-len 64 --max-predictions 10 --batch-size 32 --steps "$STEPS" --learning-rate 1e-3 \
  --checkpoint-every 500 --log-every 100 --seed 0 --out "$WORK/pretrain"

step "4/8 what the masked LM learned"
"$KBERT" fill-mask "$WORK/pretrain/model" "she was not [MASK] to be so happy." \
  "the whale [MASK] into the sea." --top-k 5

step "5/8 fine-tuning: Austen or Melville? ($SAMPLES/authors_train.tsv)"
"$KBERT" finetune classify --model "$WORK/pretrain/model" \
  --train "$SAMPLES/authors_train.tsv" --eval "$SAMPLES/authors_dev.tsv" \
  --epochs 3 --batch-size 32 --learning-rate 1e-4 --seq-len 128 --seed 0 --out "$WORK/authors"

step "6/8 export: SavedModel (strings in) + TFLite with the tokenizer inside"
"$KBERT" export "$WORK/authors/model" --name quickstart_authors --tflite
"$KBERT" inspect saved_models/quickstart_authors

step "7/8 kbert serve + a gRPC request"
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

step "8/8 the TFLite model on the same texts (ai-edge-litert interpreter + tf-text kernels)"
TFLITE=$(ls -d saved_models/quickstart_authors/*/ | sort -t/ -k3 -n | tail -1)model.tflite
.venv/bin/python - "$TFLITE" "$TEXT1" "$TEXT2" <<'PY'
import sys
from kbert.serving.tflite_runtime import TFLiteModel
model = TFLiteModel(sys.argv[1])
out = model(text=sys.argv[2:])
for text, label, p in zip(sys.argv[2:], out["labels"], out["probabilities"].max(axis=1)):
    print(f"{label.decode()}\t{p:.4f}\t{text}")
PY
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
step "done: model in $WORK/authors/model, export in saved_models/quickstart_authors/"
