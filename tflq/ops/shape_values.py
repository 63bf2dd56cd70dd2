"""RANGE, FILL and SHAPE: ONNX Range, ConstantOfShape, Shape and Size. With static shapes their
values are known at conversion time, so they become constants (Shape/Size from the IR's shapes
when ONNX's own inference lost them); a Range or ConstantOfShape whose inputs depend on run-time
data has a data-dependent shape, which a TFLite file with static shapes cannot hold: refused,
naming the node."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tflq._generated.tflite.FillOptions import FillOptionsT
from tflq._generated.tflite.RangeOptions import RangeOptionsT
from tflq._generated.tflite.ShapeOptions import ShapeOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, OpSpec, Transparent, rand


def _require_known(node, ctx, what: str) -> None:
    for name in node.input:
        if name and ctx.constant(name) is None:
            raise Unsupported(node, "data_dependent_shape",
                              f"{what} depends on the run-time value of '{name}', so its output shape "
                              f"is not static", "give static input shapes, or compute it outside the model")


@register
class Range(OpSpec):
    """ONNX Range: max(ceil((limit - start) / delta), 0) values start + i * delta."""

    kind = "RANGE"
    onnx_types = ("Range",)
    layout = Transparent()
    quant = FloatOnly()
    cases = [
        Case("positions_plus_ids", [helper.make_node("Range", ["s", "l", "d"], ["r"]),
                                    helper.make_node("Add", ["ids", "r"], ["y"])],
             {"ids": np.array([[5, 1, 0, 2, 7, 3]], np.int64)},
             {"s": np.array(0, np.int64), "l": np.array(6, np.int64), "d": np.array(1, np.int64)},
             emits=("ADD",)),
        Case("float_steps", [helper.make_node("Range", ["s", "l", "d"], ["r"]),
                             helper.make_node("Mul", ["x", "r"], ["y"])],
             {"x": rand(2, 4)}, {"s": np.array(1.0, np.float32), "l": np.array(-1.0, np.float32),
                                 "d": np.array(-0.5, np.float32)}, emits=("MUL",)),
    ]

    def from_onnx(self, node, ctx) -> None:
        _require_known(node, ctx, "Range")
        ctx.add_op(self.kind, list(node.input[:3]), [node.output[0]])

    def reference(self, start, limit, delta):
        count = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
        return ((start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype),)

    def options(self, attrs) -> RangeOptionsT:
        return RangeOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 2 if graph.tensors[op.inputs[0]].dtype == DType.INT64 else 1


@register
class Fill(OpSpec):
    """ONNX ConstantOfShape (the value attribute; float 0 by default)."""

    kind = "FILL"
    onnx_types = ("ConstantOfShape",)
    layout = Transparent()
    quant = FloatOnly()
    cases = [
        Case("zeros_plus_x", [helper.make_node("ConstantOfShape", ["s"], ["z"]),
                              helper.make_node("Add", ["x", "z"], ["y"])],
             {"x": rand(2, 3)}, {"s": np.array([2, 3], np.int64)}, emits=("ADD",)),
        Case("int64_ones_mask", [helper.make_node("ConstantOfShape", ["s"], ["o"],
                                                  value=numpy_helper.from_array(np.array([1], np.int64))),
                                 helper.make_node("Equal", ["m", "o"], ["y"])],
             {"m": np.array([[1, 0, 1, 1]], np.int64)}, {"s": np.array([1, 4], np.int64)},
             emits=("EQUAL",)),
    ]

    def from_onnx(self, node, ctx) -> None:
        _require_known(node, ctx, "ConstantOfShape")
        value = ctx.attr(node, "value")
        value = np.zeros((), np.float32) if value is None else numpy_helper.to_array(value).reshape(())
        ctx.add_op(self.kind, [node.input[0], ctx.add_constant(f"{node.output[0]}/value", value)],
                   [node.output[0]])

    def reference(self, dims, value):
        return (np.full(tuple(int(d) for d in dims), value, dtype=value.dtype),)

    def options(self, attrs) -> FillOptionsT:
        return FillOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        value = graph.tensors[op.inputs[1]].dtype
        return 3 if value in (DType.INT8, DType.INT16) else 2 if value == DType.BOOL else 1


@register
class Shape(OpSpec):
    """ONNX Shape (start/end) and Size: the IR knows every shape, so they are constants."""

    kind = "SHAPE"
    onnx_types = ("Shape", "Size")
    layout = Transparent()
    quant = FloatOnly()
    cases = [
        Case("shape_to_float", [helper.make_node("Shape", ["x"], ["s"], start=1),
                                helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
                                helper.make_node("Mul", ["x", "f"], ["y"])],
             {"x": rand(2, 3, 2)}, emits=("MUL",)),
        Case("size_scales", [helper.make_node("Size", ["x"], ["n"]),
                             helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
                             helper.make_node("Div", ["x", "f"], ["y"])],
             {"x": rand(1, 2, 3, 2)}, emits=("DIV",)),
    ]

    def from_onnx(self, node, ctx) -> None:
        shape = np.array(ctx.shape(node.input[0]), np.int64)
        if node.op_type == "Size":
            value = np.array(np.prod(shape), np.int64)
        else:
            value = shape[ctx.attr(node, "start", 0):ctx.attr(node, "end", None)]
        ctx.alias(node.output[0], ctx.add_constant(f"{node.output[0]}/value", value))

    def reference(self, x):
        return (np.array(x.shape, np.int32),)

    def options(self, attrs) -> ShapeOptionsT:
        return ShapeOptionsT(outType=DType.INT32.tflite)
