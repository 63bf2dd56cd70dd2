"""BROADCAST_TO (ONNX Expand) and TILE (ONNX Tile): repeat a tensor to a static shape."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.BroadcastToOptions import BroadcastToOptionsT
from tflq._generated.tflite.TileOptions import TileOptionsT
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.comparison import narrow


@register
class BroadcastTo(OpSpec):
    """ONNX Expand. The shape operand is the output's static shape as int32 (ONNX lets it be
    shorter than the input or hold 1s; numpy broadcasting of both gives the output shape), so
    the layout pass can permute it like any per-axis operand."""

    kind = "BROADCAST_TO"
    onnx_types = ("Expand",)
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(moves_values=True)  # copies of the input's integers
    cases = [
        Case("mask_to_scores", [helper.make_node("Expand", ["m", "s"], ["y"])], {"m": rand(1, 1, 1, 6)},
             {"s": np.array([1, 2, 4, 6], np.int64)}),
        Case("rank_grows", [helper.make_node("Expand", ["x", "s"], ["y"])], {"x": rand(3, 1)},
             {"s": np.array([2, 1, 4], np.int64)}),
        Case("shorter_shape_nchw", [helper.make_node("Relu", ["x"], ["r"]),
                                    helper.make_node("Expand", ["r", "s"], ["y"])],
             {"x": rand(1, 3, 1, 5)}, {"s": np.array([4, 1], np.int64)}),
        Case("bool_mask", [helper.make_node("Expand", ["m", "s"], ["y"])],
             {"m": np.array([[[[True, False, True]]]])}, {"s": np.array([1, 2, 3, 3], np.int64)},
             quantize=False),
        Case("int64_ids", [helper.make_node("Expand", ["i", "s"], ["y"])],
             {"i": np.array([[0, 1, 2, 3]], np.int64)}, {"s": np.array([3, 4], np.int64)}, quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        ctx.require_constant(node, 1, "shape")
        shape = ctx.shape(out)
        if shape == ctx.shape(x):
            ctx.alias(out, x)
            return
        ctx.add_op(self.kind, [x, ctx.add_constant(f"{out}/shape", narrow(node, np.array(shape), DType.INT32))],
                   [out])

    def reference(self, x, shape):
        return (np.ascontiguousarray(np.broadcast_to(x, tuple(int(d) for d in shape))),)

    def options(self, attrs) -> BroadcastToOptionsT:
        return BroadcastToOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        # op_version.cc: version 1 was withdrawn; int8/int16 data 3, else 2.
        dtype = graph.tensors[op.inputs[0]].dtype
        return 3 if dtype in (DType.INT8, DType.INT16) else 2


@register
class Tile(OpSpec):
    """ONNX Tile with constant repeats (int32 multiples, one per axis)."""

    kind = "TILE"
    onnx_types = ("Tile",)
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(moves_values=True)  # copies of the input's integers
    cases = [
        Case("rows", [helper.make_node("Tile", ["x", "r"], ["y"])], {"x": rand(2, 3)},
             {"r": np.array([3, 2], np.int64)}),
        Case("nchw_spatial", [helper.make_node("Relu", ["x"], ["t"]),
                              helper.make_node("Tile", ["t", "r"], ["y"])],
             {"x": rand(1, 3, 2, 2)}, {"r": np.array([1, 1, 2, 3], np.int64)}),
        Case("int64", [helper.make_node("Tile", ["x", "r"], ["y"])], {"x": np.array([[4, -1]], np.int64)},
             {"r": np.array([2, 2], np.int64)}, quantize=False),
        Case("bool", [helper.make_node("Tile", ["x", "r"], ["y"])], {"x": np.array([[True, False]])},
             {"r": np.array([1, 3], np.int64)}, quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        repeats = ctx.require_constant(node, 1, "repeats")
        if np.all(repeats == 1):
            ctx.alias(out, x)
            return
        multiples = ctx.add_constant(f"{out}/multiples", narrow(node, repeats, DType.INT32))
        ctx.add_op(self.kind, [x, multiples], [out])

    def reference(self, x, multiples):
        return (np.tile(x, tuple(int(m) for m in multiples)),)

    def options(self, attrs) -> TileOptionsT:
        return TileOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 3 if graph.tensors[op.inputs[0]].dtype == DType.INT8 else 1
