"""CLEANUP phase: drop ops that do nothing (same-shape RESHAPE, identity TRANSPOSE) or whose results nobody uses."""
from __future__ import annotations

import numpy as np

from tflq.ir.graph import Graph, Layout, Op


def _private_producer(graph: Graph, name: str, kind: str, producers: dict[str, Op]) -> Op | None:
    """The `kind` op producing `name`, if `name` feeds nothing else (so the two can be merged)."""
    op = producers.get(name)
    if (op is None or op.kind != kind or name in graph.outputs
            or len(graph.consumers(name)) != 1):
        return None
    return op


# The constant that leaves the other operand as it is, and the operand positions it may take.
_IDENTITIES = {"ADD": (0.0, (0, 1)), "SUB": (0.0, (1,)), "MUL": (1.0, (0, 1)), "DIV": (1.0, (1,))}


def _identity_operand(graph: Graph, op: Op) -> bool:
    """An ADD or SUB of an all-zero constant, or a MUL or DIV by all ones, that neither
    broadcasts nor clamps the other input (an exporter's mask of nothing, ViT's Where folded to
    zeros; the TorchScript attention's scores and mask times 1.0): x + 0 and x * 1 are x in IEEE
    arithmetic, inf and NaN included. The identity goes second."""
    if op.attrs.fused_activation != "NONE" or len(op.inputs) != 2:
        return False
    identity, positions = _IDENTITIES[op.kind]
    for k in positions:
        constant, other = op.inputs[k], op.inputs[1 - k]
        if not graph.is_constant(constant) or graph.is_constant(other) or \
                np.any(graph.tensors[constant].data != identity):
            continue
        x, y = graph.tensors[other], graph.tensors[op.outputs[0]]
        if x.shape == y.shape and x.dtype == y.dtype and x.quant == y.quant:
            op.inputs = [other, constant]
            return True
    return False


def remove_noop_ops(graph: Graph) -> int:
    """RESHAPE to the same shape, TRANSPOSE by the identity, RESHAPE of a RESHAPE, ADD/SUB of
    zeros and MUL/DIV by ones."""
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
        elif op.kind in _IDENTITIES and _identity_operand(graph, op) and graph.bypass(op) is not None:
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
        reshape_before_transpose(graph, t_op, op, split_shape, new_perm, "split")
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def reshape_before_transpose(graph: Graph, t_op: Op, reshape: Op, source_shape, perm, label: str) -> None:
    """Replace TRANSPOSE `t_op` then RESHAPE `reshape` (which reads only it) by a RESHAPE of the
    transpose's source to `source_shape` (a tensor named after the reshape's output and `label`),
    then a TRANSPOSE by `perm` writing the reshape's output."""
    x, out = graph.tensors[t_op.inputs[0]], reshape.outputs[0]
    mid = graph.add_activation(f"{out}/{label}", x.dtype, source_shape, x.layout)
    shape_const = graph.add_constant(f"{mid}/shape", np.array(source_shape, np.int32))
    perm_const = graph.add_constant(f"{out}/perm", np.array(perm, np.int32))
    graph.insert_before(reshape, Op("RESHAPE", [t_op.inputs[0], shape_const], [mid], origin=reshape.origin))
    graph.insert_before(reshape, Op("TRANSPOSE", [mid, perm_const], [out], origin=reshape.origin))
    graph.remove_op(reshape)
    graph.remove_op(t_op)


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


def hoist_transpose_through_row_op(graph: Graph) -> int:
    """TRANSPOSE(p) -> row-wise op (SOFTMAX over the last axis) -> TRANSPOSE(q) that keeps the last
    axis last -> one TRANSPOSE (p then q) -> the op. The first transpose brings another axis last,
    so it cannot sink through the op; the second moves only the axes before it, which the op
    commutes with. YOLOv8's distribution head (a softmax over the bins of a transposed view,
    read by a 1x1 convolution in NHWC) had both.
    """
    from tflq import ops as registry

    count = 0
    producers, consumers = graph.producers(), graph.consumer_map()
    for op in list(graph.ops):
        if op.kind != "TRANSPOSE" or not graph.is_constant(op.inputs[1]):
            continue
        row = producers.get(op.inputs[0])
        if row is None or len(row.inputs) != 1 or len(row.outputs) != 1 or \
                not registry.spec(row.kind).row_wise or row.outputs[0] in graph.outputs or \
                len(consumers.get(row.outputs[0], [])) != 1:
            continue
        first = _private_producer(graph, row.inputs[0], "TRANSPOSE", producers)
        if first is None or not graph.is_constant(first.inputs[1]):
            continue
        p = [int(a) for a in graph.tensors[first.inputs[1]].data]
        q = [int(a) for a in graph.tensors[op.inputs[1]].data]
        if p[-1] == len(p) - 1 or q[-1] != len(q) - 1:
            continue  # (the first sinks by itself; the second must leave the op's axis in place)
        source, y = graph.tensors[first.inputs[0]], graph.tensors[op.outputs[0]]
        both = [p[a] for a in q]
        mid = graph.add_activation(f"{y.name}/before_{row.kind.lower()}", y.dtype,
                                   tuple(source.shape[a] for a in both), y.layout)
        perm = graph.add_constant(f"{y.name}/perm", np.array(both, np.int32))
        graph.insert_before(first, Op("TRANSPOSE", [first.inputs[0], perm], [mid], origin=first.origin))
        row.inputs[0], row.outputs[0] = mid, y.name
        graph.remove_op(first)
        graph.remove_op(op)
        producers, consumers = graph.producers(), graph.consumer_map()
        count += 1
    if count:
        graph.remove_unused()
    return count


def _chain_into(graph: Graph, op: Op, producers: dict[str, Op]) -> list[Op]:
    """The longest run of private TRANSPOSE/RESHAPE ops ending at `op` (first to last)."""
    chain = [op]
    while True:
        inner = producers.get(chain[0].inputs[0])
        if (inner is None or inner.kind not in ("TRANSPOSE", "RESHAPE")
                or _private_producer(graph, chain[0].inputs[0], inner.kind, producers) is None
                or graph.tensors[inner.inputs[0]].quant != graph.tensors[op.outputs[0]].quant):
            return chain
        chain.insert(0, inner)


def _one_transpose(in_shape: tuple[int, ...], chain: list[tuple[str, tuple[int, ...]]]
                   ) -> tuple[list[int], list[int]] | None:
    """Express a run of reshapes and transposes as reshape -> one transpose -> reshape.

    The tensor is tracked as "fine" axes (pieces of input axes, in input order) grouped into the
    current axes: a transpose permutes the groups, a reshape regroups the fine axes in memory order,
    splitting a fine axis where a new dimension ends inside it. Returns the fine shape (input order)
    and the permutation of the fine axes, else None (a reshape boundary that splits no axis evenly).
    """
    sizes: dict[int, int] = {}
    order: list[int] = []  # fine axes in input order
    groups: list[list[int]] = []
    for d in in_shape:
        group = []
        if d != 1:
            sizes[len(sizes)] = d
            order.append(len(sizes) - 1)
            group.append(len(sizes) - 1)
        groups.append(group)
    for kind, arg in chain:
        if kind == "TRANSPOSE":
            groups = [groups[p] for p in arg]
            continue
        seq = [f for g in groups for f in g]
        groups, k = [], 0
        for d in arg:
            group, product = [], 1
            while product < d:
                f = seq[k]
                if product * sizes[f] > d:
                    need = d // product
                    if d % product or sizes[f] % need:
                        return None
                    inner = len(sizes)
                    sizes[inner] = sizes[f] // need
                    sizes[f] = need
                    order.insert(order.index(f) + 1, inner)
                    seq.insert(k + 1, inner)
                group.append(f)
                product *= sizes[f]
                k += 1
            if product != d:
                return None
            groups.append(group)
    seq = [f for g in groups for f in g]
    # Merge fine axes adjacent both in input order and in output order (lowest rank).
    merged_order: list[list[int]] = []
    for f in order:
        if merged_order and seq.index(f) == seq.index(merged_order[-1][-1]) + 1:
            merged_order[-1].append(f)
        else:
            merged_order.append([f])
    heads = {run[0]: run for run in merged_order}
    fine_shape = [int(np.prod([sizes[f] for f in run])) for run in merged_order]
    out_runs = [heads[f] for f in seq if f in heads]
    perm = [merged_order.index(run) for run in out_runs]
    return fine_shape, perm


def one_transpose_per_chain(graph: Graph) -> int:
    """A run of RESHAPE and TRANSPOSE ops with two or more transposes -> reshape, one TRANSPOSE,
    reshape (no TRANSPOSE if the run moves no element).

    A conv stem's NHWC output transposed to NCHW, flattened and transposed to [N, H*W, C] (ViT,
    Swin patch embeddings) is a reshape of the NHWC tensor; MobileViT's unfold (reshape, transpose,
    reshape, transpose, reshape after the layout pass's TRANSPOSE) is one transpose of a split view.
    """
    count, removed = 0, set()
    producers = graph.producers()
    for op in list(graph.ops):
        if id(op) in removed or op.kind not in ("TRANSPOSE", "RESHAPE"):
            continue
        chain = _chain_into(graph, op, producers)
        transposes = sum(o.kind == "TRANSPOSE" for o in chain)
        if transposes == 0 or len(chain) < 2:
            continue
        x, out = graph.tensors[chain[0].inputs[0]], graph.tensors[op.outputs[0]]
        steps = []
        for o in chain:
            if o.kind == "TRANSPOSE":
                perm = graph.tensors[o.inputs[1]].data
                if perm is None:
                    break
                steps.append(("TRANSPOSE", tuple(int(p) for p in perm)))
            else:
                steps.append(("RESHAPE", tuple(graph.tensors[o.outputs[0]].shape)))
        if len(steps) != len(chain):
            continue
        plan = _one_transpose(tuple(x.shape), steps)
        if plan is None:
            continue
        fine_shape, perm = plan
        moves = perm != sorted(perm)
        if (moves and (transposes < 2 or len(perm) > 6)) or (not moves and transposes < 1):
            continue
        src = chain[0].inputs[0]
        if moves:
            fine = graph.add_activation(f"{op.outputs[0]}/fine", x.dtype, tuple(fine_shape), Layout.ANY)
            graph.insert_before(op, Op("RESHAPE", [src, graph.add_constant(
                f"{fine}/shape", np.array(fine_shape, np.int32))], [fine], origin=op.origin))
            moved_shape = tuple(fine_shape[p] for p in perm)
            moved = graph.add_activation(f"{op.outputs[0]}/moved", x.dtype, moved_shape, Layout.ANY)
            graph.insert_before(op, Op("TRANSPOSE", [fine, graph.add_constant(
                f"{moved}/perm", np.array(perm, np.int32))], [moved], origin=op.origin))
            src = moved
        graph.insert_before(op, Op("RESHAPE", [src, graph.add_constant(
            f"{op.outputs[0]}/shape", np.array(out.shape, np.int32))], [op.outputs[0]],
            origin=op.origin))
        for dead in chain:
            graph.remove_op(dead)
            removed.add(id(dead))
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count
