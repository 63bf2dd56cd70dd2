"""RSQRT, and ONNX LayerNormalization decomposed into MEAN, SUB, MUL, ADD and RSQRT.

TFLite has no layer-norm builtin. The decomposition
    d = x - mean(x);  y = d * rsqrt(mean(d * d) + epsilon) * scale + bias
uses only ops with int8 kernels, so a quantized model stays integer throughout.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import INT8_AND_INT16, Calibrated, Case, OpSpec, Transparent, rand
from tflq.ops.checks import Axis, FloatAttr
from tflq.ops.reduce import add_reduce


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
    onnx_types = ("LayerNormalization",)
    onnx_checks = (FloatAttr(name="epsilon", min=0.0), Axis(name="axis"))
    layout = Transparent()
    quant = Calibrated(dtypes=INT8_AND_INT16)  # LiteRT's RSQRT takes float32, int8 and int16, no uint8
    cases = [
        _layer_norm_case("layer_norm_rank3", (2, 5, 16), epsilon=1e-3),
        _layer_norm_case("layer_norm_no_bias", (3, 8), bias=False),
        _layer_norm_case("layer_norm_rank4_last_axis", (1, 3, 4, 6), axis=3),
    ]

    def from_onnx(self, node, ctx) -> None:
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
