"""FLOOR_MOD: ONNX Mod. fmod=0 (integers; the result takes the divisor's sign) is FLOOR_MOD itself;
fmod=1 (C fmod; the dividend's sign) is derived from it exactly."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.FloorModOptions import FloorModOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, OpSpec, Transparent

_INT_A = np.array([[-7, -6, -1, 0, 1, 5, 7, 9]], np.int64)
_INT_B = np.array([[3, -3, 4, 2, -2, 5, -4, 4]], np.int64)
_FLOAT_A = np.array([[-7.5, -6.0, -0.25, 0.0, 1.5, 5.0, 7.25, 3e3]], np.float32)
_FLOAT_B = np.array([[2.0, -4.0, 1.0, 3.0, -1.0, 2.5, 2.0, -7.0]], np.float32)


def _mod_case(name: str, a: np.ndarray, b: np.ndarray, fmod: int, const_b: bool = False) -> Case:
    node = helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod)
    if const_b:
        return Case(name, [node], {"a": a}, {"b": b})
    return Case(name, [node], {"a": a, "b": b})


@register
class FloorMod(OpSpec):
    """ONNX Mod (no quantized kernel: LiteRT's int8 FLOOR_MOD works on the raw integers).

    fmod=1 for floats: fmod(a, b) = sign(a) * floor_mod(|a|, |b|), exact (floor_mod of two
    non-negative numbers is fmod). For integers: r = floor_mod(a, b), and where r is non-zero
    and its sign differs from a's, fmod = r - b (exact in integers). Division by zero is
    undefined in both ONNX and TFLite."""

    kind = "FLOOR_MOD"
    onnx_types = ("Mod",)
    layout = Transparent()
    quant = FloatOnly()
    cases = [
        _mod_case("int64_floor", _INT_A, _INT_B, fmod=0),
        _mod_case("int32_const_divisor", _INT_A.astype(np.int32), np.array(3, np.int32), fmod=0, const_b=True),
        _mod_case("int64_fmod", _INT_A, _INT_B, fmod=1),
        _mod_case("int32_fmod_const", _INT_A.astype(np.int32), np.array(-4, np.int32), fmod=1, const_b=True),
        _mod_case("float_fmod", _FLOAT_A, _FLOAT_B, fmod=1),
        _mod_case("float_fmod_const", _FLOAT_A, np.array(2.5, np.float32), fmod=1, const_b=True),
    ]

    def from_onnx(self, node, ctx) -> None:
        a, b, out = node.input[0], node.input[1], node.output[0]
        fmod = int(ctx.attr(node, "fmod", 0))
        dtype = ctx.graph.tensors[ctx.tensor(a)].dtype
        if dtype != ctx.graph.tensors[ctx.tensor(b)].dtype:
            raise Unsupported(node, "mixed_types", "Mod of two different types")
        if dtype not in (DType.FLOAT32, DType.INT32, DType.INT64):
            raise Unsupported(node, "mod_type", f"Mod of {dtype.name.lower()} (LiteRT's FLOOR_MOD takes "
                              f"float32, int32 and int64)")
        if not fmod:
            if dtype.is_float:
                raise Unsupported(node, "mod_fmod", "Mod of floats needs fmod=1 (the ONNX rule)")
            ctx.add_op(self.kind, [a, b], [out])
            return
        shape = ctx.shape(out)

        def tmp(label: str, dt: DType = dtype) -> str:
            return ctx.new_activation(f"{out}/{label}", shape, dt)

        zero = ctx.add_constant(f"{out}/zero", np.zeros((), dtype.numpy))
        negative = ctx.new_activation(f"{out}/dividend_negative", ctx.shape(a), DType.BOOL)
        ctx.add_op("LESS", [a, zero], [negative])
        if dtype.is_float:
            abs_a = ctx.new_activation(f"{out}/abs_dividend", ctx.shape(a), dtype)
            abs_b = ctx.new_activation(f"{out}/abs_divisor", ctx.shape(b), dtype)
            ctx.add_op("ABS", [a], [abs_a])
            ctx.add_op("ABS", [b], [abs_b])
            m, neg = tmp("magnitude"), tmp("negated")
            ctx.add_op(self.kind, [abs_a, abs_b], [m])
            ctx.add_op("NEG", [m], [neg])
            ctx.add_op("SELECT_V2", [negative, neg, m], [out])
            return
        r = tmp("floor_mod")
        ctx.add_op(self.kind, [a, b], [r])
        nonzero, r_negative, differ, fix = tmp("nonzero", DType.BOOL), tmp("negative", DType.BOOL), \
            tmp("signs_differ", DType.BOOL), tmp("fix", DType.BOOL)
        ctx.add_op("NOT_EQUAL", [r, zero], [nonzero])
        ctx.add_op("LESS", [r, zero], [r_negative])
        ctx.add_op("NOT_EQUAL", [r_negative, negative], [differ])
        ctx.add_op("LOGICAL_AND", [nonzero, differ], [fix])
        shifted = tmp("minus_divisor")
        ctx.add_op("SUB", [r, b], [shifted])
        ctx.add_op("SELECT_V2", [fix, shifted, r], [out])

    def reference(self, a, b):
        return (np.mod(a, b).astype(np.result_type(a, b)),)

    def options(self, attrs) -> FloorModOptionsT:
        return FloorModOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 2 if graph.tensors[op.inputs[0]].dtype in (DType.INT8, DType.INT16) else 1
