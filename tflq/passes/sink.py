"""CLEANUP phase: carry TRANSPOSEs forward through the ops after them until they meet, when that leaves fewer.

A detection head transposes each level's NHWC conv output to the ONNX order, reshapes it to
[N, channels, anchors], concatenates the levels, splits, decodes boxes elementwise and concatenates
again. Every one of those ops works as well on the untransposed (token, [N, anchors, channels])
tensor with its axis, and its constants, permuted: y = op(x.transpose(P)) is
op'(x).transpose(P). Sunk that way, the per-level transposes meet at the concatenations and leave
one, at the output. Sinking may also multiply transposes (a SPLIT's outputs each get one), so the
rewrites run on a copy and are kept only when the copy has fewer TRANSPOSEs.
"""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op
from tflq.ops.base import AxisSensitive, Transparent
from tflq.passes.cleanup import (_one_transpose, _private_producer, _split_groups, merge_transposes, remove_dead_ops,
                                 remove_noop_ops, reshape_before_transpose, sink_transpose_through_reshape,
                                 sink_transpose_through_unary)
from tflq.passes.manager import fixed_point


def _perm(graph: Graph, op: Op | None) -> tuple[int, ...] | None:
    """The permutation of a TRANSPOSE by a constant that keeps the quantization, else None."""
    if op is None or op.kind != "TRANSPOSE" or not graph.is_constant(op.inputs[1]) or \
            graph.tensors[op.inputs[0]].quant != graph.tensors[op.outputs[0]].quant:
        return None
    return tuple(int(p) for p in graph.tensors[op.inputs[1]].data)


def sink_transpose_through_merging_reshape(graph: Graph) -> int:
    """TRANSPOSE(P) then a RESHAPE whose axes are runs of the source's axes in the source's order
    -> RESHAPE of the source, then one TRANSPOSE. [N, H, W, C] -> [N, C, H, W] -> [N, C, H*W] is
    [N, H*W, C] transposed (0, 2, 1)."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != "RESHAPE":
            continue
        t_op = _private_producer(graph, op.inputs[0], "TRANSPOSE", producers)
        perm = _perm(graph, t_op)
        if perm is None:
            continue
        x, z = graph.tensors[t_op.inputs[0]], graph.tensors[op.outputs[0]]
        if x.quant != z.quant:
            continue
        plan = _one_transpose(tuple(x.shape), [("TRANSPOSE", perm), ("RESHAPE", tuple(z.shape))])
        if plan is None:
            continue
        fine_shape, fine_perm = plan
        moved = tuple(fine_shape[p] for p in fine_perm)
        kept = tuple(d for d in z.shape if d != 1)
        groups = _split_groups(moved, kept)
        if groups is None:
            continue  # z merges moved runs: no reshape of the source gives it with one transpose
        # Each source run is split as z splits it; z's unit axes lead the reshaped source, and the
        # transpose puts each axis where z has it.
        units = len(z.shape) - len(kept)
        source_shape, position = [1] * units, {}
        for f in range(len(fine_shape)):
            for j in groups[fine_perm.index(f)]:
                position[j] = len(source_shape)
                source_shape.append(kept[j])
        new_perm, unit, j = [], 0, 0
        for d in z.shape:
            if d == 1:
                new_perm.append(unit)
                unit += 1
            else:
                new_perm.append(position[j])
                j += 1
        if new_perm == sorted(new_perm):
            continue  # no transpose needed: cleanup's one_transpose_per_chain makes it a RESHAPE
        reshape_before_transpose(graph, t_op, op, source_shape, new_perm, "source_order")
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def _sunk_axis(axis: int, perm: tuple[int, ...]) -> int:
    """Axis `axis` of x.transpose(perm) is axis perm[axis] of x."""
    return perm[axis % len(perm)]


def _rewrite_operands(graph: Graph, op: Op, perm: tuple[int, ...], sources: dict[int, str]) -> bool:
    """Point op at the untransposed tensors, its axis arguments and constants permuted; False
    (nothing changed) when the op's kind does not allow it."""
    spec = registry.spec(op.kind)
    rule = spec.layout
    rank = len(perm)
    inverse = tuple(int(a) for a in np.argsort(perm))
    new_inputs = list(op.inputs)
    for i, name in sources.items():
        new_inputs[i] = name
    changes = {}
    if spec.acts_on_rows(op, graph) and perm[-1] == rank - 1 and set(sources) == {0}:
        pass  # the other inputs (weights, bias) do not depend on the row order
    elif isinstance(rule, (Transparent, AxisSensitive)):
        if isinstance(rule, AxisSensitive):
            for i in rule.per_axis_inputs:  # one row per axis (STRIDED_SLICE's bounds, PAD's)
                t = graph.tensors[op.inputs[i]] if op.inputs[i] else None
                if t is None or not t.is_constant or t.rank < 1 or t.shape[0] != rank:
                    return False
                new_inputs[i] = graph.add_constant(f"{op.inputs[i]}/sunk",
                                                   np.ascontiguousarray(t.data[list(inverse)]), t.dtype)
            for field in rule.attrs:
                value = getattr(op.attrs, field)
                changes[field] = type(value)(_sunk_axis(a, perm) for a in value) \
                    if isinstance(value, (tuple, list)) else _sunk_axis(value, perm)
        special = set(rule.axis_inputs) if isinstance(rule, AxisSensitive) else set()
        done = set(rule.per_axis_inputs) if isinstance(rule, AxisSensitive) else set()
        for i, name in enumerate(op.inputs):
            if not name or i in sources or i in done:
                continue
            t = graph.tensors[name]
            if i in special:
                if not t.is_constant:
                    return False
                mapped = np.vectorize(lambda a: _sunk_axis(int(a), perm))(t.data).astype(t.dtype.numpy)
                new_inputs[i] = graph.add_constant(f"{name}/sunk", mapped.reshape(t.data.shape), t.dtype)
            elif not t.is_constant or t.rank > rank:
                return False
            elif isinstance(rule, AxisSensitive) and t.rank != rank:
                continue  # not data (SPLIT_V's sizes), as the layout pass reads these ops
            elif t.size != 1:
                data = t.data.reshape((1,) * (rank - t.rank) + t.shape).transpose(inverse)
                new_inputs[i] = graph.add_constant(f"{name}/sunk", np.ascontiguousarray(data), t.dtype)
    else:
        return False
    op.inputs = new_inputs
    if changes:
        op.replace_attrs(**changes)
    return True


def sink_transposes_through_ops(graph: Graph) -> int:
    """An op whose activation inputs are all TRANSPOSE(P) of same-rank tensors, and whose outputs
    have that rank -> the op on those tensors (axes and constants permuted), then TRANSPOSE(P) on
    each output. Elementwise ops, CONCATENATION, SPLIT, SPLIT_V and row-wise ops (SOFTMAX, a 1x1
    convolution, when P keeps the last axis) qualify."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind in ("TRANSPOSE", "RESHAPE") or not op.outputs:
            continue
        sources, perm = {}, None
        for i, name in enumerate(op.inputs):
            if not name or graph.is_constant(name):
                continue
            p = _perm(graph, producers.get(name))
            if p is None or (perm is not None and p != perm):
                sources = {}
                break
            perm = p
            sources[i] = producers[name].inputs[0]
        if not sources or any(not n or graph.tensors[n].rank != len(perm) for n in op.outputs):
            continue
        outputs = [graph.tensors[n] for n in op.outputs]
        if not _rewrite_operands(graph, op, perm, sources):
            continue
        inverse = np.argsort(perm)
        perm_const = graph.add_constant(f"{op.outputs[0]}/sunk_perm", np.array(perm, np.int32))
        for k, y in enumerate(outputs):
            mid = graph.add_activation(f"{y.name}/before_transpose", y.dtype,
                                       tuple(y.shape[a] for a in inverse), y.layout)
            graph.tensors[mid].quant = y.quant
            op.outputs[k] = mid
            graph.insert_after(op, Op("TRANSPOSE", [mid, perm_const], [y.name], origin=op.origin))
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def _transposes(graph: Graph) -> int:
    return sum(op.kind == "TRANSPOSE" for op in graph.ops)


def fewer_transposes_by_sinking(graph: Graph) -> int:
    """Sink every TRANSPOSE as far as it goes on a copy; adopt the copy if it has fewer. Returns
    how many TRANSPOSEs that removed."""
    before = _transposes(graph)
    if before == 0:
        return 0
    trial = graph.copy()
    fixed_point(trial, [sink_transpose_through_merging_reshape, sink_transpose_through_reshape,
                        sink_transposes_through_ops, sink_transpose_through_unary, merge_transposes,
                        remove_noop_ops, remove_dead_ops], max_iter=32)
    after = _transposes(trial)
    if after >= before:
        return 0
    for field, value in vars(trial).items():
        setattr(graph, field, value)
    return before - after
