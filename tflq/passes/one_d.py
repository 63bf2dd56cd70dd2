"""NORMALIZE phase: keep stacks of 1-D convolutions and pools in their 4-D (height 1) form.

A rank-3 Conv or pool is imported as its 2-D op between RESHAPEs [N, C, W] -> [N, C, 1, W] and back
(`tflq.ops.one_d`). The model's elementwise ops between two of them (BatchNorm's MUL and ADD,
activations, residual ADDs) would read the 3-D form, which keeps the BatchNorm and the activation
out of the convolution and leaves RESHAPE pairs behind. These passes run before the layout pass:
`sink_height_squeezes` moves the RESHAPE back to 3-D below such ops (they are elementwise, so the
result is the same with a unit height); `cancel_height_reshapes` drops a RESHAPE back to 4-D of a
RESHAPE to 3-D; `spread_ncw` marks the 3-D tensors such ops connect as NCW, so that the layout pass
lets a model's 3-D input or output of a 1-D stack be channels-last.
"""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Layout, Op
from tflq.ops.base import AxisSensitive, Transparent


def _height_squeezed(graph: Graph, name: str, producers: dict[str, Op]) -> str | None:
    """The 4-D [N, C, 1, W] tensor that a RESHAPE turned into NCW `name` = [N, C, W], else None."""
    op = producers.get(name)
    if op is None or op.kind != "RESHAPE":
        return None
    x, y = graph.tensors[op.inputs[0]], graph.tensors[name]
    if (x.is_constant or x.rank != 4 or y.layout != Layout.NCW or x.shape[2] != 1
            or x.shape[:2] + x.shape[3:] != y.shape):
        return None
    return op.inputs[0]


def _with_height(graph: Graph, name: str) -> str:
    """A constant that broadcasts against [N, C, W], rewritten to broadcast against [N, C, 1, W]."""
    t = graph.tensors[name]
    if t.rank <= 1:
        return name  # a scalar or a row along W broadcasts the same way
    data = t.data.reshape((1,) * (3 - t.rank) + t.shape)[:, :, None, :]
    return graph.add_constant(f"{name}/2d", np.ascontiguousarray(data), t.dtype)


def _is_elementwise(op: Op) -> bool:
    return isinstance(registry.spec(op.kind).layout, Transparent) and len(op.outputs) == 1


def _axis_attrs_only(op: Op) -> AxisSensitive | None:
    """The rule of an op whose only axis arguments are attributes (CONCATENATION), else None."""
    rule = registry.spec(op.kind).layout
    if (isinstance(rule, AxisSensitive) and rule.attrs and not rule.axis_inputs
            and not rule.per_axis_inputs and len(op.outputs) == 1):
        return rule
    return None


def sink_height_squeezes(graph: Graph) -> int:
    """elementwise(RESHAPE-to-3-D(a), ...) -> RESHAPE-to-3-D(elementwise(a, ...)) with unit height;
    likewise a CONCATENATION of such tensors (its axis moved past the height)."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        axis_rule = _axis_attrs_only(op)
        if not _is_elementwise(op) and axis_rule is None:
            continue
        out = graph.tensors[op.outputs[0]]
        activations = [i for i, n in enumerate(op.inputs) if n and not graph.is_constant(n)]
        if out.rank != 3 or out.is_constant or not activations or \
                axis_rule is not None and len(activations) != len([n for n in op.inputs if n]):
            continue
        sources = [_height_squeezed(graph, op.inputs[i], producers) for i in activations]
        if any(s is None for s in sources):
            continue
        if axis_rule is not None:  # ONNX axis 2 (W) is axis 3 with the unit height
            op.replace_attrs(**{field: (lambda a: a % 3 if a % 3 < 2 else 3)(getattr(op.attrs, field))
                                for field in axis_rule.attrs})
        for i, source in zip(activations, sources):
            op.inputs[i] = source
        for i, name in enumerate(op.inputs):
            if name and graph.is_constant(name) and i not in activations:
                op.inputs[i] = _with_height(graph, name)
        n, c, w = out.shape
        lifted = graph.add_activation(f"{out.name}/2d", out.dtype, (n, c, 1, w), Layout.NCHW)
        op.outputs[0] = lifted
        shape = graph.add_constant(f"{out.name}/shape", np.array(out.shape, np.int32))
        graph.insert_after(op, Op("RESHAPE", [lifted, shape], [out.name], origin=op.origin))
        out.layout = Layout.NCW
        producers = graph.producers()
        count += 1
    if count:
        graph.remove_unused()
    return count


def cancel_height_reshapes(graph: Graph) -> int:
    """RESHAPE [N, C, 1, W] -> [N, C, W] -> [N, C, 1, W]: the second one's readers read the first's input."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != "RESHAPE" or op.outputs[0] in graph.outputs:
            continue
        source = _height_squeezed(graph, op.inputs[0], producers)
        if source is None or graph.tensors[source].shape != graph.tensors[op.outputs[0]].shape:
            continue
        graph.remove_op(op)
        graph.replace_uses(op.outputs[0], source)
        count += 1
    if count:
        graph.remove_unused()
    return count


_MARKS = {3: Layout.NCW, 5: Layout.NCDHW}  # rank -> the channels-first mark spread_ncw spreads


def spread_ncw(graph: Graph) -> int:
    """An op that works in any layout (elementwise, or axis-sensitive like CONCATENATION and PAD)
    on 3-D tensors reads and writes NCW if any of them is NCW (and, if elementwise, one shape);
    likewise 5-D tensors and NCDHW (3-D convolutions' BatchNorm, activations, U-Net skips)."""
    count = 0
    for op in graph.ops:
        rule = registry.spec(op.kind).layout
        if not isinstance(rule, (Transparent, AxisSensitive)):
            continue
        special = set(getattr(rule, "axis_inputs", ())) | set(getattr(rule, "per_axis_inputs", ()))
        names = [n for i, n in enumerate(op.inputs) if n and i not in special] + \
            [n for n in op.outputs if n]
        tensors = [graph.tensors[n] for n in names if not graph.is_constant(n)]
        mark = _MARKS.get(tensors[0].rank) if tensors else None
        if (mark is None or any(t.rank != tensors[0].rank for t in tensors)
                or isinstance(rule, Transparent) and len({t.shape for t in tensors}) != 1
                or not any(t.layout == mark for t in tensors)):
            continue
        for t in tensors:
            if t.layout == Layout.ANY:
                t.layout = mark
                count += 1
    return count
