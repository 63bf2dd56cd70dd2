"""Elementwise math: SQRT, EXP, LOG, ABS, NEG, POW, FLOOR, CEIL, ROUND, SIGN, SIN and COS, plus the
ONNX ops lowered onto them: Reciprocal (DIV), Softplus (LOG's log1p term; Mish, in activations.py,
reuses it), Erf (SIGN's odd symmetry around a rational-exponential approximation).

8-bit support follows LiteRT's kernels (`tflite/kernels/elementwise.cc`, exp.cc, neg.cc, pow.cc,
floor.cc, ceil.cc, round.cc, sign.cc), checked against ai-edge-litert 2.3: SQRT, EXP, LOG and ABS have
int8 (not uint8) kernels; NEG, POW, FLOOR, CEIL, ROUND, SIGN, SIN and COS take float only.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq import ops as registry
from tflq._generated.tflite.AbsOptions import AbsOptionsT
from tflq._generated.tflite.ATan2Options import ATan2OptionsT
from tflq._generated.tflite.CosOptions import CosOptionsT
from tflq._generated.tflite.ExpOptions import ExpOptionsT
from tflq._generated.tflite.NegOptions import NegOptionsT
from tflq._generated.tflite.PowOptions import PowOptionsT
from tflq._generated.tflite.SignOptions import SignOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register, register_family
from tflq.ops.base import (INT8_ONLY, INT8_AND_INT16, Calibrated, Case, FloatOnly, IntegerRefusal, OpSpec,
                           Refused, Transparent, rand)
from tflq.ops.common import quantized_version
from tflq.ops.pool import LP_POOL_L2_CASES
from tflq.ops.reduce import L1_CASES, L2_CASES, LOG_SUM_CASES, add_sum_of

# Rank limit of TFLite's broadcasting POW kernel (BroadcastPow4D).
POW_MAX_BROADCAST_RANK = 4


def _case(name: str, op_type: str, x: np.ndarray, float_parts: bool = False) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"])], {"x": x}, float_parts=float_parts)


def _pow_case(name: str, exponent, x: np.ndarray, then_pow: bool = False, opset: int = 17,
              emits: tuple[str, ...] | None = None) -> Case:
    """Pow(x, constant); `then_pow` appends Pow(., 4) so a lowering to another kind still emits POW."""
    first_out = "t" if then_pow else "y"
    nodes = [helper.make_node("Pow", ["x", "e"], [first_out])]
    consts = {"e": np.asarray(exponent)}
    if then_pow:
        nodes.append(helper.make_node("Pow", ["t", "four"], ["y"]))
        consts["four"] = np.array(4.0, np.float32)
    return Case(name, nodes, {"x": x}, consts, opset=opset, emits=emits)


def _positive(*shape: int, seed: int = 0) -> np.ndarray:
    return rand(*shape, seed=seed, low=0.1, high=4.0)


class _Elementwise(OpSpec):
    """One-input math op imported 1:1 from its ONNX namesake."""

    layout = Transparent()
    numpy_fn = staticmethod(np.sqrt)

    def from_onnx(self, node, ctx) -> None:
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]])

    def reference(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):  # IEEE results (log(0) = -inf), no warning
            return (self.numpy_fn(x).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op)  # SQRT, EXP, LOG: int8 (and int16) are version 2


@register
class Sqrt(_Elementwise):
    """ONNX Sqrt; also Pow(x, 0.5)."""

    kind = "SQRT"
    onnx_types = ("Sqrt", "ReduceL2")
    # int8 rescaling kernel (version 2) in LiteRT 2.x; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    # elementwise.cc SqrtEvalQuantized: a dequantized input below 0 fails the invoke
    integer_refusal = IntegerRefusal(0, Refused.NEGATIVE,
                                     "elementwise.cc: Sqrt is only defined for non-negative values")
    cases = [_case("sqrt", "Sqrt", _positive(1, 3, 4, 4)),
             _pow_case("pow_0_5", 0.5, _positive(2, 7), opset=13)] + L2_CASES + LP_POOL_L2_CASES

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "ReduceL2":
            add_sum_of(node, ctx)  # SQRT(SUM(x * x))
            return
        super().from_onnx(node, ctx)


@register
class Exp(_Elementwise):
    """ONNX Exp."""

    kind = "EXP"
    onnx_types = ("Exp", "Sinh", "Cosh")
    numpy_fn = staticmethod(np.exp)
    # exp.cc: float32, int8, int16; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    cases = [_case("exp", "Exp", rand(1, 3, 4, 4, low=-3, high=2)), _case("exp_2d", "Exp", rand(4, 6)),
             _case("sinh", "Sinh", rand(1, 3, 4, 4, low=-4, high=4)),
             _case("cosh_2d", "Cosh", rand(3, 7, low=-4, high=4))]

    def from_onnx(self, node, ctx) -> None:
        """Exp; Sinh and Cosh as (e^x -/+ e^-x) / 2."""
        x, out = node.input[0], node.output[0]
        if node.op_type == "Exp":
            ctx.add_op(self.kind, [x], [out])
            return
        shape, base = ctx.shape(x), f"{out}/{node.op_type.lower()}"
        grow = emit(ctx, "EXP", [x], f"{base}/exp", shape)
        negated = emit(ctx, "MUL", [x, scalar(ctx, node, "minus_one", -1.0)], f"{base}/negated", shape)
        decay = emit(ctx, "EXP", [negated], f"{base}/exp_negated", shape)
        combined = emit(ctx, "SUB" if node.op_type == "Sinh" else "ADD", [grow, decay], f"{base}/combined", shape)
        emit(ctx, "MUL", [combined, scalar(ctx, node, "half", 0.5)], base, shape, out)

    def options(self, attrs):
        return ExpOptionsT()


def emit(ctx, kind: str, inputs: list[str], base: str, shape: tuple[int, ...], out: str = "",
         attrs=None) -> str:
    """Add one op of a lowering; its output is `out`, or a new activation named after `base`."""
    out = out or ctx.new_activation(base, shape)
    ctx.add_op(kind, inputs, [out], attrs)
    return out


def scalar(ctx, node, what: str, value: float) -> str:
    """A float32 scalar constant of a lowering, named after its node."""
    return ctx.add_constant(f"{node.name}/{what}", np.array(value, np.float32))


def add_softplus(ctx, node, x: str, out: str = "") -> str:
    """softplus(x) = relu(x) + log(1 + exp(-|x|)): exp never overflows (onnxruntime computes the
    same split), and every op has an int8 kernel."""
    shape, base = ctx.shape(x), out or f"{node.output[0]}/softplus"
    negative_abs = emit(ctx, "MUL", [emit(ctx, "ABS", [x], f"{base}/abs", shape),
                                     scalar(ctx, node, "minus_one", -1.0)], f"{base}/neg_abs", shape)
    one_plus = emit(ctx, "ADD", [emit(ctx, "EXP", [negative_abs], f"{base}/exp", shape),
                                 scalar(ctx, node, "one", 1.0)], f"{base}/one_plus", shape)
    log1p = emit(ctx, "LOG", [one_plus], f"{base}/log1p", shape)
    return emit(ctx, "ADD", [emit(ctx, "RELU", [x], f"{base}/relu", shape), log1p], base, shape, out)


@register
class Log(_Elementwise):
    """ONNX Log (inputs must be > 0; the int8 lookup table maps x <= 0 to the output minimum).

    Also imports Softplus, which has no TFLite builtin: add_softplus builds it around LOG's
    log(1 + exp(-|x|)) term; and ReduceLogSum and ReduceLogSumExp (reduce.add_sum_of)."""

    kind = "LOG"
    onnx_types = ("Log", "Softplus", "ReduceLogSum", "ReduceLogSumExp", "Asinh", "Acosh", "Atanh")
    numpy_fn = staticmethod(np.log)
    # elementwise.cc IsLogSupportedType: float32, int8, int16; no uint8. The int16 LOG lands up to
    # 2 int8 steps from the float result (measured), no better than int8: int16x8 keeps it float.
    quant = Calibrated(dtypes=INT8_ONLY)
    cases = [_case("log", "Log", _positive(1, 3, 4, 4)), _case("log_2d", "Log", _positive(3, 5, seed=1)),
             _case("softplus", "Softplus", rand(1, 3, 4, 4, low=-6, high=6)),
             _case("softplus_large", "Softplus", rand(2, 8, low=-120, high=120)),
             _case("asinh", "Asinh", rand(1, 3, 4, 4, low=-5, high=5), float_parts=True),
             # acosh is steep near 1, where the 8-bit x^2 - 1 under the SQRT is coarsest: from
             # x = 1.2 the uint8 file (LOG kept float) lands 3.5 output steps off, so from 1.5 here
             Case("acosh_2d", [helper.make_node("Acosh", ["x"], ["y"])], {"x": rand(3, 7, low=1.5, high=6.0)},
                  quant_steps=4.0),
             _case("atanh_2d", "Atanh", rand(3, 7, low=-0.85, high=0.85)),
             ] + LOG_SUM_CASES

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        if node.op_type == "Log":
            ctx.add_op(self.kind, [x], [out])
        elif node.op_type.startswith("Reduce"):
            add_sum_of(node, ctx)
        elif node.op_type in ("Asinh", "Acosh", "Atanh"):
            self._inverse_hyperbolic(node, ctx)
        else:  # Softplus
            add_softplus(ctx, node, x, out)


    def _inverse_hyperbolic(self, node, ctx) -> None:
        """Asinh = sign(x) * log(|x| + sqrt(x^2 + 1)) (odd, so negative x cannot cancel),
        Acosh = log(x + sqrt(x^2 - 1)), Atanh = (log(1 + x) - log(1 - x)) / 2. x^2 overflows
        float32 past |x| ~ 1.8e19, where these give inf."""
        x, out = node.input[0], node.output[0]
        shape, base = ctx.shape(x), f"{out}/{node.op_type.lower()}"
        if node.op_type == "Atanh":
            up = emit(ctx, "ADD", [x, scalar(ctx, node, "one", 1.0)], f"{base}/one_plus", shape)
            down = emit(ctx, "SUB", [scalar(ctx, node, "one_minus", 1.0), x], f"{base}/one_minus", shape)
            difference = emit(ctx, "SUB", [emit(ctx, "LOG", [up], f"{base}/log_up", shape),
                                           emit(ctx, "LOG", [down], f"{base}/log_down", shape)],
                              f"{base}/difference", shape)
            emit(ctx, "MUL", [difference, scalar(ctx, node, "half", 0.5)], base, shape, out)
            return
        asinh = node.op_type == "Asinh"
        magnitude = emit(ctx, "ABS", [x], f"{base}/abs", shape) if asinh else x
        square = emit(ctx, "MUL", [x, x], f"{base}/square", shape)
        shifted = emit(ctx, "ADD" if asinh else "SUB", [square, scalar(ctx, node, "one", 1.0)],
                       f"{base}/shifted", shape)
        total = emit(ctx, "ADD", [magnitude, emit(ctx, "SQRT", [shifted], f"{base}/sqrt", shape)],
                     f"{base}/total", shape)
        if not asinh:
            emit(ctx, "LOG", [total], base, shape, out)
            return
        log = emit(ctx, "LOG", [total], f"{base}/log", shape)
        emit(ctx, "MUL", [log, emit(ctx, "SIGN", [x], f"{base}/sign", shape)], base, shape, out)


@register
class Abs(_Elementwise):
    """ONNX Abs; also ReduceL1 = SUM(ABS(x)) (reduce.add_sum_of)."""

    kind = "ABS"
    onnx_types = ("Abs", "ReduceL1")
    numpy_fn = staticmethod(np.abs)
    # IsAbsSupportedType: float32, int8, int16, int32; no uint8
    quant = Calibrated(dtypes=INT8_AND_INT16)
    cases = [_case("abs", "Abs", rand(1, 3, 4, 4)), _case("abs_2d", "Abs", rand(3, 5, seed=1)),
             # T5-style relative position buckets (LongT5's transient-global attention) on int64
             Case("abs_int64", [helper.make_node("Abs", ["x"], ["y"])],
                  {"x": np.array([[3, -7, 0, -(2 ** 40) - 1, 2 ** 62]], np.int64)}, emits=("NEG", "MAXIMUM"),
                  quantize=False),
             Case("abs_int32", [helper.make_node("Abs", ["x"], ["y"])],
                  {"x": np.array([[3, -7, 0, -2147483647]], np.int32)}, quantize=False)] + L1_CASES

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "ReduceL1":
            add_sum_of(node, ctx)  # SUM(ABS(x))
            return
        x = ctx.tensor(node.input[0])
        if ctx.graph.tensors[x].dtype == DType.INT64:
            # IsAbsSupportedType has no int64 (a file with one fails to prepare): max(x, -x), from
            # NEG and MAXIMUM's int64 kernels, is the same value (wrapping at the minimum as Abs)
            negated = ctx.new_activation(f"{node.output[0]}/negated", ctx.shape(node.input[0]), DType.INT64)
            ctx.add_op("NEG", [x], [negated])
            ctx.add_op("MAXIMUM", [x, negated], [node.output[0]])
            return
        super().from_onnx(node, ctx)

    def reference(self, x):
        return (np.abs(x) if np.asarray(x).dtype.kind == "i" else np.abs(x).astype(np.float32),)

    def options(self, attrs):
        return AbsOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, uint8=2)


@register
class Neg(_Elementwise):
    """ONNX Neg; of floats, MUL(x, -1) (rotary embeddings' rotate_half: LLaMA, Qwen2), exact in
    float and integer in full quantization.

    FloatOnly: LiteRT's int8 NEG negates the raw integers, which is right only when the output
    zero point is minus the input's; no rule here can promise that (and -(-128) overflows).
    """

    kind = "NEG"
    onnx_types = ("Neg",)
    numpy_fn = staticmethod(np.negative)
    quant = FloatOnly()
    cases = [Case("neg_is_mul", [helper.make_node("Neg", ["x"], ["y"])], {"x": rand(1, 3, 4, 4)}, emits=("MUL",)),
             Case("neg_2d_is_mul", [helper.make_node("Neg", ["x"], ["y"])], {"x": rand(3, 5, seed=1)},
                  emits=("MUL",)),
             Case("neg_int32", [helper.make_node("Neg", ["x"], ["y"])],
                  {"x": np.array([[3, -7, 0, 2147483647]], np.int32)}, quantize=False)]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        if ctx.graph.tensors[x].dtype.is_float:
            ctx.add_op("MUL", [x, scalar(ctx, node, "minus_one", -1.0)], [node.output[0]])
            return
        super().from_onnx(node, ctx)

    def reference(self, x):
        return (np.negative(x),)  # (in x's type: an int32 Neg stays int32)

    def options(self, attrs):
        return NegOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1


@register
class Pow(OpSpec):
    """ONNX Pow. A constant scalar exponent picks a cheaper op: 1 -> nothing, 2 -> MUL(x, x)
    (which quantizes, unlike SQUARE), 3 -> MUL(MUL(x, x), x), 0.5 -> SQRT, -0.5 -> RSQRT when
    that kind is registered, -1 -> DIV(1, x); anything else stays a float POW. ONNX Reciprocal is
    DIV(1, x) too."""

    kind = "POW"
    onnx_types = ("Pow", "Reciprocal")
    layout = Transparent()
    quant = FloatOnly()  # pow.cc: float32, int32 (and uint16) only
    cases = [
        _pow_case("cube_is_muls", np.float32(3.0), rand(1, 3, 4, 4), emits=("MUL",)),
        _pow_case("int64_cube", np.int64(3), rand(2, 6), opset=13, emits=("MUL",)),
        _pow_case("fourth", np.float32(4.0), rand(1, 3, 4, 4)),
        _pow_case("fractional", np.float32(1.5), _positive(2, 6)),
        _pow_case("int64_exponent", np.int64(4), rand(2, 6), opset=13),
        _pow_case("square_is_mul", np.float32(2.0), rand(1, 3, 4, 4), then_pow=True),
        _pow_case("one_is_identity", np.float32(1.0), rand(2, 5), then_pow=True),
        _pow_case("minus_half", np.float32(-0.5), _positive(2, 5), then_pow=True),
        _pow_case("minus_one_is_div", np.float32(-1.0), _positive(2, 5), then_pow=True),
        Case("reciprocal", [helper.make_node("Reciprocal", ["x"], ["t"]),
                            helper.make_node("Pow", ["t", "four"], ["y"])],
             {"x": rand(1, 3, 4, 4, low=0.5, high=2.0) * np.float32(-1) ** np.arange(4, dtype=np.float32)},
             {"four": np.array(4.0, np.float32)}),
        Case("tensor_exponent", [helper.make_node("Pow", ["x", "e"], ["y"])],
             {"x": _positive(1, 3, 4, 4), "e": rand(1, 3, 4, 4, seed=1, low=-2, high=2)}),
        Case("channel_exponent", [helper.make_node("Pow", ["x", "e"], ["y"])],
             {"x": _positive(1, 3, 4, 4)}, {"e": rand(3, 1, 1, seed=2, low=-2, high=2)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        if node.op_type == "Reciprocal":
            ctx.add_op("DIV", [scalar(ctx, node, "one", 1.0), x], [out])
            return
        exponent = ctx.constant(node.input[1])
        if exponent is not None and exponent.size == 1:
            value = float(exponent.reshape(()))
            if value == 1.0:
                ctx.alias(out, x)
                return
            if value == 2.0:
                ctx.add_op("MUL", [x, x], [out])
                return
            if value == 3.0:  # GELU's tanh form (GPT-2, ALBERT): x * x * x, which quantizes too
                square = ctx.new_activation(f"{out}/square", ctx.shape(x), ctx.graph.tensors[x].dtype)
                ctx.add_op("MUL", [x, x], [square])
                ctx.add_op("MUL", [square, x], [out])
                return
            if value == 0.5:
                ctx.add_op("SQRT", [x], [out])
                return
            if value == -0.5 and self._registered("RSQRT"):
                ctx.add_op("RSQRT", [x], [out])
                return
            if value == -1.0:
                ctx.add_op("DIV", [scalar(ctx, node, "one", 1.0), x], [out])
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


class _FloatElementwise(_Elementwise):
    """A one-input op whose LiteRT kernel takes float only (version 1 for float32)."""

    quant = FloatOnly()
    Options = None

    def options(self, attrs):
        return self.Options() if self.Options is not None else None

    def version(self, op: Op, graph: Graph) -> int:
        return 1


def _with_ties(x: np.ndarray) -> np.ndarray:
    """`x` with its first elements replaced by exact halves, where the rounding rules differ."""
    flat = x.reshape(-1).copy()
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5], np.float32)
    flat[:halves.size] = halves[:flat.size]
    return flat.reshape(x.shape)


# Abramowitz & Stegun 7.1.26: erf(x) = 1 - t (a1 + t (a2 + ... + t a5)) exp(-x^2), t = 1 / (1 + p x)
# for x >= 0, |error| <= 1.5e-7 (far below what float32 resolves near erf's saturation at 1).
ERF_P = 0.3275911
ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def add_erf(ctx, node, x: str, out: str) -> None:
    """erf from builtin ops: sign(x) * (1 - poly(t) * exp(-x^2)) with t = 1 / (1 + p |x|)."""
    shape, base = ctx.shape(x), f"{out}/erf"
    abs_x = emit(ctx, "ABS", [x], f"{base}/abs", shape)
    scaled = emit(ctx, "MUL", [abs_x, scalar(ctx, node, "p", ERF_P)], f"{base}/p_abs", shape)
    denominator = emit(ctx, "ADD", [scaled, scalar(ctx, node, "one", 1.0)], f"{base}/denominator", shape)
    t = emit(ctx, "DIV", [scalar(ctx, node, "one", 1.0), denominator], f"{base}/t", shape)
    poly = emit(ctx, "MUL", [t, scalar(ctx, node, "a5", ERF_A[4])], f"{base}/horner_4", shape)
    for k in (3, 2, 1, 0):
        shifted = emit(ctx, "ADD", [poly, scalar(ctx, node, f"a{k + 1}", ERF_A[k])], f"{base}/sum_{k}", shape)
        poly = emit(ctx, "MUL", [shifted, t], f"{base}/horner_{k}", shape)
    square = emit(ctx, "MUL", [x, x], f"{base}/square", shape)
    gaussian = emit(ctx, "EXP", [emit(ctx, "MUL", [square, scalar(ctx, node, "minus_one", -1.0)],
                                      f"{base}/neg_square", shape)], f"{base}/gaussian", shape)
    tail = emit(ctx, "MUL", [poly, gaussian], f"{base}/tail", shape)
    magnitude = emit(ctx, "SUB", [scalar(ctx, node, "one", 1.0), tail], f"{base}/magnitude", shape)
    ctx.add_op("MUL", [emit(ctx, "SIGN", [x], f"{base}/sign", shape), magnitude], [out])


@register
class Sign(_FloatElementwise):
    """ONNX Sign (sign.cc: float32, float64, int32). Also imports a standalone ONNX Erf (one that is
    not part of the GELU pattern onnx_patterns folds): TFLite has no ERF builtin, so add_erf builds
    the odd function as SIGN(x) times an approximation of erf(|x|)."""

    kind = "SIGN"
    onnx_types = ("Sign", "Erf")
    numpy_fn = staticmethod(np.sign)
    cases = [_case("sign", "Sign", np.concatenate([rand(1, 3, 4, 3), np.zeros((1, 3, 4, 1), np.float32)], 3)),
             _case("sign_2d", "Sign", rand(3, 7, low=-5, high=5)),
             _case("erf", "Erf", np.concatenate([rand(1, 3, 4, 3, low=-3, high=3),
                                                 np.zeros((1, 3, 4, 1), np.float32)], 3)),
             # Quantized, the lowering's polynomial runs through ~20 int8 ops: 5 output steps of
             # error on this range, more than the one-op bound (the family suite reports its SQNR).
             Case("erf_wide", [helper.make_node("Erf", ["x"], ["y"])],
                  {"x": rand(4, 25, seed=1, low=-6, high=6)}, quantize=False)]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Erf":
            add_erf(ctx, node, node.input[0], node.output[0])
            return
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]])

    def options(self, attrs):
        return SignOptionsT()


register_family(
    _FloatElementwise,
    dict(kind="FLOOR", onnx_types=("Floor",), numpy_fn=np.floor, __doc__="ONNX Floor (floor.cc: float32/float16 only).",
         cases=[_case("floor", "Floor", _with_ties(rand(1, 3, 4, 4, low=-5, high=5))),
                _case("floor_2d", "Floor", rand(3, 7, low=-50, high=50))]),
    dict(kind="CEIL", onnx_types=("Ceil",), numpy_fn=np.ceil, __doc__="ONNX Ceil (ceil.cc: float32 only).",
         cases=[_case("ceil", "Ceil", _with_ties(rand(1, 3, 4, 4, low=-5, high=5))),
                _case("ceil_2d", "Ceil", rand(3, 7, low=-50, high=50))]),
    # numpy rounds halves to even, as TFLite's ROUND does (reference/round.h RoundToNearest: floor,
    # then up only when the remainder exceeds 1/2 or is 1/2 above an odd floor); the cases hold
    # exact halves so a half-away-from-zero kernel would fail them.
    dict(kind="ROUND", onnx_types=("Round",), numpy_fn=np.round, __doc__="ONNX Round, halves to even.",
         cases=[_case("round_half_even", "Round", _with_ties(rand(1, 3, 4, 4, low=-5, high=5))),
                _case("round_2d", "Round", _with_ties(rand(3, 7, seed=1, low=-50, high=50)))]),
    dict(kind="SIN", onnx_types=("Sin",), numpy_fn=np.sin, __doc__="ONNX Sin (elementwise.cc: float32 only).",
         cases=[_case("sin", "Sin", rand(1, 3, 4, 4, low=-4, high=4)),
                _case("sin_2d", "Sin", rand(3, 7, low=-20, high=20))]),
    dict(kind="COS", onnx_types=("Cos",), numpy_fn=np.cos, Options=CosOptionsT,
         __doc__="ONNX Cos (elementwise.cc: float32 only).",
         cases=[_case("cos", "Cos", rand(1, 3, 4, 4, low=-4, high=4)),
                _case("cos_2d", "Cos", rand(3, 7, low=-20, high=20))]),
)


@register
class Atan2(_FloatElementwise):
    """TFLite ATAN2(y, x) (atan2.cc: float32, float64; y and x of one shape). Imports ONNX Atan
    as ATAN2(x, 1), Asin as ATAN2(x, sqrt((1 - x)(1 + x))) and Acos as ATAN2(sqrt((1 - x)(1 + x)), x):
    the factored 1 - x^2 keeps its precision near |x| = 1, and |x| > 1 gives NaN as in ONNX."""

    kind = "ATAN2"
    onnx_types = ("Atan", "Asin", "Acos")
    cases = [_case("atan", "Atan", rand(1, 3, 4, 4, low=-6, high=6)),
             _case("asin_2d", "Asin", rand(3, 7, low=-0.9, high=0.9)),
             _case("acos_2d", "Acos", rand(3, 7, low=-0.9, high=0.9))]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        shape, base = ctx.shape(x), f"{out}/{node.op_type.lower()}"
        if node.op_type == "Atan":
            ones = ctx.add_constant(f"{node.name or out}/ones", np.ones(shape, np.float32))
            ctx.add_op(self.kind, [x, ones], [out])
            return
        one = scalar(ctx, node, "one", 1.0)
        rest = emit(ctx, "MUL", [emit(ctx, "SUB", [one, x], f"{base}/one_minus", shape),
                                 emit(ctx, "ADD", [x, one], f"{base}/one_plus", shape)], f"{base}/rest", shape)
        other = emit(ctx, "SQRT", [rest], f"{base}/other", shape)
        ctx.add_op(self.kind, [x, other] if node.op_type == "Asin" else [other, x], [out])

    def reference(self, y, x):
        return (np.arctan2(y, x).astype(np.float32),)

    def options(self, attrs):
        return ATan2OptionsT()
