"""Files on disk: atomic writers (`atomic`) and the kbert model directory (`model_dir`).

No TensorFlow or Keras here: reading and writing a model directory needs numpy and
safetensors only.
"""
