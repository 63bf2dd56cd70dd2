"""CONCATENATION: ONNX Concat, joining tensors along one axis (constant operands allowed)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ConcatenationOptions import ConcatenationOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsOutput, rand
from tflq.ops.checks import Axis
from tflq.ops.common import activation_code, quantized_version


@dataclass(frozen=True)
class ConcatenationAttrs:
    axis: int = 0  # before the layout pass: the ONNX axis; after it: the axis of the physical layout


def _conv_concat_conv_case() -> Case:
    """Two convs joined on channels and fed to a third: the layout pass must need no TRANSPOSE."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
        helper.make_node("Conv", ["c", "w3", "b3"], ["y"], pads=[1, 1, 1, 1]),
    ]
    consts = {"w1": rand(4, 3, 3, 3, seed=1, low=-0.5, high=0.5), "b1": rand(4, seed=2),
              "w2": rand(2, 3, 1, 1, seed=3, low=-0.5, high=0.5),
              "w3": rand(5, 6, 3, 3, seed=4, low=-0.3, high=0.3), "b3": rand(5, seed=5)}
    return Case("conv_concat_conv", nodes, {"x": rand(1, 3, 6, 6)}, consts)


@register
class Concatenation(OpSpec):
    """ONNX Concat. int8 kernels need every input on the output's grid (SameAsOutput); uint8 rescales."""

    kind = "CONCATENATION"
    onnx_types = ("Concat",)
    onnx_checks = (Axis(name="axis"),)
    Attrs = ConcatenationAttrs
    layout = AxisSensitive(attrs=("axis",))
    quant = SameAsOutput(dtypes=WITH_INT16, rounding_commutes=True)
    cases = [
        Case("channels_nchw", [helper.make_node("Concat", ["a", "b"], ["y"], axis=1)],
             {"a": rand(1, 3, 4, 4), "b": rand(1, 5, 4, 4, seed=1)}),
        Case("rank2_last_axis", [helper.make_node("Concat", ["a", "b"], ["y"], axis=-1)],
             {"a": rand(2, 3), "b": rand(2, 4, seed=1)}),
        Case("height_three_inputs", [helper.make_node("Concat", ["a", "b", "a"], ["y"], axis=2)],
             {"a": rand(1, 2, 3, 4), "b": rand(1, 2, 5, 4, seed=1)}),
        Case("constant_input", [helper.make_node("Concat", ["a", "c"], ["y"], axis=1)],
             {"a": rand(1, 2, 3, 3)}, {"c": rand(1, 1, 3, 3, seed=2)}),
        _conv_concat_conv_case(),
    ]

    def from_onnx(self, node, ctx) -> None:
        axis = ctx.attr(node, "axis")
        if axis is None:
            raise Unsupported(node, "concat_axis", "Concat has no 'axis' attribute")
        rank = ctx.rank(node.output[0])
        axis = ctx.normalize_axis(int(axis), rank)
        inputs = [name for name in node.input if name and 0 not in ctx.shape(name)]
        if not inputs:
            raise Unsupported(node, "empty_tensor", "every Concat input is empty")
        if len(inputs) == 1:
            ctx.alias(node.output[0], inputs[0])
            return
        ctx.add_op(self.kind, inputs, [node.output[0]], ConcatenationAttrs(axis=axis))

    def reference(self, *inputs: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
        return (np.concatenate(inputs, axis=axis),)

    def options(self, attrs: ConcatenationAttrs) -> ConcatenationOptionsT:
        return ConcatenationOptionsT(axis=attrs.axis, fusedActivationFunction=activation_code("NONE"))

    def version(self, op: Op, graph: Graph) -> int:
        if graph.tensors[op.inputs[0]].dtype.name == "INT16":
            return 3
        return quantized_version(graph, op)
