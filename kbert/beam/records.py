"""One result row -> the record each output format stores.

A result is the input's id and the signature's outputs for that row ({name: numpy value},
`kbert.beam.inference.split_outputs`). Formats:

    jsonl     {"id": ..., name: value, ...}; strings decoded as UTF-8, arrays as lists
    tfrecord  a tf.train.Example: "id" bytes, each output flattened into a float, int64
              or bytes list (shapes are the signature's, in kbert_export.json)
    parquet   columns "id" and one per output; [C] outputs are lists, [W, C] lists of lists
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

OUTPUT_FORMATS = ("jsonl", "tfrecord", "parquet")
SUFFIXES = {"jsonl": ".jsonl", "tfrecord": ".tfrecord", "parquet": ".parquet"}


def check_output_format(name: str) -> str:
    if name not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {name!r}; choose one of {OUTPUT_FORMATS}")
    return name


def python_value(value) -> Any:
    """A numpy output value as plain Python: bytes decoded (UTF-8, bad bytes replaced),
    arrays as (nested) lists, numpy scalars as int / float / bool."""
    value = np.asarray(value)
    if value.dtype.kind in "SO":
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in value.reshape(-1)]
        return flat[0] if value.ndim == 0 else np.array(flat, dtype=object).reshape(
            value.shape).tolist()
    return value.tolist()


def json_record(row_id: str, outputs: Mapping[str, Any]) -> dict:
    record = {"id": row_id}
    for name, value in outputs.items():
        record[name] = python_value(value)
    return record


def json_line(row_id: str, outputs: Mapping[str, Any]) -> str:
    return json.dumps(json_record(row_id, outputs), ensure_ascii=False)


def example_bytes(row_id: str, outputs: Mapping[str, Any]) -> bytes:
    """A serialized tf.train.Example of the row."""
    # lazy: only the tfrecord format needs TensorFlow's protos
    import tensorflow as tf

    feature = {"id": tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[row_id.encode("utf-8")]))}
    for name, value in outputs.items():
        value = np.asarray(value).reshape(-1)
        if value.dtype.kind in "SO":
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v if isinstance(v, bytes) else str(v).encode("utf-8") for v in value]))
        elif value.dtype.kind == "f":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(
                value=value.astype(np.int64)))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parquet_schema(output_specs: Mapping[str, Any]):
    """A pyarrow schema: "id" string, then each output by its TensorSpec (dtype, and
    shape past the batch dimension as nested lists; tagging rows vary in length)."""
    # lazy: pyarrow only for parquet
    import pyarrow as pa

    types = {"float32": pa.float32(), "float64": pa.float64(), "int32": pa.int32(),
             "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}
    fields = [pa.field("id", pa.string())]
    for name in sorted(output_specs):
        spec = output_specs[name]
        dtype = spec.dtype.name
        if dtype not in types:
            raise ValueError(f"output {name!r} has dtype {dtype}, which parquet output does "
                             "not map")
        arrow = types[dtype]
        for _ in range(max(len(spec.shape) - 1, 0)):
            arrow = pa.list_(arrow)
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)
