"""Input pipelines: pre-training corpora and (later) task readers."""
