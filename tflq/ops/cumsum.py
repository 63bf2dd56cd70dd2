"""CUMSUM: ONNX CumSum (running sums along one axis; RoBERTa-style position ids from a mask)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.CumsumOptions import CumsumOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ops import register
from tflq.ops.base import AxisSensitive, Case, FloatOnly, OpSpec, rand


@dataclass(frozen=True)
class CumsumAttrs:
    exclusive: bool = False
    reverse: bool = False


def _case(name: str, x: np.ndarray, axis: int, **attrs) -> Case:
    return Case(name, [helper.make_node("CumSum", ["x", "a"], ["y"], **attrs)], {"x": x},
                {"a": np.array(axis, np.int64)})


@register
class Cumsum(OpSpec):
    """ONNX CumSum with a constant axis (an int32 scalar operand the layout pass remaps).
    LiteRT's CUMSUM takes float32, int32 and int64 only: FloatOnly in full-integer mode."""

    kind = "CUMSUM"
    onnx_types = ("CumSum",)
    Attrs = CumsumAttrs
    layout = AxisSensitive(axis_inputs=(1,))
    quant = FloatOnly()
    cases = [
        _case("rows", rand(3, 5), 1),
        _case("exclusive_reverse", rand(3, 5), 0, exclusive=1, reverse=1),
        _case("int64_mask_positions", np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], np.int64), -1),
        _case("int32_exclusive", np.array([[3, -1, 4, 1, -5]], np.int32), 1, exclusive=1),
        _case("nchw_channels", rand(1, 4, 3, 3), 1, reverse=1),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        axis = ctx.require_constant(node, 1, "axis")
        dtype = ctx.graph.tensors[ctx.tensor(x)].dtype
        if dtype not in (DType.FLOAT32, DType.INT32, DType.INT64):
            raise Unsupported(node, "cumsum_type", f"CumSum of {dtype.name.lower()} (LiteRT's CUMSUM "
                              f"takes float32, int32 and int64)")
        axis = ctx.normalize_axis(int(np.asarray(axis).reshape(())), ctx.rank(x))
        attrs = CumsumAttrs(exclusive=bool(ctx.attr(node, "exclusive", 0)), reverse=bool(ctx.attr(node, "reverse", 0)))
        ctx.add_op(self.kind, [x, ctx.add_constant(f"{out}/axis", np.array(axis, np.int32))], [out], attrs)

    def reference(self, x, axis, *, exclusive: bool, reverse: bool):
        axis = int(axis)
        data = np.flip(x, axis) if reverse else x
        result = np.cumsum(data, axis=axis, dtype=x.dtype)
        if exclusive:
            result = np.concatenate([np.zeros_like(np.take(result, [0], axis=axis)),
                                     np.take(result, range(result.shape[axis] - 1), axis=axis)], axis=axis)
        return (np.ascontiguousarray(np.flip(result, axis) if reverse else result),)

    def options(self, attrs: CumsumAttrs) -> CumsumOptionsT:
        return CumsumOptionsT(exclusive=attrs.exclusive, reverse=attrs.reverse)
