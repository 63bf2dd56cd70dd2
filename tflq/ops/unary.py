"""Elementwise math: SQRT, EXP, LOG, ABS, NEG and POW (ONNX Pow, special exponents lowered to cheaper ops).

8-bit support follows LiteRT's kernels (`tflite/kernels/elementwise.cc`, exp.cc, neg.cc, pow.cc), checked
against ai-edge-litert 2.3: SQRT, EXP, LOG and ABS have int8 (not uint8) kernels; NEG and POW stay float.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq import ops as registry
from tflq._generated.tflite.AbsOptions import AbsOptionsT
from tflq._generated.tflite.ExpOptions import ExpOptionsT
from tflq._generated.tflite.NegOptions import NegOptionsT
from tflq._generated.tflite.PowOptions import PowOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import INT8_ONLY, INT8_AND_INT16, Calibrated, Case, FloatOnly, OpSpec, Transparent, rand
from tflq.ops.common import quantized_version

# Rank limit of TFLite's broadcasting POW kernel (BroadcastPow4D).
POW_MAX_BROADCAST_RANK = 4


def _case(name: str, op_type: str, x: np.ndarray) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"])], {"x": x})


def _pow_case(name: str, exponent, x: np.ndarray, then_cube: bool = False, opset: int = 17) -> Case:
    """Pow(x, constant); `then_cube` appends Pow(., 3) so a lowering to another kind still emits POW."""
    first_out = "t" if then_cube else "y"
    nodes = [helper.make_node("Pow", ["x", "e"], [first_out])]
    consts = {"e": np.asarray(exponent)}
    if then_cube:
        nodes.append(helper.make_node("Pow", ["t", "three"], ["y"]))
        consts["three"] = np.array(3.0, np.float32)
    return Case(name, nodes, {"x": x}, consts, opset=opset)


def _positive(*shape: int, seed: int = 0) -> np.ndarray:
    return rand(*shape, seed=seed, low=0.1, high=4.0)


class _Elementwise(OpSpec):
    """One-input math op imported 1:1 from its ONNX namesake."""

    layout = Transparent()
    numpy_fn = staticmethod(np.sqrt)

    def from_onnx(self, node, ctx) -> None:
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]])

    def reference(self, x):
        return (self.numpy_fn(x).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op)  # SQRT, EXP, LOG: int8 (and int16) are version 2


@register
class Sqrt(_Elementwise):
    """ONNX Sqrt; also Pow(x, 0.5)."""

    kind = "SQRT"
    onnx_types = ("Sqrt",)
    # int8 rescaling kernel (version 2) in LiteRT 2.x; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    cases = [_case("sqrt", "Sqrt", _positive(1, 3, 4, 4)),
             _pow_case("pow_0_5", 0.5, _positive(2, 7), opset=13)]


@register
class Exp(_Elementwise):
    """ONNX Exp."""

    kind = "EXP"
    onnx_types = ("Exp",)
    numpy_fn = staticmethod(np.exp)
    # exp.cc: float32, int8, int16; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    cases = [_case("exp", "Exp", rand(1, 3, 4, 4, low=-3, high=2)), _case("exp_2d", "Exp", rand(4, 6))]

    def options(self, attrs):
        return ExpOptionsT()


@register
class Log(_Elementwise):
    """ONNX Log (inputs must be > 0; the int8 lookup table maps x <= 0 to the output minimum)."""

    kind = "LOG"
    onnx_types = ("Log",)
    numpy_fn = staticmethod(np.log)
    # elementwise.cc IsLogSupportedType: float32, int8, int16; no uint8. The int16 LOG lands up to
    # 2 int8 steps from the float result (measured), no better than int8: int16x8 keeps it float.
    quant = Calibrated(dtypes=INT8_ONLY)
    cases = [_case("log", "Log", _positive(1, 3, 4, 4)), _case("log_2d", "Log", _positive(3, 5, seed=1))]


@register
class Abs(_Elementwise):
    """ONNX Abs."""

    kind = "ABS"
    onnx_types = ("Abs",)
    numpy_fn = staticmethod(np.abs)
    # IsAbsSupportedType: float32, int8, int16, int32; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    cases = [_case("abs", "Abs", rand(1, 3, 4, 4)), _case("abs_2d", "Abs", rand(3, 5, seed=1))]

    def options(self, attrs):
        return AbsOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, uint8=2)


@register
class Neg(_Elementwise):
    """ONNX Neg.

    FloatOnly: LiteRT's int8 NEG negates the raw integers, which is right only when the output
    zero point is minus the input's; no rule here can promise that (and -(-128) overflows).
    """

    kind = "NEG"
    onnx_types = ("Neg",)
    numpy_fn = staticmethod(np.negative)
    quant = FloatOnly()
    cases = [_case("neg", "Neg", rand(1, 3, 4, 4)), _case("neg_2d", "Neg", rand(3, 5, seed=1))]

    def options(self, attrs):
        return NegOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1


@register
class Pow(OpSpec):
    """ONNX Pow. A constant scalar exponent picks a cheaper op: 1 -> nothing, 2 -> MUL(x, x)
    (which quantizes, unlike SQUARE), 0.5 -> SQRT, -0.5 -> RSQRT when that kind is registered;
    anything else stays a float POW."""

    kind = "POW"
    onnx_types = ("Pow",)
    layout = Transparent()
    quant = FloatOnly()  # pow.cc: float32, int32 (and uint16) only
    cases = [
        _pow_case("cube", np.float32(3.0), rand(1, 3, 4, 4)),
        _pow_case("fractional", np.float32(1.5), _positive(2, 6)),
        _pow_case("int64_exponent", np.int64(3), rand(2, 6), opset=13),
        _pow_case("square_is_mul", np.float32(2.0), rand(1, 3, 4, 4), then_cube=True),
        _pow_case("one_is_identity", np.float32(1.0), rand(2, 5), then_cube=True),
        _pow_case("minus_half", np.float32(-0.5), _positive(2, 5), then_cube=True),
        Case("tensor_exponent", [helper.make_node("Pow", ["x", "e"], ["y"])],
             {"x": _positive(1, 3, 4, 4), "e": rand(1, 3, 4, 4, seed=1, low=-2, high=2)}),
        Case("channel_exponent", [helper.make_node("Pow", ["x", "e"], ["y"])],
             {"x": _positive(1, 3, 4, 4)}, {"e": rand(3, 1, 1, seed=2, low=-2, high=2)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        exponent = ctx.constant(node.input[1])
        if exponent is not None and exponent.size == 1:
            value = float(exponent.reshape(()))
            if value == 1.0:
                ctx.alias(out, x)
                return
            if value == 2.0:
                ctx.add_op("MUL", [x, x], [out])
                return
            if value == 0.5:
                ctx.add_op("SQRT", [x], [out])
                return
            if value == -0.5 and self._registered("RSQRT"):
                ctx.add_op("RSQRT", [x], [out])
                return
        out_shape = ctx.shape(out) if exponent is None else tuple(
            np.broadcast_shapes(ctx.shape(x), exponent.shape))
        if ctx.shape(x) != ctx.shape(node.input[1]) and len(out_shape) > POW_MAX_BROADCAST_RANK:
            raise Unsupported(node, "pow_broadcast_rank",
                              f"broadcasting Pow on rank {len(out_shape)} is not supported",
                              "TFLite's POW broadcasts up to 4 dimensions")
        if exponent is not None:
            y = ctx.add_constant(f"{node.name}/exponent", exponent.astype(np.float32))
        else:
            y = ctx.tensor(node.input[1])
            if not ctx.graph.tensors[y].dtype.is_float:
                raise Unsupported(node, "pow_exponent_type",
                                  "a non-constant integer exponent is not supported")
        ctx.add_op(self.kind, [x, y], [out])

    @staticmethod
    def _registered(kind: str) -> bool:
        try:
            registry.spec(kind)
        except KeyError:
            return False
        return True

    def reference(self, x, y):
        return (np.power(x, y).astype(np.float32),)

    def options(self, attrs):
        return PowOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1
