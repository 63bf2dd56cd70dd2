"""FUSE phase: fold per-channel MUL/ADD (BatchNorm) into convolutions and fuse activations into producers."""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op
from tflq.ops.base import ACTIVATION_FUNCTIONS, POSITIVELY_HOMOGENEOUS


def _sole_consumer(graph: Graph, name: str, consumers: dict[str, list[Op]]) -> Op | None:
    users = consumers.get(name, [])
    if len(users) != 1 or name in graph.outputs:
        return None
    return users[0]


def _absorb(graph: Graph, producer: Op, op: Op, producers: dict[str, Op]) -> None:
    """`producer` now computes what `op` did: it writes op's output and op goes away."""
    producer.outputs[0] = op.outputs[0]
    graph.remove_op(op)
    producers[op.outputs[0]] = producer


def _per_channel_vector(value: np.ndarray, channels: int, out_rank: int) -> np.ndarray | None:
    """The constant as a [channels] vector if it broadcasts along the last axis only, else None."""
    if value.ndim > out_rank:
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(())), np.float32)
    if value.shape[-1] == channels and value.size == channels:
        return value.reshape(channels).astype(np.float32)
    return None


def _affine_slots(op: Op | None, graph: Graph,
                  activations: frozenset[str] = frozenset({"NONE"})) -> tuple[int, int, int] | None:
    """(weight input, bias input, output-channel axis of the weights) of an op with constant
    weights and bias and a fused activation among `activations` (by default none): one an
    affine map after it folds into."""
    if op is None:
        return None
    spec = registry.spec(op.kind)
    bias = spec.bias
    weight = next((w for w in spec.weights if bias is not None and w.index == bias.weight), None)
    if weight is None or weight.axis is None or not spec.fused_activation or \
            op.attrs.fused_activation not in activations or len(op.inputs) <= bias.index or \
            not graph.is_constant(op.inputs[weight.index]) or not graph.is_constant(op.inputs[bias.index]):
        return None
    return weight.index, bias.index, weight.axis


def fold_affine_into_producer(graph: Graph) -> int:
    """x = CONV(...); y = x * c + d  ->  CONV with scaled weights and shifted bias (BatchNorm folding).

    A scale c > 0 also folds through a fused RELU (relu(y) * c = relu(y * c)): a standalone
    BatchNorm after a ReLU (tf2onnx exports them) then keeps only its ADD, and the int8 file
    one rounding fewer (the per-channel MUL constant on a per-tensor grid, and its output)."""
    count = 0
    producers = graph.producers()
    consumers = graph.consumer_map()
    for op in list(graph.ops):
        affine = registry.spec(op.kind).affine(op, graph)
        if affine is None:
            continue
        x = affine.x
        producer = producers.get(x)
        through = POSITIVELY_HOMOGENEOUS if affine.scale is not None else frozenset({"NONE"})
        slots = _affine_slots(producer, graph, through)
        if slots is None or _sole_consumer(graph, x, consumers) is not op:
            continue
        out = graph.tensors[op.outputs[0]]
        if out.shape != graph.tensors[x].shape:
            continue
        w_index, b_index, axis = slots
        weights = graph.tensors[producer.inputs[w_index]]
        channels = weights.shape[axis]
        constant = affine.scale if affine.scale is not None else affine.shift
        vector = _per_channel_vector(np.asarray(constant), channels, out.rank)
        if vector is None or (producer.attrs.fused_activation != "NONE" and
                              not np.all(vector > 0)):
            continue
        bias = graph.tensors[producer.inputs[b_index]].data.astype(np.float32)
        producer.statistics = _carried_statistics(producer, op, affine, vector)
        if affine.scale is not None:
            shape = [1] * weights.rank
            shape[axis] = channels
            new_w = (weights.data * vector.reshape(shape)).astype(np.float32)
            producer.inputs[w_index] = graph.add_constant(f"{producer.inputs[w_index]}/folded", new_w)
            bias = bias * vector
        else:
            bias = bias + vector
        producer.inputs[b_index] = graph.add_constant(f"{producer.inputs[b_index]}/folded",
                                                      bias.astype(np.float32))
        _absorb(graph, producer, op, producers)
        count += 1
    if count:
        graph.remove_unused()
    return count


def _carried_statistics(producer: Op, op: Op, affine, vector: np.ndarray):
    """The statistics of the producer's output once it computes `op` too: op's own where it
    has them (the BatchNorm's ADD), else the producer's through the affine map, else none."""
    if op.statistics is not None:
        return op.statistics
    if producer.statistics is None:
        return None
    if affine.scale is not None:  # (a scale > 0 folds through a fused RELU: relu(y) c = relu(c y))
        return producer.statistics.affine(scale=vector)
    return producer.statistics.affine(shift=vector)


def divisions_by_constants_to_multiplications(graph: Graph) -> int:
    """DIV of a CONV/FC output by a constant -> MUL by its reciprocal, which then folds into it.

    For example PyTorch's fused Conv-BatchNorm QAT modules export Conv -> Div -> Add -> BatchNormalization
    (the weights are fake-quantized with the BatchNorm scale already in them); once the Div is a
    MUL the whole chain folds into the Conv, whose weights land back on the graph's grid."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != "DIV" or not graph.is_constant(op.inputs[1]) or graph.is_constant(op.inputs[0]):
            continue
        producer = producers.get(op.inputs[0])
        if _affine_slots(producer, graph) is None or len(graph.consumers(op.inputs[0])) != 1:
            continue
        divisor = graph.tensors[op.inputs[1]]
        if not divisor.dtype.is_float or not np.all(np.isfinite(divisor.data)) or \
                np.any(divisor.data == 0):
            continue
        inverse = (1.0 / divisor.data.astype(np.float64)).astype(divisor.dtype.numpy)
        reciprocal = graph.add_constant(f"{op.inputs[1]}/reciprocal", inverse)
        index = graph.ops.index(op)
        graph.remove_op(op)
        graph.add_op(Op("MUL", [op.inputs[0], reciprocal], list(op.outputs), op.attrs, op.origin),
                     index)
        count += 1
    if count:
        graph.remove_unused()
    return count


def fuse_activations(graph: Graph) -> int:
    """An activation op whose input has its producer as the only writer and itself as the only
    reader becomes the producer's fused_activation_function, where the producer's kernels apply it
    in every variant the op may end up in (its spec's FusedActivations.everywhere(): the fuse pass
    runs before quantization decides float, integer or hybrid). TANH is applied by no kernel but
    the hybrid FULLY_CONNECTED, so it stays an op: fused into ADD, LiteRT ignores it."""
    count = 0
    producers = graph.producers()
    consumers = graph.consumer_map()
    for op in list(graph.ops):
        if op.kind not in ACTIVATION_FUNCTIONS:
            continue
        producer = producers.get(op.inputs[0])
        table = registry.spec(producer.kind).fused_activation if producer is not None else None
        if (table is None or op.kind not in table.everywhere()
                or producer.attrs.fused_activation != "NONE"
                or _sole_consumer(graph, op.inputs[0], consumers) is not op):
            continue
        producer.replace_attrs(fused_activation=op.kind)
        _absorb(graph, producer, op, producers)
        count += 1
    if count:
        graph.remove_unused()
    return count
