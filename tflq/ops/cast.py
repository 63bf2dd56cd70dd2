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
    """CAST `x` to `to`; float to int8/uint8 goes through int32 (see Cast)."""
    source = ctx.graph.tensors[ctx.tensor(x)].dtype
    if source.is_float and to in (DType.INT8, DType.UINT8):
        wide = ctx.new_activation(f"{out}/int32", ctx.graph.tensors[ctx.tensor(x)].shape, DType.INT32)
        ctx.add_op("CAST", [x], [wide], CastAttrs(to=DType.INT32.name, source=source.name))
        x, source = wide, DType.INT32
    ctx.add_op("CAST", [x], [out], CastAttrs(to=to.name, source=source.name))


def float_to_integer(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """LiteRT's CAST of float to an integer type (measured, ai-edge-litert 2.x): toward zero,
    values beyond the type's range clamped to its ends, NaN to its largest value."""
    info = np.iinfo(target)
    y = np.trunc(np.asarray(x, np.float64))
    high, low = ~(y < float(info.max)), y <= float(info.min)  # (NaN is high)
    inside = np.where(high | low, 0, y).astype(target)
    return np.where(high, info.max, np.where(low, info.min, inside)).astype(target)


def cast_values(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """What tflq's file computes for Cast(x) to `target` (tflq's one rule for every Cast: in the
    file, at import folding and in the reference interpreter). Integer to a narrower integer wraps
    (two's complement), in onnxruntime and LiteRT alike. Float to int8/uint8 is float -> int32 ->
    8 bits: onnxruntime's answer (it wraps: 300.7 -> uint8 44, -1.5 -> 255) for every value below
    2^31 in magnitude, where a direct LiteRT CAST would clamp (300.7 -> 255, -1.5 -> 0); ONNX
    leaves out-of-range values undefined. Beyond +-2^31, and for NaN and infinities, the int32
    step clamps (onnxruntime gives INT32_MIN there, so uint8 0): those values may differ."""
    target = np.dtype(target)
    x = np.asarray(x)
    if target.kind in "iu" and x.dtype.kind == "f":
        if target.itemsize == 1:
            return float_to_integer(x, np.int32).astype(target)
        return float_to_integer(x, target)
    return x.astype(target)


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
# Beyond int8's and uint8's ranges, below 2^31 (where onnxruntime's wrap is the file's; see cast_values)
_beyond_8_bits = np.array([[-70000.5, -300.7, -129.5, -1.5, -0.7, 127.9, 128.5, 255.9, 256.3, 300.1,
                            1e9]], np.float32)


@register
class Cast(OpSpec):
    """ONNX Cast. Float to integer truncates toward zero in both ONNX and TFLite (static_cast);
    anything to bool is `!= 0`. Casts between float types compute in float32 (aliases): TFLite
    kernels have no float16 arithmetic. Values outside the target range (undefined in ONNX) follow
    cast_values: float to int8/uint8 wraps as onnxruntime does, through an int32 CAST."""

    kind = "CAST"
    onnx_types = ("Cast", "CastLike")
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
        _cast_case("float_uint8_out_of_range_wraps", _beyond_8_bits, TensorProto.UINT8, TensorProto.FLOAT),
        _cast_case("float_int8_out_of_range_wraps", _beyond_8_bits, TensorProto.INT8, TensorProto.INT32),
        Case("castlike_float_to_int32", [helper.make_node("CastLike", ["x", "like"], ["y"])],
             {"x": _mixed}, {"like": np.array([7], np.int32)}, opset=15),
        Case("castlike_int64_to_float16", [helper.make_node("CastLike", ["x", "like"], ["y"])],
             {"x": _ids}, {"like": np.array([0.5], np.float16)}, opset=15),
        Case("castlike_float_to_bool", [helper.make_node("CastLike", ["x", "like"], ["y"])],
             {"x": _mixed}, {"like": np.array([True])}, opset=15),
    ]

    def from_onnx(self, node, ctx) -> None:
        # CastLike (opset 15): the type of the second input, whose values are not read
        to = int(ctx.attr(node, "to")) if node.op_type == "Cast" else ctx.elem_type(node.input[1])
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

    def nonzero_test_of(self, op: Op, graph: Graph) -> str | None:
        return op.inputs[0] if op.attrs.to == DType.BOOL.name else None  # anything to bool is != 0

    def reference(self, x, *, to: str, source: str):
        return (cast_values(x, DType[to].numpy),)

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
