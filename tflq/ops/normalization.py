"""RSQRT, and ONNX LayerNormalization, InstanceNormalization and GroupNormalization decomposed into
MEAN, SUB, MUL, ADD and RSQRT (GroupNormalization adds a FULLY_CONNECTED that averages channels).

TFLite has no normalization builtin. The decomposition
    d = x - mean(x);  y = d * rsqrt(mean(d * d) + epsilon) * scale + bias
uses only ops with int8 kernels, so a quantized model stays integer throughout, unless
calibration saw a constant row (zero padding): 1/std then spans 1/sqrt(epsilon), which no 8-bit
grid resolves, and RSQRT and its MUL stay float (quantize/plan.py, MAX_SCALE_FACTOR_SPAN).
Instance and group statistics are taken over the spatial axes with MEAN, which the layout pass
maps onto NHWC, so no TRANSPOSE is needed: a group's mean is the average of its channels' means
(every channel has the same number of elements), computed by a FULLY_CONNECTED with a constant
[C, C] averaging matrix on the [N, C] channel means.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import (INT8_AND_INT16, Calibrated, Case, IntegerRefusal, OpSpec, Refused,
                           Transparent, rand)
from tflq.ops.checks import Axis, FloatAttr
from tflq.ops.fully_connected import add_fully_connected
from tflq.ops.reduce import add_reduce
from tflq.ops.reshape import add_reshape


def _instance_norm_case(name: str, shape, **attrs) -> Case:
    channels = shape[1]
    consts = {"scale": rand(channels, seed=1, low=0.5, high=1.5), "bias": rand(channels, seed=2)}
    return Case(name, [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], **attrs)],
                {"x": rand(*shape, low=-2.0, high=3.0)}, consts)


def _group_norm_case(name: str, shape, groups: int, opset: int, **attrs) -> Case:
    """Opset 21's GroupNormalization (one scale and bias per channel; onnx deprecates opset 18's
    per-group form and the loader's checker refuses it)."""
    consts = {"scale": rand(shape[1], seed=1, low=0.5, high=1.5), "bias": rand(shape[1], seed=2)}
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=groups, **attrs)
    return Case(name, [node], {"x": rand(*shape, low=-2.0, high=3.0)}, consts, opset=opset)


def _layer_norm_case(name: str, shape, bias: bool = True, **attrs) -> Case:
    channels = shape[attrs.get("axis", -1)]
    consts = {"scale": rand(channels, seed=1, low=0.5, high=1.5)}
    inputs = ["x", "scale"]
    if bias:
        consts["bias"] = rand(channels, seed=2)
        inputs.append("bias")
    return Case(name, [helper.make_node("LayerNormalization", inputs, ["y"], **attrs)],
                {"x": rand(*shape, low=-2.0, high=3.0)}, consts)


@register
class Rsqrt(OpSpec):
    """1/sqrt(x). Imports ONNX LayerNormalization (last axis), which needs it."""

    kind = "RSQRT"
    onnx_types = ("LayerNormalization", "InstanceNormalization", "GroupNormalization")
    onnx_checks = (FloatAttr(name="epsilon", min=0.0), Axis(name="axis", only=("LayerNormalization",)))
    layout = Transparent()
    quant = Calibrated(dtypes=INT8_AND_INT16)  # LiteRT's RSQRT takes float32, int8 and int16, no uint8
    # elementwise.cc RsqrtEvalQuantizedInt8: an input below its zero point fails the invoke
    integer_refusal = IntegerRefusal(0, Refused.NEGATIVE,
                                     "elementwise.cc: Rsqrt is only defined for positive values")
    scale_factor_output = True
    divisor = 0  # 1/sqrt(x): a float RSQRT of a value its grid rounded to 0 gives inf
    cases = [
        _layer_norm_case("layer_norm_rank3", (2, 5, 16), epsilon=1e-3),
        _layer_norm_case("layer_norm_no_bias", (3, 8), bias=False),
        _layer_norm_case("layer_norm_rank4_last_axis", (1, 3, 4, 6), axis=3),
        _instance_norm_case("instance_norm", (2, 3, 5, 6)),
        _instance_norm_case("instance_norm_rank3", (1, 4, 10), epsilon=1e-3),
        _group_norm_case("group_norm_opset21", (2, 6, 4, 5), groups=3, opset=21),
        _group_norm_case("group_norm_one_group", (1, 4, 3, 3), groups=1, opset=21),
        _group_norm_case("group_norm_rank3_opset21", (1, 8, 7), groups=4, opset=21, epsilon=1e-3),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type != "LayerNormalization":
            return self._instance_or_group_norm(node, ctx)
        x, out = node.input[0], node.output[0]
        rank = ctx.rank(x)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", -1)), rank)
        if axis != rank - 1:
            raise Unsupported(node, "layernorm_axis",
                              f"LayerNormalization over axes {list(range(axis, rank))}; only the last "
                              f"axis is supported", "normalize over the last axis only (axis=-1)")
        if any(node.output[1:]):
            raise Unsupported(node, "layernorm_outputs", "LayerNormalization's Mean and InvStdDev "
                                                         "outputs are not supported")
        shape, reduced = ctx.shape(x), ctx.shape(x)[:-1] + (1,)
        epsilon = float(ctx.attr(node, "epsilon", 1e-5))
        mean = ctx.new_activation(f"{out}/mean", reduced)
        add_reduce(ctx, "MEAN", x, [axis], mean, keep_dims=True)
        centered = ctx.new_activation(f"{out}/centered", shape)
        ctx.add_op("SUB", [x, mean], [centered])
        squared = ctx.new_activation(f"{out}/squared", shape)
        ctx.add_op("MUL", [centered, centered], [squared])
        variance = ctx.new_activation(f"{out}/variance", reduced)
        add_reduce(ctx, "MEAN", squared, [axis], variance, keep_dims=True)
        shifted = ctx.new_activation(f"{out}/variance_eps", reduced)
        epsilon_name = ctx.add_constant(f"{node.name}/epsilon", np.array(epsilon, np.float32))
        ctx.add_op("ADD", [variance, epsilon_name], [shifted])
        inv_std = ctx.new_activation(f"{out}/inv_std", reduced)
        ctx.add_op("RSQRT", [shifted], [inv_std])
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        normalized = ctx.new_activation(f"{out}/normalized", shape)
        ctx.add_op("MUL", [centered, inv_std], [normalized])
        scaled = ctx.new_activation(f"{out}/scaled", shape) if bias else out
        ctx.add_op("MUL", [normalized, node.input[1]], [scaled])
        if bias:
            ctx.add_op("ADD", [scaled, bias], [out])

    def reference(self, x):
        return ((1.0 / np.sqrt(x)).astype(np.float32),)

    def version(self, op: Op, graph: Graph) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype.name
        return 3 if dtype == "INT16" else 2 if dtype == "INT8" else 1

    @staticmethod
    def _instance_or_group_norm(node, ctx) -> None:
        """y = (x - mean) * rsqrt(var + epsilon) * scale + bias over each channel's (instance) or
        each channel group's (group) spatial elements; scale folds into the small inv_std."""
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        if len(shape) < 3:
            raise Unsupported(node, "norm_rank", f"{node.op_type} needs an [N, C, ...] input of rank >= 3")
        channels, spatial = shape[1], list(range(2, len(shape)))
        scale = ctx.require_constant(node, 1, "scale").astype(np.float32).reshape(-1)
        bias = ctx.require_constant(node, 2, "bias").astype(np.float32).reshape(-1)
        groups = channels if node.op_type == "InstanceNormalization" else int(ctx.attr(node, "num_groups"))
        if groups < 1 or channels % groups:
            raise Unsupported(node, "group_norm_groups", f"num_groups {groups} does not divide the "
                                                         f"{channels} channels")
        if scale.size != channels or bias.size != channels:
            raise Unsupported(node, "norm_parameters", f"scale/bias of {scale.size}/{bias.size} values "
                                                       f"for {channels} channels")
        epsilon = float(ctx.attr(node, "epsilon", 1e-5))
        reduced = tuple(1 if i in spatial else d for i, d in enumerate(shape))
        per_channel = (1, channels) + (1,) * (len(shape) - 2)

        def group_mean(value: str, what: str) -> str:
            """MEAN over the spatial axes, then (groups < channels) averaged within each group."""
            channel_mean = ctx.new_activation(f"{out}/{what}_channel", reduced)
            add_reduce(ctx, "MEAN", value, spatial, channel_mean, keep_dims=True)
            if groups == channels:
                return channel_mean
            flat = ctx.new_activation(f"{out}/{what}_flat", (shape[0], channels))
            add_reshape(ctx, channel_mean, flat, (shape[0], channels))
            members = np.arange(channels) // (channels // groups)
            averaging = (members[:, None] == members[None, :]) / np.float32(channels // groups)
            grouped = ctx.new_activation(f"{out}/{what}_group_flat", (shape[0], channels))
            add_fully_connected(ctx, node, flat, averaging.astype(np.float32), None, grouped,
                                name=f"{what}_group_average")
            result = ctx.new_activation(f"{out}/{what}", reduced)
            add_reshape(ctx, grouped, result, reduced)
            return result

        mean = group_mean(x, "mean")
        centered = ctx.new_activation(f"{out}/centered", shape)
        ctx.add_op("SUB", [x, mean], [centered])
        squared = ctx.new_activation(f"{out}/squared", shape)
        ctx.add_op("MUL", [centered, centered], [squared])
        variance = group_mean(squared, "variance")
        shifted = ctx.new_activation(f"{out}/variance_eps", reduced)
        ctx.add_op("ADD", [variance, ctx.add_constant(f"{node.name}/epsilon", np.array(epsilon, np.float32))],
                   [shifted])
        inv_std = ctx.new_activation(f"{out}/inv_std", reduced)
        ctx.add_op("RSQRT", [shifted], [inv_std])
        gain = ctx.new_activation(f"{out}/gain", reduced)
        ctx.add_op("MUL", [inv_std, ctx.add_constant(f"{node.name}/scale", scale.reshape(per_channel))], [gain])
        scaled = ctx.new_activation(f"{out}/scaled", shape)
        ctx.add_op("MUL", [centered, gain], [scaled])
        ctx.add_op("ADD", [scaled, ctx.add_constant(f"{node.name}/bias", bias.reshape(per_channel))], [out])
