"""Pointwise activations: LOGISTIC, TANH, LEAKY_RELU, PRELU, HARD_SWISH, ELU, GELU and RELU_0_TO_1.

Quantization rules and dtypes follow LiteRT's `tflite/kernels/activations.cc` Prepare/Eval type switches;
versions follow `GetBuiltinOperatorVersion` (SPEC-NOTES §2.6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.GeluOptions import GeluOptionsT
from tflq._generated.tflite.HardSwishOptions import HardSwishOptionsT
from tflq._generated.tflite.LeakyReluOptions import LeakyReluOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import (INT8_ONLY, WITH_INT16, Calibrated, Case, FixedOutput, OpSpec,
                           Transparent, Weight, rand)
from tflq.ops.checks import Arity, ConstantValues, FloatAttr
from tflq.ops.common import quantized_version

# Rank limit of TFLite's broadcasting PRELU kernels (BroadcastPrelu4DSlow).
PRELU_MAX_RANK = 4


def _unary_case(name: str, op_type: str, x: np.ndarray, opset: int = 17, **attrs) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"], **attrs)], {"x": x}, opset=opset)


class _Unary(OpSpec):
    """One-input activation that maps an ONNX node straight to its TFLite kind."""

    layout = Transparent()
    quant = Calibrated()
    elementwise = True

    def from_onnx(self, node, ctx) -> None:
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]])

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, int16=3)  # LOGISTIC, TANH


@register
class Logistic(_Unary):
    """ONNX Sigmoid."""

    kind = "LOGISTIC"
    onnx_types = ("Sigmoid",)
    # int8 kernel checks scale == 1/256; int16: 1/32768, zero point 0
    quant = FixedOutput(dtypes=WITH_INT16, scale=1 / 256, zero_point_int8=-128)
    cases = [_unary_case("sigmoid", "Sigmoid", rand(1, 3, 4, 4, low=-6, high=6)),
             _unary_case("sigmoid_2d", "Sigmoid", rand(2, 10, low=-8, high=8))]

    def reference(self, x):
        with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives the right 0
            e = np.exp(-x)
        e += 1.0
        return (np.reciprocal(e, out=e).astype(np.float32, copy=False),)


@register
class Tanh(_Unary):
    """ONNX Tanh."""

    kind = "TANH"
    onnx_types = ("Tanh", "Mish")
    # TFLM always writes these; int16: 1/32768, zero point 0 (power of two enforced)
    quant = FixedOutput(dtypes=WITH_INT16, scale=1 / 128, zero_point_int8=0)
    cases = [_unary_case("tanh", "Tanh", rand(1, 3, 4, 4, low=-4, high=4)),
             _unary_case("tanh_2d", "Tanh", rand(2, 10, low=-4, high=4)),
             # Quantized, Mish's x * tanh(.) carries TANH's fixed 1/128 grid times |x|: about 2.1
             # output steps, above the one-op bound (the family suite reports its int8 SQNR).
             Case("mish", [helper.make_node("Mish", ["x"], ["y"])], {"x": rand(1, 3, 4, 4, low=-5, high=5)},
                  opset=18, quantize=False),
             Case("mish_2d", [helper.make_node("Mish", ["x"], ["y"])], {"x": rand(3, 7, low=-8, high=4)},
                  opset=18, quantize=False)]

    def from_onnx(self, node, ctx) -> None:
        """Tanh; and Mish = x * tanh(softplus(x)), which has no TFLite builtin."""
        x, out = node.input[0], node.output[0]
        if node.op_type == "Tanh":
            ctx.add_op(self.kind, [x], [out])
            return
        from tflq.ops.unary import add_softplus

        tanh = ctx.new_activation(f"{out}/tanh", ctx.shape(x))
        ctx.add_op(self.kind, [add_softplus(ctx, node, x)], [tanh])
        ctx.add_op("MUL", [x, tanh], [out])

    def reference(self, x):
        return (np.tanh(x),)


@dataclass(frozen=True)
class LeakyReluAttrs:
    alpha: float = 0.01


@register
class LeakyRelu(_Unary):
    """ONNX LeakyRelu; PRelu with a single slope value is imported as this too."""

    kind = "LEAKY_RELU"
    quant = Calibrated(dtypes=WITH_INT16)
    positively_homogeneous = True
    onnx_types = ("LeakyRelu",)
    onnx_checks = (FloatAttr(name="alpha"),)
    Attrs = LeakyReluAttrs
    cases = [_unary_case("default_alpha", "LeakyRelu", rand(1, 3, 4, 4)),
             _unary_case("alpha_0_2", "LeakyRelu", rand(2, 6, 5), alpha=0.2),
             Case("prelu_scalar_slope", [helper.make_node("PRelu", ["x", "s"], ["y"])],
                  {"x": rand(1, 4, 3, 3)}, {"s": np.array([0.25], np.float32)})]

    def from_onnx(self, node, ctx) -> None:
        alpha = float(ctx.attr(node, "alpha", 0.01))
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]], LeakyReluAttrs(alpha))

    def reference(self, x, *, alpha):
        return (np.where(x > 0, x, x * np.float32(alpha)).astype(np.float32),)

    def options(self, attrs: LeakyReluAttrs):
        return LeakyReluOptionsT(alpha=attrs.alpha)

    def version(self, op: Op, graph: Graph) -> int:
        return 2 if graph.tensors[op.inputs[0]].dtype.name == "INT16" else 1  # int8/uint8 stay 1


@register
class PRelu(OpSpec):
    """ONNX PRelu with a constant slope; a one-value slope becomes LEAKY_RELU.

    The slope broadcasts against the data ([C, 1, 1] for NCHW); being Transparent, the layout pass
    permutes it to [1, 1, 1, C] when the data goes NHWC. The int8 kernel needs the slope quantized
    like the data (input types must match), per-tensor.
    """

    kind = "PRELU"
    onnx_types = ("PRelu",)
    positively_homogeneous = True  # per channel: the slope is per channel too
    onnx_checks = (Arity(inputs=(2, 2)), ConstantValues(index=1, what="slope"))
    layout = Transparent()
    quant = Calibrated(dtypes=WITH_INT16)
    weights = (Weight(1, axis=None),)
    cases = [
        Case("per_channel", [helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": rand(1, 4, 5, 5)},
             {"s": rand(4, 1, 1, seed=1, low=0.05, high=0.5)}),
        Case("last_axis", [helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": rand(2, 3, 6)},
             {"s": rand(6, seed=2, low=0.05, high=0.5)}),
        Case("rank2_features", [helper.make_node("PRelu", ["x", "s"], ["y"])], {"x": rand(3, 8)},
             {"s": rand(8, seed=3, low=-0.5, high=0.5)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        slope = ctx.require_constant(node, 1, "slope")
        if slope.size == 1:
            ctx.add_op("LEAKY_RELU", [x], [out], LeakyReluAttrs(float(slope.reshape(()))))
            return
        if ctx.rank(x) > PRELU_MAX_RANK:
            raise Unsupported(node, "prelu_rank", f"PRelu on a rank-{ctx.rank(x)} tensor is not supported",
                              "TFLite's PRELU broadcasts up to 4 dimensions")
        if slope.ndim > ctx.rank(x):
            raise Unsupported(node, "prelu_slope_shape",
                              f"slope shape {list(slope.shape)} does not broadcast to the data")
        ctx.add_op(self.kind, [x, node.input[1]], [out])

    def reference(self, x, alpha):
        return (np.where(x >= 0, x, x * alpha).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


@register
class HardSwish(_Unary):
    """ONNX HardSwish (opset 14): x * relu6(x + 3) / 6."""

    kind = "HARD_SWISH"
    onnx_types = ("HardSwish",)
    # The 8-bit kernel needs output_scale >= input_scale / 128 (a calibrated range easily meets it).
    cases = [_unary_case("hard_swish", "HardSwish", rand(1, 3, 4, 4, low=-5, high=5), opset=14),
             _unary_case("hard_swish_2d", "HardSwish", rand(4, 7, low=-5, high=5), opset=14)]

    def reference(self, x):
        return ((x * np.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(np.float32),)

    def options(self, attrs):
        return HardSwishOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1


@register
class Elu(_Unary):
    """ONNX Elu with alpha 1 (TFLite's ELU has no alpha); Selu and Celu from ELU, MUL, ADD, RELU.

    Celu(x) = alpha * ELU(x / alpha). Selu(x) = gamma * alpha * ELU(x) + gamma * (1 - alpha) * RELU(x)
    (both terms are gamma * x for x > 0; the ELU term alone is gamma * alpha * (e^x - 1) below).
    """

    kind = "ELU"
    onnx_types = ("Elu", "Selu", "Celu")
    onnx_checks = (FloatAttr(name="alpha"), FloatAttr(name="gamma", only=("Selu",)))
    quant = Calibrated(dtypes=INT8_ONLY)  # EluPrepare/EluEval: float32 and int8 only
    cases = [_unary_case("elu", "Elu", rand(1, 3, 4, 4, low=-3, high=3)),
             _unary_case("elu_alpha_1", "Elu", rand(3, 5, low=-3, high=3), alpha=1.0),
             _unary_case("selu", "Selu", rand(1, 3, 4, 4, low=-3, high=3)),
             _unary_case("selu_attrs", "Selu", rand(3, 7, low=-3, high=3), alpha=1.2, gamma=0.8),
             _unary_case("celu", "Celu", rand(1, 3, 4, 4, low=-3, high=3), opset=12),
             _unary_case("celu_alpha_2", "Celu", rand(3, 7, low=-4, high=3), opset=12, alpha=2.0)]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Selu":
            return self._selu(node, ctx)
        if node.op_type == "Celu":
            return self._celu(node, ctx)
        alpha = float(ctx.attr(node, "alpha", 1.0))
        if alpha != 1.0:
            raise Unsupported(node, "elu_alpha", f"Elu with alpha={alpha} is not supported",
                              "TFLite's ELU has alpha 1; re-export with alpha=1.0")
        super().from_onnx(node, ctx)

    def _scaled(self, ctx, node, x: str, factor: float, label: str) -> str:
        out = ctx.new_activation(f"{node.output[0]}/{label}", ctx.shape(x))
        constant = ctx.add_constant(f"{node.name or node.output[0]}/{label}", np.array(factor, np.float32))
        ctx.add_op("MUL", [x, constant], [out])
        return out

    def _celu(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        alpha = float(ctx.attr(node, "alpha", 1.0))
        if alpha == 0.0:
            raise Unsupported(node, "celu_alpha", "Celu with alpha=0 divides by zero")
        if alpha == 1.0:
            ctx.add_op(self.kind, [x], [out])
            return
        elu = ctx.new_activation(f"{out}/elu", ctx.shape(x))
        ctx.add_op(self.kind, [self._scaled(ctx, node, x, 1.0 / alpha, "inverse_alpha")], [elu])
        ctx.add_op("MUL", [elu, ctx.add_constant(f"{node.name or out}/alpha", np.array(alpha, np.float32))],
                   [out])

    def _selu(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        alpha = float(ctx.attr(node, "alpha", 1.67326319217681884765625))
        gamma = float(ctx.attr(node, "gamma", 1.05070102214813232421875))
        elu = ctx.new_activation(f"{out}/elu", ctx.shape(x))
        ctx.add_op(self.kind, [x], [elu])
        if alpha == 1.0:
            ctx.add_op("MUL", [elu, ctx.add_constant(f"{node.name or out}/gamma", np.array(gamma, np.float32))],
                       [out])
            return
        negative = self._scaled(ctx, node, elu, gamma * alpha, "gamma_alpha")
        relu = ctx.new_activation(f"{out}/relu", ctx.shape(x))
        ctx.add_op("RELU", [x], [relu])
        ctx.add_op("ADD", [negative, self._scaled(ctx, node, relu, gamma * (1.0 - alpha), "gamma_1_alpha")],
                   [out])

    def reference(self, x):
        return (np.where(x > 0, x, np.expm1(x)).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7, far below float32 resolution of GELU's output.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (numpy has none) in float64."""
    x = np.asarray(x, np.float64)
    t = 1.0 / (1.0 + _ERF_P * np.abs(x))
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


@dataclass(frozen=True)
class GeluAttrs:
    approximate: bool = False  # True: the tanh formula


@register
class Gelu(_Unary):
    """ONNX Gelu (opset 20), exact (erf) or approximate='tanh'.

    A standalone ONNX Erf (the pre-opset-20 PyTorch export x*0.5*(1+erf(x/sqrt(2)))) has no TFLite
    builtin; that pattern would have to be folded into Gelu before import.
    """

    kind = "GELU"
    onnx_types = ("Gelu",)
    Attrs = GeluAttrs
    cases = [_unary_case("exact", "Gelu", rand(1, 3, 4, 4, low=-4, high=4), opset=20),
             _unary_case("tanh", "Gelu", rand(2, 16, low=-3, high=3), opset=20, approximate="tanh")]

    def from_onnx(self, node, ctx) -> None:
        approximate = ctx.attr(node, "approximate", "none")
        if approximate not in ("none", "tanh"):
            raise Unsupported(node, "gelu_approximate", f"Gelu approximate='{approximate}' is unknown")
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]], GeluAttrs(approximate == "tanh"))

    def reference(self, x, *, approximate):
        x64 = x.astype(np.float64)
        if approximate:
            inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)
            return ((0.5 * x64 * (1.0 + np.tanh(inner))).astype(np.float32),)
        return ((0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(np.float32),)

    def options(self, attrs: GeluAttrs):
        return GeluOptionsT(approximate=attrs.approximate)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, uint8=2)


@register
class Relu0To1(_Unary):
    """clamp(x, 0, 1); imports ONNX HardSigmoid as MUL(alpha), ADD(beta), RELU_0_TO_1.

    The same lowering WebNN's TFLite backend uses. RELU_0_TO_1 needs TFLite >= 2.10.
    """

    kind = "RELU_0_TO_1"
    onnx_types = ("HardSigmoid",)
    onnx_checks = (FloatAttr(name="alpha"), FloatAttr(name="beta"))
    cases = [_unary_case("hard_sigmoid_default", "HardSigmoid", rand(1, 3, 4, 4, low=-5, high=5)),
             _unary_case("hard_sigmoid_pytorch", "HardSigmoid", rand(2, 9, low=-5, high=5),
                         alpha=1 / 6, beta=0.5)]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        alpha = float(ctx.attr(node, "alpha", 0.2))
        beta = float(ctx.attr(node, "beta", 0.5))
        shape = ctx.shape(x)
        scaled = ctx.new_activation(f"{out}/scaled", shape)
        ctx.add_op("MUL", [x, ctx.add_constant(f"{node.name}/alpha", np.array(alpha, np.float32))], [scaled])
        shifted = ctx.new_activation(f"{out}/shifted", shape)
        ctx.add_op("ADD", [scaled, ctx.add_constant(f"{node.name}/beta", np.array(beta, np.float32))],
                   [shifted])
        ctx.add_op(self.kind, [shifted], [out])

    def reference(self, x):
        return (np.clip(x, 0.0, 1.0).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


def relu_0_to_1_as_relu(graph: Graph) -> int:
    """After quantization, for a target without RELU_0_TO_1 (TFLite Micro): each 8-bit
    RELU_0_TO_1 becomes a RELU. Both kernels requantize onto the output grid and clamp there: the
    RELU at the grid's 0 and its largest value, RELU_0_TO_1 also at 1, which a grid that ends at
    1 at most (the calibrated range of a clamp to [0, 1]) never reaches past its largest value, so
    the results are the same integers. A wider grid keeps the op (the target check then names it).
    Returns how many."""
    changed = 0
    for op in [op for op in graph.ops if op.kind == "RELU_0_TO_1"]:
        index = graph.ops.index(op)
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        q = y.quant
        if x.quant is None or q is None or q.is_per_channel or y.dtype.name not in ("INT8", "UINT8"):
            continue
        top = float(q.scale) * (np.iinfo(y.dtype.numpy).max - int(q.zero_point))
        if top > 1.0 + 0.5 * float(q.scale):
            continue
        graph.remove_op(op)
        graph.add_op(Op("RELU", list(op.inputs), list(op.outputs), origin=op.origin), index)
        changed += 1
    return changed
