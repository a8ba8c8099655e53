"""Writes the Colab notebooks in colab/ from the cell sources below (edit here, then run
`python scripts/make_notebooks.py`; tests/test_notebooks.py executes the written files).

Every notebook: installs kbert when it is not importable, has one `SMALL` switch (a few
minutes on a CPU; tests run it so) and otherwise the real configuration, picks TPU / GPU /
CPU through kbert's own `select_strategy`, reads data from gs:// or local paths, and
calls the same public API as the CLI (no model code in the notebook).
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = os.path.join(os.path.dirname(__file__), "..", "colab")

INSTALL = '''\
# kbert and its dependencies (tensorflow, tensorflow-text, keras-hub, ...). On Colab, point
# KBERT_PIP at where you get kbert from (a wheel, a git URL, or "kbert").
import importlib.util, subprocess, sys
KBERT_PIP = "kbert"
if importlib.util.find_spec("kbert") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", KBERT_PIP])'''

STRATEGY = '''\
# TPU if Colab gives one (TPUClusterResolver), else several GPUs, else the default strategy.
from kbert.training.distribute import select_strategy
strategy = select_strategy("auto")
print(type(strategy).__name__, "with", strategy.num_replicas_in_sync, "replica(s)")'''

PRETRAINING = [
    new_markdown_cell(
        "# Pre-training BERT (masked LM + next sentence prediction) with kbert\n\n"
        "Runs on a Colab TPU, a GPU or a CPU: tokenization, masking and NSP pairs run in "
        "`tf.data` on the host, the model under the strategy kbert picks. Corpus format: "
        "one sentence or paragraph per line, a blank line between documents. On a TPU, "
        "keep the corpus in a `gs://` bucket (TPU workers may not see the VM's disk).\n\n"
        "`SMALL = True` pre-trains a tiny model on the bundled public-domain sample for a "
        "few minutes; set it to False and point `CORPUS` at your data for a real run."),
    new_code_cell(INSTALL),
    new_code_cell('''\
SMALL = True   # the one switch: a tiny model on the bundled sample (minutes on a CPU)
import os
import kbert.data
SAMPLE = os.path.join(os.path.dirname(kbert.data.__file__), "samples", "books_sample.txt")
CORPUS = [SAMPLE] if SMALL else ["gs://YOUR_BUCKET/corpus/*.txt"]
OUT = "runs/colab_pretrain" if SMALL else "runs/pretrain_base"   # checkpoints + model
PRESET = "tiny" if SMALL else "base"
VOCAB_SIZE = 4000 if SMALL else 30522
STEPS = 60 if SMALL else 100_000
SEQ_LEN, MAX_PREDICTIONS = (64, 10) if SMALL else (128, 20)
BATCH_SIZE = 32 if SMALL else 256'''),
    new_code_cell(STRATEGY),
    new_code_cell('''\
# A WordPiece vocabulary learned from the corpus (kbert vocab); gs:// paths work.
import tensorflow as tf
from kbert.data.documents import expand_files
from kbert.text.vocab import build_vocab, write_vocab
os.makedirs(OUT, exist_ok=True)
vocab_path = os.path.join(OUT, "vocab.txt")
if not os.path.exists(vocab_path):
    tokens = build_vocab(expand_files(CORPUS), VOCAB_SIZE, min_count=3 if SMALL else 10)
    write_vocab(tokens, vocab_path)
print(sum(1 for _ in open(vocab_path)), "tokens in", vocab_path)'''),
    new_code_cell('''\
# Pre-train (kbert pretrain). Re-running this cell with the same OUT resumes from the last
# checkpoint and stops at STEPS; bfloat16 on TPU, float16 on GPU, float32 on CPU.
from kbert.training.pretrain import PretrainingSettings, pretrain
settings = PretrainingSettings(
    corpus=tuple(CORPUS), out=OUT, vocab=vocab_path, preset=PRESET, seq_len=SEQ_LEN,
    max_predictions=MAX_PREDICTIONS, batch_size=BATCH_SIZE, steps=STEPS,
    learning_rate=1e-3 if SMALL else 1e-4, checkpoint_every=50 if SMALL else 1000,
    log_every=10 if SMALL else 100, seed=0)
result = pretrain(settings)
print("steps:", result.step, "model directory:", result.model_dir)'''),
    new_code_cell('''\
# What the masked LM learned (kbert fill-mask).
from kbert.tasks.fill_mask import fill_mask
for text, masks in zip(["the [MASK] of the house.", "she [MASK] to him."],
                       fill_mask(result.model_dir, ["the [MASK] of the house.",
                                                    "she [MASK] to him."], top_k=5)):
    print(text, "->", [token for token, _ in masks[0]])'''),
]

FINETUNING = [
    new_markdown_cell(
        "# Fine-tuning with kbert: a classifier and SQuAD-style question answering\n\n"
        "Starts from any kbert model directory: one pre-trained with kbert (the "
        "pre-training notebook), or a Hugging Face / original TF1 BERT converted with "
        "`kbert convert`. `SMALL = True` uses the pre-training notebook's tiny model (or a "
        "freshly initialised tiny one) and the bundled samples."),
    new_code_cell(INSTALL),
    new_code_cell('''\
SMALL = True   # the one switch
import os
import kbert.data
SAMPLES = os.path.join(os.path.dirname(kbert.data.__file__), "samples")
MODEL = "runs/colab_pretrain/model" if SMALL else "models/bert-base-uncased"  # kbert convert
TRAIN = os.path.join(SAMPLES, "authors_train.tsv") if SMALL else "gs://YOUR_BUCKET/sst2/train.tsv"
EVAL = os.path.join(SAMPLES, "authors_dev.tsv") if SMALL else "gs://YOUR_BUCKET/sst2/dev.tsv"
QA_TRAIN = os.path.join(SAMPLES, "qa_sample.json") if SMALL else "gs://YOUR_BUCKET/squad/train-v1.1.json"
QA_EVAL = os.path.join(SAMPLES, "qa_sample.json") if SMALL else "gs://YOUR_BUCKET/squad/dev-v1.1.json"
EPOCHS = 1 if SMALL else 3
OUT = "runs/colab_finetune"'''),
    new_code_cell(STRATEGY),
    new_code_cell('''\
# SMALL without the pre-training notebook's output: a freshly initialised tiny model.
if SMALL and not os.path.exists(MODEL):
    from kbert.config import BertConfig
    from kbert import build_encoder
    from kbert.io.model_dir import save_model
    from kbert.text.vocab import build_vocab
    tokens = build_vocab([os.path.join(SAMPLES, "books_sample.txt")], 4000, min_count=3)
    config = BertConfig.from_preset("tiny", vocabulary_size=len(tokens))
    save_model(build_encoder(config), config, MODEL, tokens)
print("starting from", MODEL)'''),
    new_code_cell('''\
# Sentence classification (kbert finetune classify): labels from the training file, the
# best epoch by accuracy, metrics.json and predictions.jsonl in OUT.
from kbert.finetuning import FinetuneSettings, finetune, predict
from kbert.tasks.registry import get_task
classifier = finetune(get_task("classify"), FinetuneSettings(
    model=MODEL, train=TRAIN, eval=EVAL, out=f"{OUT}/classifier", epochs=EPOCHS,
    batch_size=32, learning_rate=1e-4 if SMALL else 2e-5, seq_len=128, overwrite=True))
print(classifier.metrics["best"])
for p in predict(classifier.model_dir, ["Call me Ishmael.", "Emma was not pleased."]):
    print(p["label"], round(max(p["probabilities"].values()), 3))'''),
    new_code_cell('''\
# Extractive QA (kbert finetune qa): SQuAD JSON, T = 384, doc stride 128, n-best 20,
# official EM / F1.
qa = finetune(get_task("qa"), FinetuneSettings(
    model=MODEL, train=QA_TRAIN, eval=QA_EVAL, out=f"{OUT}/qa", epochs=EPOCHS,
    batch_size=16 if SMALL else 32, learning_rate=1e-4 if SMALL else 5e-5,
    seq_len=128 if SMALL else 384, overwrite=True,
    options={"doc_stride": 64 if SMALL else 128}))
print(qa.metrics["best"])
print(predict(qa.model_dir, [("Who was the speaker?", "The speaker was Anna Pavlovna.")])[0])'''),
]

EXPORT = [
    new_markdown_cell(
        "# Export, serve and query a kbert model; TFLite with the tokenizer inside\n\n"
        "Exports the classifier of the fine-tuning notebook as a SavedModel that takes raw "
        "strings (TF Serving layout `saved_models/NAME/VERSION/`), starts `kbert serve` "
        "(TF Serving's gRPC and REST APIs), queries it over gRPC, and runs the TFLite "
        "file. The same SavedModel runs in the `tensorflow/serving` container."),
    new_code_cell(INSTALL),
    new_code_cell('''\
SMALL = True   # the one switch (both configurations export the fine-tuning notebook's model)
import os
MODEL = "runs/colab_finetune/classifier/model"
ROOT = "runs/colab_saved_models"
NAME = "authors" if SMALL else "classifier"'''),
    new_code_cell('''\
# Without the fine-tuning notebook's output: a quick one-epoch classifier on the samples.
if not os.path.exists(MODEL):
    import kbert.data
    from kbert.config import BertConfig
    from kbert import build_encoder
    from kbert.io.model_dir import save_model
    from kbert.text.vocab import build_vocab
    from kbert.finetuning import FinetuneSettings, finetune
    from kbert.tasks.registry import get_task
    samples = os.path.join(os.path.dirname(kbert.data.__file__), "samples")
    tokens = build_vocab([os.path.join(samples, "books_sample.txt")], 4000, min_count=3)
    config = BertConfig.from_preset("tiny", vocabulary_size=len(tokens))
    save_model(build_encoder(config), config, "runs/colab_tiny", tokens)
    MODEL = finetune(get_task("classify"), FinetuneSettings(
        model="runs/colab_tiny", train=os.path.join(samples, "authors_train.tsv"),
        out="runs/colab_export_classifier", epochs=1, overwrite=True)).model_dir
print("exporting", MODEL)'''),
    new_code_cell('''\
# kbert export: a new version directory, written atomically, with warm-up requests and a
# model.tflite (tokenizer inside, dynamic-range int8 in the full configuration).
from kbert.export import export_saved_model, inspect_saved_model
path = export_saved_model(MODEL, out_root=ROOT, name=NAME, tflite=True,
                          quantize=None if SMALL else "dynamic")
print(path)
print(inspect_saved_model(path))'''),
    new_code_cell('''\
# kbert serve on free local ports, then a gRPC Predict through kbert's client (the same
# client works against tensorflow_model_server).
from kbert.serving.server import ModelServer
from kbert.serving.client import PredictionClient
server = ModelServer(ROOT, port=0, rest_port=0)
server.start()
texts = ["It is a truth universally acknowledged, that a single man must be in want of a wife.",
         "Call me Ishmael. I thought I would sail about a little."]
with PredictionClient(f"127.0.0.1:{server.port}") as client:
    outputs = client.predict(NAME, {"text": texts})
for text, label, p in zip(texts, outputs["labels"], outputs["probabilities"].max(axis=1)):
    print(label, round(float(p), 3), text)'''),
    new_code_cell('''\
# The REST API answers the same request (TF Serving's JSON).
import json, urllib.request
body = json.dumps({"instances": [{"text": t} for t in texts]}).encode()
with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/{NAME}:predict",
                            body) as response:
    print(json.load(response)["predictions"][0]["labels"])
server.stop()'''),
    new_code_cell('''\
# The TFLite file on the same texts (ai-edge-litert interpreter + tf-text's kernels; on
# Android, register the same two custom ops).
from kbert.serving.tflite_runtime import TFLiteModel
lite = TFLiteModel(os.path.join(path, "model.tflite"))
print([label.decode() for label in lite(text=texts)["labels"]])'''),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cells in (("pretraining", PRETRAINING), ("finetuning", FINETUNING),
                        ("export_and_serve", EXPORT)):
        notebook = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
            "accelerator": "TPU", "colab": {"provenance": []}})
        nbformat.write(notebook, os.path.join(OUT, f"{name}.ipynb"))


if __name__ == "__main__":
    main()
