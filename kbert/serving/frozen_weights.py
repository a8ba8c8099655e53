"""Frozen weights: TF's oneDNN matrix products keep each weight matrix packed, in a
serving process.

    configure(on) -> bool      turns the mode on (unless the environment says 0) or off for
                               this process; `kbert serve` calls it before loading
    is_enabled() -> bool       whether this process runs with it
    check_saved_model(path)    raises ServingError(FAILED_PRECONDITION) for a SavedModel the
                               mode would get wrong, naming the node

TF's oneDNN kernels read `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` once, when the first matrix
product kernel is built. With it, a fused MatMul + BiasAdd (or + Add) reorders its weight
matrix into oneDNN's blocked layout on its first call and keeps that copy; without it, it
runs on the plain row-major weights with a slower kernel, or repacks them on every call.
At batch 1 the products are most of a call (docs/PERF_SERVING.md).

The copy is never refreshed, so the mode is for processes that only serve: a weight that
changes (training) or a "weight" computed from each request (a MatMul whose second operand
is not a variable or constant, feeding a bias add) would be read as it was on the first
call. Every kbert export is safe (tests check every kind); `check_saved_model` refuses the
others before they load. The mode is process-wide, so library code never turns it on: a
Python process that also trains must not have it.
"""

from __future__ import annotations

import os

import grpc
from tensorflow.core.protobuf import saved_model_pb2

from kbert.export.layout import SAVED_MODEL_FILE
from kbert.serving.errors import ServingError

ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"

# The values TF's ReadBoolFromEnvVar accepts (anything else aborts the process when the
# first product kernel is built).
_TRUE, _FALSE = ("1", "true"), ("0", "false")

# Products whose second operand TF's oneDNN kernels cache in this mode, and the consumers
# that make grappler fuse a MatMul into such a product (a MatMul feeding anything else
# stays a plain MatMul, which does not cache; FIELD_NOTES "Frozen weights").
_CACHING_OPS = {"_FusedMatMul", "Conv2D", "Conv3D", "DepthwiseConv2dNative", "_FusedConv2D",
                "_FusedDepthwiseConv2dNative", "Conv2DBackpropInput"}
_FUSING_CONSUMERS = {"BiasAdd", "Add", "AddV2"}
# Ops a weight passes through unchanged in value between its variable and the product.
_PASS_THROUGH = {"Identity", "Reshape", "Cast", "Transpose", "ExpandDims", "Squeeze",
                 "StopGradient", "Snapshot"}
_WEIGHT_SOURCES = {"Const", "ReadVariableOp", "VariableV2", "Variable", "VarHandleOp"}


def is_enabled() -> bool:
    """Whether this process runs with frozen weights (`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`).

    Raises:
        ValueError: the variable holds something TF cannot read as a bool (TF would abort
            the process on it).
    """
    value = os.environ.get(ENV)
    if value is None:
        return False
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{ENV}={value!r}: use 1 or 0 (true or false)")


def configure(on: bool) -> bool:
    """Turns frozen weights on for this process (unless `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS`
    is already set: a user's 0 is kept) or off. Returns whether the mode is on.

    Must run before TF builds its first matrix product kernel (loading a SavedModel does
    not; its first call does); later it changes nothing.

    Raises:
        ValueError: as `is_enabled`.
    """
    if on:
        os.environ.setdefault(ENV, "1")
    else:
        os.environ[ENV] = "0"
    return is_enabled()


def computed_weights(saved_model: saved_model_pb2.SavedModel) -> list[str]:
    """The products of `saved_model` that frozen weights would get wrong: "function/node"
    names (the top-level graph's nodes without a function name), in graph order.

    A product is wrong in the mode when oneDNN caches its second operand and that operand
    is not a weight: not a constant or a variable read (through reshapes, casts,
    identities and transposes)."""
    found = []
    for meta_graph in saved_model.meta_graphs:
        graph_def = meta_graph.graph_def
        for function in graph_def.library.function:
            found += [f"{function.signature.name}/{name}"
                      for name in _computed(function.node_def)]
        found += _computed(graph_def.node)
    return list(dict.fromkeys(found))


def check_saved_model(path: str, name: str = "", version: int | None = None) -> None:
    """Raises ServingError(FAILED_PRECONDITION) when the SavedModel in directory `path` has
    a product that frozen weights would compute from stale operands (`computed_weights`).
    `name` and `version` only label the message."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    nodes = computed_weights(saved_model)
    if nodes:
        label = f"model {name} version {version}" if name else path
        more = f" (and {len(nodes) - 1} more)" if len(nodes) > 1 else ""
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, (
            f"{label}: node {nodes[0]}{more} multiplies by a matrix computed from each "
            f"request, which TF's oneDNN kernels would keep from the first request with "
            f"frozen weights on ({ENV}=1, kbert serve's default); serve it with "
            f"`kbert serve --no-frozen-weights`"))


def _node_name(reference: str) -> str:
    """An input reference -> the node (or function argument) it names: "node:output:0"
    and "arg" in a FunctionDef, "node:1", "node" and "^control" in a GraphDef."""
    return reference.lstrip("^").split(":")[0]


def _computed(nodes) -> list[str]:
    by_name = {node.name: node for node in nodes}
    consumers: dict[str, list] = {}
    for node in nodes:
        for reference in node.input:
            if not reference.startswith("^"):
                consumers.setdefault(_node_name(reference), []).append(node)

    def is_weight(reference: str) -> bool:
        node = by_name.get(_node_name(reference))
        while node is not None and node.op in _PASS_THROUGH:
            node = by_name.get(_node_name(node.input[0]))
        # A function argument that is not a variable handle may be anything: not a weight.
        return node is not None and node.op in _WEIGHT_SOURCES

    def fuses(node) -> bool:
        seen = list(consumers.get(node.name, ()))
        while seen:
            consumer = seen.pop()
            if consumer.op in _FUSING_CONSUMERS:
                return True
            if consumer.op == "Identity":
                seen += consumers.get(consumer.name, ())
        return False

    return [node.name for node in nodes
            if len(node.input) > 1 and not is_weight(node.input[1])
            and (node.op in _CACHING_OPS or (node.op == "MatMul" and fuses(node)))]
