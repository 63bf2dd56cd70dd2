"""CLEANUP phase: drop ops that do nothing (same-shape RESHAPE, identity TRANSPOSE) or whose results nobody uses."""
from __future__ import annotations

import numpy as np

from tflq.ir.graph import Graph, Op


def _bypass(graph: Graph, op: Op) -> bool:
    """Remove a pass-through op, keeping graph output names; False if it must stay."""
    src, dst = op.inputs[0], op.outputs[0]
    if dst in graph.outputs:
        if src in graph.inputs or src in graph.outputs or graph.is_constant(src):
            return False
        if len(graph.consumers(src)) != 1:
            return False
        graph.remove_op(op)
        del graph.tensors[dst]
        graph.rename(src, dst)
        return True
    graph.remove_op(op)
    graph.replace_uses(dst, src)
    return True


def remove_noop_ops(graph: Graph) -> int:
    """RESHAPE to the same shape, TRANSPOSE by the identity, and RESHAPE of a RESHAPE."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind == "RESHAPE":
            x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
            if x.shape == y.shape and x.quant == y.quant and _bypass(graph, op):
                count += 1
                producers = graph.producers()
                continue
            inner = producers.get(op.inputs[0])
            if (inner is not None and inner.kind == "RESHAPE"
                    and len(graph.consumers(inner.outputs[0])) == 1
                    and inner.outputs[0] not in graph.outputs):
                op.inputs[0] = inner.inputs[0]
                graph.remove_op(inner)
                count += 1
        elif op.kind == "TRANSPOSE":
            perm = graph.tensors[op.inputs[1]].data
            if perm is not None and np.array_equal(perm, np.arange(perm.size)) and _bypass(graph, op):
                count += 1
                producers = graph.producers()
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
