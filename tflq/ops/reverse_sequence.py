"""REVERSE_SEQUENCE: ONNX ReverseSequence (reverse_sequence.cc: float32, uint8, int16, int32, int64
data; int32 or int64 lengths)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ReverseSequenceOptions import ReverseSequenceOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import AxisSensitive, Case, OpSpec, SameAsInput, rand


@dataclass(frozen=True)
class ReverseSequenceAttrs:
    seq_dim: int = 0
    batch_dim: int = 1


def _case(name: str, x: np.ndarray, lens: list[int], consts: bool = True, **attrs) -> Case:
    node = helper.make_node("ReverseSequence", ["x", "lens"], ["y"], **attrs)
    lens = np.array(lens, np.int64)
    return Case(name, [node], {"x": x, **({} if consts else {"lens": lens})},
                {"lens": lens} if consts else {}, opset=10)


@register
class ReverseSequence(OpSpec):
    """Reverses the first lens[b] entries along the time axis of each batch entry b (the rest is
    copied); ONNX's time_axis/batch_axis are TFLite's seq_dim/batch_dim. The kernel copies values,
    so an 8-bit output keeps the input's grid; uint8 only (no int8 case in the kernel)."""

    kind = "REVERSE_SEQUENCE"
    onnx_types = ("ReverseSequence",)
    Attrs = ReverseSequenceAttrs
    layout = AxisSensitive(attrs=("seq_dim", "batch_dim"))
    quant = SameAsInput(dtypes=frozenset({DType.UINT8}), moves_values=True)
    cases = [
        _case("time_major", rand(5, 3, 4), [5, 2, 1]),
        _case("batch_major", rand(3, 6, 2, seed=1), [1, 6, 4], time_axis=1, batch_axis=0),
        _case("lengths_input", rand(4, 2, 3, seed=2), [3, 4], consts=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        time_axis = int(ctx.attr(node, "time_axis", 0))
        batch_axis = int(ctx.attr(node, "batch_axis", 1))
        if {time_axis, batch_axis} != {0, 1}:
            raise Unsupported(node, "reverse_sequence_axes",
                              f"time_axis={time_axis}, batch_axis={batch_axis} (ONNX allows 0 and 1, one each)")
        ctx.add_op(self.kind, [node.input[0], node.input[1]], [node.output[0]],
                   ReverseSequenceAttrs(seq_dim=time_axis, batch_dim=batch_axis))

    def reference(self, x, lens, *, seq_dim: int, batch_dim: int):
        y = np.array(x, copy=True)
        for b, n in enumerate(np.ravel(lens)):
            index = [slice(None)] * x.ndim
            index[batch_dim] = b
            source = x[tuple(index)]  # batch axis removed: the time axis is seq_dim or seq_dim - 1
            axis = seq_dim - (1 if seq_dim > batch_dim else 0)
            part = np.take(source, np.arange(int(n))[::-1], axis=axis)
            target = [slice(None)] * source.ndim
            target[axis] = slice(0, int(n))
            updated = source.copy()
            updated[tuple(target)] = part
            y[tuple(index)] = updated
        return (y,)

    def options(self, attrs: ReverseSequenceAttrs):
        return ReverseSequenceOptionsT(seqDim=attrs.seq_dim, batchDim=attrs.batch_dim)

    def version(self, op: Op, graph: Graph) -> int:
        return 1
