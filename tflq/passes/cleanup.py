"""CLEANUP phase: drop ops that do nothing (same-shape RESHAPE, identity TRANSPOSE) or whose results nobody uses."""
from __future__ import annotations

import numpy as np

from tflq.ir.graph import Graph, Op


def _private_producer(graph: Graph, name: str, kind: str, producers: dict[str, Op]) -> Op | None:
    """The `kind` op producing `name`, if `name` feeds nothing else (so the two can be merged)."""
    op = producers.get(name)
    if (op is None or op.kind != kind or name in graph.outputs
            or len(graph.consumers(name)) != 1):
        return None
    return op


def remove_noop_ops(graph: Graph) -> int:
    """RESHAPE to the same shape, TRANSPOSE by the identity, and RESHAPE of a RESHAPE."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind == "RESHAPE":
            x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
            if x.shape == y.shape and x.quant == y.quant and graph.bypass(op) is not None:
                count += 1
                producers = graph.producers()
                continue
            inner = _private_producer(graph, op.inputs[0], "RESHAPE", producers)
            if inner is not None:
                op.inputs[0] = inner.inputs[0]
                graph.remove_op(inner)
                count += 1
        elif op.kind == "TRANSPOSE":
            perm = graph.tensors[op.inputs[1]].data
            if perm is not None and np.array_equal(perm, np.arange(perm.size)) and graph.bypass(op) is not None:
                count += 1
                producers = graph.producers()
    if count:
        graph.remove_unused()
    return count


def transposes_of_unit_axes_to_reshapes(graph: Graph) -> int:
    """A TRANSPOSE that only moves size-1 axes keeps the bytes in order: a RESHAPE does it (a CRNN's
    [1, W, C] -> [W, 1, C] at batch 1, a bidirectional LSTM's [T, 2, 1, H] -> [T, 1, 2, H])."""
    count = 0
    for op in list(graph.ops):
        if op.kind != "TRANSPOSE" or not graph.is_constant(op.inputs[1]):
            continue
        x = graph.tensors[op.inputs[0]]
        perm = [int(p) for p in graph.tensors[op.inputs[1]].data]
        kept = [axis for axis in perm if x.shape[axis] != 1]
        if kept != sorted(kept):
            continue
        shape = graph.add_constant(f"{op.outputs[0]}/shape",
                                   np.array(graph.tensors[op.outputs[0]].shape, np.int32))
        index = graph.ops.index(op)
        graph.remove_op(op)
        graph.add_op(Op("RESHAPE", [op.inputs[0], shape], list(op.outputs), origin=op.origin), index)
        count += 1
    if count:
        graph.remove_unused()
    return count


def remove_dead_ops(graph: Graph) -> int:
    """Ops none of whose outputs is consumed or a graph output."""
    count = 0
    changed = True
    while changed:
        changed = False
        used = set(graph.outputs)
        for op in graph.ops:
            used.update(op.inputs)
        for op in list(graph.ops):
            if not any(name in used for name in op.outputs):
                graph.remove_op(op)
                count += 1
                changed = True
    if count:
        graph.remove_unused()
    return count


def _split_groups(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[list[int]] | None:
    """For a reshape that only splits axes: the output axes each input axis becomes, else None."""
    groups, j = [], 0
    for d in in_shape:
        group, product = [], 1
        if d == 1:
            if j >= len(out_shape) or out_shape[j] != 1:
                return None
            group, j = [j], j + 1
        else:
            while product < d and j < len(out_shape):
                product *= out_shape[j]
                group.append(j)
                j += 1
            if product != d:
                return None
        groups.append(group)
    return groups if j == len(out_shape) else None


def sink_transpose_through_reshape(graph: Graph) -> int:
    """TRANSPOSE then a RESHAPE that only splits axes -> RESHAPE then TRANSPOSE.

    Moving the transpose after the reshape lets it meet (and merge with) a following TRANSPOSE,
    as in YOLO heads: NHWC conv -> [to NCHW] -> reshape to 5-D -> transpose.
    """
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != "RESHAPE":
            continue
        t_op = _private_producer(graph, op.inputs[0], "TRANSPOSE", producers)
        if t_op is None:
            continue
        x = graph.tensors[t_op.inputs[0]]
        y, z = graph.tensors[t_op.outputs[0]], graph.tensors[op.outputs[0]]
        groups = _split_groups(y.shape, z.shape)
        if groups is None or x.quant != z.quant:
            continue
        perm = [int(p) for p in graph.tensors[t_op.inputs[1]].data]
        inverse = {k: i for i, k in enumerate(perm)}
        split_shape, start, offset = [], {}, 0
        for k in range(len(perm)):
            start[k] = offset
            sizes = [z.shape[j] for j in groups[inverse[k]]]
            split_shape += sizes
            offset += len(sizes)
        new_perm = [start[perm[i]] + t for i in range(len(perm)) for t in range(len(groups[i]))]
        mid = graph.add_activation(f"{op.outputs[0]}/split", x.dtype, split_shape, x.layout)
        shape_const = graph.add_constant(f"{mid}/shape", np.array(split_shape, np.int32))
        perm_const = graph.add_constant(f"{op.outputs[0]}/perm", np.array(new_perm, np.int32))
        graph.insert_before(op, Op("RESHAPE", [t_op.inputs[0], shape_const], [mid], origin=op.origin))
        graph.insert_before(op, Op("TRANSPOSE", [mid, perm_const], [op.outputs[0]], origin=op.origin))
        graph.remove_op(op)
        graph.remove_op(t_op)
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def merge_transposes(graph: Graph) -> int:
    """TRANSPOSE(a) then TRANSPOSE(b) -> one TRANSPOSE (removed later if it is the identity)."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != "TRANSPOSE":
            continue
        first = _private_producer(graph, op.inputs[0], "TRANSPOSE", producers)
        if first is None:
            continue
        a = graph.tensors[first.inputs[1]].data
        b = graph.tensors[op.inputs[1]].data
        combined = np.array([a[int(i)] for i in b], np.int32)
        op.inputs = [first.inputs[0], graph.add_constant(f"{op.outputs[0]}/perm", combined)]
        graph.remove_op(first)
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def _commutes_with(op: Op, perm: list[int]) -> bool:
    from tflq import ops as registry
    from tflq.ops.base import Transparent

    if len(op.inputs) != 1 or len(op.outputs) != 1:
        return False
    if registry.spec(op.kind).row_wise:  # commutes with a transpose keeping the last axis
        return perm[-1] == len(perm) - 1
    return isinstance(registry.spec(op.kind).layout, Transparent)


def sink_transpose_through_unary(graph: Graph) -> int:
    """TRANSPOSE then a one-input op that commutes with it -> the op, then the TRANSPOSE.

    Lets the transpose meet the next one: a softmax over channels, imported as transpose ->
    SOFTMAX -> transpose back, becomes a bare SOFTMAX once the two transposes cancel.
    """
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        t_op = _private_producer(graph, op.inputs[0], "TRANSPOSE", producers) if op.inputs else None
        if t_op is None or op.outputs[0] in graph.outputs:
            continue
        perm = [int(p) for p in graph.tensors[t_op.inputs[1]].data]
        if not _commutes_with(op, perm):
            continue
        x, y = graph.tensors[t_op.inputs[0]], graph.tensors[op.outputs[0]]
        mid = graph.add_activation(f"{op.outputs[0]}/before_transpose", y.dtype, x.shape, x.layout)
        op.inputs[0], op.outputs[0] = t_op.inputs[0], mid
        graph.remove_op(t_op)
        graph.insert_after(op, Op("TRANSPOSE", [mid, t_op.inputs[1]], [y.name], origin=t_op.origin))
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count
