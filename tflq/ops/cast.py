"""CAST: ONNX Cast between float32, int8, uint8, int32, int64 and bool (float-to-float Casts are aliases)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from tflq._generated.tflite.CastOptions import CastOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, OpSpec, Transparent, rand

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
# ONNX element types a TFLite CAST reads and writes here (LiteRT's cast.cc handles every pair).
CAST_TYPES = {TensorProto.FLOAT: DType.FLOAT32, TensorProto.INT8: DType.INT8,
              TensorProto.UINT8: DType.UINT8, TensorProto.INT32: DType.INT32,
              TensorProto.INT64: DType.INT64, TensorProto.BOOL: DType.BOOL}


@dataclass(frozen=True)
class CastAttrs:
    to: str = "FLOAT32"  # DType names of the result and of the input (CastOptions states both)
    source: str = "FLOAT32"


def add_cast(ctx, x: str, out: str, to: DType) -> None:
    source = ctx.graph.tensors[ctx.tensor(x)].dtype
    ctx.add_op("CAST", [x], [out], CastAttrs(to=to.name, source=source.name))


def _cast_case(name: str, values: np.ndarray, *types: int) -> Case:
    """values -> Cast(types[0]) -> Cast(types[1]) ...; the last result is y."""
    nodes, previous = [], "x"
    for k, to in enumerate(types):
        out = "y" if k == len(types) - 1 else f"c{k}"
        nodes.append(helper.make_node("Cast", [previous], [out], to=to))
        previous = out
    return Case(name, nodes, {"x": values})


_ids = np.array([[3, 0, 7, 2, 9, 1]], np.int64)
_mixed = np.array([[-2.75, -1.0, -0.5, 0.0, 0.25, 1.5, 2.5, 99.9]], np.float32)


@register
class Cast(OpSpec):
    """ONNX Cast. Float to integer truncates toward zero in both ONNX and TFLite (static_cast);
    anything to bool is `!= 0`. Casts between float types compute in float32 (aliases): TFLite
    kernels have no float16 arithmetic. Values outside the target range are undefined in both."""

    kind = "CAST"
    onnx_types = ("Cast",)
    Attrs = CastAttrs
    layout = Transparent()
    quant = FloatOnly()  # a CAST of int8 data converts the integers, it does not dequantize them
    cases = [
        _cast_case("int64_to_float", _ids, TensorProto.FLOAT),
        _cast_case("float_to_int32_truncates", _mixed, TensorProto.INT32),
        _cast_case("float_to_int64", _mixed, TensorProto.INT64),
        _cast_case("float_to_bool", _mixed, TensorProto.BOOL),
        _cast_case("bool_to_float", np.array([[True, False, True]]), TensorProto.FLOAT),
        _cast_case("int64_to_int32_to_float", _ids, TensorProto.INT32, TensorProto.FLOAT),
        _cast_case("float_uint8_float", np.abs(_mixed), TensorProto.UINT8, TensorProto.FLOAT),
        _cast_case("float_int8_int32", _mixed, TensorProto.INT8, TensorProto.INT32),
        _cast_case("int32_to_bool_to_int64", np.array([[0, 5, -3, 0]], np.int32), TensorProto.BOOL,
                   TensorProto.INT64),
        _cast_case("nchw_float_to_int", rand(1, 3, 4, 5, low=-4, high=4), TensorProto.INT32,
                   TensorProto.FLOAT),
    ]

    def from_onnx(self, node, ctx) -> None:
        to = int(ctx.attr(node, "to"))
        src = ctx.graph.tensors[ctx.tensor(node.input[0])].dtype
        if to in FLOAT_TYPES and src.is_float:
            ctx.alias(node.output[0], node.input[0])
            return
        if to not in CAST_TYPES:
            raise Unsupported(node, "cast_type", f"Cast to {TensorProto.DataType.Name(to)} is not "
                              f"supported (float32, int8, uint8, int32, int64 and bool are)")
        target = CAST_TYPES[to]
        if src == target:
            ctx.alias(node.output[0], node.input[0])
            return
        add_cast(ctx, node.input[0], node.output[0], target)

    def reference(self, x, *, to: str, source: str):
        target = DType[to].numpy
        if np.dtype(target).kind in "iu" and x.dtype.kind == "f":
            x = np.trunc(x)
        return (np.asarray(x).astype(target),)

    def options(self, attrs: CastAttrs) -> CastOptionsT:
        return CastOptionsT(inDataType=DType[attrs.source].tflite, outDataType=DType[attrs.to].tflite)

    def version(self, op: Op, graph: Graph) -> int:
        # op_version.cc: float16/float64 5, int8 3 (checked first), else 1.
        types = {graph.tensors[op.inputs[0]].dtype, graph.tensors[op.outputs[0]].dtype}
        if types & {DType.FLOAT16, DType.FLOAT64}:
            return 5
        if DType.INT8 in types:
            return 3
        return 1
