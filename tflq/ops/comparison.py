"""EQUAL, NOT_EQUAL, LESS, LESS_EQUAL, GREATER, GREATER_EQUAL (bool results), and ONNX IsNaN/IsInf/Xor
written with them."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.EqualOptions import EqualOptionsT
from tflq._generated.tflite.GreaterEqualOptions import GreaterEqualOptionsT
from tflq._generated.tflite.GreaterOptions import GreaterOptionsT
from tflq._generated.tflite.LessEqualOptions import LessEqualOptionsT
from tflq._generated.tflite.LessOptions import LessOptionsT
from tflq._generated.tflite.NotEqualOptions import NotEqualOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register, register_family
from tflq.ops.base import Case, FloatOnly, OpSpec, Transparent, rand


def _comparison_cases(op_type: str) -> list[Case]:
    # Exact ties matter for comparisons: the data repeats values of the other operand.
    a = np.round(rand(1, 3, 4, 4, low=-2, high=2) * 2) / 2
    return [
        Case("same_shape", [helper.make_node(op_type, ["a", "b"], ["y"])],
             {"a": a, "b": np.round(rand(1, 3, 4, 4, seed=1, low=-2, high=2) * 2) / 2}),
        Case("channel_const_nchw", [helper.make_node(op_type, ["a", "c"], ["y"])], {"a": a},
             {"c": np.array([0.5, -0.5, 0.0], np.float32).reshape(3, 1, 1)}),
        Case("int64_ids_vs_scalar", [helper.make_node(op_type, ["ids", "c"], ["y"])],
             {"ids": np.array([[0, 3, 1, 0, 7, 3]], np.int64)}, {"c": np.array(3, np.int64)}),
        Case("int32_broadcast", [helper.make_node(op_type, ["a", "b"], ["y"])],
             {"a": np.array([[1], [4], [2]], np.int32), "b": np.array([[2, 4, 1, 0]], np.int32)}),
    ]


class _Comparison(OpSpec):
    """A broadcasting comparison; the bool output is never quantized.

    FloatOnly in full-integer mode: LiteRT's int8/uint8 kernels turn each input's scale into a
    fixed-point multiplier with QuantizeMultiplierGreaterThanOne, which aborts the process for a
    scale of exactly 1.0, the scale tflq (like TF) gives an all-zero range, such as the constant
    0 of `x > 0`. A float comparison behind one DEQUANTIZE is exact on the dequantized values."""

    layout = Transparent()
    quant = FloatOnly()
    numpy_fn = staticmethod(np.equal)
    Options = EqualOptionsT
    int8_version = 2
    int16_version = 1

    def from_onnx(self, node, ctx) -> None:
        add_comparison(ctx, self.kind, node.input[0], node.input[1], node.output[0])

    def reference(self, a, b):
        return (self.numpy_fn(a, b),)

    def options(self, attrs):
        return self.Options()

    def version(self, op: Op, graph: Graph) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype
        return self.int8_version if dtype == DType.INT8 else \
            self.int16_version if dtype == DType.INT16 else 1


def add_comparison(ctx, kind: str, a: str, b: str, out: str) -> None:
    """`kind`(a, b) -> bool `out`. TFLite wants both operands of one type: an int32/int64 mix
    (a Shape-derived int64 constant against int32 data) narrows or widens the constant."""
    ta, tb = (ctx.graph.tensors[ctx.tensor(n)] for n in (a, b))
    if ta.dtype != tb.dtype:
        node = ctx.current_node
        const, other = (tb, ta) if tb.is_constant else (ta, tb) if ta.is_constant else (None, None)
        if const is None or const.dtype.is_float or other.dtype.is_float:
            raise Unsupported(node, "mixed_types", f"{ta.dtype.name.lower()} compared with "
                              f"{tb.dtype.name.lower()}")
        converted = ctx.add_constant(f"{const.name}/{other.dtype.name.lower()}",
                                     narrow(node, const.data, other.dtype))
        a, b = (converted, b) if const is ta else (a, converted)
    ctx.add_op(kind, [a, b], [out])


def narrow(node, values: np.ndarray, dtype: DType) -> np.ndarray:
    """Integer `values` as `dtype`, refusing values the type cannot hold (a range check, not a wrap)."""
    info = np.iinfo(dtype.numpy)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise Unsupported(node, "integer_range", f"constant values {values.min()}..{values.max()} "
                          f"do not fit {dtype.name.lower()}")
    return values.astype(dtype.numpy)


@register
class Equal(_Comparison):
    """ONNX Equal; IsInf (with its detect_* flags) is written with EQUAL, NOT_EQUAL, SUB, GREATER,
    LESS and LOGICAL_AND: x - x is NaN exactly for inf and NaN, and x == x is false only for NaN.
    No infinite constant is needed, which full-integer mode could not quantize."""

    kind = "EQUAL"
    onnx_types = ("Equal", "IsInf")
    int16_version = 4
    cases = _comparison_cases("Equal") + [
        Case("bool_inputs", [helper.make_node("Equal", ["a", "b"], ["y"])],
             {"a": np.array([[True, False, True, False]]), "b": np.array([[True, True, False, False]])}),
        Case("isinf", [helper.make_node("IsInf", ["x"], ["y"])],
             {"x": np.array([[1.0, np.inf, -np.inf, np.nan, 0.0, -3e38]], np.float32)}, quantize=False),
        Case("isinf_positive", [helper.make_node("IsInf", ["x"], ["y"], detect_negative=0)],
             {"x": np.array([[1.0, np.inf, -np.inf, np.nan]], np.float32)}, quantize=False),
        Case("isinf_negative", [helper.make_node("IsInf", ["x"], ["y"], detect_positive=0)],
             {"x": np.array([[1.0, np.inf, -np.inf, np.nan]], np.float32)}, quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Equal":
            return super().from_onnx(node, ctx)
        x, out = node.input[0], node.output[0]
        positive, negative = int(ctx.attr(node, "detect_positive", 1)), int(ctx.attr(node, "detect_negative", 1))
        shape, dtype = ctx.shape(x), ctx.graph.tensors[ctx.tensor(x)].dtype
        if not dtype.is_float:
            raise Unsupported(node, "isinf_type", "IsInf of a non-float tensor")
        if not (positive or negative):
            ctx.add_op("LESS", [x, x], [out])  # false everywhere, NaN included
            return
        zero = ctx.add_constant(f"{out}/zero", np.zeros((), dtype.numpy))
        diff = ctx.new_activation(f"{out}/x_minus_x", shape, dtype)
        ctx.add_op("SUB", [x, x], [diff])
        not_finite = ctx.new_activation(f"{out}/not_finite", shape, DType.BOOL)
        ctx.add_op("NOT_EQUAL", [diff, zero], [not_finite])
        not_nan = ctx.new_activation(f"{out}/not_nan", shape, DType.BOOL)
        ctx.add_op("EQUAL", [x, x], [not_nan])
        if positive and negative:
            ctx.add_op("LOGICAL_AND", [not_finite, not_nan], [out])
            return
        infinite = ctx.new_activation(f"{out}/infinite", shape, DType.BOOL)
        ctx.add_op("LOGICAL_AND", [not_finite, not_nan], [infinite])
        sign = ctx.new_activation(f"{out}/sign", shape, DType.BOOL)
        ctx.add_op("GREATER" if positive else "LESS", [x, zero], [sign])
        ctx.add_op("LOGICAL_AND", [infinite, sign], [out])


@register
class NotEqual(_Comparison):
    """NOT_EQUAL: ONNX IsNaN (x != x) and Xor of bools (a != b)."""

    kind = "NOT_EQUAL"
    onnx_types = ("IsNaN", "Xor")
    numpy_fn = staticmethod(np.not_equal)
    Options = NotEqualOptionsT
    cases = [
        Case("isnan", [helper.make_node("IsNaN", ["x"], ["y"])],
             {"x": np.array([[1.0, np.nan, -np.inf, 0.0, np.nan]], np.float32)}, quantize=False),
        Case("isnan_nchw", [helper.make_node("IsNaN", ["x"], ["y"])], {"x": rand(1, 2, 3, 3)}),
        Case("xor", [helper.make_node("Xor", ["a", "b"], ["y"])],
             {"a": np.array([[True, False, True, False]]), "b": np.array([[True, True, False, False]])}),
        Case("xor_broadcast", [helper.make_node("Xor", ["a", "b"], ["y"])],
             {"a": np.array([[True], [False]]), "b": np.array([[True, False, True]])}),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "IsNaN":
            ctx.add_op("NOT_EQUAL", [node.input[0], node.input[0]], [node.output[0]])
        else:
            add_comparison(ctx, "NOT_EQUAL", node.input[0], node.input[1], node.output[0])


register_family(
    _Comparison,
    dict(kind="LESS", onnx_types=("Less",), numpy_fn=np.less, Options=LessOptionsT, int16_version=3,
         cases=_comparison_cases("Less")),
    dict(kind="LESS_EQUAL", onnx_types=("LessOrEqual",), numpy_fn=np.less_equal, Options=LessEqualOptionsT,
         cases=_comparison_cases("LessOrEqual")),
    dict(kind="GREATER", onnx_types=("Greater",), numpy_fn=np.greater, Options=GreaterOptionsT,
         cases=_comparison_cases("Greater")),
    dict(kind="GREATER_EQUAL", onnx_types=("GreaterOrEqual",), numpy_fn=np.greater_equal,
         Options=GreaterEqualOptionsT, int16_version=3, cases=_comparison_cases("GreaterOrEqual")),
)
