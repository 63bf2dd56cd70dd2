"""ADD, SUB, MUL, DIV (broadcasting binary arithmetic) and BatchNormalization as MUL + ADD."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.AddOptions import AddOptionsT
from tflq._generated.tflite.DivOptions import DivOptionsT
from tflq._generated.tflite.MulOptions import MulOptionsT
from tflq._generated.tflite.SubOptions import SubOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import ChannelStats, Graph, Op
from tflq.ops import register
from tflq.ops.base import (WITH_INT16, Affine, Calibrated, Case, FusedActivations, IntegerRefusal,
                           OpSpec, Refused, Transparent, rand)
from tflq.ops.checks import Arity, ConstantValues, FloatAttr, Rank
from tflq.ops.common import activation_code, quantized_version
from tflq.ops.reduce import NORMALIZATION_CASES


@dataclass(frozen=True)
class ArithmeticAttrs:
    fused_activation: str = "NONE"


def _binary_cases(op_type: str, positive_rhs: bool = False) -> list[Case]:
    low = 0.5 if positive_rhs else -1.0
    return [
        Case("same_shape", [helper.make_node(op_type, ["a", "b"], ["y"])],
             {"a": rand(1, 3, 4, 4), "b": rand(1, 3, 4, 4, seed=1, low=low, high=1.5)}),
        Case("channel_const", [helper.make_node(op_type, ["a", "c"], ["y"])],
             {"a": rand(1, 3, 4, 4)}, {"c": rand(3, 1, 1, seed=2, low=low, high=1.5)}),
        Case("scalar_const", [helper.make_node(op_type, ["a", "c"], ["y"])],
             {"a": rand(2, 5)}, {"c": np.array(0.75, np.float32)}),
        Case("broadcast_2d", [helper.make_node(op_type, ["a", "b"], ["y"])],
             {"a": rand(3, 4), "b": rand(1, 4, seed=3, low=low, high=1.5)}),
    ]


class _Binary(OpSpec):
    Attrs = ArithmeticAttrs
    layout = Transparent()
    quant = Calibrated()
    fused_activation = FusedActivations()  # add.cc, sub.cc, mul.cc, div.cc: clamps only
    numpy_fn = staticmethod(np.add)
    Options = AddOptionsT
    int16_version = 3  # op_version.cc: int16 ADD with pot_scale_int16 false

    def from_onnx(self, node, ctx) -> None:
        ctx.add_op(self.kind, [node.input[0], node.input[1]], [node.output[0]])

    def reference(self, a, b):
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":  # integer ADD/SUB/MUL (index arithmetic)
            return (self.numpy_fn(a, b).astype(np.result_type(a, b)),)
        return (np.asarray(self.numpy_fn(a, b)).astype(np.float32, copy=False),)

    def options(self, attrs: ArithmeticAttrs):
        options = self.Options(fusedActivationFunction=activation_code(attrs.fused_activation))
        if hasattr(options, "potScaleInt16"):
            # add.cc/sub.cc: with the default (true) int16 scales must be powers of two; the
            # general int16 kernel takes any symmetric scales (ignored for other types).
            options.potScaleInt16 = False
        return options

    int64_version = 1  # op_version.cc: the version that added int64 inputs

    def version(self, op: Op, graph: Graph) -> int:
        if graph.tensors[op.inputs[0]].dtype.name == "INT64":
            return self.int64_version
        return quantized_version(graph, op, int16=self.int16_version)

    def _constant_operand(self, op: Op, graph: Graph) -> tuple[str, np.ndarray, int] | None:
        """(the other input, the constant, its index) for an unfused op with one constant input."""
        if op.attrs.fused_activation != "NONE":
            return None
        index = next((i for i in (1, 0) if graph.is_constant(op.inputs[i])), None)
        if index is None:
            return None
        return op.inputs[1 - index], graph.tensors[op.inputs[index]].data, index


@register
class Add(_Binary):
    kind = "ADD"
    quant = Calibrated(dtypes=WITH_INT16, rescales_inputs=True)
    sums_inputs = True
    onnx_types = ("Add", "Sum", "Mean")
    int64_version = 4
    onnx_checks = (Arity(inputs=(2, 2), only=("Add",)),
                   Arity(inputs=(1, 2 ** 31 - 1), only=("Sum", "Mean")))
    cases = _binary_cases("Add") + [
        Case("sum_three_broadcast", [helper.make_node("Sum", ["a", "b", "c"], ["y"])],
             {"a": rand(3, 4), "b": rand(1, 4, seed=3), "c": rand(3, 1, seed=4)}),
        Case("sum_nchw_const", [helper.make_node("Sum", ["a", "b", "c"], ["y"])],
             {"a": rand(1, 3, 4, 4), "b": rand(1, 3, 4, 4, seed=1)}, {"c": rand(3, 1, 1, seed=2)}),
        Case("mean_two", [helper.make_node("Mean", ["a", "b"], ["y"])],
             {"a": rand(1, 3, 4, 4), "b": rand(1, 3, 4, 4, seed=1)}),
        Case("mean_four_broadcast", [helper.make_node("Mean", ["a", "b", "c", "d"], ["y"])],
             {"a": rand(2, 3, 4), "b": rand(4, seed=1), "c": rand(3, 1, seed=2), "d": rand(2, 3, 4, seed=5)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        """Add; Sum as a chain of ADDs (broadcasting step by step, as ONNX's multidirectional
        broadcast of all inputs gives the same shape); Mean as that sum times 1/n."""
        if node.op_type == "Add":
            super().from_onnx(node, ctx)
            return
        inputs = [name for name in node.input if name]
        out = node.output[0]
        n = len(inputs)
        mean = node.op_type == "Mean" and n > 1
        total = ctx.new_activation(f"{out}/sum", self._broadcast(ctx, inputs)) if mean else out
        if n == 1:
            ctx.alias(out, inputs[0])
            return
        acc = inputs[0]
        for k, name in enumerate(inputs[1:], start=1):
            target = total if k == n - 1 else \
                ctx.new_activation(f"{out}/partial_{k}", self._broadcast(ctx, [acc, name]))
            ctx.add_op(self.kind, [acc, name], [target])
            acc = target
        if mean:
            scale = ctx.add_constant(f"{node.name or out}/inverse_count", np.array(1.0 / n, np.float32))
            ctx.add_op("MUL", [total, scale], [out])

    @staticmethod
    def _broadcast(ctx, names: list[str]) -> tuple[int, ...]:
        return tuple(np.broadcast_shapes(*(ctx.shape(name) for name in names)))

    def affine(self, op: Op, graph: Graph) -> Affine | None:
        found = self._constant_operand(op, graph)
        return Affine(found[0], shift=found[1]) if found else None


@register
class Sub(_Binary):
    kind = "SUB"
    quant = Calibrated(dtypes=WITH_INT16, rescales_inputs=True)
    onnx_types = ("Sub",)
    onnx_checks = (Arity(inputs=(2, 2)),)
    numpy_fn = staticmethod(np.subtract)
    Options = SubOptionsT
    int64_version = 4
    int16_version = 5  # int16 SUB with pot_scale_int16 false
    cases = _binary_cases("Sub")

    def affine(self, op: Op, graph: Graph) -> Affine | None:
        found = self._constant_operand(op, graph)
        return Affine(found[0], shift=-found[1]) if found and found[2] == 1 else None


def _as_division(node, ctx) -> tuple[str, str] | None:
    """(x, s) for Mul(x, Reciprocal(s)) (a DIV(1, s) in the IR) whose result has x's shape: T5's
    RMSNorm x * (1 / sqrt(mean(x^2) + eps)). As DIV(x, s) the quantized model reads s off its own
    grid; the reciprocal's grid spans 1/s of every row calibration saw, 1/sqrt(eps) for a zero
    row, which left ordinary rows at one step of it (0 dB, found by tests/test_fuzz_norms.py)."""
    graph = ctx.graph
    for i in (0, 1):
        x, inverse = node.input[1 - i], node.input[i]
        producer = graph.producer(inverse) if inverse in graph.tensors else None
        if producer is None or producer.kind != "DIV" or x not in graph.tensors:
            continue
        one, s = producer.inputs
        t = graph.tensors[x]
        if graph.is_constant(x) or not t.dtype.is_float or not graph.is_constant(one) or \
                not np.all(graph.tensors[one].data == 1.0) or graph.tensors[one].data.size != 1 or \
                tuple(np.broadcast_shapes(t.shape, graph.tensors[inverse].shape)) != tuple(t.shape):
            continue
        return x, s
    return None


@register
class Mul(_Binary):
    """ONNX Mul; also imports BatchNormalization as MUL + ADD (later folded into a conv)."""

    kind = "MUL"
    quant = Calibrated(dtypes=WITH_INT16)
    onnx_types = ("Mul", "BatchNormalization")
    onnx_checks = (Arity(inputs=(2, 2), only=("Mul",)),
                   Arity(inputs=(5, 5), max_outputs=3, only=("BatchNormalization",)),
                   Rank(index=0, min_rank=2, only=("BatchNormalization",)),
                   FloatAttr(name="epsilon", min=0.0, only=("BatchNormalization",)),
                   FloatAttr(name="momentum", only=("BatchNormalization",)),
                   *(ConstantValues(index=k, what=what, only=("BatchNormalization",))
                     for k, what in ((1, "scale"), (2, "bias"), (3, "mean"))),
                   ConstantValues(index=4, what="variance", min=0.0, only=("BatchNormalization",)))
    numpy_fn = staticmethod(np.multiply)
    Options = MulOptionsT
    int64_version = 5
    int16_version = 4
    cases = _binary_cases("Mul") + [
        Case("batchnorm", [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                            epsilon=1e-3)],
             {"x": rand(1, 4, 3, 3)},
             {"s": rand(4, seed=1), "b": rand(4, seed=2), "m": rand(4, seed=3),
              "v": rand(4, seed=4, low=0.5, high=2.0)}),
    ]

    def affine(self, op: Op, graph: Graph) -> Affine | None:
        found = self._constant_operand(op, graph)
        return Affine(found[0], scale=found[1]) if found else None

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Mul":
            divided = _as_division(node, ctx)
            if divided is not None:
                return ctx.add_op("DIV", list(divided), [node.output[0]])
            return super().from_onnx(node, ctx)
        if len(node.output) > 1 and any(node.output[1:]) or ctx.attr(node, "training_mode", 0):
            raise Unsupported(node, "batchnorm_training", "training-mode BatchNormalization")
        scale, bias, mean, var = (ctx.require_constant(node, i, what).astype(np.float64)
                                  for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        eps = float(ctx.attr(node, "epsilon", 1e-5))
        mul = scale / np.sqrt(var + eps)
        add = bias - mean * mul
        x = node.input[0]
        rank = ctx.rank(x)
        bshape = (1, -1) + (1,) * (rank - 2)
        scaled = ctx.new_activation(f"{node.output[0]}/scaled", ctx.shape(x))
        ctx.add_op("MUL", [x, ctx.add_constant(f"{node.name}/mul", mul.reshape(bshape).astype(np.float32))],
                   [scaled])
        shifted = ctx.add_op("ADD", [scaled, ctx.add_constant(f"{node.name}/add",
                                                              add.reshape(bshape).astype(np.float32))],
                             [node.output[0]])
        if shifted is not None:  # what the BatchNorm trained its output toward (channel axis 1)
            shifted.statistics = ChannelStats(bias, np.abs(scale) * np.sqrt(var / (var + eps)))

    def version(self, op: Op, graph: Graph) -> int:
        a, b, y = (graph.tensors[n] for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
        if a.dtype.name == "INT64":
            return self.int64_version
        if a.dtype.name == "INT16":
            return self.int16_version  # checked before the rescale >= 1 case
        if a.quant is not None and b.quant is not None and y.quant is not None:
            if float(a.quant.scale) * float(b.quant.scale) / float(y.quant.scale) >= 1.0:
                return 3
        return quantized_version(graph, op)


@register
class Div(_Binary):
    kind = "DIV"
    onnx_types = ("Div", "Softsign", "Tan")
    onnx_checks = (Arity(inputs=(2, 2), only=("Div",)),)
    numpy_fn = staticmethod(np.divide)
    Options = DivOptionsT
    # div.cc CheckNonZero: every quantized divisor value must differ from its zero point. A
    # grid always holds real 0, so a computed divisor keeps the DIV float.
    integer_refusal = IntegerRefusal(1, Refused.ZERO_POINT, "div.cc: data[i] != zero_point")
    divisor = 1
    cases = _binary_cases("Div", positive_rhs=True) + [
        # int64 (toward zero), run-time divisors of both signs, and a constant one: Speech2Text's
        # subsampled lengths; past 2^24 and 2^53, where float estimates alone are not exact
        Case("int64", [helper.make_node("Div", ["a", "b"], ["y"])],
             {"a": np.array([[7, -7, 7, -7, 0, 9, -9, 2 ** 40 + 3, -(2 ** 55) - 5, 2 ** 61 + 12345]], np.int64),
              "b": np.array([[2, 2, -2, -2, 5, 3, 3, 7, 3, -1234567]], np.int64)}, quantize=False),
        Case("int64_constant", [helper.make_node("Div", ["a", "b"], ["y"])],
             {"a": np.array([[0, 1, 2, 15, 16, 31, -1, -16]], np.int64)}, {"b": np.array(2, np.int64)},
             quantize=False, emits=("FLOOR_MOD",)),
        Case("softsign", [helper.make_node("Softsign", ["x"], ["y"])], {"x": rand(1, 3, 4, 4, low=-6, high=6)}, float_parts=True),
        Case("softsign_2d", [helper.make_node("Softsign", ["x"], ["y"])], {"x": rand(3, 9, low=-20, high=20)}, float_parts=True),
        Case("tan", [helper.make_node("Tan", ["x"], ["y"])], {"x": rand(1, 3, 4, 4, low=-1.4, high=1.4)}, opset=7, float_parts=True),
    ] + NORMALIZATION_CASES

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Tan":  # SIN / COS
            x, out = node.input[0], node.output[0]
            sine, cosine = (ctx.new_activation(f"{out}/{k.lower()}", ctx.shape(x)) for k in ("SIN", "COS"))
            ctx.add_op("SIN", [x], [sine])
            ctx.add_op("COS", [x], [cosine])
            ctx.add_op(self.kind, [sine, cosine], [out])
            return
        if node.op_type == "Softsign":  # x / (1 + |x|)
            x, out = node.input[0], node.output[0]
            magnitude = ctx.new_activation(f"{out}/abs", ctx.shape(x))
            ctx.add_op("ABS", [x], [magnitude])
            divisor = ctx.new_activation(f"{out}/divisor", ctx.shape(x))
            one = ctx.add_constant(f"{node.name or out}/one", np.array(1.0, np.float32))
            ctx.add_op("ADD", [magnitude, one], [divisor])
            ctx.add_op(self.kind, [x, divisor], [out])
            return
        dtype = ctx.graph.tensors[ctx.tensor(node.input[0])].dtype
        if dtype == DType.INT64:
            return _int64_division(node, ctx)
        if not dtype.is_float and dtype != DType.INT32:  # div.cc: float32, int32 (and quantized)
            raise Unsupported(node, "div_type", f"Div of {dtype.name.lower()} (LiteRT's DIV takes "
                              f"float32, int32, and int64 here)")
        super().from_onnx(node, ctx)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


def _int64_division(node, ctx) -> None:
    """ONNX Div of int64 (C's division: toward zero), which LiteRT has no kernel for (DIV and
    FLOOR_DIV take int32 at most), from the int64 kernels it has: length arithmetic such as
    Speech2Text's (lengths - 1) // 2 + 1 on the attention mask's sum.

    r = FLOOR_MOD(a, b) is exact, so d = a - r is b * floor(a / b) exactly. Its quotient q is
    estimated in float32 (CAST, DIV, ROUND: relative error at most 3 * 2^-24, so exact for
    |q| < 2^21) and corrected twice by the float32 quotient of the exact residual d - q * b (a
    multiple of b; each step leaves at most 3 * 2^-24 of the error before it, plus nothing once
    that is below 2^21): exact for every |a| < 2^62 (beyond, q * b may overflow). Toward zero
    is floor + 1 where the remainder is not 0 and a and b differ in sign."""
    from tflq.ops.cast import add_cast

    a, b = (ctx.tensor(n) for n in node.input[:2])
    out = node.output[0]
    shape = ctx.shape(out)

    def value(label: str, dtype: DType = DType.INT64, like: tuple[int, ...] = shape) -> str:
        return ctx.new_activation(f"{out}/{label}", like, dtype)

    def op(kind: str, inputs: list[str], label: str, dtype: DType = DType.INT64) -> str:
        result = value(label, dtype, tuple(np.broadcast_shapes(*(ctx.graph.tensors[n].shape for n in inputs))))
        ctx.add_op(kind, inputs, [result])
        return result

    divisor = value("divisor_float", DType.FLOAT32, ctx.shape(node.input[1]))
    add_cast(ctx, b, divisor, DType.FLOAT32)

    def quotient(numerator: str, label: str) -> str:
        wide = value(f"{label}_float", DType.FLOAT32)
        add_cast(ctx, numerator, wide, DType.FLOAT32)
        rounded = op("ROUND", [op("DIV", [wide, divisor], f"{label}_quotient_float", DType.FLOAT32)],
                     f"{label}_rounded", DType.FLOAT32)
        result = value(label)
        add_cast(ctx, rounded, result, DType.INT64)
        return result

    remainder = op("FLOOR_MOD", [a, b], "floor_mod")
    multiple = op("SUB", [a, remainder], "multiple")
    q = quotient(multiple, "estimate")
    for step in (1, 2):
        residual = op("SUB", [multiple, op("MUL", [q, b], f"product{step}")], f"residual{step}")
        q = op("ADD", [q, quotient(residual, f"correction{step}")], f"floor{step}")
    zero = ctx.add_constant(f"{out}/zero", np.zeros((), np.int64))
    a_negative = op("LESS", [a, zero], "dividend_negative", DType.BOOL)
    b_negative = op("LESS", [b, zero], "divisor_negative", DType.BOOL)
    inexact = op("NOT_EQUAL", [remainder, zero], "inexact", DType.BOOL)
    toward_zero = op("LOGICAL_AND", [inexact, op("NOT_EQUAL", [a_negative, b_negative], "signs_differ",
                                                  DType.BOOL)], "rounds_up", DType.BOOL)
    step_up = value("rounds_up_int64")
    add_cast(ctx, toward_zero, step_up, DType.INT64)
    ctx.add_op("ADD", [q, step_up], [out])
